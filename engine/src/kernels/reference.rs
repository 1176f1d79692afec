//! The reference kernels: plain Rust, always compiled, the definition every
//! accelerated path reproduces bit for bit, and the portable path itself.
//!
//! # Sum order
//!
//! - **Float rows and dot products** keep [`LANES`] = 16 independent partial
//!   sums: lane `j` adds the products of elements `j, j+16, j+32, …`, each a
//!   multiply then an add (never fused). The lanes are then reduced in a
//!   fixed tree — lane `j` plus lane `j+8` first, then those eight as
//!   `((m0+m4)+(m1+m5)) + ((m2+m6)+(m3+m7))` — and the elements past the last
//!   whole 16 are added in order. One AVX-512 register, two AVX2 registers or
//!   four 128-bit registers hold the lanes exactly, so every width gives the
//!   same bits. The lanes are fixed-size arrays, which LLVM vectorizes on any
//!   target without intrinsics.
//! - **Q8_0 / Q4_0 rows** sum each block's level products exactly in `i32`,
//!   then `sum += d_w · d_x · isum` in f32 (left to right), block after block
//!   from 0.0, `d_w` the block's f16 scale as f32.
//! - **Attention's weighted sum** is an `axpy` per position, in order.
//! - **Activation blocks** are quantized by [`crate::quant`]'s one quantizer.
//! - **Softmax's sum of exponentials** ([`exp_and_sum`]) keeps the 16 lanes
//!   and the tail of a dot product, adding `e` where a dot product adds a
//!   product.
//!
//! A result therefore depends on the row and the input only: never on which
//! rows a kernel walks together, nor on how the rows are split among threads.
//!
//! # `exp`
//!
//! [`exp`] is defined by plain f32 operations (multiplies, adds, compares,
//! integer ops on the bits; nothing fused, no library call), so that a
//! vector lane computes exactly the scalar's bits. It is within 2 ulp of
//! e^x (1.17 at worst over the test's sweep of the whole range against
//! f64). Results below the smallest normal are its own value rounded once
//! to a subnormal, down to 0; past ln(f32::MAX) it is +inf; NaN stays NaN.
//! A NaN in any kernel gives a NaN out on every path, but its payload bits
//! are the hardware's and the compiler's business, not part of the
//! contract.
//!
//! The functions taking checked arguments ([`super::shapes`]) are the
//! portable path; [`super::Path`] validates and dispatches.
#![forbid(unsafe_code)]

use super::packed::{group_block_bytes, unpack_block, GROUP_ROWS};
use super::shapes::{
    Activations, Float, FloatMatmul, FloatRows, HeadScores, HeadSums, QuantMatmul, QuantRows,
    QueryScores, QuerySums, Strided,
};
use crate::error::Error;
use crate::quant::{self, BlockQ8};
use crate::tensor::{Dtype, BLOCK_LEN, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES};
use half::{bf16, f16};

/// Independent partial sums per float dot product.
pub const LANES: usize = 16;

/// Bytes of the f16 scale at the start of a Q8_0 / Q4_0 block.
const SCALE_BYTES: usize = 2;
/// Bytes of packed nibbles in a Q4_0 block.
const Q4_PACKED_BYTES: usize = BLOCK_LEN / 2;
/// Q4_0 stores level `q − 8` as the nibble `q`.
const Q4_OFFSET: i8 = 8;

/// The fixed reduction of the 16 lanes (see the module notes).
#[inline(always)]
pub fn reduce_lanes(l: [f32; LANES]) -> f32 {
    let m: [f32; 8] = core::array::from_fn(|j| l[j] + l[j + 8]);
    ((m[0] + m[4]) + (m[1] + m[5])) + ((m[2] + m[6]) + (m[3] + m[7]))
}

/// [`reduce_lanes`] kept out of line, for the loops of one dot product:
/// inlined after one, it led LLVM to keep the loop's lanes in pairs that
/// suit the tree, shuffling them at every step (SSE2: 8 shuffles per 16
/// floats). Loops of several dot products vectorize well with it inlined
/// and badly without.
#[inline(never)]
fn reduce_lanes_apart(l: [f32; LANES]) -> f32 {
    reduce_lanes(l)
}

/// Dot product of two `f32` slices over their common length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; LANES];
    let a_blocks = a.chunks_exact(LANES);
    let b_blocks = b.chunks_exact(LANES);
    let (a_tail, b_tail) = (a_blocks.remainder(), b_blocks.remainder());
    for (ab, bb) in a_blocks.zip(b_blocks) {
        for j in 0..LANES {
            lanes[j] += ab[j] * bb[j];
        }
    }
    // Sixteen zero lanes add up to +0.0: a head narrower than the lanes
    // (stories260K's 8) skips the call.
    let mut sum = if n < LANES {
        0.0
    } else {
        reduce_lanes_apart(lanes)
    };
    for (&av, &bv) in a_tail.iter().zip(b_tail) {
        sum += av * bv;
    }
    sum
}

/// `y += a · x` element by element (a multiply, then an add), over the
/// common length.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

// ---------------------------------------------------------------------------
// exp, softmax's exponentials, SwiGLU's gate
// ---------------------------------------------------------------------------

