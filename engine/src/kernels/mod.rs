//! Kernel dispatch: decides which implementation runs. The definitions live
//! in [`scalar`] (the reference, always compiled); architecture files added
//! later only accelerate them and are tested against it.
//!
//! Every function here has the preconditions of its scalar counterpart.

pub mod scalar;

use crate::tensor::Matrix;

/// `out[r] = Σ_c w[r][c] · x[c]`; `out`: `[w.rows]`, `x`: `[w.cols]`.
/// F32, F16 and BF16 weights. See [`scalar::matvec`].
#[inline]
pub fn matvec(out: &mut [f32], w: &Matrix<'_>, x: &[f32]) {
    scalar::matvec(out, w, x)
}

/// Decodes row `row` of `w` into `out` (`[w.cols]`). See [`scalar::row_to_f32`].
#[inline]
pub fn row_to_f32(w: &Matrix<'_>, row: usize, out: &mut [f32]) {
    scalar::row_to_f32(w, row, out)
}

/// Dot product of two equal-length slices. See [`scalar::dot`].
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    scalar::dot(a, b)
}

/// `y += a · x`. See [`scalar::axpy`].
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    scalar::axpy(y, a, x)
}
