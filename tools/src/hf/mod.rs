//! Hugging Face model directories: `config.json` (`LlamaForCausalLM`),
//! `model.safetensors` (read and written with the `safetensors` crate) and
//! `tokenizer.json` + `tokenizer_config.json` that `transformers`'
//! `AutoTokenizer` loads. What both directions share lives here: tensor
//! names and the RoPE row permutation. [`read`] imports, [`write`](mod@write) exports.
//!
//! kinglet (like llama2.c and GGUF) rotates adjacent pairs of each head;
//! Hugging Face's Llama rotates the two halves. Its conversion from Meta's
//! checkpoints permutes the rows of `wq` and `wk` head by head so the
//! halves line up, and so do we: row `2i + j` of a head goes to row
//! `j·head_dim/2 + i`. The import puts them back.

use kinglet::{LayerPart, TensorRole};

pub mod read;
pub mod tokenizer;
pub mod write;

/// The safetensors metadata key prefix naming the kinglet dtype of a
/// tensor that safetensors cannot hold (Q8_0, Q4_0: stored dequantized in
/// F32), so the import quantizes it back to the same blocks.
pub const DTYPE_KEY_PREFIX: &str = "kinglet.dtype.";
/// The safetensors metadata key holding the .klt metadata entries, in
/// order, as a JSON array of `[key, value]` pairs.
pub const METADATA_KEY: &str = "kinglet.metadata";

/// The Hugging Face name of a tensor of a Llama model.
pub fn tensor_name(role: TensorRole) -> String {
    match role {
        TensorRole::TokEmbedding => "model.embed_tokens.weight".into(),
        TensorRole::Norm => "model.norm.weight".into(),
        TensorRole::Classifier => "lm_head.weight".into(),
        TensorRole::Layer { layer, part } => {
            let part = match part {
                LayerPart::AttnNorm => "input_layernorm",
                LayerPart::Wq => "self_attn.q_proj",
                LayerPart::Wk => "self_attn.k_proj",
                LayerPart::Wv => "self_attn.v_proj",
                LayerPart::Wo => "self_attn.o_proj",
                LayerPart::FfnNorm => "post_attention_layernorm",
                LayerPart::W1 => "mlp.gate_proj",
                LayerPart::W2 => "mlp.down_proj",
                LayerPart::W3 => "mlp.up_proj",
            };
            format!("model.layers.{layer}.{part}.weight")
        }
    }
}

/// The number of heads whose rows `role`'s matrix permutes (`wq`: query
/// heads, `wk`: key heads), or `None` for every other tensor.
pub fn rope_heads(role: TensorRole, n_heads: u32, n_kv_heads: u32) -> Option<u32> {
    match role {
        TensorRole::Layer {
            part: LayerPart::Wq,
            ..
        } => Some(n_heads),
        TensorRole::Layer {
            part: LayerPart::Wk,
            ..
        } => Some(n_kv_heads),
        _ => None,
    }
}

/// Reorders the rows of a matrix of `heads` heads (rows of `row_bytes`
/// bytes each) between kinglet's adjacent-pair layout and Hugging Face's
/// half-split layout: `to_hf` moves row `2i + j` of each head to
/// `j·half + i`; otherwise the inverse.
pub fn permute_rope_rows(data: &[u8], row_bytes: usize, heads: usize, to_hf: bool) -> Vec<u8> {
    let rows = data.len() / row_bytes.max(1);
    let head_rows = rows / heads.max(1);
    let half = head_rows / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let pair = h * head_rows + 2 * i + j;
                let split = h * head_rows + j * half + i;
                let (from, to) = if to_hf { (pair, split) } else { (split, pair) };
                out[to * row_bytes..(to + 1) * row_bytes]
                    .copy_from_slice(&data[from * row_bytes..(from + 1) * row_bytes]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_the_meta_to_hf_conversion() {
        // 2 heads of 4 rows, one byte per row. transformers'
        // convert_llama_weights_to_hf: view(heads, rows/heads/2, 2, cols)
        // .transpose(1, 2): head rows [0 1 2 3] become [0 2 1 3].
        let meta: Vec<u8> = (0..8).collect();
        let hf = permute_rope_rows(&meta, 1, 2, true);
        assert_eq!(hf, [0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(permute_rope_rows(&hf, 1, 2, false), meta);
        // Rows of several bytes move whole.
        let meta: Vec<u8> = (0..24).collect();
        let back = permute_rope_rows(&permute_rope_rows(&meta, 3, 1, true), 3, 1, false);
        assert_eq!(back, meta);
    }
}
