//! The inference kernels: matrix products, attention's inner loops,
//! softmax's exponentials, SwiGLU's gate and the quantization of
//! activations.
//!
//! - `reference.rs` defines every kernel (and is the portable path);
//! - `avx2.rs` and `avx512.rs` hold only intrinsics, with the same function
//!   names, each reproducing the reference bit for bit; `avxvnni.rs` is the
//!   AVX2 path with its quantized kernels compiled for AVX-VNNI;
//! - `path.rs` chooses a path and dispatches, one line per kernel;
//! - `shapes.rs` checks the arguments once, into types the kernels rely on.
//!
//! The functions here run the active path ([`Path::active`]).

/// Reference kernels whose bits do not depend on the vector width (each
/// element's operations are its own, or a fixed order the compiler keeps),
/// compiled inside a path's target features so that they vectorize at its
/// width: `pub unsafe fn name(args) { reference::name(args) }`.
#[cfg(target_arch = "x86_64")]
macro_rules! reference_at_width {
    ($features:literal: $(fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        #[doc = concat!("[`reference::", stringify!($name), "`], compiled for this path.")]
        ///
        /// # Safety
        /// The path's features are available.
        #[target_feature(enable = $features)]
        pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
            reference::$name($($arg),*)
        }
    )*};
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_packed;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avxvnni;
pub mod packed;
mod path;
pub mod reference;
pub mod shapes;

pub use path::{active_path, Path};
pub use shapes::{HeadRun, QueryBlock};

use crate::error::Error;
use crate::quant::{self, BlockQ8};
use crate::tensor::Matrix;

/// `out[r] = Σ_c w[r][c] · x[c]`; `out`: `[w.rows]`, `x`: `[w.cols]`.
/// F32, F16 and BF16 weights. See [`Path::matvec`].
#[inline]
pub fn matvec(out: &mut [f32], w: &Matrix<'_>, x: &[f32]) -> Result<(), Error> {
    Path::active().matvec(out, w, x)
}

/// Decodes row `row` of `w` into `out` (`[w.cols]`), any dtype: the
/// embedding lookup.
///
/// Errors: [`Error::InvalidInput`] when `row` is out of range or `out` is
/// not `w.cols` long.
pub fn row_to_f32(w: &Matrix<'_>, row: usize, out: &mut [f32]) -> Result<(), Error> {
    if row >= w.rows {
        return Err(Error::InvalidInput {
            reason: "row_to_f32: row out of range",
        });
    }
    quant::dequantize_row(w.dtype, w.row(row), out)
}

/// CRC32C's running remainder after `bytes`; see
/// [`reference::crc32c_update`]. A model file's sections are checked with
/// it at load: on a Zen 4, `kinglet verify` of a 110M-shaped q8_0 file
/// (117 MB) took 0.28–0.41 s with the table and 0.04 s with SSE 4.2.
#[inline]
pub fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    Path::active().crc32c_update(crc, bytes)
}

/// Dot product over the common length. See [`reference::dot`].
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    Path::active().dot(a, b)
}

/// `y += a · x` over the common length. See [`reference::axpy`].
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    Path::active().axpy(y, a, x)
}

/// `x[i] = exp(x[i] − shift)`, returning their sum; see
/// [`reference::exp_and_sum`].
#[inline]
pub fn exp_and_sum(x: &mut [f32], shift: f32) -> f32 {
    Path::active().exp_and_sum(x, shift)
}

/// RoPE on every head of `v`; see [`reference::rope`].
#[inline]
pub fn rope(v: &mut [f32], rotations: &[f32]) {
    Path::active().rope(v, rotations)
}

/// `x += y` over the common length; see [`reference::add_assign`].
#[inline]
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    Path::active().add_assign(x, y)
}

/// `x[i] /= d` for every element; see [`reference::divide`].
#[inline]
pub fn divide(x: &mut [f32], d: f32) {
    Path::active().divide(x, d)
}

/// RMSNorm's sums of squares of 16 rows; see
/// [`Path::sum_of_squares_rows`].
#[inline]
pub fn sum_of_squares_rows(x: &[f32], dim: usize) -> Result<[f32; reference::NORM_ROWS], Error> {
    Path::active().sum_of_squares_rows(x, dim)
}

