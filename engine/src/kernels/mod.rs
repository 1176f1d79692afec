//! Kernel dispatch: decides which implementation runs. The definitions live
//! in [`scalar`] (the reference, always compiled); `x86.rs` only accelerates
//! them, and [`Path`] chooses (see `path.rs`). Each accelerated kernel gives
//! the reference's bits, so the choice never changes a result.
//!
//! Every function here has the preconditions of its scalar counterpart.

pub mod matmul;
mod path;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use path::{active_path, Path};

use crate::error::Error;
use crate::quant::{self, BlockQ8};
use crate::tensor::Matrix;

/// `out[r] = Σ_c w[r][c] · x[c]`; `out`: `[w.rows]`, `x`: `[w.cols]`.
/// F32, F16 and BF16 weights. See [`scalar::matvec`].
#[inline]
pub fn matvec(out: &mut [f32], w: &Matrix<'_>, x: &[f32]) {
    Path::active().matvec(out, w, x)
}

/// Decodes row `row` of `w` into `out` (`[w.cols]`), any dtype.
#[inline]
pub fn row_to_f32(w: &Matrix<'_>, row: usize, out: &mut [f32]) {
    if w.dtype.is_quantized() {
        // Lengths were checked when the model was opened; should they not
        // match, the row reads as zeros rather than panicking.
        if quant::dequantize_row(w.dtype, w.row(row), out).is_err() {
            out.fill(0.0);
        }
    } else {
        scalar::row_to_f32(w, row, out)
    }
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

/// Quantizes activations into Q8 blocks for the integer kernels; the bits
/// and errors of [`quant::quantize_activations`].
#[inline]
pub fn quantize_activations(x: &[f32], dst: &mut [BlockQ8]) -> Result<(), Error> {
    Path::active().quantize_activations(x, dst)
}

/// Attention scores of a query head against cached keys; see
/// [`scalar::attention_scores`].
#[inline]
pub fn attention_scores(scores: &mut [f32], q: &[f32], keys: &[f32], stride: usize, offset: usize) {
    Path::active().attention_scores(scores, q, keys, stride, offset)
}

/// Attention-weighted sum of cached values; see [`scalar::weighted_sum`].
#[inline]
pub fn weighted_sum(
    out: &mut [f32],
    weights: &[f32],
    values: &[f32],
    stride: usize,
    offset: usize,
) {
    Path::active().weighted_sum(out, weights, values, stride, offset)
}

/// `out = W · x` for a Q8_0 or Q4_0 matrix and activations quantized with
/// [`crate::quant::quantize_activations`]; the bits and errors of
/// [`crate::quant::matvec_quantized`].
#[inline]
pub fn matvec_quantized(out: &mut [f32], w: &Matrix<'_>, xq: &[BlockQ8]) -> Result<(), Error> {
    Path::active().matvec_quantized(out, w, xq)
}

/// `out[r·n + t] = Σ_c w[r][c] · x[t·cols + c]`, F32, F16 and BF16 weights;
/// `out`: `[w.rows × n]`, `x`: `[n × w.cols]`. The bits of
/// [`matmul::matmul`] (and of [`matvec`] per position).
#[inline]
pub fn matmul(out: &mut [f32], w: &Matrix<'_>, x: &[f32], n: usize) {
    Path::active().matmul(out, w, x, n)
}

/// Q8_0 / Q4_0 weights times `n` positions of quantized activations; the
/// bits and errors of [`matmul::matmul_quantized`].
#[inline]
pub fn matmul_quantized(
    out: &mut [f32],
    w: &Matrix<'_>,
    xq: &[BlockQ8],
    n: usize,
) -> Result<(), Error> {
    Path::active().matmul_quantized(out, w, xq, n)
}

/// Floats per [`BlockQ8`]: sessions keep activation blocks in their `f32`
/// buffer, nine floats a block.
pub const FLOATS_PER_BLOCK_Q8: usize = core::mem::size_of::<BlockQ8>() / 4;

const _: () = assert!(core::mem::size_of::<BlockQ8>() == 4 * FLOATS_PER_BLOCK_Q8);
const _: () = assert!(core::mem::align_of::<BlockQ8>() <= core::mem::align_of::<f32>());

/// Views a region of `f32` scratch as Q8 activation blocks, so a session
/// needs only one caller buffer: `floats.len() / 9` blocks (any remainder is
/// left out).
#[allow(unsafe_code)]
pub fn blocks_in_floats(floats: &mut [f32]) -> &mut [BlockQ8] {
    let n = floats.len() / FLOATS_PER_BLOCK_Q8;
    // SAFETY: `BlockQ8` is `repr(C)` { f32, [i8; 32] }: 36 bytes with no
    // padding (asserted above), alignment 4 ≤ the alignment of the f32 slice,
    // and every bit pattern is a valid f32 and i8. The `n` blocks span
    // `36·n ≤ 4·floats.len()` bytes of the slice, and the exclusive borrow of
    // `floats` moves to the returned slice for the same lifetime.
    unsafe { core::slice::from_raw_parts_mut(floats.as_mut_ptr().cast::<BlockQ8>(), n) }
}
