//! Reading a Hugging Face Llama directory: `config.json`, one or more
//! `*.safetensors` files (parsed by the `safetensors` crate, which checks
//! the header, offsets and sizes), `tokenizer.json` and, if present,
//! `tokenizer_config.json`. F32, F16 and BF16 tensors keep their bytes
//! (`q_proj` and `k_proj` rows go back to kinglet's order); a tensor a
//! kinglet export stored dequantized is quantized back to its blocks.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use kinglet::{canonical_tensors, Config, Dtype};
use safetensors::{Dtype as StDtype, SafeTensors};
use serde_json::Value;

use super::{
    permute_rope_rows, rope_heads, tensor_name, tokenizer, DTYPE_KEY_PREFIX, METADATA_KEY,
};
use crate::io::read_file;
use crate::model::{encode_values, EncodedModel, EncodedTensor};

/// A `u32` field of `config.json`.
fn field(config: &Value, key: &str) -> Result<Option<u32>> {
    match &config[key] {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| anyhow!("config.json: {key} is {v}, not a count")),
    }
}

fn required(config: &Value, key: &str) -> Result<u32> {
    field(config, key)?.ok_or_else(|| anyhow!("config.json has no {key}"))
}

/// A float field of `config.json`, as f32.
fn float(config: &Value, key: &str) -> Result<Option<f32>> {
    match &config[key] {
        Value::Null => Ok(None),
        v => v
            .as_f64()
            .map(|f| Some(f as f32))
            .ok_or_else(|| anyhow!("config.json: {key} is {v}, not a number")),
    }
}

/// The model's hyperparameters from `config.json`, refusing what kinglet's
/// Llama does not compute.
fn config(c: &Value) -> Result<Config> {
    let is_llama = c["model_type"] == "llama"
        || c["architectures"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "LlamaForCausalLM"));
    if !is_llama {
        bail!(
            "config.json describes a {} model: kinglet reads LlamaForCausalLM",
            c["model_type"]
        );
    }
    let n_heads = required(c, "num_attention_heads")?;
    let rope = &c["rope_parameters"];
    let config = Config {
        dim: required(c, "hidden_size")?,
        hidden_dim: required(c, "intermediate_size")?,
        n_layers: required(c, "num_hidden_layers")?,
        n_heads,
        n_kv_heads: field(c, "num_key_value_heads")?.unwrap_or(n_heads),
        vocab_size: required(c, "vocab_size")?,
        max_seq_len: required(c, "max_position_embeddings")?,
        rope_theta: match float(c, "rope_theta")? {
            Some(t) => t,
            None => float(rope, "rope_theta")?.unwrap_or(10000.0),
        },
        norm_eps: float(c, "rms_norm_eps")?.unwrap_or(1e-6),
        tied_classifier: c["tie_word_embeddings"].as_bool().unwrap_or(false),
    };
    config
        .validate()
        .with_context(|| format!("config.json's hyperparameters ({config:?})"))?;
    if let Some(h) = field(c, "head_dim")? {
        if h as usize != config.head_dim() {
            bail!("config.json: head_dim {h} is not hidden_size / num_attention_heads");
        }
    }
    match c["hidden_act"].as_str() {
        None | Some("silu") => {}
        Some(a) => bail!("config.json: hidden_act {a:?} (kinglet computes SiLU)"),
    }
    for key in ["attention_bias", "mlp_bias"] {
        if c[key].as_bool() == Some(true) {
            bail!("config.json: {key} is true (kinglet's Llama has no biases)");
        }
    }
    let scaling = [&c["rope_scaling"], &rope["rope_type"]];
    if scaling
        .iter()
        .any(|s| !(s.is_null() || **s == "default" || s["rope_type"] == "default"))
    {
        bail!(
            "config.json: RoPE scaling ({}) is not supported",
            c["rope_scaling"]
        );
    }
    Ok(config)
}

