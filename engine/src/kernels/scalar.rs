//! Reference kernels: plain Rust, always compiled, the oracle for every
//! accelerated version.
//!
//! Weights are read straight from the little-endian file bytes with
//! `from_le_bytes` (the bytes need no alignment). The inner loops keep
//! [`LANES`] independent partial sums so the compiler can unroll and
//! vectorize them without reassociating floating-point additions; the sum
//! order is fixed, so results are deterministic.
//!
//! Preconditions (checked by the caller, asserted only in debug builds):
//! `w.data.len() == w.rows * w.dtype.row_bytes(w.cols)`, `x.len() == w.cols`,
//! `out.len() == w.rows`. If they are violated the kernels do not panic: they
//! stop at the shorter of the slices. Block-quantized weights (Q8_0, Q4_0)
//! have no kernel yet; sessions reject them at construction, and here they
//! leave `out` filled with zeros.

use crate::float16::{bf16_to_f32, f16_to_f32};
use crate::tensor::{Dtype, Matrix};

/// Independent partial sums per dot product.
pub const LANES: usize = 8;

#[inline(always)]
fn f32_at(c: &[u8]) -> f32 {
    f32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

#[inline(always)]
fn u16_at(c: &[u8]) -> u16 {
    u16::from_le_bytes([c[0], c[1]])
}

/// Dot product of a row of `B`-byte little-endian elements with `x`, each
/// element decoded by `decode`. Lane `j` sums elements `j, j+LANES, …`; the
/// lanes are added pairwise at the end, then the tail in order.
#[inline(always)]
fn dot_row<const B: usize>(row: &[u8], x: &[f32], decode: impl Fn([u8; B]) -> f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let row_blocks = row.chunks_exact(B * LANES);
    let x_blocks = x.chunks_exact(LANES);
    let (row_tail, x_tail) = (row_blocks.remainder(), x_blocks.remainder());
    for (wb, xb) in row_blocks.zip(x_blocks) {
        // Fixed-size, bounds-check-free body: the compiler turns it into
        // vector loads, conversions and multiply-adds.
        let w: [f32; LANES] =
            core::array::from_fn(|j| decode(core::array::from_fn(|k| wb[j * B + k])));
        for j in 0..LANES {
            lanes[j] += w[j] * xb[j];
        }
    }
    let mut sum = reduce_lanes(lanes);
    for (w, &xv) in row_tail.chunks_exact(B).zip(x_tail) {
        sum += decode(core::array::from_fn(|k| w[k])) * xv;
    }
    sum
}

/// [`dot_row`] for 2-byte elements, in the same lanes and the same sum order
/// (so an F16 row and the F32 row of its decoded values give bit-identical
/// results), but loading 32-bit words: word `i` of a block holds elements
/// `2i` (low half) and `2i+1` (high half). Gathering the halves from single
/// bytes defeats the vectorizer; words keep it to loads, masks and shifts.
#[inline(always)]
fn dot_row_u16(row: &[u8], x: &[f32], decode: impl Fn(u16) -> f32) -> f32 {
    const WORDS: usize = LANES / 2;
    let mut even = [0.0f32; WORDS]; // lane 2i
    let mut odd = [0.0f32; WORDS]; // lane 2i+1
    let row_blocks = row.chunks_exact(2 * LANES);
    let x_blocks = x.chunks_exact(LANES);
    let (row_tail, x_tail) = (row_blocks.remainder(), x_blocks.remainder());
    for (wb, xb) in row_blocks.zip(x_blocks) {
        let words: [u32; WORDS] = core::array::from_fn(|i| {
            u32::from_le_bytes([wb[4 * i], wb[4 * i + 1], wb[4 * i + 2], wb[4 * i + 3]])
        });
        for i in 0..WORDS {
            even[i] += decode(words[i] as u16) * xb[2 * i];
            odd[i] += decode((words[i] >> 16) as u16) * xb[2 * i + 1];
        }
    }
    let lanes = [
        even[0], odd[0], even[1], odd[1], even[2], odd[2], even[3], odd[3],
    ];
    let mut sum = reduce_lanes(lanes);
    for (w, &xv) in row_tail.chunks_exact(2).zip(x_tail) {
        sum += decode(u16::from_le_bytes([w[0], w[1]])) * xv;
    }
    sum
}

/// Sums the lanes pairwise, in a fixed order.
#[inline(always)]
fn reduce_lanes(l: [f32; LANES]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// `out[r] = Σ_c w[r][c] · x[c]` for every row `r` of `w`.
/// `out`: `[w.rows]`, `x`: `[w.cols]`.
pub fn matvec(out: &mut [f32], w: &Matrix<'_>, x: &[f32]) {
    debug_assert_eq!(out.len(), w.rows, "matvec: out length");
    debug_assert_eq!(x.len(), w.cols, "matvec: x length");
    let row_bytes = match w.dtype.row_bytes(w.cols) {
        Some(n) if n > 0 => n,
        _ => {
            out.fill(0.0);
            return;
        }
    };
    let rows = out.iter_mut().zip(w.data.chunks_exact(row_bytes));
    match w.dtype {
        Dtype::F32 => rows.for_each(|(o, row)| *o = dot_row(row, x, f32::from_le_bytes)),
        Dtype::F16 => rows.for_each(|(o, row)| *o = dot_row_u16(row, x, f16_to_f32)),
        Dtype::BF16 => rows.for_each(|(o, row)| *o = dot_row_u16(row, x, bf16_to_f32)),
        Dtype::Q8_0 | Dtype::Q4_0 => {
            debug_assert!(false, "matvec: no kernel for {:?} yet", w.dtype);
            out.fill(0.0);
        }
    }
}

/// Decodes row `row` of `w` into `out` (`[w.cols]`): the embedding lookup.
/// Precondition: `row < w.rows`; past the end `out` is left unchanged.
pub fn row_to_f32(w: &Matrix<'_>, row: usize, out: &mut [f32]) {
    debug_assert!(row < w.rows, "row_to_f32: row {row} of {}", w.rows);
    debug_assert_eq!(out.len(), w.cols, "row_to_f32: out length");
    let Some(row_bytes) = w.dtype.row_bytes(w.cols) else {
        return;
    };
    let Some(bytes) = row
        .checked_mul(row_bytes)
        .and_then(|start| w.data.get(start..start.checked_add(row_bytes)?))
    else {
        return;
    };
    match w.dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32_at(c);
            }
        }
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(u16_at(c));
            }
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_to_f32(u16_at(c));
            }
        }
        Dtype::Q8_0 | Dtype::Q4_0 => {
            debug_assert!(false, "row_to_f32: no kernel for {:?} yet", w.dtype);
        }
    }
}

