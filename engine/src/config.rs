//! The model's hyperparameters and the facts derived from them.
#![forbid(unsafe_code)]

use crate::error::Error;

/// LLaMA model hyperparameters, as stored in a .klt header.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Width of the residual stream.
    pub dim: u32,
    /// Width of the SwiGLU hidden layer.
    pub hidden_dim: u32,
    /// Number of transformer blocks.
    pub n_layers: u32,
    /// Number of query heads.
    pub n_heads: u32,
    /// Number of key/value heads (divides `n_heads`; grouped-query attention).
    pub n_kv_heads: u32,
    /// Number of tokens in the vocabulary.
    pub vocab_size: u32,
    /// Longest sequence the model was trained for.
    pub max_seq_len: u32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Whether the classifier reuses the token embedding.
    pub tied_classifier: bool,
}

/// Upper bounds that keep every size computation far from overflow.
pub mod limits {
    /// Largest `dim`.
    pub const MAX_DIM: u32 = 1 << 16;
    /// Largest `hidden_dim`.
    pub const MAX_HIDDEN_DIM: u32 = 1 << 18;
    /// Largest `n_layers`.
    pub const MAX_LAYERS: u32 = 1024;
    /// Largest `vocab_size`.
    pub const MAX_VOCAB: u32 = 1 << 22;
    /// Largest `max_seq_len`.
    pub const MAX_SEQ_LEN: u32 = 1 << 20;
}

impl Config {
    /// Width of one attention head.
    pub const fn head_dim(&self) -> usize {
        (self.dim / self.n_heads) as usize
    }

    /// Width of the key (and value) vector of one position: all KV heads.
    pub const fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_kv_heads as usize
    }

    /// Number of tensors in a file with this config: embedding, nine per
    /// layer, final norm, and the classifier unless it is tied.
    pub const fn tensor_count(&self) -> u32 {
        1 + 9 * self.n_layers + 1 + if self.tied_classifier { 0 } else { 1 }
    }

    /// Checks that every field is positive, within [`limits`], and that the
    /// fields agree with each other.
    pub fn validate(&self) -> Result<(), Error> {
        use limits::*;
        let bad = |field, reason| Err(Error::BadConfig { field, reason });
        let in_range = |v: u32, max: u32| v >= 1 && v <= max;
        if !in_range(self.dim, MAX_DIM) {
            return bad("dim", "must be between 1 and 65536");
        }
        if !in_range(self.hidden_dim, MAX_HIDDEN_DIM) {
            return bad("hidden_dim", "must be between 1 and 262144");
        }
        if !in_range(self.n_layers, MAX_LAYERS) {
            return bad("n_layers", "must be between 1 and 1024");
        }
        if !in_range(self.vocab_size, MAX_VOCAB) {
            return bad("vocab_size", "must be between 1 and 4194304");
        }
        if !in_range(self.max_seq_len, MAX_SEQ_LEN) {
            return bad("max_seq_len", "must be between 1 and 1048576");
        }
        if self.n_heads == 0 || !self.dim.is_multiple_of(self.n_heads) {
            return bad("n_heads", "must be positive and divide dim");
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad("n_kv_heads", "must be positive and divide n_heads");
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad("n_heads", "must leave an even head width for RoPE pairs");
        }
        // Below 1 the rotation frequencies grow past 1 and the angles
        // (position × frequency) run to infinity: every real model uses
        // 10,000 or more.
        if !(self.rope_theta.is_finite() && self.rope_theta >= 1.0) {
            return bad("rope_theta", "must be finite and at least 1");
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return bad("norm_eps", "must be finite and in (0, 1)");
        }
        Ok(())
    }
}

/// The shapes of llama2.c's "stories" models (RoPE base 10000, RMSNorm eps
/// 1e-5, classifier tied to the embedding), for benchmarks, tests and
/// firmware that sizes buffers in `const` context.
pub mod stories {
    use super::Config;

    const fn shape(
        dim: u32,
        hidden_dim: u32,
        n_layers: u32,
        n_heads: u32,
        n_kv_heads: u32,
        vocab_size: u32,
        max_seq_len: u32,
    ) -> Config {
        Config {
            dim,
            hidden_dim,
            n_layers,
            n_heads,
            n_kv_heads,
            vocab_size,
            max_seq_len,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tied_classifier: true,
        }
    }

    /// stories260K: 5 layers of width 64, grouped KV heads, 512 tokens.
    pub const STORIES260K: Config = shape(64, 172, 5, 8, 4, 512, 512);
    /// stories15M: 6 layers of width 288, the 32,000-token Llama 2 vocabulary.
    pub const STORIES15M: Config = shape(288, 768, 6, 6, 6, 32000, 256);
    /// stories110M: 12 layers of width 768.
    pub const STORIES110M: Config = shape(768, 2048, 12, 12, 12, 32000, 1024);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Config {
        stories::STORIES260K
    }

    #[test]
    fn accepts_stories260k_shape() {
        assert_eq!(good().validate(), Ok(()));
        assert_eq!(good().head_dim(), 8);
        assert_eq!(good().kv_dim(), 32);
        assert_eq!(good().tensor_count(), 47);
    }

    #[test]
    fn rejects_inconsistent_heads() {
        let c = Config {
            n_heads: 7,
            ..good()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::BadConfig {
                field: "n_heads",
                ..
            })
        ));
        let c = Config {
            n_kv_heads: 3,
            ..good()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::BadConfig {
                field: "n_kv_heads",
                ..
            })
        ));
        let c = Config {
            n_heads: 64,
            ..good()
        };
        assert!(c.validate().is_err(), "head width 1 is odd");
    }

    #[test]
    fn rejects_zero_and_absurd_sizes() {
        for c in [
            Config { dim: 0, ..good() },
            Config {
                hidden_dim: 0,
                ..good()
            },
            Config {
                n_layers: 0,
                ..good()
            },
            Config {
                vocab_size: u32::MAX,
                ..good()
            },
            Config {
                max_seq_len: 0,
                ..good()
            },
            Config {
                rope_theta: f32::NAN,
                ..good()
            },
            Config {
                norm_eps: -1.0,
                ..good()
            },
            Config {
                rope_theta: 1e-45,
                ..good()
            },
            Config {
                rope_theta: 0.5,
                ..good()
            },
            Config {
                rope_theta: f32::INFINITY,
                ..good()
            },
            Config {
                norm_eps: 1.0,
                ..good()
            },
            Config {
                norm_eps: f32::NAN,
                ..good()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