/// SwiGLU's gate over the common length; see [`reference::silu_mul`].
#[inline]
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    Path::active().silu_mul(gate, up)
}

/// Quantizes activations into Q8 blocks for the integer kernels; the bits
/// and errors of [`quant::quantize_activations`].
#[inline]
pub fn quantize_activations(x: &[f32], dst: &mut [BlockQ8]) -> Result<(), Error> {
    Path::active().quantize_activations(x, dst)
}

/// Attention scores of a query head against cached keys; see
/// [`Path::attention_scores`].
#[inline]
pub fn attention_scores(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    stride: usize,
    offset: usize,
) -> Result<(), Error> {
    Path::active().attention_scores(scores, q, keys, stride, offset)
}

/// Attention-weighted sum of cached values; see [`Path::weighted_sum`].
#[inline]
pub fn weighted_sum(
    out: &mut [f32],
    weights: &[f32],
    values: &[f32],
    stride: usize,
    offset: usize,
) -> Result<(), Error> {
    Path::active().weighted_sum(out, weights, values, stride, offset)
}

/// Attention scores of a run of query heads; see
/// [`Path::attention_scores_heads`].
#[inline]
pub fn attention_scores_heads(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    run: HeadRun,
) -> Result<(), Error> {
    Path::active().attention_scores_heads(scores, q, keys, run)
}

/// Attention-weighted sums of a run of query heads; see
/// [`Path::weighted_sum_heads`].
#[inline]
pub fn weighted_sum_heads(
    out: &mut [f32],
    weights: &[f32],
    values: &[f32],
    run: HeadRun,
) -> Result<(), Error> {
    Path::active().weighted_sum_heads(out, weights, values, run)
}

/// Attention scores of a chunk's queries against one head's block of
/// keys; see [`Path::attention_scores_queries`].
#[inline]
pub fn attention_scores_queries(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    block: QueryBlock,
) -> Result<(), Error> {
    Path::active().attention_scores_queries(scores, q, keys, block)
}

/// Attention-weighted sums of a chunk's queries over one head's block of
/// values, added to their outputs; see [`Path::add_weighted_queries`].
#[inline]
pub fn add_weighted_queries(
    out: &mut [f32],
    weights: &[f32],
    values: &[f32],
    block: QueryBlock,
) -> Result<(), Error> {
    Path::active().add_weighted_queries(out, weights, values, block)
}

/// Attention-weighted sums of a run of query heads added to `out`; see
/// [`Path::add_weighted_heads`].
#[inline]
pub fn add_weighted_heads(
    out: &mut [f32],
    weights: &[f32],
    values: &[f32],
    run: HeadRun,
) -> Result<(), Error> {
    Path::active().add_weighted_heads(out, weights, values, run)
}

/// `out = W · x` for a Q8_0 or Q4_0 matrix and activations quantized with
/// [`quant::quantize_activations`]; see [`Path::matvec_quantized`].
#[inline]
pub fn matvec_quantized(out: &mut [f32], w: &Matrix<'_>, xq: &[BlockQ8]) -> Result<(), Error> {
    Path::active().matvec_quantized(out, w, xq)
}

/// [`matvec_quantized`] for a matrix in the packed layout (the same bits);
/// see [`Path::matvec_packed`].
#[inline]
pub fn matvec_packed(
    out: &mut [f32],
    w: &packed::PackedMatrix<'_>,
    xq: &[BlockQ8],
) -> Result<(), Error> {
    Path::active().matvec_packed(out, w, xq)
}

/// [`matmul_quantized`] for a matrix in the packed layout (the same bits);
/// see [`Path::matmul_packed`].
#[inline]
pub fn matmul_packed(
    out: &mut [f32],
    w: &packed::PackedMatrix<'_>,
    xq: &[BlockQ8],
    n: usize,
) -> Result<(), Error> {
    Path::active().matmul_packed(out, w, xq, n)
}

/// F32, F16 and BF16 weights times `n` positions; see [`Path::matmul`].
#[inline]
pub fn matmul(out: &mut [f32], w: &Matrix<'_>, x: &[f32], n: usize) -> Result<(), Error> {
    Path::active().matmul(out, w, x, n)
}

/// Q8_0 / Q4_0 weights times `n` positions of quantized activations; see
/// [`Path::matmul_quantized`].
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
