//! The element-wise and per-head operations of the forward pass, one function
//! each, writing into output arguments. The arithmetic follows llama2.c's
//! `run.c` operation for operation (f32 throughout, `libm` for the
//! transcendental functions since `no_std` has none), so a correct model
//! reproduces llama2.c's greedy token stream. Two exceptions, both in
//! [`kernels`] so that they run vectorized: `exp` is the kernels' own
//! ([`kernels::reference::exp`], within 2 ulp of `expf`), and softmax sums
//! its exponentials in the 16 lanes of a dot product.
//!
//! Slices that should have equal lengths are zipped: a caller that breaks a
//! documented shape gets a truncated result (and a debug assertion), never a
//! panic.
#![forbid(unsafe_code)]

use crate::config::Config;
use crate::error::Error;
use crate::kernels::{self, reference::NORM_ROWS};
use crate::tensor::{Dtype, Matrix};
use half::{bf16, f16};

/// Whether every element of `x` is finite. One pass without an early exit,
/// OR-ing a flag per element, so it vectorizes.
pub fn all_finite(x: &[f32]) -> bool {
    let exponent = 0x7f80_0000u32;
    x.iter().fold(0u32, |bad, v| {
        bad | ((v.to_bits() & exponent == exponent) as u32)
    }) == 0
}

/// RMSNorm: `out[i] = gain[i] · (x[i] / sqrt(mean(x²) + eps))`.
/// `out`, `x`: `[dim]`; `gain`: a `1 × dim` matrix (F32 in model files; F16
/// and BF16 are read too).
pub fn rmsnorm(out: &mut [f32], x: &[f32], gain: &Matrix<'_>, eps: f32) {
    debug_assert_eq!(out.len(), x.len(), "rmsnorm: out length");
    scale_by_gain(out, x, gain, rms_scale(sum_of_squares(x), x.len(), eps));
}

/// `Σ x[i]²`, added in order.
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for &v in x {
        sum += v * v;
    }
    sum
}

/// [`rmsnorm`] of each `dim`-wide row of `x` into the same row of `out`
/// (`[n × dim]` each), the same bits: each row's squares are added in
/// order as `rmsnorm` adds them, but sixteen rows' sums go side by
/// side, so that no addition waits on the one before it.
pub fn rmsnorm_rows(out: &mut [f32], x: &[f32], gain: &Matrix<'_>, eps: f32, dim: usize) {
    debug_assert_eq!(out.len(), x.len(), "rmsnorm_rows: out length");
    if dim == 0 {
        return;
    }
    for (out_rows, x_rows) in out
        .chunks_mut(NORM_ROWS * dim)
        .zip(x.chunks(NORM_ROWS * dim))
    {
        let sums = match kernels::sum_of_squares_rows(x_rows, dim) {
            Ok(sums) => sums, // sixteen whole rows, side by side
            Err(_) => {
                // A short last chunk (decode's one row): row by row.
                let mut sums = [0.0f32; NORM_ROWS];
                for (s, row) in sums.iter_mut().zip(x_rows.chunks_exact(dim)) {
                    *s = sum_of_squares(row);
                }
                sums
            }
        };
        let rows = out_rows.chunks_exact_mut(dim).zip(x_rows.chunks_exact(dim));
        for ((o, row), &sum_squares) in rows.zip(&sums) {
            scale_by_gain(o, row, gain, rms_scale(sum_squares, dim, eps));
        }
    }
}

/// RMSNorm's `1 / sqrt(mean(x²) + eps)` from the sum of `len` squares.
fn rms_scale(sum_squares: f32, len: usize, eps: f32) -> f32 {
    let mean = sum_squares / len.max(1) as f32;
    1.0 / libm::sqrtf(mean + eps)
}

