//! Writing a model as a Hugging Face directory `transformers` loads with
//! `LlamaForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`.
//! F32, F16 and BF16 tensors keep their bytes; Q8_0 and Q4_0 ones, which
//! safetensors cannot hold, are stored dequantized in F32 (exactly: each
//! value is an f16 scale times a small integer) with their dtype in the
//! file's metadata, so the import quantizes them back to the same blocks.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use kinglet::{canonical_tensors, Dtype};
use safetensors::tensor::{serialize, TensorView};
use safetensors::Dtype as StDtype;
use serde_json::{json, Value};

use super::{
    permute_rope_rows, rope_heads, tensor_name, tokenizer, DTYPE_KEY_PREFIX, METADATA_KEY,
};
use crate::io::write_atomic;
use crate::model::{encode_values, EncodedModel};

/// The files of a Hugging Face directory, by name.
pub struct HfFiles {
    pub config: Value,
    pub tokenizer: Value,
    pub tokenizer_config: Value,
    /// `model.safetensors`.
    pub safetensors: Vec<u8>,
}

/// `config.json` for `model`.
fn config_json(model: &EncodedModel) -> Value {
    let c = &model.config;
    let dtype = match model
        .tensors
        .iter()
        .find(|t| t.name == "layers.0.wq")
        .map(|t| t.dtype)
    {
        Some(Dtype::F16) => "float16",
        Some(Dtype::BF16) => "bfloat16",
        _ => "float32",
    };
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.dim,
        "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim(),
        "max_position_embeddings": c.max_seq_len,
        "vocab_size": c.vocab_size,
        // f32 as f64 prints its shortest exact form; reading it back as
        // f64 and rounding to f32 gives the same bits.
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": null,
        "tie_word_embeddings": c.tied_classifier,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": model.vocab.bos,
        "eos_token_id": model.vocab.eos,
        "torch_dtype": dtype,
    })
}

/// The directory's files for `model`.
pub fn files(model: &EncodedModel) -> Result<HfFiles> {
    let c = &model.config;
    let (tokenizer, tokenizer_config) =
        tokenizer::write(&model.vocab, c.max_seq_len).context("the vocabulary")?;
    let mut info: HashMap<String, String> = HashMap::new();
    info.insert("format".into(), "pt".into());
    if !model.metadata.is_empty() {
        info.insert(METADATA_KEY.into(), serde_json::to_string(&model.metadata)?);
    }
    let mut stored: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (t, canonical) in model.tensors.iter().zip(canonical_tensors(c)) {
        let (dtype, data) = match t.dtype {
            Dtype::F32 => (StDtype::F32, t.data.clone()),
            Dtype::F16 => (StDtype::F16, t.data.clone()),
            Dtype::BF16 => (StDtype::BF16, t.data.clone()),
            Dtype::Q8_0 | Dtype::Q4_0 => {
                info.insert(
                    format!("{DTYPE_KEY_PREFIX}{}", t.name),
                    t.dtype.name().into(),
                );
                let values = t.values()?;
                (StDtype::F32, encode_values(&t.name, &values, Dtype::F32)?)
            }
        };
        let data = match rope_heads(canonical.role, c.n_heads, c.n_kv_heads) {
            Some(heads) => {
                let row_bytes = data.len() / t.rows_cols().0.max(1);
                permute_rope_rows(&data, row_bytes, heads as usize, true)
            }
            None => data,
        };
        let shape = t.shape.iter().map(|&d| d as usize).collect();
        stored.push((tensor_name(canonical.role), dtype, shape, data));
    }
    let views = stored
        .iter()
        .map(|(name, dtype, shape, data)| {
            Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), data)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow!("safetensors: {e}"))?;
    let safetensors = serialize(views, Some(info)).map_err(|e| anyhow!("safetensors: {e}"))?;
    Ok(HfFiles {
        config: config_json(model),
        tokenizer,
        tokenizer_config,
        safetensors,
    })
}

/// Writes `model` into the directory `dir` (created if needed; the files
/// it writes are replaced atomically, one by one). Returns the bytes written.
pub fn export(model: &EncodedModel, dir: &Path) -> Result<u64> {
    let files = files(model)?;
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("{}: exists and is not a directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0u64;
    let json_files = [
        ("config.json", &files.config),
        ("tokenizer.json", &files.tokenizer),
        ("tokenizer_config.json", &files.tokenizer_config),
    ];
    for (name, value) in json_files {
        let mut text = serde_json::to_vec_pretty(value)?;
        text.push(b'\n');
        write_atomic(&dir.join(name), |w| {
            Ok(std::io::Write::write_all(w, &text)?)
        })?;
        written += text.len() as u64;
    }
    write_atomic(&dir.join("model.safetensors"), |w| {
        Ok(std::io::Write::write_all(w, &files.safetensors)?)
    })?;
    Ok(written + files.safetensors.len() as u64)
}