/// Imports a Llama model from the contents of its files. `shards` are the
/// `*.safetensors` files (a tensor may be in any of them, once).
pub fn import_files(
    config_json: &[u8],
    tokenizer_json: &[u8],
    tokenizer_config: Option<&[u8]>,
    shards: &[&[u8]],
) -> Result<EncodedModel> {
    let c: Value = serde_json::from_slice(config_json).context("config.json")?;
    let config = config(&c)?;
    let vocab = tokenizer::read(tokenizer_json, tokenizer_config, &c, config.vocab_size)?;

    let mut tensors_by_name = HashMap::new();
    let mut info: HashMap<String, String> = HashMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let what = || format!("safetensors file {}", i + 1);
        let (_, meta) =
            SafeTensors::read_metadata(shard).map_err(|e| anyhow!("{}: {e}", what()))?;
        if let Some(m) = meta.metadata() {
            info.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let st = SafeTensors::deserialize(shard).map_err(|e| anyhow!("{}: {e}", what()))?;
        for (name, view) in st.iter() {
            if tensors_by_name.insert(name.to_string(), view).is_some() {
                bail!("tensor {name} is stored twice");
            }
        }
    }
    let canonical: Vec<_> = canonical_tensors(&config).collect();
    let wanted: Vec<String> = canonical.iter().map(|t| tensor_name(t.role)).collect();
    if let Some(extra) = tensors_by_name.keys().find(|n| !wanted.contains(n)) {
        if !(config.tied_classifier && extra == "lm_head.weight") {
            bail!("tensor {extra} is not part of a Llama model kinglet runs");
        }
    }
    let mut tensors = Vec::with_capacity(canonical.len());
    for (t, name) in canonical.iter().zip(&wanted) {
        let view = tensors_by_name
            .get(name)
            .ok_or_else(|| anyhow!("tensor {name} is missing"))?;
        let shape: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
        if view.shape() != shape {
            bail!(
                "tensor {name} has the shape {:?}, expected {shape:?}",
                view.shape()
            );
        }
        let dtype = match view.dtype() {
            StDtype::F32 => Dtype::F32,
            StDtype::F16 => Dtype::F16,
            StDtype::BF16 => Dtype::BF16,
            d => bail!("tensor {name} is {d:?}: kinglet reads F32, F16 and BF16 safetensors"),
        };
        let data = match rope_heads(t.role, config.n_heads, config.n_kv_heads) {
            Some(heads) => {
                let row_bytes = view.data().len() / t.shape[0] as usize;
                permute_rope_rows(view.data(), row_bytes, heads as usize, false)
            }
            None => view.data().to_vec(),
        };
        let mut tensor = EncodedTensor {
            name: t.role.to_string(),
            shape: t.dims().to_vec(),
            dtype,
            data,
        };
        let stored_as = info.get(&format!("{DTYPE_KEY_PREFIX}{}", tensor.name));
        let wanted_dtype = match stored_as {
            Some(d) => Dtype::ALL
                .into_iter()
                .find(|x| x.name() == d)
                .ok_or_else(|| anyhow!("{DTYPE_KEY_PREFIX}{}: unknown dtype {d:?}", tensor.name))?,
            None if t.role.is_norm() => Dtype::F32,
            None => dtype,
        };
        if wanted_dtype != dtype {
            let values = tensor.values()?;
            tensor.data = encode_values(&tensor.name, &values, wanted_dtype)?;
            tensor.dtype = wanted_dtype;
        }
        tensors.push(tensor);
    }
    let metadata: Vec<(String, String)> = match info.get(METADATA_KEY) {
        Some(m) => serde_json::from_str(m)
            .with_context(|| format!("safetensors metadata {METADATA_KEY}"))?,
        None => Vec::new(),
    };
    Ok(EncodedModel {
        config,
        vocab,
        tensors,
        metadata,
    })
}

/// Whether `dir` looks like a Hugging Face model directory.
pub fn is_model_dir(dir: &Path) -> bool {
    dir.join("config.json").is_file()
}

/// Imports the Hugging Face Llama directory `dir`.
pub fn import_dir(dir: &Path) -> Result<EncodedModel> {
    let config = read_file(&dir.join("config.json"))?;
    let tokenizer = read_file(&dir.join("tokenizer.json"))?;
    let tokenizer_config = dir.join("tokenizer_config.json");
    let tokenizer_config = match tokenizer_config.is_file() {
        true => Some(read_file(&tokenizer_config)?),
        false => None,
    };
    let mut shard_paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    shard_paths.sort();
    if shard_paths.is_empty() {
        bail!("{}: no *.safetensors file", dir.display());
    }
    let shards: Vec<Vec<u8>> = shard_paths
        .iter()
        .map(|p| read_file(p))
        .collect::<Result<_>>()?;
    let shards: Vec<&[u8]> = shards.iter().map(|s| s.as_slice()).collect();
    import_files(&config, &tokenizer, tokenizer_config.as_deref(), &shards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::write::files;

    fn tiny() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let config = crate::synth::tiny_config(false);
        let model = crate::synth::synth_model(&config, 3)
            .unwrap()
            .encode(Dtype::Q4_0)
            .unwrap();
        let f = files(&model).unwrap();
        let back = import_files(
            f.config.to_string().as_bytes(),
            f.tokenizer.to_string().as_bytes(),
            Some(f.tokenizer_config.to_string().as_bytes()),
            &[&f.safetensors],
        )
        .unwrap();
        assert_eq!(back.tensors, model.tensors);
        (
            f.config.to_string().into_bytes(),
            f.tokenizer.to_string().into_bytes(),
            f.safetensors,
        )
    }

    fn err(config: &[u8], tokenizer: &[u8], st: &[u8]) -> String {
        format!(
            "{:#}",
            import_files(config, tokenizer, None, &[st]).unwrap_err()
        )
    }

    fn replaced(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let s = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(s.contains(from), "{from}");
        s.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn refuses_what_kinglet_does_not_run_naming_it() {
        let (c, t, st) = tiny();
        let gpt2 = replaced(
            &replaced(&c, "\"llama\"", "\"gpt2\""),
            "LlamaForCausalLM",
            "GPT2LMHeadModel",
        );
        let e = err(&gpt2, &t, &st);
        assert!(e.contains("LlamaForCausalLM"), "{e}");
        let e = err(&replaced(&c, "\"silu\"", "\"gelu\""), &t, &st);
        assert!(e.contains("hidden_act \"gelu\""), "{e}");
        let e = err(
            &replaced(
                &c,
                "\"rope_scaling\":null",
                "\"rope_scaling\":{\"rope_type\":\"yarn\"}",
            ),
            &t,
            &st,
        );
        assert!(e.contains("RoPE scaling"), "{e}");
        let e = err(
            &replaced(&c, "\"num_attention_heads\":2", "\"num_attention_heads\":3"),
            &t,
            &st,
        );
        assert!(e.contains("n_heads"), "{e}");
        let e = err(
            &c,
            &replaced(&t, "\"byte_fallback\":true", "\"byte_fallback\":false"),
            &st,
        );
        assert!(e.contains("without byte fallback"), "{e}");
        let e = err(&c, &t, &st[..st.len() - 1]);
        assert!(e.contains("safetensors file 1"), "{e}");
        let e = err(&c, &t, b"\xff\xff\xff\xff\xff\xff\xff\xff{}");
        assert!(e.contains("safetensors file 1"), "{e}");
        let e = err(b"{not json", &t, &st);
        assert!(e.contains("config.json"), "{e}");
    }
}
