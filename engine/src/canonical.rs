//! The canonical tensor table: which tensors a model of a given [`Config`]
//! has, in file order, with their names and shapes. The reader checks a file
//! against it, the writer checks its input against it, and the trainer, the
//! importers and the tests build their tensors from it, so the table is
//! written once.
//!
//! Order: `tok_embedding`, then for each block `l` the nine tensors
//! `layers.{l}.{attn_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3}`, then
//! `norm`, then `classifier` unless it is tied to the embedding.
#![forbid(unsafe_code)]

use core::fmt;

use crate::config::Config;

/// One of the tensors of a transformer block, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerPart {
    /// RMSNorm gain before attention, `[dim]`.
    AttnNorm,
    /// Query projection, `[dim, dim]`.
    Wq,
    /// Key projection, `[kv_dim, dim]`.
    Wk,
    /// Value projection, `[kv_dim, dim]`.
    Wv,
    /// Attention output projection, `[dim, dim]`.
    Wo,
    /// RMSNorm gain before the MLP, `[dim]`.
    FfnNorm,
    /// SwiGLU gate projection (its output goes through SiLU), `[hidden, dim]`.
    W1,
    /// SwiGLU down projection, `[dim, hidden]`.
    W2,
    /// SwiGLU up projection (multiplies the gate), `[hidden, dim]`.
    W3,
}

/// Tensors in one transformer block.
pub const TENSORS_PER_LAYER: u32 = LayerPart::ALL.len() as u32;

impl LayerPart {
    /// The parts of a block, in file order.
    pub const ALL: [LayerPart; 9] = [
        LayerPart::AttnNorm,
        LayerPart::Wq,
        LayerPart::Wk,
        LayerPart::Wv,
        LayerPart::Wo,
        LayerPart::FfnNorm,
        LayerPart::W1,
        LayerPart::W2,
        LayerPart::W3,
    ];

    /// The last component of the tensor's name, e.g. `wq`.
    pub const fn name(self) -> &'static str {
        match self {
            LayerPart::AttnNorm => "attn_norm",
            LayerPart::Wq => "wq",
            LayerPart::Wk => "wk",
            LayerPart::Wv => "wv",
            LayerPart::Wo => "wo",
            LayerPart::FfnNorm => "ffn_norm",
            LayerPart::W1 => "w1",
            LayerPart::W2 => "w2",
            LayerPart::W3 => "w3",
        }
    }
}

/// What a tensor is. Its `Display` is the canonical name (`layers.3.wq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorRole {
    /// The token embedding, `[vocab_size, dim]`.
    TokEmbedding,
    /// Part `part` of block `layer`.
    Layer {
        /// Block index, from 0.
        layer: u32,
        /// Which tensor of the block.
        part: LayerPart,
    },
    /// The final RMSNorm gain, `[dim]`.
    Norm,
    /// The classifier, `[vocab_size, dim]` (absent when tied).
    Classifier,
}

impl TensorRole {
    /// Whether this is an RMSNorm gain: 1-D, and always stored as F32.
    pub const fn is_norm(self) -> bool {
        matches!(
            self,
            TensorRole::Norm
                | TensorRole::Layer {
                    part: LayerPart::AttnNorm | LayerPart::FfnNorm,
                    ..
                }
        )
    }

    /// Whether `bytes` is exactly this tensor's name.
    pub fn name_is(self, bytes: &[u8]) -> bool {
        let mut rest = NameMatcher { rest: bytes };
        fmt::write(&mut rest, format_args!("{self}")).is_ok() && rest.rest.is_empty()
    }
}

impl fmt::Display for TensorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorRole::TokEmbedding => f.write_str("tok_embedding"),
            TensorRole::Layer { layer, part } => write!(f, "layers.{layer}.{}", part.name()),
            TensorRole::Norm => f.write_str("norm"),
            TensorRole::Classifier => f.write_str("classifier"),
        }
    }
}

/// Compares formatted text with a byte string piece by piece, so a name can
/// be checked without a buffer; fails on the first difference.
struct NameMatcher<'a> {
    rest: &'a [u8],
}

impl fmt::Write for NameMatcher<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.rest.strip_prefix(s.as_bytes()) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(fmt::Error),
        }
    }
}

/// One entry of the canonical table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CanonicalTensor {
    /// Position in the file's tensor directory.
    pub index: u32,
    /// What the tensor is; displays as its name.
    pub role: TensorRole,
    /// `[rows, cols]`; norm gains (1-D) are `[1, len]`.
    pub shape: [u32; 2],
}

impl CanonicalTensor {
    /// 1 for norm gains, 2 for matrices.
    pub const fn ndim(&self) -> u32 {
        if self.role.is_norm() {
            1
        } else {
            2
        }
    }

    /// The shape as the writer takes it: `[len]` for norm gains,
    /// `[rows, cols]` for matrices.
    pub fn dims(&self) -> &[u32] {
        if self.role.is_norm() {
            &self.shape[1..]
        } else {
            &self.shape
        }
    }

    /// Number of elements.
    pub const fn elements(&self) -> u64 {
        self.shape[0] as u64 * self.shape[1] as u64
    }
}

