//! An inference session: fixed buffers carved from one caller-provided `f32`
//! slice, a KV cache, and the forward pass of one token at a time.
//!
//! The buffer's exact size is [`session_floats`], a `const fn`, so firmware can
//! size a `static`. A session never allocates, and every failure (buffer too
//! small, token out of range, sequence full) is an `Err`, never a panic.
//!
//! ```no_run
//! use kinglet::{session_floats, ModelFile, Sampler, SamplerConfig, Session};
//! # fn main() -> Result<(), kinglet::Error> {
//! # let file_bytes: &[u8] = &[];
//! let model = ModelFile::new_checked(file_bytes)?;
//! let max_seq = 256;
//! // Firmware would use a `static mut [f32; session_floats(&CONFIG, 256)]`.
//! let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
//! let mut session = Session::new(&model, &mut buffer, max_seq)?;
//! let mut sampler = Sampler::new(model.config().vocab_size, SamplerConfig::default())?;
//! let mut token = model.vocab().bos().unwrap_or(0);
//! for _ in 0..32 {
//!     session.forward(token)?;
//!     token = sampler.sample(session.logits_mut());
//! }
//! # Ok(())
//! # }
//! ```

use crate::config::Config;
use crate::error::Error;
use crate::format::ModelFile;
use crate::kernels;
use crate::ops::{self, Heads};
use crate::quant::{self, BlockQ8};
use crate::tensor::{Matrix, BLOCK_LEN};

/// The exact number of `f32` elements a session of `max_seq` positions needs
/// for `config`:
///
/// | region         | elements                          |
/// |----------------|-----------------------------------|
/// | `x`, `xb`, `xb2`, `q` | `dim` each                 |
/// | `hb`, `hb2`    | `hidden_dim` each                 |
/// | `att`          | `n_heads × max_seq`               |
/// | `logits`       | `vocab_size`                      |
/// | KV cache       | `2 × n_layers × max_seq × kv_dim` |
/// | `xq`           | `9 × ⌈max(dim, hidden_dim) / 32⌉` (Q8 activation blocks) |
///
/// Saturates at `usize::MAX` (which no buffer can meet) on targets where the
/// size overflows, and never panics, even for an unvalidated config.
pub const fn session_floats(config: &Config, max_seq: u32) -> usize {
    let dim = config.dim as usize;
    let hidden = config.hidden_dim as usize;
    let seq = max_seq as usize;
    let head_dim = match config.dim.checked_div(config.n_heads) {
        Some(d) => d as usize,
        None => 0,
    };
    let kv_dim = head_dim.saturating_mul(config.n_kv_heads as usize);
    let activations = dim
        .saturating_mul(4)
        .saturating_add(hidden.saturating_mul(2));
    let att = (config.n_heads as usize).saturating_mul(seq);
    let kv_cache = (config.n_layers as usize)
        .saturating_mul(2)
        .saturating_mul(seq)
        .saturating_mul(kv_dim);
    activations
        .saturating_add(att)
        .saturating_add(config.vocab_size as usize)
        .saturating_add(kv_cache)
        .saturating_add(activation_block_floats(dim, hidden))
}

/// Floats holding the Q8 blocks of the widest matrix input, `dim` or `hidden_dim`.
const fn activation_block_floats(dim: usize, hidden: usize) -> usize {
    let widest = if dim > hidden { dim } else { hidden };
    widest
        .div_ceil(BLOCK_LEN)
        .saturating_mul(kernels::FLOATS_PER_BLOCK_Q8)
}

/// [`session_floats`] in bytes.
pub const fn session_bytes(config: &Config, max_seq: u32) -> usize {
    session_floats(config, max_seq).saturating_mul(core::mem::size_of::<f32>())
}

/// One sequence being decoded: the model, the activations and the KV cache.
pub struct Session<'a, T: AsRef<[u8]>> {
    model: &'a ModelFile<T>,
    /// Positions the KV cache holds.
    max_seq: u32,
    /// Positions already run (the next token goes at this position).
    pos: u32,
    /// Residual stream, `[dim]`.
    x: &'a mut [f32],
    /// Normalized input of a sublayer, then attention output, `[dim]`.
    xb: &'a mut [f32],
    /// Output of a projection back into the residual stream, `[dim]`.
    xb2: &'a mut [f32],
    /// Query of the current position, `[dim]` (= `n_heads × head_dim`).
    q: &'a mut [f32],
    /// SwiGLU gate `w1·x`, then the gated hidden vector, `[hidden_dim]`.
    hb: &'a mut [f32],
    /// SwiGLU up projection `w3·x`, `[hidden_dim]`.
    hb2: &'a mut [f32],
    /// Attention weights, `[n_heads × max_seq]`.
    att: &'a mut [f32],
    /// Output of the last forward, `[vocab_size]`.
    logits: &'a mut [f32],
    /// Keys, `[n_layers × max_seq × kv_dim]`.
    key_cache: &'a mut [f32],
    /// Values, `[n_layers × max_seq × kv_dim]`.
    value_cache: &'a mut [f32],
    /// The input of a quantized matrix, as Q8 blocks, `[max(dim, hidden) / 32]`.
    xq: &'a mut [BlockQ8],
}

