//! `export`: a checkpoint becomes a .klt model file the engine runs.

use crate::bail;
use crate::checkpoint::{write_atomically, Checkpoint};
use crate::error::{Result, TrainError};
use crate::params::ParamLayout;
use kinglet::format::{sort_pieces, write_model, IoSink, TensorSpec, TokenizerKind, TokenizerSpec};
use kinglet::Dtype;
use std::path::Path;

/// Element types `export` writes (norm gains are always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportDtype {
    /// 4 bytes per weight, exact.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl ExportDtype {
    /// Parses `f32`, `f16` or `bf16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(ExportDtype::F32),
            "f16" => Ok(ExportDtype::F16),
            "bf16" => Ok(ExportDtype::Bf16),
            other => bail!("unknown --dtype {other:?}: expected f32, f16 or bf16"),
        }
    }
}

fn encode(values: &[f32], dtype: ExportDtype) -> (Dtype, Vec<u8>) {
    match dtype {
        ExportDtype::F32 => (
            Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        ExportDtype::F16 => (
            Dtype::F16,
            values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
        ExportDtype::Bf16 => (
            Dtype::BF16,
            values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        ),
    }
}

/// The .klt bytes for `checkpoint`.
pub fn model_file_bytes(checkpoint: &Checkpoint, dtype: ExportDtype) -> Result<Vec<u8>> {
    let layout = ParamLayout::new(&checkpoint.model);
    let encoded: Vec<(Dtype, Vec<u8>)> = layout
        .slots
        .iter()
        .map(|s| {
            let values = &checkpoint.params[s.range()];
            if s.is_matrix() {
                encode(values, dtype)
            } else {
                encode(values, ExportDtype::F32)
            }
        })
        .collect();
    let shapes: Vec<Vec<u32>> = layout
        .slots
        .iter()
        .map(|s| s.shape.iter().map(|&d| d as u32).collect())
        .collect();
    let tensors: Vec<TensorSpec<'_>> = layout
        .slots
        .iter()
        .zip(&encoded)
        .zip(&shapes)
        .map(|((s, (dtype, data)), shape)| TensorSpec {
            name: &s.name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    let piece_strings: Vec<String> = checkpoint
        .tokenizer
        .chars()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let pieces: Vec<&[u8]> = piece_strings.iter().map(|p| p.as_bytes()).collect();
    let scores = vec![0.0f32; pieces.len()];
    let mut sorted = vec![0u32; pieces.len()];
    sort_pieces(&pieces, &mut sorted);
    let tokenizer = TokenizerSpec {
        kind: TokenizerKind::Char,
        bos: None,
        eos: None,
        pieces: &pieces,
        scores: &scores,
        sorted: &sorted,
    };
    let steps = checkpoint.step.to_string();
    let val_loss = checkpoint.val_loss.map(|v| format!("{v:.6}"));
    let mut metadata: Vec<(&str, &str)> = vec![("training.steps", &steps)];
    if let Some(v) = &val_loss {
        metadata.push(("training.val_loss", v));
    }
    metadata.push(("corpus.sha256", &checkpoint.corpus_sha256));
    metadata.push(("source", "kinglet-train"));
    let mut sink = IoSink(Vec::new());
    write_model(
        &mut sink,
        &checkpoint.model.to_engine(),
        &tokenizer,
        &tensors,
        &metadata,
    )
    .map_err(|e| TrainError::new(format!("cannot export: {e}")))?;
    Ok(sink.0)
}

/// Writes the .klt for `checkpoint` to `out` atomically; returns its size.
pub fn export(checkpoint: &Checkpoint, out: &Path, dtype: ExportDtype) -> Result<u64> {
    let bytes = model_file_bytes(checkpoint, dtype)?;
    write_atomically(out, &bytes)?;
    Ok(bytes.len() as u64)
}