/// Tensor `index` of a model with `config` (which must pass
/// [`Config::validate`]), or `None` past the last one.
pub fn canonical_tensor(config: &Config, index: u32) -> Option<CanonicalTensor> {
    if index >= config.tensor_count() {
        return None;
    }
    let (dim, hidden, vocab) = (config.dim, config.hidden_dim, config.vocab_size);
    let kv = config.kv_dim() as u32;
    let layers_end = 1 + TENSORS_PER_LAYER * config.n_layers;
    let (role, shape) = if index == 0 {
        (TensorRole::TokEmbedding, [vocab, dim])
    } else if index < layers_end {
        let (layer, part) = (
            (index - 1) / TENSORS_PER_LAYER,
            (index - 1) % TENSORS_PER_LAYER,
        );
        let part = LayerPart::ALL[part as usize];
        let shape = match part {
            LayerPart::AttnNorm | LayerPart::FfnNorm => [1, dim],
            LayerPart::Wq | LayerPart::Wo => [dim, dim],
            LayerPart::Wk | LayerPart::Wv => [kv, dim],
            LayerPart::W1 | LayerPart::W3 => [hidden, dim],
            LayerPart::W2 => [dim, hidden],
        };
        (TensorRole::Layer { layer, part }, shape)
    } else if index == layers_end {
        (TensorRole::Norm, [1, dim])
    } else {
        (TensorRole::Classifier, [vocab, dim])
    };
    Some(CanonicalTensor { index, role, shape })
}

/// The directory index of `role` in a model with `config`, or `None` when
/// the model has no such tensor (a tied classifier, a block past the last).
pub fn canonical_index(config: &Config, role: TensorRole) -> Option<u32> {
    let layers_end = 1 + TENSORS_PER_LAYER * config.n_layers;
    match role {
        TensorRole::TokEmbedding => Some(0),
        TensorRole::Layer { layer, part } if layer < config.n_layers => {
            Some(1 + TENSORS_PER_LAYER * layer + part as u32)
        }
        TensorRole::Layer { .. } => None,
        TensorRole::Norm => Some(layers_end),
        TensorRole::Classifier => (!config.tied_classifier).then_some(layers_end + 1),
    }
}

/// Every tensor of a model with `config` (which must pass
/// [`Config::validate`]), in file order.
pub fn canonical_tensors(config: &Config) -> CanonicalTensors {
    CanonicalTensors {
        config: *config,
        next: 0,
    }
}

/// The iterator [`canonical_tensors`] returns.
#[derive(Clone, Debug)]
pub struct CanonicalTensors {
    config: Config,
    next: u32,
}

impl Iterator for CanonicalTensors {
    type Item = CanonicalTensor;

    fn next(&mut self) -> Option<CanonicalTensor> {
        let t = canonical_tensor(&self.config, self.next)?;
        self.next += 1;
        Some(t)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.config.tensor_count().saturating_sub(self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for CanonicalTensors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tied_classifier: bool) -> Config {
        Config {
            tied_classifier,
            ..crate::config::stories::STORIES260K
        }
    }

    #[test]
    fn table_follows_the_file_order() {
        let c = config(false);
        assert_eq!(canonical_tensors(&c).len(), c.tensor_count() as usize);
        for (i, t) in canonical_tensors(&c).enumerate() {
            assert_eq!(t.index, i as u32);
            assert_eq!(canonical_index(&c, t.role), Some(t.index));
        }
        let all = |i: usize| canonical_tensor(&c, i as u32).unwrap();
        assert_eq!(all(0).role, TensorRole::TokEmbedding);
        assert_eq!(all(0).shape, [512, 64]);
        let wk = all(3);
        assert!(wk.role.name_is(b"layers.0.wk"));
        assert_eq!(
            (wk.shape, wk.ndim(), wk.dims()),
            ([32, 64], 2, &[32, 64][..])
        );
        let ffn_norm = all(1 + 9 * 4 + 5);
        assert!(ffn_norm.role.name_is(b"layers.4.ffn_norm"));
        assert_eq!((ffn_norm.ndim(), ffn_norm.dims()), (1, &[64][..]));
        assert!(all(1 + 9 * 4 + 7).role.name_is(b"layers.4.w2"));
        assert_eq!(all(1 + 9 * 4 + 7).shape, [64, 172]);
        assert_eq!(all(46).role, TensorRole::Norm);
        assert_eq!(all(47).role, TensorRole::Classifier);
        assert_eq!(canonical_tensor(&c, 48), None);
        let tied = config(true);
        assert_eq!(canonical_tensors(&tied).count(), 47);
        assert_eq!(canonical_index(&tied, TensorRole::Classifier), None);
        let past = TensorRole::Layer {
            layer: 5,
            part: LayerPart::Wq,
        };
        assert_eq!(canonical_index(&tied, past), None);
    }

    #[test]
    fn names_match_exactly() {
        let role = TensorRole::Layer {
            layer: 12,
            part: LayerPart::AttnNorm,
        };
        assert!(role.name_is(b"layers.12.attn_norm"));
        assert!(!role.name_is(b"layers.12.attn_nor"));
        assert!(!role.name_is(b"layers.12.attn_norm\0"));
        assert!(!role.name_is(b"layers.1.attn_norm"));
        assert!(!role.name_is(b""));
        assert!(TensorRole::Norm.name_is(b"norm"));
        assert!(!TensorRole::Norm.name_is(b"norms"));
        assert!(role.is_norm() && TensorRole::Norm.is_norm());
        assert!(!TensorRole::Classifier.is_norm());
    }
}