impl<'a, T: AsRef<[u8]>> Session<'a, T> {
    /// Starts an empty session of up to `max_seq` positions in `buffer`, which
    /// must hold at least [`session_floats`]`(model.config(), max_seq)`
    /// elements (any excess is left unused). The buffer's contents do not
    /// matter: every element is written before it is read.
    ///
    /// Errors: [`Error::InvalidInput`] when `max_seq` is 0 or larger than the
    /// model's `max_seq_len`; [`Error::BufferTooSmall`].
    pub fn new(
        model: &'a ModelFile<T>,
        buffer: &'a mut [f32],
        max_seq: u32,
    ) -> Result<Self, Error> {
        let config = *model.config();
        if max_seq == 0 || max_seq > config.max_seq_len {
            return Err(Error::InvalidInput {
                reason: "max_seq must be between 1 and the model's max_seq_len",
            });
        }
        let needed = session_floats(&config, max_seq);
        if buffer.len() < needed {
            return Err(Error::BufferTooSmall {
                needed,
                available: buffer.len(),
            });
        }
        let dim = config.dim as usize;
        let hidden = config.hidden_dim as usize;
        let seq = max_seq as usize;
        let cache = config.n_layers as usize * seq * config.kv_dim();
        // Every size below sums to `needed`, which fits in `buffer`.
        let (x, rest) = buffer.split_at_mut(dim);
        let (xb, rest) = rest.split_at_mut(dim);
        let (xb2, rest) = rest.split_at_mut(dim);
        let (q, rest) = rest.split_at_mut(dim);
        let (hb, rest) = rest.split_at_mut(hidden);
        let (hb2, rest) = rest.split_at_mut(hidden);
        let (att, rest) = rest.split_at_mut(config.n_heads as usize * seq);
        let (logits, rest) = rest.split_at_mut(config.vocab_size as usize);
        let (key_cache, rest) = rest.split_at_mut(cache);
        let (value_cache, rest) = rest.split_at_mut(cache);
        let (xq, _unused) = rest.split_at_mut(activation_block_floats(dim, hidden));
        let xq = kernels::blocks_in_floats(xq);
        Ok(Session {
            model,
            max_seq,
            pos: 0,
            x,
            xb,
            xb2,
            q,
            hb,
            hb2,
            att,
            logits,
            key_cache,
            value_cache,
            xq,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &'a ModelFile<T> {
        self.model
    }

    /// Positions already run; the next [`forward`](Self::forward) runs this one.
    pub fn pos(&self) -> u32 {
        self.pos
    }

    /// Positions the session can hold.
    pub fn max_seq(&self) -> u32 {
        self.max_seq
    }

    /// Forgets the sequence: the next token goes at position 0.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// The logits of the last [`forward`](Self::forward), `[vocab_size]`
    /// (unspecified before the first one).
    pub fn logits(&self) -> &[f32] {
        &*self.logits
    }

    /// Mutable logits, e.g. for a sampler that works in place.
    pub fn logits_mut(&mut self) -> &mut [f32] {
        self.logits
    }

    /// Runs `token` at position [`pos`](Self::pos), appends its keys and
    /// values to the cache, advances the position and returns the logits for
    /// the next token, `[vocab_size]`.
    ///
    /// Errors: [`Error::TokenOutOfRange`], [`Error::SequenceFull`]; the
    /// session is unchanged when one is returned.
    pub fn forward(&mut self, token: u32) -> Result<&[f32], Error> {
        let config = *self.model.config();
        if token >= config.vocab_size {
            return Err(Error::TokenOutOfRange {
                token,
                vocab_size: config.vocab_size,
            });
        }
        if self.pos >= self.max_seq {
            return Err(Error::SequenceFull {
                max_seq_len: self.max_seq,
            });
        }
        let model = self.model;
        let heads = Heads::of(&config);
        let kv_dim = config.kv_dim();
        let seq = self.max_seq as usize;
        let pos = self.pos as usize;
        let eps = config.norm_eps;

        kernels::row_to_f32(&model.token_embedding(), token as usize, self.x);

        for layer in 0..config.n_layers as usize {
            let w = model.layer(layer);
            // This layer's cache, `[max_seq × kv_dim]` each; row `pos` is new.
            let layer_cache = layer * seq * kv_dim..(layer + 1) * seq * kv_dim;
            let keys = &mut self.key_cache[layer_cache.clone()];
            let values = &mut self.value_cache[layer_cache];
            let new_row = pos * kv_dim..(pos + 1) * kv_dim;

            // Attention: project, rotate, write k and v into the cache, attend.
            ops::rmsnorm(self.xb, self.x, &w.attn_norm, eps);
            project(self.q, &w.wq, self.xb, self.xq)?;
            project(&mut keys[new_row.clone()], &w.wk, self.xb, self.xq)?;
            project(&mut values[new_row.clone()], &w.wv, self.xb, self.xq)?;
            ops::rope(self.q, heads.head_dim, self.pos, config.rope_theta);
            ops::rope(
                &mut keys[new_row],
                heads.head_dim,
                self.pos,
                config.rope_theta,
            );
            let visible = ..(pos + 1) * kv_dim; // positions 0..=pos
            ops::attention(
                self.xb,
                self.q,
                &keys[visible],
                &values[visible],
                self.att,
                heads,
            );
            project(self.xb2, &w.wo, self.xb, self.xq)?;
            ops::add_assign(self.x, self.xb2);

            // SwiGLU MLP: w2(silu(w1 x) * w3 x).
            ops::rmsnorm(self.xb, self.x, &w.ffn_norm, eps);
            project(self.hb, &w.w1, self.xb, self.xq)?;
            project(self.hb2, &w.w3, self.xb, self.xq)?;
            ops::silu_mul(self.hb, self.hb2);
            project(self.xb2, &w.w2, self.hb, self.xq)?;
            ops::add_assign(self.x, self.xb2);
        }

        ops::rmsnorm(self.xb, self.x, &model.final_norm(), eps);
        project(self.logits, &model.classifier(), self.xb, self.xq)?;
        self.pos += 1;
        Ok(&*self.logits)
    }
}

/// `out = W x` for any weight dtype. Quantized weights multiply `x` quantized
/// on the fly to Q8 blocks in `xq`, with integer dot products per block.
/// Shapes were checked when the model was opened, so the quantized path's
/// length errors cannot occur; they are passed on rather than unwrapped.
fn project(out: &mut [f32], w: &Matrix<'_>, x: &[f32], xq: &mut [BlockQ8]) -> Result<(), Error> {
    if w.dtype.is_quantized() {
        let blocks = &mut xq[..x.len() / BLOCK_LEN];
        quant::quantize_activations(x, blocks)?;
        kernels::matvec_quantized(out, w, blocks)
    } else {
        kernels::matvec(out, w, x);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORIES15M: Config = Config {
        dim: 288,
        hidden_dim: 768,
        n_layers: 6,
        n_heads: 6,
        n_kv_heads: 6,
        vocab_size: 32000,
        max_seq_len: 256,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: true,
    };

    // Usable where firmware needs it: in a const context.
    const STORIES15M_FLOATS: usize = session_floats(&STORIES15M, 256);

    #[test]
    fn session_floats_counts_every_region() {
        let (dim, hidden, heads, seq, vocab, layers) = (288, 768, 6, 256, 32000, 6);
        let kv_dim = 288;
        let xq = 9 * (hidden / 32); // Q8 blocks of the widest input
        let want = 4 * dim + 2 * hidden + heads * seq + vocab + 2 * layers * seq * kv_dim + xq;
        assert_eq!(STORIES15M_FLOATS, want);
        assert_eq!(session_bytes(&STORIES15M, 256), 4 * want);
        let gqa = Config {
            n_kv_heads: 2,
            ..STORIES15M
        };
        assert_eq!(
            session_floats(&gqa, 10),
            4 * dim + 2 * hidden + heads * 10 + vocab + 2 * layers * 10 * 96 + xq
        );
    }

    #[test]
    fn session_floats_never_panics_on_absurd_configs() {
        let zero_heads = Config {
            n_heads: 0,
            ..STORIES15M
        };
        assert_eq!(
            session_floats(&zero_heads, 4),
            4 * 288 + 2 * 768 + 32000 + 9 * 768 / 32
        );
        let huge = Config {
            dim: u32::MAX,
            hidden_dim: u32::MAX,
            n_layers: u32::MAX,
            n_heads: 1,
            n_kv_heads: u32::MAX,
            vocab_size: u32::MAX,
            ..STORIES15M
        };
        assert_eq!(session_floats(&huge, u32::MAX), usize::MAX);
        assert_eq!(session_bytes(&huge, u32::MAX), usize::MAX);
    }
}