/// Inputs are clamped to `[EXP_LOWEST, EXP_HIGHEST]` first: e^−104 rounds
/// to 0 and e^88.75 overflows to +inf, so the clamp changes no result, and
/// `n` below stays in −150 ..= 128.
pub const EXP_LOWEST: f32 = -104.0;
/// See [`EXP_LOWEST`].
pub const EXP_HIGHEST: f32 = 88.75;
/// log2(e), rounded to f32.
pub const EXP_LOG2_E: f32 = core::f32::consts::LOG2_E;
/// 1.5 · 2²³: adding it to a float below 2²² in magnitude rounds that float
/// to the nearest integer (ties to even), which then sits in the low
/// mantissa bits of the sum.
pub const EXP_ROUNDER: f32 = 12_582_912.0;
/// ln 2 = `EXP_LN2_HI + EXP_LN2_LO` (to 2⁻³⁴): the high part is 355/512, nine
/// significant bits, so `n · EXP_LN2_HI` is exact for every `n` used.
pub const EXP_LN2_HI: f32 = 355.0 / 512.0;
/// See [`EXP_LN2_HI`].
pub const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// e^r's Taylor coefficients, highest degree first (for Horner's rule): to
/// r⁷/7!, whose truncation error on |r| ≤ ln2/2 is below 1e-8 relative.
pub const EXP_POLY: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// 2^k for `k` in −126 ..= 127, built in the exponent bits.
#[inline(always)]
fn pow2(k: i32) -> f32 {
    f32::from_bits((k.wrapping_add(127) as u32) << 23)
}

/// e^x, the definition every path's vector lanes reproduce (see the module
/// notes). Step by step:
///
/// 1. clamp `x` to [`EXP_LOWEST`] ..= [`EXP_HIGHEST`] (a NaN passes);
/// 2. `shifted = x · log2e + 1.5·2²³`, `n = shifted − 1.5·2²³`: x·log2e
///    rounded to an integer;
/// 3. `r = (x − n·ln2_hi) − n·ln2_lo`, |r| ≤ ~ln2/2;
/// 4. `p` = the degree-7 Taylor polynomial of e^r by Horner's rule;
/// 5. `k` = `n` as an integer, read from the bits of `shifted`; the result is
///    `(p · 2^(k>>1)) · 2^(k − (k>>1))`: both factors are normal floats, the
///    first product is exact, the second rounds once (to a subnormal, or
///    to 0, or overflows to +inf, where e^x does).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // The same selects as `max(lowest, x)` then `min(highest, x)` with the
    // x86 semantics, which return `x` when it is NaN.
    let x = if EXP_LOWEST > x { EXP_LOWEST } else { x };
    let x = if EXP_HIGHEST < x { EXP_HIGHEST } else { x };
    let shifted = x * EXP_LOG2_E + EXP_ROUNDER;
    let n = shifted - EXP_ROUNDER;
    let r = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO;
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let k = (shifted.to_bits() as i32).wrapping_sub(EXP_ROUNDER.to_bits() as i32);
    let half = k >> 1;
    (p * pow2(half)) * pow2(k.wrapping_sub(half))
}

/// `x[i] = exp(x[i] − shift)` for every element, returning the sum of the
/// results in the order of a dot product: 16 lanes, their fixed reduction,
/// then the tail in order (softmax's numerator and denominator).
pub fn exp_and_sum(x: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut blocks = x.chunks_exact_mut(LANES);
    for block in &mut blocks {
        for j in 0..LANES {
            block[j] = exp(block[j] - shift);
            lanes[j] += block[j];
        }
    }
    let mut sum = reduce_lanes(lanes);
    for v in blocks.into_remainder() {
        *v = exp(*v - shift);
        sum += *v;
    }
    sum
}

/// Rows [`sum_of_squares_rows`] takes together.
pub const NORM_ROWS: usize = 16;

/// `Σ x[r·dim + i]²` over `i` in order, for each of the [`NORM_ROWS`] rows
/// `r` of `x` (`[16 × dim]`): RMSNorm's sums, side by side so that no
/// addition waits on the one before it (the sums stay in registers: the
/// count of rows is a constant). All zeros when `x` holds fewer than 16
/// rows ([`Path::sum_of_squares_rows`](super::Path::sum_of_squares_rows)
/// refuses those).
pub fn sum_of_squares_rows(x: &[f32], dim: usize) -> [f32; NORM_ROWS] {
    let mut sums = [0.0f32; NORM_ROWS];
    let Some(x) = dim.checked_mul(NORM_ROWS).and_then(|n| x.get(..n)) else {
        return sums;
    };
    for i in 0..dim {
        for (r, s) in sums.iter_mut().enumerate() {
            let v = x[r * dim + i];
            *s += v * v;
        }
    }
    sums
}

/// `x[i] /= d` for every element (a division is exact to the last bit, so
/// any vector width gives the same results; it vectorizes at the width of
/// the features of the function it is inlined into).
#[inline(always)]
pub fn divide(x: &mut [f32], d: f32) {
    for v in x {
        *v /= d;
    }
}

/// Rotary position embedding, in place, on every head of `v` with one
/// position's `rotations` (`[head_dim]`: each pair's cosine and sine, from
/// [`crate::ops::rope_rotations`]): `(h[2i], h[2i+1])` becomes
/// `(h[2i]·cos − h[2i+1]·sin, h[2i]·sin + h[2i+1]·cos)`. Nothing when
/// `rotations` holds no pair.
#[inline(always)]
pub fn rope(v: &mut [f32], rotations: &[f32]) {
    if rotations.len() < 2 {
        return;
    }
    for head in v.chunks_exact_mut(rotations.len()) {
        for (pair, cos_sin) in head.chunks_exact_mut(2).zip(rotations.chunks_exact(2)) {
            let (cos, sin) = (cos_sin[0], cos_sin[1]);
            let (v0, v1) = (pair[0], pair[1]);
            pair[0] = v0 * cos - v1 * sin;
            pair[1] = v0 * sin + v1 * cos;
        }
    }
}

