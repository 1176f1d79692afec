//! `export`: a checkpoint becomes a .klt model file the engine runs.

use crate::bail;
use crate::checkpoint::{write_atomically, Checkpoint};
use crate::error::{Result, TrainError};
use crate::params::ParamLayout;
use kinglet::format::{sort_pieces, write_model, IoSink, TensorSpec, TokenizerKind, TokenizerSpec};
use kinglet::Dtype;
use std::path::Path;

/// Parses an export dtype: `f32`, `f16`, `bf16`, `q8_0` or `q4_0`.
pub fn parse_dtype(s: &str) -> Result<Dtype> {
    match Dtype::ALL.into_iter().find(|d| d.name() == s) {
        Some(d) => Ok(d),
        None => bail!("unknown --dtype {s:?}: expected f32, f16, bf16, q8_0 or q4_0"),
    }
}

/// The bytes of one tensor in `dtype`, through the engine's one quantizer,
/// so the file holds exactly what quantization-aware training simulated.
fn encode(name: &str, values: &[f32], cols: usize, dtype: Dtype) -> Result<Vec<u8>> {
    let len = dtype
        .row_bytes(cols)
        .map(|row| row * (values.len() / cols.max(1)))
        .ok_or_else(|| {
            TrainError::new(format!(
                "cannot export {name} as {}: rows of {cols} are not whole blocks of 32",
                dtype.name()
            ))
        })?;
    let mut out = vec![0u8; len];
    kinglet::quant::quantize_row(dtype, values, &mut out)
        .map_err(|e| TrainError::new(format!("cannot export {name}: {e}")))?;
    Ok(out)
}

/// The .klt bytes for `checkpoint`.
pub fn model_file_bytes(checkpoint: &Checkpoint, dtype: Dtype) -> Result<Vec<u8>> {
    let layout = ParamLayout::new(&checkpoint.model);
    let encoded: Vec<(Dtype, Vec<u8>)> = layout
        .slots
        .iter()
        .map(|s| {
            let values = &checkpoint.params[s.range()];
            let dtype = if s.is_matrix() { dtype } else { Dtype::F32 };
            let cols = *s.shape.last().unwrap_or(&0);
            Ok((dtype, encode(&s.name, values, cols, dtype)?))
        })
        .collect::<Result<_>>()?;
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
pub fn export(checkpoint: &Checkpoint, out: &Path, dtype: Dtype) -> Result<u64> {
    let bytes = model_file_bytes(checkpoint, dtype)?;
    write_atomically(out, &bytes)?;
    Ok(bytes.len() as u64)
}