/// Dot product of two `f32` slices of equal length (attention scores).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "dot: lengths");
    let mut lanes = [0.0f32; LANES];
    let a_blocks = a.chunks_exact(LANES);
    let b_blocks = b.chunks_exact(LANES);
    let (a_tail, b_tail) = (a_blocks.remainder(), b_blocks.remainder());
    for (ab, bb) in a_blocks.zip(b_blocks) {
        for ((lane, &av), &bv) in lanes.iter_mut().zip(ab).zip(bb) {
            *lane += av * bv;
        }
    }
    let mut sum = reduce_lanes(lanes);
    for (&av, &bv) in a_tail.iter().zip(b_tail) {
        sum += av * bv;
    }
    sum
}

/// `y += a · x` elementwise (attention's weighted sum of values).
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len(), "axpy: lengths");
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

/// Attention scores of one query head against `scores.len()` cached
/// positions: `scores[p] = dot(q, keys[p·stride + offset ..][..q.len()])`.
/// `keys`: `[positions × stride]`. Positions whose key row is cut short are
/// left unchanged.
pub fn attention_scores(scores: &mut [f32], q: &[f32], keys: &[f32], stride: usize, offset: usize) {
    for (s, key_row) in scores.iter_mut().zip(keys.chunks_exact(stride.max(1))) {
        if let Some(k) = key_row.get(offset..offset + q.len()) {
            *s = dot(q, k);
        }
    }
}

/// Attention-weighted sum of values: `out = 0`, then for each position `p`
/// in order `out += weights[p] · values[p·stride + offset ..][..out.len()]`
/// (an [`axpy`] per position). `values`: `[positions × stride]`.
pub fn weighted_sum(
    out: &mut [f32],
    weights: &[f32],
    values: &[f32],
    stride: usize,
    offset: usize,
) {
    out.fill(0.0);
    let width = out.len();
    for (&w, value_row) in weights.iter().zip(values.chunks_exact(stride.max(1))) {
        if let Some(v) = value_row.get(offset..offset + width) {
            axpy(out, w, v);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    use crate::test_rng::{encode, Rng};

    /// The values the stored bytes actually hold.
    fn decode_all(dtype: Dtype, bytes: &[u8]) -> Vec<f64> {
        match dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32_at(c) as f64).collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16_at(c)) as f64)
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16_to_f32(u16_at(c)) as f64)
                .collect(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn matvec_matches_f64_for_every_float_dtype_and_awkward_sizes() {
        let mut rng = Rng(0x1234_5678);
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for (rows, cols) in [(1, 1), (3, 7), (5, 8), (4, 17), (13, 64), (2, 333)] {
                let values = rng.vec(rows * cols);
                let data = encode(dtype, &values, cols);
                let w = Matrix::new(dtype, rows, cols, &data).unwrap();
                let x = rng.vec(cols);
                let mut out = std::vec![f32::NAN; rows];
                matvec(&mut out, &w, &x);
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
    fn half_precision_matvec_equals_f32_matvec_of_dequantized_weights() {
        let mut rng = Rng(99);
        let (rows, cols) = (9, 45);
        let values = rng.vec(rows * cols);
        let x = rng.vec(cols);
        for dtype in [Dtype::F16, Dtype::BF16] {
            let data = encode(dtype, &values, cols);
            let w = Matrix::new(dtype, rows, cols, &data).unwrap();
            let dequantized: Vec<f32> =
                decode_all(dtype, &data).iter().map(|&v| v as f32).collect();
            let f32_data = encode(Dtype::F32, &dequantized, cols);
            let w32 = Matrix::new(Dtype::F32, rows, cols, &f32_data).unwrap();
            let (mut a, mut b) = (std::vec![0.0; rows], std::vec![0.0; rows]);
            matvec(&mut a, &w, &x);
            matvec(&mut b, &w32, &x);
            // Same decoded values, same summation order: bit-identical.
            assert_eq!(a, b, "{dtype:?}");
        }
    }

    #[test]
    fn row_to_f32_decodes_each_dtype() {
        let mut rng = Rng(7);
        let (rows, cols) = (4, 11);
        let values = rng.vec(rows * cols);
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let data = encode(dtype, &values, cols);
            let w = Matrix::new(dtype, rows, cols, &data).unwrap();
            let exact = decode_all(dtype, &data);
            for r in 0..rows {
                let mut out = std::vec![f32::NAN; cols];
                row_to_f32(&w, r, &mut out);
                for c in 0..cols {
                    assert_eq!(out[c] as f64, exact[r * cols + c], "{dtype:?} {r},{c}");
                }
            }
        }
    }

    #[test]
    fn dot_and_axpy_match_f64() {
        let mut rng = Rng(3);
        for n in [0, 1, 7, 8, 9, 31, 100] {
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