/// `x[i] += y[i]` over the common length (the residual connections).
#[inline(always)]
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Whether every element of `x` is finite: a branch-free pass (it
/// vectorizes, at the width of the features of the function it is inlined
/// into). `v − v` is 0 for every finite `v` and NaN for ±∞ and NaN, so the
/// lanes' sums stay 0 exactly when every element is finite. (`is_finite`
/// compiles to an ordered not-equal compare, an AVX-only predicate that
/// valgrind gets wrong for NaN; adds and subtracts it does not.)
#[inline(always)]
#[allow(clippy::eq_op)] // v − v on purpose: 0, or NaN for ±∞ and NaN
pub fn all_finite(x: &[f32]) -> bool {
    // Four vectors of lanes, so that the adds do not wait on each other.
    const SUMS: usize = 4 * LANES;
    let mut lanes = [0.0f32; SUMS];
    let mut chunks = x.chunks_exact(SUMS);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v - v;
        }
    }
    let tail = chunks.remainder().iter().fold(0.0f32, |s, &v| s + (v - v));
    lanes.iter().all(|&lane| lane == 0.0) && tail == 0.0
}

/// SwiGLU's gate over the common length: `gate[i] = (g · (1 / (1 +
/// exp(−g)))) · up[i]` with `g = gate[i]` (llama2.c's operations, with
/// [`exp`]).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu_times(*g, u);
    }
}

/// One element of [`silu_mul`].
#[inline(always)]
pub fn silu_times(g: f32, u: f32) -> f32 {
    let silu = g * (1.0 / (1.0 + exp(-g)));
    silu * u
}

// ---------------------------------------------------------------------------
// Float rows
// ---------------------------------------------------------------------------

/// How a float row's bytes become f32 values.
trait Element: Copy {
    /// Bytes per element.
    const BYTES: usize;
    /// The [`LANES`] values of a stretch of `LANES · BYTES` bytes.
    fn stretch(bytes: &[u8]) -> [f32; LANES];
    /// One value, from its `BYTES` bytes.
    fn one(bytes: &[u8]) -> f32;
}

#[derive(Clone, Copy)]
struct F32;
impl Element for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    fn stretch(b: &[u8]) -> [f32; LANES] {
        core::array::from_fn(|j| Self::one(&b[4 * j..]))
    }
    #[inline(always)]
    fn one(b: &[u8]) -> f32 {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// Decodes a stretch of 16-bit little-endian elements, taken as two-byte
/// arrays: LLVM then loads the stretch whole (indexing bytes of the slice,
/// it gathered them one by one, and the loop did not vectorize).
#[inline(always)]
fn half_stretch(b: &[u8], decode: impl Fn(u16) -> f32) -> [f32; LANES] {
    let mut out = [0.0f32; LANES];
    for (o, &pair) in out.iter_mut().zip(b.as_chunks::<2>().0) {
        *o = decode(u16::from_le_bytes(pair));
    }
    out
}

/// `half`'s f16 to f32 conversion, bit for bit (a NaN made quiet, its
/// payload kept), without a branch: `half` without F16C branches on every
/// element, and a row of halves on this path converted at 1 GB/s. A
/// finite half's bits moved to f32's place read 2^-112 times its value
/// (subnormals included), so one exact multiply puts it right.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    const TWO_POW_112: u32 = (127 + 112) << 23;
    let h = u32::from(h);
    let magnitude = h & 0x7fff;
    let sign = (h & 0x8000) << 16;
    let finite = (f32::from_bits(magnitude << 13) * f32::from_bits(TWO_POW_112)).to_bits();
    let quiet = if magnitude > 0x7c00 { 0x0040_0000 } else { 0 };
    let special = (magnitude << 13) | 0x7f80_0000 | quiet;
    f32::from_bits(sign | if magnitude >= 0x7c00 { special } else { finite })
}

/// `half`'s bf16 to f32 conversion, bit for bit (a NaN made quiet), as a
/// select rather than `half`'s branch, for the same reason as
/// [`f16_to_f32`].
#[inline(always)]
fn bf16_to_f32(h: u16) -> f32 {
    let quiet = if h & 0x7fff > 0x7f80 { 0x0040_0000 } else { 0 };
    f32::from_bits(u32::from(h) << 16 | quiet)
}

#[derive(Clone, Copy)]
struct F16;
impl Element for F16 {
    const BYTES: usize = 2;
    #[inline(always)]
    fn stretch(b: &[u8]) -> [f32; LANES] {
        half_stretch(b, f16_to_f32)
    }
    #[inline(always)]
    fn one(b: &[u8]) -> f32 {
        f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
    }
}

#[derive(Clone, Copy)]
struct BF16;
impl Element for BF16 {
    const BYTES: usize = 2;
    #[inline(always)]
    fn stretch(b: &[u8]) -> [f32; LANES] {
        half_stretch(b, bf16_to_f32)
    }
    #[inline(always)]
    fn one(b: &[u8]) -> f32 {
        bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
    }
}

/// Dot product of a row of `E` elements with `x`, in the reference order.
#[inline(always)]
fn dot_row<E: Element>(row: &[u8], x: &[f32]) -> f32 {
    dot_group::<E, 1>(row, [x])[0]
}

