//! `export`: a checkpoint becomes a model file — .klt for the engine, GGUF
//! for llama.cpp, a Hugging Face directory for transformers — written by
//! the tools' one exporter, the code `kinglet convert` writes with.

use crate::bail;
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::data::CharTokenizer;
use crate::error::{Result, TrainError};
use crate::params::ParamLayout;
use kinglet::tensor::BLOCK_LEN;
use kinglet::Dtype;
use kinglet_tools::interop::{save, Format};
use kinglet_tools::{DtypePlan, EncodedModel, OwnedModel, OwnedTensor, OwnedVocab};
use std::path::Path;

/// Parses an export dtype: `f32`, `f16`, `bf16`, `q8_0` or `q4_0`.
pub fn parse_dtype(s: &str) -> Result<Dtype> {
    match Dtype::ALL.into_iter().find(|d| d.name() == s) {
        Some(d) => Ok(d),
        None => bail!(
            Settings,
            "unknown --dtype {s:?}: expected f32, f16, bf16, q8_0 or q4_0"
        ),
    }
}

/// `checkpoint` as the tools' in-memory model: canonical tensors, the
/// character vocabulary, and the training facts as metadata.
pub fn owned_model(checkpoint: &Checkpoint) -> OwnedModel {
    let mut model = parameters_model(&checkpoint.model, &checkpoint.params, &checkpoint.tokenizer);
    let mut metadata = vec![("training.steps".to_string(), checkpoint.step.to_string())];
    if let Some(v) = checkpoint.val_loss {
        metadata.push(("training.val_loss".to_string(), format!("{v:.6}")));
    }
    metadata.push((
        "corpus.sha256".to_string(),
        checkpoint.corpus_sha256.clone(),
    ));
    metadata.push(("source".to_string(), "kinglet-train".to_string()));
    model.metadata = metadata;
    model
}

/// The model `params` holds (laid out for `config`) as the tools' in-memory
/// model: canonical tensors and the character vocabulary, no metadata.
pub fn parameters_model(
    config: &ModelConfig,
    params: &[f32],
    tokenizer: &CharTokenizer,
) -> OwnedModel {
    let layout = ParamLayout::new(config);
    let tensors = layout
        .slots
        .iter()
        .map(|s| OwnedTensor {
            name: s.name.clone(),
            shape: s.shape.iter().map(|&d| d as u32).collect(),
            values: params[s.range()].to_vec(),
        })
        .collect();
    OwnedModel {
        config: config.to_engine(),
        // The very vocabulary trained with: its section is the file's.
        vocab: OwnedVocab::from_vocab(&tokenizer.vocab()),
        tensors,
        metadata: Vec::new(),
    }
}

/// `checkpoint`'s tensors encoded: matrices in `dtype` through the engine's
/// one quantizer (so the file holds exactly what quantization-aware training
/// simulated), norm gains in F32. A quantized dtype needs whole blocks of 32
/// in every matrix row; the trainer refuses rather than fall back to F16.
pub fn encoded_model(checkpoint: &Checkpoint, dtype: Dtype) -> Result<EncodedModel> {
    let model = owned_model(checkpoint);
    let plan = DtypePlan::from(dtype);
    if let Some(t) = model
        .tensors
        .iter()
        .find(|t| plan.dtype_of(&t.name, &t.shape).1.is_some())
    {
        bail!(
            Export,
            "cannot export {} as {}: rows of {} are not whole blocks of {BLOCK_LEN}",
            t.name,
            dtype.name(),
            t.shape[1]
        );
    }
    model
        .encode(plan)
        .map_err(|e| TrainError::Export(format!("cannot export: {e:#}")))
}

/// The .klt bytes for `checkpoint` (see [`encoded_model`]).
pub fn model_file_bytes(checkpoint: &Checkpoint, dtype: Dtype) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    encoded_model(checkpoint, dtype)?
        .write_klt(&mut bytes)
        .map_err(|e| TrainError::Export(format!("cannot export: {e:#}")))?;
    Ok(bytes)
}

/// Writes `checkpoint` to `out` in `format` (atomically; `hf` writes a
/// directory); returns the line `kinglet convert` prints for what it wrote.
pub fn export(checkpoint: &Checkpoint, out: &Path, dtype: Dtype, format: Format) -> Result<String> {
    let model = encoded_model(checkpoint, dtype)?;
    let bytes = save(&model, out, format).map_err(|e| TrainError::Export(format!("{e:#}")))?;
    Ok(model.written(out, format, bytes))
}
