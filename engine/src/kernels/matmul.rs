//! Matrix × several vectors, for prefill: the reference kernels.
//!
//! A chunk of `n` prompt positions multiplies every weight matrix at once:
//! each weight row is loaded once and used for all `n` positions while it is
//! in cache, instead of being streamed from memory once per position.
//!
//! Every output element is computed in exactly the order of the one-vector
//! kernel for the same dtype — the float kernels keep [`LANES`] partial sums
//! per position, added pairwise at the end and then the tail, as
//! [`scalar::matvec`](super::scalar::matvec) does; the integer kernels add
//! `d_w · d_x · isum` block by block from 0.0, as
//! [`matvec_quantized`](crate::quant::matvec_quantized) does — so a prompt run through these kernels
//! gives the same bits as the same prompt run one token at a time through
//! the scalar kernels.
//!
//! Output layout: `out` is `[w.rows × n]`, row `r` of the weights holding its
//! `n` products together, so a range of weight rows owns a contiguous range
//! of `out` (what the [`Parallel`](crate::parallel::Parallel) hook hands out).

use super::scalar::LANES;
use crate::error::Error;
use crate::float16::{bf16_to_f32, f16_to_f32};
use crate::quant::BlockQ8;
use crate::tensor::{Dtype, Matrix, BLOCK_LEN, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES};

/// Positions multiplied together against one loaded stretch of a weight row:
/// `GROUP × LANES` partial sums fill the vector registers of AVX2 without
/// spilling.
const GROUP: usize = 4;

/// Bytes of the f16 scale at the start of a Q8_0 / Q4_0 block.
const SCALE_BYTES: usize = 2;

/// `out[r·n + t] = Σ_c w[r][c] · x[t·cols + c]` for every row `r` of `w` and
/// position `t < n`; F32, F16 and BF16 weights.
/// `out`: `[w.rows × n]`, `x`: `[n × w.cols]`.
///
/// Preconditions as [`scalar::matvec`](super::scalar::matvec): if a length
/// disagrees the kernel stops at the shorter slice (debug builds assert);
/// quantized weights leave `out` filled with zeros.
pub fn matmul(out: &mut [f32], w: &Matrix<'_>, x: &[f32], n: usize) {
    debug_assert_eq!(out.len(), w.rows * n, "matmul: out length");
    debug_assert_eq!(x.len(), n * w.cols, "matmul: x length");
    let row_bytes = match w.dtype.row_bytes(w.cols) {
        Some(bytes) if bytes > 0 && n > 0 => bytes,
        _ => {
            out.fill(0.0);
            return;
        }
    };
    let rows = out.chunks_exact_mut(n).zip(w.data.chunks_exact(row_bytes));
    match w.dtype {
        Dtype::F32 => rows.for_each(|(o, row)| row_times_positions(o, row, x, f32::from_le_bytes)),
        Dtype::F16 => rows.for_each(|(o, row)| {
            row_times_positions(o, row, x, |b: [u8; 2]| f16_to_f32(u16::from_le_bytes(b)))
        }),
        Dtype::BF16 => rows.for_each(|(o, row)| {
            row_times_positions(o, row, x, |b: [u8; 2]| bf16_to_f32(u16::from_le_bytes(b)))
        }),
        Dtype::Q8_0 | Dtype::Q4_0 => {
            debug_assert!(false, "matmul: {:?} needs matmul_quantized", w.dtype);
            out.fill(0.0);
        }
    }
}

/// One weight row times every position: `out[t] = row · x[t]`, `out`: `[n]`,
/// `x`: `[n × cols]`, positions taken [`GROUP`] at a time.
#[inline(always)]
fn row_times_positions<const B: usize>(
    out: &mut [f32],
    row: &[u8],
    x: &[f32],
    decode: impl Fn([u8; B]) -> f32 + Copy,
) {
    let cols = row.len() / B;
    let mut groups = out.chunks_exact_mut(GROUP);
    let mut xs = x.chunks_exact(GROUP * cols);
    for (o, x_group) in (&mut groups).zip(&mut xs) {
        let x_rows: [&[f32]; GROUP] = core::array::from_fn(|g| &x_group[g * cols..][..cols]);
        o.copy_from_slice(&dot_group(row, x_rows, decode));
    }
    for (o, x_row) in groups
        .into_remainder()
        .iter_mut()
        .zip(xs.remainder().chunks_exact(cols))
    {
        *o = dot_group::<1, B>(row, [x_row], decode)[0];
    }
}

