//! Kernel dispatch: decides which implementation runs. The definitions live
//! in [`scalar`] (the reference, always compiled); `x86.rs` only accelerates
//! them, and [`Path`] chooses (see `path.rs`). Each accelerated kernel gives
//! the reference's bits, so the choice never changes a result.
//!
//! Every function here has the preconditions of its scalar counterpart.

mod path;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use path::{active_path, Path};

use crate::tensor::Matrix;

/// `out[r] = Σ_c w[r][c] · x[c]`; `out`: `[w.rows]`, `x`: `[w.cols]`.
/// F32, F16 and BF16 weights. See [`scalar::matvec`].
#[inline]
pub fn matvec(out: &mut [f32], w: &Matrix<'_>, x: &[f32]) {
    Path::active().matvec(out, w, x)
}

/// Decodes row `row` of `w` into `out` (`[w.cols]`). See [`scalar::row_to_f32`].
#[inline]
pub fn row_to_f32(w: &Matrix<'_>, row: usize, out: &mut [f32]) {
    scalar::row_to_f32(w, row, out)
}

/// Dot product of two equal-length slices. See [`scalar::dot`].
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    Path::active().dot(a, b)
}

/// `y += a · x`. See [`scalar::axpy`].
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    Path::active().axpy(y, a, x)
}

/// `out = W · x` for a Q8_0 or Q4_0 matrix and activations quantized with
/// [`crate::quant::quantize_activations`]; the bits and errors of
/// [`crate::quant::matvec_quantized`].
#[inline]
pub fn matvec_quantized(
    out: &mut [f32],
    w: &Matrix<'_>,
    xq: &[crate::quant::BlockQ8],
) -> Result<(), crate::Error> {
    Path::active().matvec_quantized(out, w, xq)
}