/// `G` dot products of one row with `G` vectors, each in the reference
/// order; each stretch of the row is decoded once and used `G` times.
#[inline(always)]
fn dot_group<E: Element, const G: usize>(row: &[u8], xs: [&[f32]; G]) -> [f32; G] {
    let mut lanes = [[0.0f32; LANES]; G];
    let row_blocks = row.chunks_exact(E::BYTES * LANES);
    let row_tail = row_blocks.remainder();
    let mut x_blocks = xs.map(|x| x.chunks_exact(LANES));
    for wb in row_blocks {
        // Fixed-size, bounds-check-free: vector loads, conversions, and
        // multiplies and adds.
        let w = E::stretch(wb);
        for (lane, x) in lanes.iter_mut().zip(x_blocks.iter_mut()) {
            if let Some(xb) = x.next() {
                for j in 0..LANES {
                    lane[j] += w[j] * xb[j];
                }
            }
        }
    }
    core::array::from_fn(|g| {
        let mut sum = if G == 1 {
            reduce_lanes_apart(lanes[g])
        } else {
            reduce_lanes(lanes[g])
        };
        for (w, &xv) in row_tail.chunks_exact(E::BYTES).zip(x_blocks[g].remainder()) {
            sum += E::one(w) * xv;
        }
        sum
    })
}

/// `out[r] = Σ_c w[r][c] · x[c]` for every float row.
pub fn matvec(a: FloatRows<'_>) {
    let row_bytes = a.x.len() * a.dtype.bytes();
    let rows = a.out.iter_mut().zip(a.w.chunks_exact(row_bytes));
    let x = a.x;
    match a.dtype {
        Float::F32 => rows.for_each(|(o, row)| *o = dot_row::<F32>(row, x)),
        Float::F16 => rows.for_each(|(o, row)| *o = dot_row::<F16>(row, x)),
        Float::BF16 => rows.for_each(|(o, row)| *o = dot_row::<BF16>(row, x)),
    }
}

/// Positions multiplied together against one decoded stretch of a row.
/// Two: with four, the 64 lanes of sums did not fit 16 SSE registers and
/// LLVM left most of the loop scalar on x86-64 and aarch64 alike (prefill
/// slower than decode on this path).
const GROUP: usize = 2;

/// `out[t·rows + r] = Σ_c w[r][c] · x[t·cols + c]` (position-major), each
/// element the bits of [`matvec`] for row `r` and position `t`.
pub fn matmul(a: FloatMatmul<'_>) {
    let (n, x) = (a.n, a.x);
    let rows = a.out.len() / n;
    let row_bytes = a.cols * a.dtype.bytes();
    for (r, row) in a.w.chunks_exact(row_bytes).enumerate() {
        // Row `r` of every position: the column `r` of `out`.
        let column = a.out[r..].iter_mut().step_by(rows);
        match a.dtype {
            Float::F32 => row_times_positions::<F32>(column, row, x),
            Float::F16 => row_times_positions::<F16>(column, row, x),
            Float::BF16 => row_times_positions::<BF16>(column, row, x),
        }
    }
}

/// One weight row times every position: `out[t] = row · x[t]`, `out`: the
/// `n` places of the row's results, `x`: `[n × cols]`, positions taken
/// [`GROUP`] at a time.
#[inline(always)]
fn row_times_positions<'o, E: Element>(
    mut out: impl Iterator<Item = &'o mut f32>,
    row: &[u8],
    x: &[f32],
) {
    let cols = row.len() / E::BYTES;
    let mut xs = x.chunks_exact(GROUP * cols);
    for x_group in &mut xs {
        let x_rows: [&[f32]; GROUP] = core::array::from_fn(|g| &x_group[g * cols..][..cols]);
        // The group's results first: a zip asks its first iterator first.
        for (v, o) in dot_group::<E, GROUP>(row, x_rows).into_iter().zip(&mut out) {
            *o = v;
        }
    }
    for (o, x_row) in out.zip(xs.remainder().chunks_exact(cols)) {
        *o = dot_row::<E>(row, x_row);
    }
}

// ---------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------

/// `scores[p] = dot(q, keys row p)` for every cached position `p`.
/// `scores`: `[keys.rows]`, `q`: `[keys.width]`.
pub fn attention_scores(scores: &mut [f32], q: &[f32], keys: Strided<'_>) {
    for (p, s) in scores.iter_mut().enumerate().take(keys.rows) {
        *s = dot(q, keys.row(p));
    }
}

/// `out = 0`, then `out += weights[p] · values row p` for each position in
/// order. `out`: `[values.width]`, `weights`: `[values.rows]`.
pub fn weighted_sum(out: &mut [f32], weights: &[f32], values: Strided<'_>) {
    out.fill(0.0);
    add_weighted(out, weights, values);
}

/// [`weighted_sum`] added to what `out` holds, position after position.
fn add_weighted(out: &mut [f32], weights: &[f32], values: Strided<'_>) {
    for (p, &w) in weights.iter().enumerate().take(values.rows) {
        axpy(out, w, values.row(p));
    }
}

/// [`attention_scores`] for each head `i` of a run: `scores[score_range(i)]`
/// from query `q[head_range(i)]` and its KV head's keys.
pub fn attention_scores_heads(a: HeadScores<'_>) {
    let HeadScores { scores, q, keys } = a;
    let run = keys.run;
    for i in 0..run.heads {
        attention_scores(
            &mut scores[run.score_range(i)],
            &q[run.head_range(i)],
            keys.head(i),
        );
    }
}