/// `G` dot products of one row with `G` vectors, each in [`dot_row`]'s order
/// (lane `j` sums elements `j, j+LANES, …`; lanes added pairwise; then the
/// tail in order). The row is decoded once per stretch of [`LANES`] elements
/// and used `G` times.
///
/// [`dot_row`]: super::scalar
#[inline(always)]
fn dot_group<const G: usize, const B: usize>(
    row: &[u8],
    xs: [&[f32]; G],
    decode: impl Fn([u8; B]) -> f32,
) -> [f32; G] {
    let mut lanes = [[0.0f32; LANES]; G];
    let row_blocks = row.chunks_exact(B * LANES);
    let row_tail = row_blocks.remainder();
    let mut x_blocks = xs.map(|x| x.chunks_exact(LANES));
    for wb in row_blocks {
        let w: [f32; LANES] =
            core::array::from_fn(|j| decode(core::array::from_fn(|k| wb[j * B + k])));
        for (lane, x) in lanes.iter_mut().zip(x_blocks.iter_mut()) {
            if let Some(xb) = x.next() {
                for j in 0..LANES {
                    lane[j] += w[j] * xb[j];
                }
            }
        }
    }
    core::array::from_fn(|g| {
        let mut sum = reduce_lanes(lanes[g]);
        let x_tail = x_blocks[g].remainder();
        for (w, &xv) in row_tail.chunks_exact(B).zip(x_tail) {
            sum += decode(core::array::from_fn(|k| w[k])) * xv;
        }
        sum
    })
}

/// Sums the lanes pairwise, in the order of the scalar matvec's reduction.
#[inline(always)]
fn reduce_lanes(l: [f32; LANES]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// `out[r·n + t] = Σ_b d_w · d_x · isum(w[r] block b, xq[t] block b)` for a
/// Q8_0 or Q4_0 matrix `w` and `n` positions of activations quantized with
/// [`quantize_activations`](crate::quant::quantize_activations) (`xq`: `[n × cols/32]` blocks);
/// `out`: `[w.rows × n]`. Element `(r, t)` is bit for bit
/// `quant::q8_0_dot(w.row(r), xq[t])` (or `q4_0_dot`).
///
/// Errors: [`Error::InvalidInput`] for a float matrix, a matrix whose bytes
/// do not match its shape, or `xq` / `out` of the wrong length.
pub fn matmul_quantized(
    out: &mut [f32],
    w: &Matrix<'_>,
    xq: &[BlockQ8],
    n: usize,
) -> Result<(), Error> {
    let blocks = w.cols / BLOCK_LEN;
    let row_bytes = match w.dtype {
        Dtype::Q8_0 => Q8_0_BLOCK_BYTES * blocks,
        Dtype::Q4_0 => Q4_0_BLOCK_BYTES * blocks,
        _ => {
            return Err(Error::InvalidInput {
                reason: "matmul_quantized needs a Q8_0 or Q4_0 matrix",
            })
        }
    };
    if Some(w.data.len())
        != w.dtype
            .row_bytes(w.cols)
            .and_then(|b| b.checked_mul(w.rows))
    {
        return Err(Error::InvalidInput {
            reason: "matrix bytes do not match its shape",
        });
    }
    if Some(xq.len()) != n.checked_mul(blocks) || Some(out.len()) != n.checked_mul(w.rows) {
        return Err(Error::InvalidInput {
            reason: "matmul_quantized: activations or output of the wrong length",
        });
    }
    if n == 0 {
        return Ok(());
    }
    if blocks == 0 {
        out.fill(0.0);
        return Ok(());
    }
    for (o, row) in out.chunks_exact_mut(n).zip(w.data.chunks_exact(row_bytes)) {
        o.fill(0.0);
        match w.dtype {
            Dtype::Q8_0 => {
                for (b, block) in row.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
                    let levels: [i8; BLOCK_LEN] =
                        core::array::from_fn(|j| block[SCALE_BYTES + j] as i8);
                    add_block_products(o, scale_of(block), &levels, xq, blocks, b);
                }
            }
            _ => {
                for (b, block) in row.chunks_exact(Q4_0_BLOCK_BYTES).enumerate() {
                    // Byte j: element j in the low nibble, j + 16 in the high.
                    let mut levels = [0i8; BLOCK_LEN];
                    let (low, high) = levels.split_at_mut(BLOCK_LEN / 2);
                    for ((lo, hi), &byte) in low.iter_mut().zip(high).zip(&block[SCALE_BYTES..]) {
                        *lo = (byte & 0x0f) as i8 - 8;
                        *hi = (byte >> 4) as i8 - 8;
                    }
                    add_block_products(o, scale_of(block), &levels, xq, blocks, b);
                }
            }
        }
    }
    Ok(())
}

/// Positions whose integer block sums are computed in one call.
const ISUM_GROUP: usize = 16;