/// `out[i] = gain[i] · (scale · x[i])`: RMSNorm once its scale is known.
fn scale_by_gain(out: &mut [f32], x: &[f32], gain: &Matrix<'_>, scale: f32) {
    debug_assert_eq!(gain.rows * gain.cols, x.len(), "rmsnorm: gain length");
    let scaled = out.iter_mut().zip(x);
    match gain.dtype {
        Dtype::F32 => {
            for ((o, &v), g) in scaled.zip(gain.data.chunks_exact(4)) {
                *o = f32::from_le_bytes([g[0], g[1], g[2], g[3]]) * (scale * v);
            }
        }
        Dtype::F16 => {
            for ((o, &v), g) in scaled.zip(gain.data.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([g[0], g[1]])).to_f32() * (scale * v);
            }
        }
        Dtype::BF16 => {
            for ((o, &v), g) in scaled.zip(gain.data.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([g[0], g[1]])).to_f32() * (scale * v);
            }
        }
        Dtype::Q8_0 | Dtype::Q4_0 => {
            debug_assert!(false, "rmsnorm: quantized gain");
            out.fill(0.0);
        }
    }
}

/// RoPE's rotations at position `pos`, one head's worth (`out`:
/// `[head_dim]`): `out[2i]`, `out[2i+1]` = the cosine and sine of pair
/// `i`'s angle ([`rope_rotation`]). The angles depend only on the position
/// and the pair, so one table serves every head and layer of a position.
pub fn rope_rotations(out: &mut [f32], pos: u32, theta: f32) {
    let head_dim = out.len();
    for (pair, cos_sin) in out.chunks_exact_mut(2).enumerate() {
        let (cos, sin) = rope_rotation(pos, pair, head_dim, theta);
        cos_sin[0] = cos;
        cos_sin[1] = sin;
    }
}

/// Rotary position embedding, in place, on every head of `v`
/// (`[n × head_dim]`, a query or key vector), with the rotations of its
/// position from [`rope_rotations`] (`[head_dim]`): each adjacent pair
/// `(h[2i], h[2i+1])` of a head is rotated by
/// `pos · theta^(−2i/head_dim)`, computed as llama2.c does:
/// `freq = 1 / powf(theta, 2i / head_dim)`, `angle = pos · freq`.
pub fn rope(v: &mut [f32], rotations: &[f32]) {
    debug_assert!(
        rotations.len() >= 2 && rotations.len().is_multiple_of(2),
        "rope: head_dim"
    );
    kernels::rope(v, rotations);
}

/// The cosine and sine of RoPE's angle for pair `pair` (elements `2·pair`
/// and `2·pair + 1` of a head) at position `pos`: the angle is
/// `pos · theta^(−2·pair / head_dim)`, all in f32 with `libm`. The trainer
/// builds its table with this function, so both rotate by the same bits.
pub fn rope_rotation(pos: u32, pair: usize, head_dim: usize, theta: f32) -> (f32, f32) {
    let freq = 1.0 / libm::powf(theta, (2 * pair) as f32 / head_dim as f32);
    let angle = pos as f32 * freq;
    (libm::cosf(angle), libm::sinf(angle))
}

/// Softmax in place, with the maximum subtracted first so `exp` cannot
/// overflow; the exponentials and their sum come from
/// [`kernels::exp_and_sum`]. An empty slice is left alone.
pub fn softmax(x: &mut [f32]) {
    let Some(&first) = x.first() else {
        return;
    };
    let sum = kernels::exp_and_sum(x, maximum(x, first));
    kernels::divide(x, sum);
}

/// `ln Σ exp(x[i])`, the log of softmax's denominator: a position's
/// cross-entropy is `log_sum_exp(logits) − logits[target]`. The maximum `m`
/// is subtracted first; the exponentials and their sum come from
/// [`kernels::exp_and_sum`], the same bits on every path, and `m + ln(sum)`
/// is taken in f64. Overwrites `x` with `exp(x[i] − m)`; −∞ for an empty
/// slice.
pub fn log_sum_exp(x: &mut [f32]) -> f64 {
    let Some(&first) = x.first() else {
        return f64::NEG_INFINITY;
    };
    let max = maximum(x, first);
    let sum = kernels::exp_and_sum(x, max);
    max as f64 + libm::log(sum as f64)
}

/// Lanes [`maximum`] compares side by side.
const MAX_LANES: usize = 16;