/// [`weighted_sum`] for each head `i` of a run, added to what
/// `out[head_range(i)]` holds: from `weights[score_range(i)]` and its KV
/// head's values.
pub fn add_weighted_heads(a: HeadSums<'_>) {
    let HeadSums {
        out,
        weights,
        values,
    } = a;
    let run = values.run;
    for i in 0..run.heads {
        add_weighted(
            &mut out[run.head_range(i)],
            &weights[run.score_range(i)],
            values.head(i),
        );
    }
}

/// [`attention_scores`] for each query of a block: its head against the
/// rows it sees.
pub fn attention_scores_queries(a: QueryScores<'_>) {
    for (scores, q, keys) in a.queries() {
        attention_scores(scores, q, keys);
    }
}

/// [`weighted_sum`] for each query of a block, added to what its output
/// holds: its weights over the rows it sees.
pub fn add_weighted_queries(a: QuerySums<'_>) {
    for (out, weights, values) in a.queries() {
        add_weighted(out, weights, values);
    }
}

// ---------------------------------------------------------------------------
// Quantized rows
// ---------------------------------------------------------------------------

/// The f16 scale at the start of a Q8_0 / Q4_0 block.
#[inline(always)]
fn scale_of(block: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
}

// The block sums are kept out of line: inlined next to the scale conversion,
// LLVM leaves them as 32 scalar multiplies; on their own they become
// pmaddwd on plain x86-64.

/// Σ w_j · x_j over one Q8_0 block (`w` starts at its scale), exact in i32
/// (|sum| ≤ 32·128·128).
#[inline(never)]
fn q8_0_block_isum(w: &[u8], x: &[i8; BLOCK_LEN]) -> i32 {
    let levels = &w[SCALE_BYTES..SCALE_BYTES + BLOCK_LEN];
    let mut isum = 0i32;
    for j in 0..BLOCK_LEN {
        isum += i32::from(levels[j] as i8) * i32::from(x[j]);
    }
    isum
}

/// Σ (q_j − 8) · x_j over one Q4_0 block (`w` starts at its scale): byte `j`
/// holds element `j` in its low nibble and `j + 16` in its high one. The
/// levels are unpacked into bytes first, which vectorizes (as `q8_0`'s sum);
/// with each nibble widened to i32 on its own, LLVM did not, and Q4_0 ran
/// slower than Q8_0 on this path.
#[inline(never)]
fn q4_0_block_isum(w: &[u8], x: &[i8; BLOCK_LEN]) -> i32 {
    let packed = &w[SCALE_BYTES..SCALE_BYTES + Q4_PACKED_BYTES];
    let mut levels = [0i8; BLOCK_LEN];
    let (low, high) = levels.split_at_mut(Q4_PACKED_BYTES);
    for ((l, h), &byte) in low.iter_mut().zip(high).zip(packed) {
        *l = (byte & 0x0f) as i8 - Q4_OFFSET;
        *h = (byte >> 4) as i8 - Q4_OFFSET;
    }
    let mut isum = 0i32;
    for j in 0..BLOCK_LEN {
        isum += i32::from(levels[j]) * i32::from(x[j]);
    }
    isum
}

/// One Q8_0 (`q4` false) or Q4_0 row dot product, in the reference order.
/// `row` holds `x.len()` whole blocks.
fn quant_row(row: &[u8], x: &[BlockQ8], q4: bool) -> f32 {
    let mut sum = 0.0f32;
    if q4 {
        for (w, xb) in row.chunks_exact(Q4_0_BLOCK_BYTES).zip(x) {
            sum += scale_of(w) * xb.d * q4_0_block_isum(w, &xb.qs) as f32;
        }
    } else {
        for (w, xb) in row.chunks_exact(Q8_0_BLOCK_BYTES).zip(x) {
            sum += scale_of(w) * xb.d * q8_0_block_isum(w, &xb.qs) as f32;
        }
    }
    sum
}

/// `out[r] = q8_0_dot(row r, x)` (or `q4_0_dot`) for every row.
pub fn matvec_quantized(a: QuantRows<'_>) {
    let row_bytes = a.x.len() * super::shapes::block_bytes(a.q4);
    for (o, row) in a.out.iter_mut().zip(a.w.chunks_exact(row_bytes)) {
        *o = quant_row(row, a.x, a.q4);
    }
}

/// Positions whose integer block sums are computed in one call.
const ISUM_GROUP: usize = 16;

/// `out[t·rows + r]` = row `r` times position `t` (position-major), each
/// the bits of [`matvec_quantized`]: every weight block is decoded once and
/// used for all `n` positions, the float sums still block after block for
/// each.
pub fn matmul_quantized(a: QuantMatmul<'_>) {
    let (n, blocks, xq) = (a.n, a.blocks, a.x);
    let rows = a.out.len() / n;
    let bb = super::shapes::block_bytes(a.q4);
    a.out.fill(0.0);
    for (r, row) in a.w.chunks_exact(blocks * bb).enumerate() {
        for (b, block) in row.chunks_exact(bb).enumerate() {
            let d_w = scale_of(block);
            for (g, x_group) in xq.chunks(ISUM_GROUP * blocks).enumerate() {
                let mut isums = [0i32; ISUM_GROUP];
                for (isum, x_row) in isums.iter_mut().zip(x_group.chunks_exact(blocks)) {
                    *isum = if a.q4 {
                        q4_0_block_isum(block, &x_row[b].qs)
                    } else {
                        q8_0_block_isum(block, &x_row[b].qs)
                    };
                }
                let products = x_group.chunks_exact(blocks).zip(isums).enumerate();
                for (i, (x_row, isum)) in products {
                    let t = g * ISUM_GROUP + i;
                    a.out[t * rows + r] += d_w * x_row[b].d * isum as f32;
                }
            }
        }
    }
}