/// `out[t] += d_w · xq[t][b].d · isum` for every position `t` (`out`: `[n]`,
/// `xq`: `[n × blocks]`): one decoded weight block used `n` times. The
/// integer sums come first, a group of positions at a time, in a loop of
/// their own; the float accumulation follows in block order.
#[inline(always)]
fn add_block_products(
    out: &mut [f32],
    d_w: f32,
    levels: &[i8; BLOCK_LEN],
    xq: &[BlockQ8],
    blocks: usize,
    b: usize,
) {
    let groups = out
        .chunks_mut(ISUM_GROUP)
        .zip(xq.chunks(ISUM_GROUP * blocks));
    for (o_group, x_group) in groups {
        let mut isums = [0i32; ISUM_GROUP];
        block_isums(levels, x_group, blocks, b, &mut isums);
        let products = o_group
            .iter_mut()
            .zip(x_group.chunks_exact(blocks))
            .zip(isums);
        for ((o, x_row), isum) in products {
            *o += d_w * x_row[b].d * isum as f32;
        }
    }
}

/// `isums[g] = Σ_j w_j · x_j` over block `b` of each position `g` of
/// `x_group` (`[≤ ISUM_GROUP × blocks]`), exact in i32. Kept out of line for
/// the same reason as the quantizer's block sums: alone, the loop compiles
/// to pmaddwd.
#[inline(never)]
fn block_isums(
    w: &[i8; BLOCK_LEN],
    x_group: &[BlockQ8],
    blocks: usize,
    b: usize,
    isums: &mut [i32; ISUM_GROUP],
) {
    for (isum, x_row) in isums.iter_mut().zip(x_group.chunks_exact(blocks)) {
        let x = &x_row[b].qs;
        let mut sum = 0i32;
        for j in 0..BLOCK_LEN {
            sum += i32::from(w[j]) * i32::from(x[j]);
        }
        *isum = sum;
    }
}

/// The f16 scale at the start of a Q8_0 / Q4_0 block.
#[inline(always)]
fn scale_of(block: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[0], block[1]]))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::scalar;
    use crate::quant;

    use crate::test_rng::{encode, Rng};

    #[test]
    fn float_matmul_is_bit_identical_to_matvec_per_position() {
        let mut rng = Rng(0x5eed);
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for (rows, cols) in [(1, 1), (3, 7), (5, 8), (4, 17), (13, 64), (2, 333)] {
                for n in [1, 2, 3, 4, 5, 9, 16] {
                    let data = encode(dtype, &rng.vec(rows * cols), cols);
                    let w = Matrix::new(dtype, rows, cols, &data).unwrap();
                    let x = rng.vec(n * cols);
                    let mut out = std::vec![f32::NAN; rows * n];
                    matmul(&mut out, &w, &x, n);
                    for t in 0..n {
                        let mut want = std::vec![0.0; rows];
                        scalar::matvec(&mut want, &w, &x[t * cols..][..cols]);
                        for r in 0..rows {
                            assert_eq!(
                                out[r * n + t].to_bits(),
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
    fn quantized_matmul_is_bit_identical_to_the_integer_dots() {
        let mut rng = Rng(42);
        for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
            for (rows, cols) in [(1, 32), (3, 64), (7, 96), (2, 288)] {
                for n in [1, 2, 5, 16] {
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
                    matmul_quantized(&mut out, &w, &xq, n).unwrap();
                    for r in 0..rows {
                        for t in 0..n {
                            let x = &xq[t * blocks..][..blocks];
                            let want = match dtype {
                                Dtype::Q8_0 => quant::q8_0_dot(w.row(r), x),
                                _ => quant::q4_0_dot(w.row(r), x),
                            }
                            .unwrap();
                            assert_eq!(
                                out[r * n + t].to_bits(),
                                want.to_bits(),
                                "{dtype:?} {rows}x{cols} n={n} ({r},{t})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn quantized_matmul_refuses_wrong_lengths() {
        let data = std::vec![0u8; 2 * Q8_0_BLOCK_BYTES];
        let w = Matrix::new(Dtype::Q8_0, 2, 32, &data).unwrap();
        let xq = [BlockQ8::ZERO; 3];
        let mut out = [0.0f32; 6];
        assert!(matmul_quantized(&mut out, &w, &xq, 3).is_ok());
        assert!(matmul_quantized(&mut out[..5], &w, &xq, 3).is_err());
        assert!(matmul_quantized(&mut out[..4], &w, &xq[..2], 3).is_err());
        let floats = std::vec![0u8; 2 * 32 * 4];
        let wf = Matrix::new(Dtype::F32, 2, 32, &floats).unwrap();
        assert!(matmul_quantized(&mut out, &wf, &xq, 3).is_err());
    }
}