/// The largest of `first` and the elements of `x` that are not NaN (NaN
/// when `first` is), taken in sixteen lanes so that it vectorizes: each
/// lane keeps what `if v > max { max = v }` keeps of its elements, and the
/// lanes are merged the same way. Only which zero wins a tie between +0
/// and −0 can differ from a pass in order, and `exp(x − max)` is then the
/// same.
fn maximum(x: &[f32], first: f32) -> f32 {
    let keep_larger = |max: &mut f32, v: f32| {
        if v > *max {
            *max = v;
        }
    };
    let mut lanes = [first; MAX_LANES];
    let mut chunks = x.chunks_exact(MAX_LANES);
    for chunk in &mut chunks {
        for (max, &v) in lanes.iter_mut().zip(chunk) {
            keep_larger(max, v);
        }
    }
    let mut max = first;
    for v in lanes.into_iter().chain(chunks.remainder().iter().copied()) {
        keep_larger(&mut max, v);
    }
    max
}

/// SwiGLU's gate, in place: `gate[i] = silu(gate[i]) · up[i]` with
/// `silu(g) = g / (1 + exp(−g))`. `gate`, `up`: `[hidden_dim]`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len(), "silu_mul: lengths");
    kernels::silu_mul(gate, up);
}

/// `x += y` elementwise (the residual connections).
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    debug_assert_eq!(x.len(), y.len(), "add_assign: lengths");
    kernels::add_assign(x, y);
}

/// How the attention heads are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads; divides `n_heads`. Query head `h` reads KV head
    /// `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl Heads {
    /// The layout a (validated) config describes.
    pub const fn of(config: &Config) -> Heads {
        Heads {
            n_heads: config.n_heads as usize,
            n_kv_heads: config.n_kv_heads as usize,
            head_dim: config.head_dim(),
        }
    }

    /// Width of one position's key (or value) vector.
    pub const fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// One query head attending over cached positions: scores
/// `q·k / sqrt(head_dim)`, softmaxed, then the weighted sum of the values.
///
/// - `out`: `[head_dim]`, the head's output;
/// - `weights`: `[positions]`, on return the attention weights;
/// - `q`: `[head_dim]`, the query head (RoPE applied);
/// - `keys`, `values`: `[≥ positions × kv_dim]`, the layer's cache rows; the
///   head reads columns `kv_start..kv_start + head_dim` of each.
///
/// Errors: [`Error::InvalidInput`] when the cache rows do not hold the
/// positions or the columns.
pub fn attend_head(
    out: &mut [f32],
    weights: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    kv_dim: usize,
    kv_start: usize,
) -> Result<(), Error> {
    kernels::attention_scores(weights, q, keys, kv_dim, kv_start)?;
    scaled_softmax(weights, q.len());
    kernels::weighted_sum(out, weights, values, kv_dim, kv_start)
}

/// One head's scores into attention weights: each divided by
/// `sqrt(head_dim)`, then softmaxed. Shared by [`attend_head`] and
/// [`attend_heads`], which must give the same bits.
fn scaled_softmax(scores: &mut [f32], head_dim: usize) {
    kernels::divide(scores, libm::sqrtf(head_dim as f32));
    softmax(scores);
}

/// A run of query heads attending over the same cached positions, each with
/// the bits of [`attend_head`]: the scores of every head, position block by
/// position block (a position's heads share its cache row), then each head's
/// softmax, then the weighted sums, again a block of positions across the
/// heads.
///
/// - `out`: `[heads × head_dim]`, the heads' outputs;
/// - `scores`: `[heads × score_stride]`, on return head `i`'s attention
///   weights in `scores[run.score_range(i)]`;
/// - `q`: `[heads × head_dim]`, the run's query heads (RoPE applied);
/// - `keys`, `values`: `[≥ positions × row_floats]`, the layer's cache rows.
///
/// Errors: [`Error::InvalidInput`] when the buffers or the cache rows do not
/// fit the run (see [`kernels::Path::attention_scores_heads`]).
pub fn attend_heads(
    out: &mut [f32],
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    run: kernels::HeadRun,
) -> Result<(), Error> {
    kernels::attention_scores_heads(scores, q, keys, run)?;
    for i in 0..run.heads {
        let Some(weights) = scores.get_mut(run.score_range(i)) else {
            break; // unreachable: the scores kernel checked the run
        };
        scaled_softmax(weights, run.head_dim);
    }
    kernels::weighted_sum_heads(out, scores, values, run)
}

/// Cached positions [`attend_queries`] scores for every query before the
/// next ones: the run's keys of this many positions (at 12 heads of 64, 48
/// KiB) come from memory once for all the queries of a chunk, then one
/// head's (4 KiB) from the L1 cache for each query.
const QUERY_BLOCK: usize = 16;

