//! `export`: a checkpoint becomes a .klt model file the engine runs.

use crate::bail;
use crate::checkpoint::{write_atomically, Checkpoint};
use crate::error::{Result, TrainError};
use crate::params::ParamLayout;
use kinglet::format::TokenizerKind;
use kinglet::tensor::BLOCK_LEN;
use kinglet::Dtype;
use kinglet_tools::{DtypePlan, OwnedModel, OwnedTensor, OwnedVocab};
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
    let layout = ParamLayout::new(&checkpoint.model);
    let tensors = layout
        .slots
        .iter()
        .map(|s| OwnedTensor {
            name: s.name.clone(),
            shape: s.shape.iter().map(|&d| d as u32).collect(),
            values: checkpoint.params[s.range()].to_vec(),
        })
        .collect();
    let chars = checkpoint.tokenizer.chars();
    let vocab = OwnedVocab {
        kind: TokenizerKind::Char,
        bos: None,
        eos: None,
        pieces: chars.iter().map(|c| c.to_string().into_bytes()).collect(),
        scores: vec![0.0; chars.len()],
    };
    let mut metadata = vec![("training.steps".to_string(), checkpoint.step.to_string())];
    if let Some(v) = checkpoint.val_loss {
        metadata.push(("training.val_loss".to_string(), format!("{v:.6}")));
    }
    metadata.push((
        "corpus.sha256".to_string(),
        checkpoint.corpus_sha256.clone(),
    ));
    metadata.push(("source".to_string(), "kinglet-train".to_string()));
    OwnedModel {
        config: checkpoint.model.to_engine(),
        vocab,
        tensors,
        metadata,
    }
}

/// The .klt bytes for `checkpoint`: matrices in `dtype` through the engine's
/// one quantizer (so the file holds exactly what quantization-aware training
/// simulated), norm gains in F32. A quantized dtype needs whole blocks of 32
/// in every matrix row; the trainer refuses rather than fall back to F16.
pub fn model_file_bytes(checkpoint: &Checkpoint, dtype: Dtype) -> Result<Vec<u8>> {
    let model = owned_model(checkpoint);
    let plan = DtypePlan::from(dtype);
    if let Some(t) = model.tensors.iter().find(|t| plan.dtype_of(t).1.is_some()) {
        bail!(
            Export,
            "cannot export {} as {}: rows of {} are not whole blocks of {BLOCK_LEN}",
            t.name,
            dtype.name(),
            t.shape[1]
        );
    }
    let mut bytes = Vec::new();
    model
        .write_klt(plan, &mut bytes)
        .map_err(|e| TrainError::Export(format!("cannot export: {e:#}")))?;
    Ok(bytes)
}

/// Writes the .klt for `checkpoint` to `out` atomically; returns the line
/// `kinglet convert` prints for what it wrote.
pub fn export(checkpoint: &Checkpoint, out: &Path, dtype: Dtype) -> Result<String> {
    let bytes = model_file_bytes(checkpoint, dtype)?;
    write_atomically(out, &bytes)?;
    Ok(owned_model(checkpoint).written(out, dtype.into(), bytes.len() as u64))
}