/// `d_w · d_x · isum` of one block (`block` starts at its scale): the term
/// [`quant_row`] adds.
fn block_term(block: &[u8], xb: &BlockQ8, q4: bool) -> f32 {
    let isum = if q4 {
        q4_0_block_isum(block, &xb.qs)
    } else {
        q8_0_block_isum(block, &xb.qs)
    };
    scale_of(block) * xb.d * isum as f32
}

/// [`matvec_quantized`] of a matrix in the packed layout (`a.w` holds
/// [`super::packed`]'s bytes): the same bits, each row's blocks taken out
/// of its groups-blocks one at a time.
pub fn matvec_packed(a: QuantRows<'_>) {
    let x = a.x;
    let n = 1;
    matmul_packed_rows(a.out, a.w, x, n, x.len(), a.q4);
}

/// [`matmul_quantized`] of a matrix in the packed layout: the same bits.
pub fn matmul_packed(a: QuantMatmul<'_>) {
    matmul_packed_rows(a.out, a.w, a.x, a.n, a.blocks, a.q4);
}

/// `out[t·rows + r]` = packed row `r` times position `t` (`x`: `[n ×
/// blocks]`, `out` position-major), in the reference order:
/// `sum += d_w · d_x · isum` block after block.
fn matmul_packed_rows(out: &mut [f32], w: &[u8], x: &[BlockQ8], n: usize, blocks: usize, q4: bool) {
    let dtype = if q4 { Dtype::Q4_0 } else { Dtype::Q8_0 };
    let row_bytes = blocks * super::shapes::block_bytes(q4);
    let rows = out.len() / n;
    let grouped = rows / GROUP_ROWS * GROUP_ROWS;
    let (w, w_rest) = w.split_at(grouped * row_bytes);
    out.fill(0.0);
    for (g, group) in w.chunks_exact(GROUP_ROWS * row_bytes).enumerate() {
        for (b, group_block) in group.chunks_exact(group_block_bytes(dtype)).enumerate() {
            for r in 0..GROUP_ROWS {
                let block = unpack_block(dtype, group_block, r);
                for t in 0..n {
                    out[t * rows + g * GROUP_ROWS + r] +=
                        block_term(&block, &x[t * blocks + b], q4);
                }
            }
        }
    }
    // The rows past the last whole group are in ggml's layout.
    for (i, row) in w_rest.chunks_exact(row_bytes).enumerate() {
        for t in 0..n {
            out[t * rows + grouped + i] = quant_row(row, &x[t * blocks..(t + 1) * blocks], q4);
        }
    }
}

/// Dot product of one Q8_0 weight row (`32·k` elements in `k` blocks of 34
/// bytes) with `k` activation blocks, in the reference order.
///
/// Errors: [`Error::InvalidInput`] when the lengths disagree.
pub fn q8_0_dot(w_row: &[u8], x: &[BlockQ8]) -> Result<f32, Error> {
    check_dot_lengths(Dtype::Q8_0, w_row.len(), x.len())?;
    Ok(quant_row(w_row, x, false))
}

/// Dot product of one Q4_0 weight row (`32·k` elements in `k` blocks of 18
/// bytes) with `k` activation blocks, in the reference order.
///
/// Errors: [`Error::InvalidInput`] when the lengths disagree.
pub fn q4_0_dot(w_row: &[u8], x: &[BlockQ8]) -> Result<f32, Error> {
    check_dot_lengths(Dtype::Q4_0, w_row.len(), x.len())?;
    Ok(quant_row(w_row, x, true))
}

/// Whether a weight row of `row_len` bytes holds exactly `x_blocks` blocks.
pub(super) fn check_dot_lengths(
    dtype: Dtype,
    row_len: usize,
    x_blocks: usize,
) -> Result<(), Error> {
    let q4 = dtype == Dtype::Q4_0;
    if x_blocks.checked_mul(super::shapes::block_bytes(q4)) == Some(row_len) {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            reason: "weight row and activation blocks differ in length",
        })
    }
}

// ---------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------

/// Quantizes every block of activations with the one quantizer.
pub fn quantize_activations(a: Activations<'_>) {
    for (out, block) in a.dst.iter_mut().zip(a.x.chunks_exact(BLOCK_LEN)) {
        if let Ok(block) = block.try_into() {
            *out = quant::quantize_block_q8(block);
        }
    }
}

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

/// The reflected Castagnoli polynomial of CRC32C.
const CRC32C_POLY: u32 = 0x82F6_3B78;

