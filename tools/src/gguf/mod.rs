//! GGUF, llama.cpp's model file: the parts both directions share — the
//! value and tensor type codes, the `llama` tensor names, the keys kinglet
//! writes, and the mapping between kinglet's vocabularies and a `llama`
//! (SentencePiece) vocabulary. [`read`] imports, [`write`](mod@write) exports.
//!
//! Layout (versions 2 and 3, little-endian): `GGUF`, u32 version, u64 tensor
//! count, u64 key/value count; the key/value pairs (u64-length strings,
//! u32 value type, value); the tensor infos (name, u32 n_dims, u64 `ne` per
//! dimension with `ne[0]` the row length, u32 ggml type, u64 offset); zero
//! padding to `general.alignment` (32); the tensor data, each tensor at its
//! offset from there, a multiple of the alignment.

use kinglet::{Dtype, LayerPart, TensorRole};

pub mod read;
pub mod write;

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version kinglet writes.
pub const VERSION: u32 = 3;
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// GGUF metadata value types.
pub mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    /// Bytes of one value of a fixed-size type, `None` for strings and arrays.
    pub const fn scalar_bytes(t: u32) -> Option<usize> {
        match t {
            U8 | I8 | BOOL => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            _ => None,
        }
    }
}

/// A ggml tensor type: its code, its name, and the size of its blocks
/// (`block_len` elements in `block_bytes` bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType {
    pub code: u32,
    pub name: &'static str,
    pub block_len: u64,
    pub block_bytes: u64,
}

const fn ggml(code: u32, name: &'static str, block_len: u64, block_bytes: u64) -> GgmlType {
    GgmlType {
        code,
        name,
        block_len,
        block_bytes,
    }
}

/// Every ggml type a GGUF file may name (ggml.h's `ggml_type`), so an error
/// can say which one a file holds and the reader can check every tensor's
/// size.
pub const GGML_TYPES: [GgmlType; 34] = [
    ggml(0, "F32", 1, 4),
    ggml(1, "F16", 1, 2),
    ggml(2, "Q4_0", 32, 18),
    ggml(3, "Q4_1", 32, 20),
    ggml(6, "Q5_0", 32, 22),
    ggml(7, "Q5_1", 32, 24),
    ggml(8, "Q8_0", 32, 34),
    ggml(9, "Q8_1", 32, 40),
    ggml(10, "Q2_K", 256, 84),
    ggml(11, "Q3_K", 256, 110),
    ggml(12, "Q4_K", 256, 144),
    ggml(13, "Q5_K", 256, 176),
    ggml(14, "Q6_K", 256, 210),
    ggml(15, "Q8_K", 256, 292),
    ggml(16, "IQ2_XXS", 256, 66),
    ggml(17, "IQ2_XS", 256, 74),
    ggml(18, "IQ3_XXS", 256, 98),
    ggml(19, "IQ1_S", 256, 50),
    ggml(20, "IQ4_NL", 32, 18),
    ggml(21, "IQ3_S", 256, 110),
    ggml(22, "IQ2_S", 256, 82),
    ggml(23, "IQ4_XS", 256, 136),
    ggml(24, "I8", 1, 1),
    ggml(25, "I16", 1, 2),
    ggml(26, "I32", 1, 4),
    ggml(27, "I64", 1, 8),
    ggml(28, "F64", 1, 8),
    ggml(29, "IQ1_M", 256, 56),
    ggml(30, "BF16", 1, 2),
    ggml(34, "TQ1_0", 256, 54),
    ggml(35, "TQ2_0", 256, 66),
    ggml(39, "MXFP4", 32, 17),
    ggml(40, "NVFP4", 64, 36),
    ggml(41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// The type with this code.
    pub fn from_code(code: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.code == code)
    }

    /// The ggml type of a kinglet dtype (the blocks are the same bytes).
    pub fn of(dtype: Dtype) -> GgmlType {
        let code = match dtype {
            Dtype::F32 => 0,
            Dtype::F16 => 1,
            Dtype::Q4_0 => 2,
            Dtype::Q8_0 => 8,
            Dtype::BF16 => 30,
        };
        // Every kinglet dtype is in the table.
        GgmlType::from_code(code).unwrap_or(GGML_TYPES[0])
    }

    /// The kinglet dtype storing exactly these bytes, if there is one.
    pub fn dtype(self) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|&d| GgmlType::of(d) == self)
    }
}

/// The GGUF name of a tensor of a `llama` model.
pub fn tensor_name(role: TensorRole) -> String {
    match role {
        TensorRole::TokEmbedding => "token_embd.weight".into(),
        TensorRole::Norm => "output_norm.weight".into(),
        TensorRole::Classifier => "output.weight".into(),
        TensorRole::Layer { layer, part } => {
            let part = match part {
                LayerPart::AttnNorm => "attn_norm",
                LayerPart::Wq => "attn_q",
                LayerPart::Wk => "attn_k",
                LayerPart::Wv => "attn_v",
                LayerPart::Wo => "attn_output",
                LayerPart::FfnNorm => "ffn_norm",
                LayerPart::W1 => "ffn_gate",
                LayerPart::W2 => "ffn_down",
                LayerPart::W3 => "ffn_up",
            };
            format!("blk.{layer}.{part}.weight")
        }
    }
}

/// Metadata keys, as llama.cpp names them for architecture `llama`.
pub mod keys {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const NAME: &str = "general.name";
    pub const ALIGNMENT: &str = "general.alignment";
    pub const FILE_TYPE: &str = "general.file_type";
    pub const QUANTIZATION_VERSION: &str = "general.quantization_version";
    pub const CONTEXT_LENGTH: &str = "llama.context_length";
    pub const EMBEDDING_LENGTH: &str = "llama.embedding_length";
    pub const BLOCK_COUNT: &str = "llama.block_count";
    pub const FEED_FORWARD_LENGTH: &str = "llama.feed_forward_length";
    pub const HEAD_COUNT: &str = "llama.attention.head_count";
    pub const HEAD_COUNT_KV: &str = "llama.attention.head_count_kv";
    pub const RMS_EPS: &str = "llama.attention.layer_norm_rms_epsilon";
    pub const ROPE_FREQ_BASE: &str = "llama.rope.freq_base";
    pub const ROPE_DIMENSION_COUNT: &str = "llama.rope.dimension_count";
    pub const ROPE_SCALING_TYPE: &str = "llama.rope.scaling.type";
    pub const EXPERT_COUNT: &str = "llama.expert_count";
    pub const VOCAB_SIZE: &str = "llama.vocab_size";
    pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    /// kinglet's own: `char` for a character-level vocabulary, whose
    /// control tokens were appended for llama.cpp (absent: BPE).
    pub const KINGLET_TOKENIZER_KIND: &str = "kinglet.tokenizer.kind";
    /// kinglet's own: the number of tokens of the kinglet vocabulary; the
    /// tokens past it (and their embedding and classifier rows) were added
    /// on export and are dropped on import.
    pub const KINGLET_VOCAB_SIZE: &str = "kinglet.vocab_size";
    /// kinglet's own: prefix of the .klt metadata entries (`source`,
    /// `training.steps`, ...), kept as strings.
    pub const KINGLET_METADATA_PREFIX: &str = "kinglet.metadata.";
}