/// Cached positions [`attend_queries`] sums for every query before the next
/// ones: longer than [`QUERY_BLOCK`], as a kernel keeps the outputs in
/// registers across a block's positions (the AVX-512 one four queries' at a
/// time), and short enough that one head's values of them stay in the L1
/// cache for all the queries (stories110M: 8 KiB of heads of 64 in rows
/// 3 KiB apart, which map to a quarter of the cache's sets).
const SUM_BLOCK: usize = 32;

/// [`attend_heads`] for `n` consecutive queries of a chunk, query `t` seeing
/// the first `seen + t` cached positions, with the bits of attending them
/// one by one: the scores a block of positions at a time, each head's
/// block for every query that sees it in one kernel call, then each
/// query's softmax per head, then the weighted sums, a longer block at a
/// time, each element adding the positions in order.
///
/// - `out`: `[n × heads × head_dim]`, query after query;
/// - `scores`: `[n × heads × score_stride]`, query `t`'s weights in its
///   `heads × score_stride` floats, as in [`attend_heads`];
/// - `q`: query `t`'s heads at `q[t · q_stride ..][.. heads × head_dim]`;
/// - `keys`, `values`: `[≥ (seen + n − 1) × row_floats]`;
/// - `run.positions` is not read (each query has its own).
///
/// Errors: [`Error::InvalidInput`] when `seen` is 0, `score_stride` is
/// below a query's positions, or the buffers or the cache rows do not fit
/// the run.
#[allow(clippy::too_many_arguments)] // the shapes of four buffers
pub fn attend_queries(
    out: &mut [f32],
    scores: &mut [f32],
    q: &[f32],
    q_stride: usize,
    keys: &[f32],
    values: &[f32],
    run: kernels::HeadRun,
    seen: usize,
    n: usize,
) -> Result<(), Error> {
    let misfit = Error::InvalidInput {
        reason: "attention queries do not fit the run",
    };
    let width = run.heads * run.head_dim;
    let per_query = run.heads * run.score_stride;
    let last = seen + n.saturating_sub(1); // the last query's positions
    if seen == 0 || last > run.score_stride || run.group == 0 {
        return Err(misfit);
    }
    // Calls `f([at_scores, at_head], at_rows, block)` for every block of
    // `block_rows` positions from `first` and head `i`, where `block` holds
    // the queries that see it (from query `t0`), `at_scores` and `at_head`
    // are where query `t0`'s head `i` starts in the scores (at position
    // `first`) and in the queries or outputs (`query_stride` apart), and
    // `at_rows` is where the block's first cached row starts.
    type BlockFn<'f> = dyn FnMut([usize; 2], usize, kernels::QueryBlock) -> Result<(), Error> + 'f;
    let blocks = |query_stride: usize, block_rows: usize, f: &mut BlockFn<'_>| {
        for first in (0..last).step_by(block_rows) {
            let t0 = (first + 1).saturating_sub(seen); // the first query to see `first`
            for i in 0..run.heads {
                // Query head `first_head + i` reads KV head `/ group`.
                let column = run
                    .first_head
                    .checked_add(i)
                    .and_then(|h| (h / run.group).checked_mul(run.head_dim))
                    .ok_or(misfit)?;
                let block = kernels::QueryBlock {
                    rows: block_rows.min(last - first),
                    row_floats: run.row_floats,
                    column,
                    head_dim: run.head_dim,
                    queries: n - t0,
                    visible: seen + t0 - first,
                    query_stride,
                    score_stride: per_query,
                };
                let at_scores = t0 * per_query + i * run.score_stride + first;
                let at_head = t0 * query_stride + i * run.head_dim;
                f([at_scores, at_head], first * run.row_floats, block)?;
            }
        }
        Ok(())
    };
    let mut block_scores = |[at_scores, at_q]: [usize; 2], at_keys: usize, block| match (
        scores.get_mut(at_scores..),
        q.get(at_q..),
        keys.get(at_keys..),
    ) {
        (Some(s), Some(q), Some(k)) => kernels::attention_scores_queries(s, q, k, block),
        _ => Err(misfit),
    };
    blocks(q_stride, QUERY_BLOCK, &mut block_scores)?;
    for t in 0..n {
        for i in 0..run.heads {
            let at = t * per_query + i * run.score_stride;
            let Some(weights) = scores.get_mut(at..at + seen + t) else {
                return Err(misfit);
            };
            scaled_softmax(weights, run.head_dim);
        }
    }
    out.fill(0.0);
    let mut block_sums = |[at_weights, at_out]: [usize; 2], at_values: usize, block| match (
        out.get_mut(at_out..),
        scores.get(at_weights..),
        values.get(at_values..),
    ) {
        (Some(o), Some(w), Some(v)) => kernels::add_weighted_queries(o, w, v, block),
        _ => Err(misfit),
    };
    blocks(width, SUM_BLOCK, &mut block_sums)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    use crate::test_rng::Rng;

    fn close(a: f32, b: f64, rel: f64) -> bool {
        (a as f64 - b).abs() <= rel * b.abs().max(1e-3)
    }

    fn f32_matrix(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn rmsnorm_matches_f64() {
        let mut rng = Rng(1);
        for n in [1, 5, 64, 77] {
            let x = rng.vec(n);
            let g = rng.vec(n);
            let bytes = f32_matrix(&g);
            let gain = Matrix::new(Dtype::F32, 1, n, &bytes).unwrap();
            let mut out = std::vec![0.0; n];
            rmsnorm(&mut out, &x, &gain, 1e-5);
            let ms: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            for i in 0..n {
                assert!(
                    close(out[i], g[i] as f64 * x[i] as f64 * inv, 1e-5),
                    "{n} {i}"
                );
            }
        }
    }

    #[test]
    fn rmsnorm_rows_gives_rmsnorm_bits_per_row() {
        let mut rng = Rng(3);
        for (n, dim) in [(1, 5), (16, 64), (17, 77), (40, 8)] {
            let x = rng.vec(n * dim);
            let bytes = f32_matrix(&rng.vec(dim));
            let gain = Matrix::new(Dtype::F32, 1, dim, &bytes).unwrap();
            let mut got = std::vec![0.0; n * dim];
            rmsnorm_rows(&mut got, &x, &gain, 1e-5, dim);
            for (row, x_row) in got.chunks_exact(dim).zip(x.chunks_exact(dim)) {
                let mut want = std::vec![0.0; dim];
                rmsnorm(&mut want, x_row, &gain, 1e-5);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(row), bits(&want), "n {n} dim {dim}");
            }
        }
    }

    #[test]
    fn rmsnorm_reads_half_precision_gains() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let g = [0.5f32, 1.0, -1.5, 2.0]; // exactly representable in f16 and bf16
        let f32_bytes = f32_matrix(&g);
        let f16_bytes: Vec<u8> = g
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let bf16_bytes: Vec<u8> = g
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let mut want = [0.0; 4];
        rmsnorm(
            &mut want,
            &x,
            &Matrix::new(Dtype::F32, 1, 4, &f32_bytes).unwrap(),
            1e-5,
        );
        for (dtype, bytes) in [(Dtype::F16, &f16_bytes), (Dtype::BF16, &bf16_bytes)] {
            let mut out = [0.0; 4];
            rmsnorm(
                &mut out,
                &x,
                &Matrix::new(dtype, 1, 4, bytes).unwrap(),
                1e-5,
            );
            assert_eq!(out, want, "{dtype:?}");
        }
    }

    #[test]
    fn rope_matches_f64_rotation() {
        let mut rng = Rng(2);
        let (head_dim, n_heads, theta) = (8, 3, 10000.0f32);
        for pos in [0u32, 1, 7, 300] {
            let v = rng.vec(head_dim * n_heads);
            let mut out = v.clone();
            let mut rotations = [0.0f32; 8];
            rope_rotations(&mut rotations, pos, theta);
            rope(&mut out, &rotations);
            for h in 0..n_heads {
                for p in 0..head_dim / 2 {
                    let i = h * head_dim + 2 * p;
                    let angle =
                        pos as f64 * (theta as f64).powf(-((2 * p) as f64) / head_dim as f64);
                    let (c, s) = (angle.cos(), angle.sin());
                    let (a, b) = (v[i] as f64, v[i + 1] as f64);
                    // Absolute tolerance: the f32 angle at pos 300 carries ~1e-5 error.
                    assert!((out[i] as f64 - (a * c - b * s)).abs() < 1e-4, "{pos} {i}");
                    assert!(
                        (out[i + 1] as f64 - (a * s + b * c)).abs() < 1e-4,
                        "{pos} {i}"
                    );
                }
            }
        }
        let v = rng.vec(16);
        let mut same = v.clone();
        let mut rotations = [0.0f32; 8];
        rope_rotations(&mut rotations, 0, theta);
        rope(&mut same, &rotations);
        assert_eq!(same, v, "position 0 is the identity");
    }

    #[test]
    fn softmax_matches_f64_and_survives_large_inputs() {
        let mut rng = Rng(3);
        let x: Vec<f32> = rng.vec(37).iter().map(|v| v * 20.0).collect();
        let mut p = x.clone();
        softmax(&mut p);
        let max = x.iter().cloned().fold(f64::MIN, |m, v| m.max(v as f64));
        let z: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
        for i in 0..x.len() {
            assert!(close(p[i], (x[i] as f64 - max).exp() / z, 1e-5));
        }
        let mut big = [1000.0f32, 1000.0, -1000.0];
        softmax(&mut big);
        assert_eq!(big, [0.5, 0.5, 0.0]);
        let mut empty: [f32; 0] = [];
        softmax(&mut empty);
    }

    #[test]
    fn log_sum_exp_matches_f64_and_survives_large_inputs() {
        let mut rng = Rng(5);
        for n in [1, 15, 16, 17, 100, 32000] {
            let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 20.0).collect();
            let max = x.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let want = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            let got = log_sum_exp(&mut x.clone());
            assert!(
                (got - want).abs() < 1e-6 * want.abs().max(1.0),
                "{n}: {got} vs {want}"
            );
        }
        let mut big = [1000.0f32, 1000.0, -1000.0];
        assert_eq!(log_sum_exp(&mut big), 1000.0 + 2f64.ln());
        assert_eq!(log_sum_exp(&mut []), f64::NEG_INFINITY);
    }

    #[test]
    fn softmax_gives_the_bits_of_an_in_order_maximum() {
        let mut rng = Rng(7);
        for n in [1, 2, 15, 16, 17, 40, 100] {
            for case in 0..4 {
                let mut x: Vec<f32> = rng.vec(n).iter().map(|v| v * 30.0).collect();
                match case {
                    1 => x[n / 2] = f32::NAN, // skipped by the maximum
                    2 => x[0] = f32::NAN,     // the maximum
                    3 => x
                        .iter_mut()
                        .for_each(|v| *v = if *v < 0.0 { -0.0 } else { 0.0 }),
                    _ => {}
                }
                let mut in_order = x[0];
                for &v in &x {
                    if v > in_order {
                        in_order = v;
                    }
                }
                let lanes = maximum(&x, x[0]);
                assert!(lanes.to_bits() == in_order.to_bits() || lanes == 0.0 && in_order == 0.0);
                let mut want = x.clone();
                let sum = kernels::exp_and_sum(&mut want, in_order);
                want.iter_mut().for_each(|v| *v /= sum);
                let mut got = x.clone();
                softmax(&mut got);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "n {n} case {case}");
            }
        }
    }

    #[test]
    fn silu_mul_and_add_match_f64() {
        let mut rng = Rng(4);
        let gate: Vec<f32> = rng.vec(50).iter().map(|v| v * 8.0).collect();
        let up = rng.vec(50);
        let mut out = gate.clone();
        silu_mul(&mut out, &up);
        for i in 0..50 {
            let g = gate[i] as f64;
            assert!(close(out[i], g / (1.0 + (-g).exp()) * up[i] as f64, 1e-5));
        }
        let mut x = up.clone();
        add_assign(&mut x, &gate);
        for i in 0..50 {
            assert_eq!(x[i], up[i] + gate[i]);
        }
    }

    #[test]
    fn attend_queries_gives_each_querys_attend_heads_bits_and_refuses_misfits() {
        let mut rng = Rng(9);
        let (head_dim, heads, kv_heads) = (16, 4, 2);
        let row_floats = kv_heads * head_dim;
        let run = kernels::HeadRun {
            positions: 0,
            row_floats,
            head_dim,
            first_head: 1,
            heads: 3,
            group: heads / kv_heads,
            score_stride: 40,
        };
        let width = run.heads * head_dim;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        // Chunks that start at, inside and past a block of sixteen.
        for (seen, n) in [(1, 16), (5, 20), (17, 3), (16, 1)] {
            let keys = rng.vec((seen + n - 1) * row_floats);
            let values = rng.vec((seen + n - 1) * row_floats);
            let q_stride = heads * head_dim; // the run's heads start at `first_head`
            let q = rng.vec(n * q_stride);
            let mut out = std::vec![f32::NAN; n * width];
            let mut scores = std::vec![f32::NAN; n * run.heads * run.score_stride];
            let q_run = &q[run.first_head * head_dim..];
            attend_queries(
                &mut out,
                &mut scores,
                q_run,
                q_stride,
                &keys,
                &values,
                run,
                seen,
                n,
            )
            .unwrap();
            for t in 0..n {
                let one = kernels::HeadRun {
                    positions: seen + t,
                    ..run
                };
                let mut want = std::vec![f32::NAN; width];
                let mut weights = std::vec![f32::NAN; run.heads * run.score_stride];
                let q_t = &q_run[t * q_stride..][..width];
                attend_heads(&mut want, &mut weights, q_t, &keys, &values, one).unwrap();
                assert_eq!(
                    bits(&out[t * width..][..width]),
                    bits(&want),
                    "seen {seen} query {t}"
                );
            }
        }
        let keys = rng.vec(20 * row_floats);
        let q = rng.vec(4 * 4 * head_dim);
        let misfits = [
            (kernels::HeadRun { group: 0, ..run }, 4),
            (
                kernels::HeadRun {
                    first_head: usize::MAX,
                    ..run
                },
                4,
            ),
            (
                kernels::HeadRun {
                    score_stride: 6,
                    ..run
                },
                4,
            ),
            (kernels::HeadRun { heads: 4, ..run }, 4), // past the last KV head
            (run, 0),                                  // no positions seen
        ];
        for (bad, seen) in misfits {
            let mut out = std::vec![0.0; 4 * width];
            let mut scores = std::vec![0.0; 4 * 4 * run.score_stride];
            let got = attend_queries(
                &mut out,
                &mut scores,
                &q,
                4 * head_dim,
                &keys,
                &keys,
                bad,
                seen,
                4,
            );
            assert!(got.is_err(), "{bad:?} seen {seen}");
        }
    }

    #[test]
    fn grouped_attention_matches_f64() {
        let mut rng = Rng(5);
        let heads = Heads {
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 4,
        };
        let (kv_dim, stride) = (heads.kv_dim(), 9);
        let group = heads.n_heads / heads.n_kv_heads;
        for positions in [1, 2, 5, 9] {
            let q = rng.vec(24);
            let keys = rng.vec(positions * kv_dim);
            let values = rng.vec(positions * kv_dim);
            let mut scores = std::vec![f32::NAN; heads.n_heads * stride];
            let mut out = std::vec![f32::NAN; 24];
            let per_head = out
                .chunks_exact_mut(4)
                .zip(scores.chunks_exact_mut(stride))
                .zip(q.chunks_exact(4));
            for (h, ((out_head, head_scores), q_head)) in per_head.enumerate() {
                let weights = &mut head_scores[..positions];
                let kv_start = h / group * heads.head_dim;
                attend_head(out_head, weights, q_head, &keys, &values, kv_dim, kv_start).unwrap();
            }
            for h in 0..6 {
                let kv = h / 3;
                let s: Vec<f64> = (0..positions)
                    .map(|t| {
                        (0..4)
                            .map(|i| q[h * 4 + i] as f64 * keys[t * kv_dim + kv * 4 + i] as f64)
                            .sum::<f64>()
                            / 2.0
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - max).exp()).sum();
                for t in 0..positions {
                    let w = (s[t] - max).exp() / z;
                    assert!(close(scores[h * stride + t], w, 1e-5));
                }
                for i in 0..4 {
                    let want: f64 = (0..positions)
                        .map(|t| (s[t] - max).exp() / z * values[t * kv_dim + kv * 4 + i] as f64)
                        .sum();
                    assert!(
                        (out[h * 4 + i] as f64 - want).abs() < 1e-5,
                        "{positions} {h} {i}"
                    );
                }
            }
        }
    }
}