/// CRC32C's remainder of each byte value: 1 KiB of flash and no RAM.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC32C_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC32C's running remainder `crc` (before the final inversion) after
/// `bytes`, a byte and a table lookup at a time.
pub fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(crc, |c, &b| {
        CRC32C_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::tensor::Matrix;
    use std::vec::Vec;

    use crate::test_rng::{encode, Rng};

    #[test]
    fn half_conversions_are_halfs_for_every_value() {
        for h in 0..=u16::MAX {
            let (ours, halfs) = (f16_to_f32(h), f16::from_bits(h).to_f32());
            assert_eq!(ours.to_bits(), halfs.to_bits(), "f16 bits {h:#06x}");
            let (ours, halfs) = (bf16_to_f32(h), bf16::from_bits(h).to_f32());
            assert_eq!(ours.to_bits(), halfs.to_bits(), "bf16 bits {h:#06x}");
        }
    }

    /// The values the stored bytes actually hold.
    fn decode_all(dtype: Dtype, bytes: &[u8]) -> Vec<f64> {
        match dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32() as f64)
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32() as f64)
                .collect(),
        }
    }

    fn run_matvec(w: &Matrix<'_>, x: &[f32]) -> Vec<f32> {
        let mut out = std::vec![f32::NAN; w.rows];
        if let Some(a) = FloatRows::new(&mut out, w, x).unwrap() {
            matvec(a);
        }
        out
    }

    #[test]
    fn matvec_matches_f64_for_every_float_dtype_and_awkward_sizes() {
        let mut rng = Rng(0x1234_5678);
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for (rows, cols) in [(1, 1), (3, 7), (5, 16), (4, 17), (13, 64), (2, 333)] {
                let values = rng.vec(rows * cols);
                let data = encode(dtype, &values, cols);
                let w = Matrix::new(dtype, rows, cols, &data).unwrap();
                let x = rng.vec(cols);
                let out = run_matvec(&w, &x);
                let exact = decode_all(dtype, &data);
                for r in 0..rows {
                    let want: f64 = (0..cols).map(|c| exact[r * cols + c] * x[c] as f64).sum();
                    let scale: f64 = (0..cols)
                        .map(|c| (exact[r * cols + c] * x[c] as f64).abs())
                        .sum();
                    let err = (out[r] as f64 - want).abs();
                    assert!(
                        err <= 1e-6 * scale.max(1e-30),
                        "{dtype:?} {rows}x{cols} row {r}: {} vs {want}",
                        out[r]
                    );
                }
            }
        }
    }

    #[test]
    fn the_sum_order_is_sixteen_lanes_then_the_tail() {
        // Written out longhand for 35 elements: lanes j = 0..16 over
        // elements j and j + 16, the fixed reduction, then 32, 33, 34.
        let mut rng = Rng(17);
        let (a, b) = (rng.vec(35), rng.vec(35));
        let lanes: [f32; 16] = core::array::from_fn(|j| {
            let mut lane = 0.0f32;
            lane += a[j] * b[j];
            lane += a[j + 16] * b[j + 16];
            lane
        });
        let m: [f32; 8] = core::array::from_fn(|j| lanes[j] + lanes[j + 8]);
        let mut want = ((m[0] + m[4]) + (m[1] + m[5])) + ((m[2] + m[6]) + (m[3] + m[7]));
        for i in 32..35 {
            want += a[i] * b[i];
        }
        assert_eq!(dot(&a, &b).to_bits(), want.to_bits());
        let data = encode(Dtype::F32, &a, 35);
        let w = Matrix::new(Dtype::F32, 1, 35, &data).unwrap();
        assert_eq!(run_matvec(&w, &b)[0].to_bits(), want.to_bits());
    }

    #[test]
    fn half_precision_matvec_equals_f32_matvec_of_decoded_weights() {
        let mut rng = Rng(99);
        let (rows, cols) = (9, 45);
        let values = rng.vec(rows * cols);
        let x = rng.vec(cols);
        for dtype in [Dtype::F16, Dtype::BF16] {
            let data = encode(dtype, &values, cols);
            let w = Matrix::new(dtype, rows, cols, &data).unwrap();
            let decoded: Vec<f32> = decode_all(dtype, &data).iter().map(|&v| v as f32).collect();
            let f32_data = encode(Dtype::F32, &decoded, cols);
            let w32 = Matrix::new(Dtype::F32, rows, cols, &f32_data).unwrap();
            // Same decoded values, same summation order: bit-identical.
            assert_eq!(run_matvec(&w, &x), run_matvec(&w32, &x), "{dtype:?}");
        }
    }

    #[test]
    fn float_matmul_is_bit_identical_to_matvec_per_position() {
        let mut rng = Rng(0x5eed);
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for (rows, cols) in [(1, 1), (3, 7), (5, 16), (4, 17), (13, 64), (2, 333)] {
                for n in [1, 2, 3, 4, 5, 9, 16] {
                    let data = encode(dtype, &rng.vec(rows * cols), cols);
                    let w = Matrix::new(dtype, rows, cols, &data).unwrap();
                    let x = rng.vec(n * cols);
                    let mut out = std::vec![f32::NAN; rows * n];
                    matmul(FloatMatmul::new(&mut out, &w, &x, n).unwrap().unwrap());
                    for t in 0..n {
                        let want = run_matvec(&w, &x[t * cols..][..cols]);
                        for r in 0..rows {
                            assert_eq!(
                                out[t * rows + r].to_bits(),
                                want[r].to_bits(),
                                "{dtype:?} {rows}x{cols} n={n} ({r},{t})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn quantized_matmul_is_bit_identical_to_the_row_dots() {
        let mut rng = Rng(42);
        for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
            for (rows, cols) in [(1, 32), (3, 64), (7, 96), (2, 288)] {
                for n in [1, 2, 5, 16, 17] {
                    let data = encode(dtype, &rng.vec(rows * cols), cols);
                    let w = Matrix::new(dtype, rows, cols, &data).unwrap();
                    let blocks = cols / BLOCK_LEN;
                    let mut xq = std::vec![BlockQ8::ZERO; n * blocks];
                    for (x, q) in rng
                        .vec(n * cols)
                        .chunks_exact(cols)
                        .zip(xq.chunks_exact_mut(blocks))
                    {
                        quant::quantize_activations(x, q).unwrap();
                    }
                    let mut out = std::vec![f32::NAN; rows * n];
                    matmul_quantized(QuantMatmul::new(&mut out, &w, &xq, n).unwrap().unwrap());
                    for r in 0..rows {
                        for t in 0..n {
                            let x = &xq[t * blocks..][..blocks];
                            let want = match dtype {
                                Dtype::Q8_0 => q8_0_dot(w.row(r), x),
                                _ => q4_0_dot(w.row(r), x),
                            }
                            .unwrap();
                            assert_eq!(
                                out[t * rows + r].to_bits(),
                                want.to_bits(),
                                "{dtype:?} {rows}x{cols} n={n} ({r},{t})"
                            );
                        }
                    }
                }
            }
        }
    }

    /// |got − want| in units of the f32 spacing at `want` (2⁻¹⁴⁹ among
    /// the subnormals).
    fn ulps(got: f32, want: f64) -> f64 {
        let spacing = if want.abs() < f32::MIN_POSITIVE as f64 {
            2f64.powi(-149)
        } else {
            2f64.powi(want.abs().log2().floor() as i32 - 23)
        };
        (got as f64 - want).abs() / spacing
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_over_its_whole_range() {
        // Every 2⁻¹⁰ from −104 to 89, and every 2⁻¹⁶ around the overflow
        // and underflow edges and zero.
        let mut xs: Vec<f32> = (-104 * 1024..=89 * 1024)
            .map(|i| i as f32 / 1024.0)
            .collect();
        for centre in [-103.9f32, -87.33, 0.0, 88.72] {
            xs.extend((-4096..=4096).map(|i| centre + i as f32 / 65536.0));
        }
        let mut worst = (0.0f64, 0.0f32);
        for &x in &xs {
            let got = exp(x);
            let want = (x as f64).exp();
            if want > f32::MAX as f64 {
                // Past ln(f32::MAX): +inf, or within 2 ulp of it.
                assert!(
                    got == f32::INFINITY || ulps(got, f32::MAX as f64) <= 2.0,
                    "{x}"
                );
                continue;
            }
            let err = ulps(got, want);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 2.0, "exp({}) is {} ulp off", worst.1, worst.0);
    }

    #[test]
    fn exp_of_special_values() {
        assert_eq!(exp(0.0).to_bits(), 1.0f32.to_bits());
        assert_eq!(exp(-0.0).to_bits(), 1.0f32.to_bits());
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::MAX), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY).to_bits(), 0);
        assert_eq!(exp(f32::MIN).to_bits(), 0);
        assert_eq!(exp(EXP_LOWEST).to_bits(), 0);
        assert_eq!(exp(-1000.0).to_bits(), 0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-f32::NAN).is_nan());
        // Subnormal results: e^−100 ≈ 3.7e−44, about 26 · 2⁻¹⁴⁹.
        let tiny = exp(-100.0);
        assert!(tiny > 0.0 && tiny < f32::MIN_POSITIVE);
        assert!(ulps(tiny, (-100f64).exp()) <= 1.0);
        // e^x = 1 for the smallest inputs; e^ln(2) ≈ 2.
        assert_eq!(exp(f32::from_bits(1)), 1.0);
        assert!(ulps(exp(core::f32::consts::LN_2), 2.0) <= 1.0);
    }

    #[test]
    fn exp_constants_are_what_they_claim() {
        let ln2 = core::f64::consts::LN_2;
        assert!((EXP_LN2_HI as f64 + EXP_LN2_LO as f64 - ln2).abs() < 2f64.powi(-34));
        // n · ln2_hi exact for |n| ≤ 150: ln2_hi has at most 9 significant
        // bits.
        assert_eq!(EXP_LN2_HI.to_bits() & ((1 << 15) - 1), 0);
        assert!((EXP_LOWEST as f64).exp() < 2f64.powi(-150));
        assert!((EXP_HIGHEST as f64).exp() > f32::MAX as f64);
    }

    #[test]
    fn exp_and_sum_sums_like_a_dot_product() {
        let mut rng = Rng(21);
        for n in [0, 1, 15, 16, 17, 35, 100] {
            let x = rng.vec(n);
            let mut got = x.clone();
            let sum = exp_and_sum(&mut got, 0.25);
            let e: Vec<f32> = x.iter().map(|&v| exp(v - 0.25)).collect();
            assert_eq!(got, e);
            let ones = std::vec![1.0f32; n];
            assert_eq!(sum.to_bits(), dot(&e, &ones).to_bits(), "n={n}");
        }
    }

    #[test]
    fn silu_mul_matches_f64() {
        let mut rng = Rng(22);
        let gate: Vec<f32> = rng.vec(200).iter().map(|v| v * 30.0).collect();
        let up = rng.vec(200);
        let mut out = gate.clone();
        silu_mul(&mut out, &up);
        for i in 0..200 {
            let g = gate[i] as f64;
            let want = g / (1.0 + (-g).exp()) * up[i] as f64;
            assert!(
                (out[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-30),
                "{g}"
            );
        }
    }

    #[test]
    fn dot_and_axpy_match_f64() {
        let mut rng = Rng(3);
        for n in [0, 1, 7, 8, 9, 16, 31, 100] {
            let (a, b) = (rng.vec(n), rng.vec(n));
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() <= 1e-6 * n.max(1) as f64);
            let mut y = b.clone();
            axpy(&mut y, 0.5, &a);
            for i in 0..n {
                assert!(((y[i] as f64) - (b[i] as f64 + 0.5 * a[i] as f64)).abs() < 1e-6);
            }
        }
    }
}
