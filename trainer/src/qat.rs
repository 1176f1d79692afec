//! Quantization-aware training: the forward pass sees the weights (and,
//! optionally, the matvec inputs) exactly as the engine will after export,
//! rounded by the engine's own quantizer; gradients pass straight through.

use crate::bail;
use crate::config::ModelConfig;
use crate::error::{Result, TrainError};
use crate::params::ParamLayout;
use kinglet::quant::{fake_quantize, fake_quantize_activations};
use kinglet::tensor::BLOCK_LEN;
use kinglet::Dtype;
use rayon::prelude::*;

/// What a QAT run simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qat {
    /// The weight dtype the model will be exported as: Q8_0 or Q4_0.
    pub dtype: Dtype,
    /// Optimizer steps taken in float before fake quantization starts.
    pub start: u64,
    /// Also round the inputs of every quantized matvec to 8-bit blocks, as
    /// the engine's integer kernels do.
    pub activations: bool,
}

impl Qat {
    /// Parses a `--qat` dtype: `q8_0` or `q4_0`.
    pub fn parse_dtype(s: &str) -> Result<Dtype> {
        match s {
            "q8_0" => Ok(Dtype::Q8_0),
            "q4_0" => Ok(Dtype::Q4_0),
            _ => bail!(Settings, "unknown --qat {s:?}: expected q8_0 or q4_0"),
        }
    }

    /// Whether the optimizer step that follows `steps_taken` steps is fake-quantized.
    pub fn active_at(&self, steps_taken: u64) -> bool {
        steps_taken >= self.start
    }

    /// Refuses shapes whose matrix rows are not whole blocks (the export
    /// would refuse them too).
    pub fn check_model(&self, model: &ModelConfig) -> Result<()> {
        if !matches!(self.dtype, Dtype::Q8_0 | Dtype::Q4_0) {
            bail!(
                Settings,
                "QAT dtype {} is not supported: q8_0 or q4_0",
                self.dtype.name()
            );
        }
        for (value, flag) in [(model.dim, "--dim"), (model.hidden_dim, "--hidden")] {
            if !value.is_multiple_of(BLOCK_LEN) {
                bail!(
                    Settings,
                    "--qat {} needs {flag} to be a multiple of {BLOCK_LEN} (got {value})",
                    self.dtype.name()
                );
            }
        }
        Ok(())
    }
}

/// Copies `params` into `shadow` with every matrix (exactly the tensors
/// `export` quantizes) fake-quantized row by row as `dtype`; norm gains stay f32.
/// params, shadow: [layout.total].
pub fn quantize_weights_into(
    layout: &ParamLayout,
    params: &[f32],
    shadow: &mut Vec<f32>,
    dtype: Dtype,
) -> Result<()> {
    shadow.clear();
    shadow.extend_from_slice(params);
    for slot in layout.slots.iter().filter(|s| s.is_matrix()) {
        let cols = slot.shape[1];
        shadow[slot.range()]
            .par_chunks_mut(cols)
            .try_for_each(|row| fake_quantize(dtype, row))
            .map_err(|e| TrainError::Diverged(format!("cannot quantize {}: {e}", slot.name)))?;
    }
    Ok(())
}

/// `params` with every matrix fake-quantized as `dtype`. [layout.total]
pub fn quantized_weights(layout: &ParamLayout, params: &[f32], dtype: Dtype) -> Result<Vec<f32>> {
    let mut shadow = Vec::with_capacity(params.len());
    quantize_weights_into(layout, params, &mut shadow, dtype)?;
    Ok(shadow)
}

/// Rounds each position's vector of `x` to Q8 blocks of 32, as the engine
/// does before a quantized matvec. Rows are whole blocks, so one pass over
/// all blocks is the same as one per row. A NaN or infinite value leaves
/// its chunk unrounded: the loss is then not finite and the trainer stops.
/// x: [n, width], width a multiple of 32.
pub fn quantize_activations(x: &mut [f32]) {
    for chunk in x.chunks_mut(64 * BLOCK_LEN) {
        let _ = fake_quantize_activations(chunk);
    }
}
