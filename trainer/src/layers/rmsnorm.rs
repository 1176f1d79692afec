//! RMSNorm: `y = x · 1/sqrt(mean(x²) + eps) · g`, per row (as llama2.c's run.c).

use super::ROW_CHUNK;
use crate::gemm::vectorized;
use kinglet::kernels::dot;
use rayon::prelude::*;

/// out: `[n, dim]`; rstd: `[n]` (saved for backward); x: `[n, dim]`; gain: `[dim]`.
pub fn forward(out: &mut [f32], rstd: &mut [f32], x: &[f32], gain: &[f32], dim: usize, eps: f32) {
    out.par_chunks_mut(ROW_CHUNK * dim)
        .zip(rstd.par_chunks_mut(ROW_CHUNK))
        .zip(x.par_chunks(ROW_CHUNK * dim))
        .for_each(|((out, rstd), x)| {
            vectorized(
                #[inline(always)]
                || {
                    let rows = out.chunks_exact_mut(dim).zip(rstd).zip(x.chunks_exact(dim));
                    for ((o, r), x) in rows {
                        let ss = dot(x, x);
                        let scale = 1.0 / (ss / dim as f32 + eps).sqrt();
                        *r = scale;
                        for ((o, v), g) in o.iter_mut().zip(x).zip(gain) {
                            *o = g * (scale * v);
                        }
                    }
                },
            )
        });
}

/// Accumulates `dx += ∂L/∂x` and `dgain += ∂L/∂g` given `dout = ∂L/∂y`.
/// dx: `[n, dim]`; dgain: `[dim]`; dout, x: `[n, dim]`; rstd: `[n]`; gain: `[dim]`.
///
/// One sequential pass over the rows: the training pass runs it inside a
/// batch shard that already has a thread of its own, and walking the rows in
/// order lets the gain gradient (a sum over rows) ride along in the same
/// pass, in a fixed order.
pub fn backward(
    dx: &mut [f32],
    dgain: &mut [f32],
    dout: &[f32],
    x: &[f32],
    rstd: &[f32],
    gain: &[f32],
    dim: usize,
) {
    vectorized(
        #[inline(always)]
        || backward_rows(dx, dgain, dout, x, rstd, gain, dim),
    );
}

#[inline(always)]
fn backward_rows(
    dx: &mut [f32],
    dgain: &mut [f32],
    dout: &[f32],
    x: &[f32],
    rstd: &[f32],
    gain: &[f32],
    dim: usize,
) {
    let (dgain, gain) = (&mut dgain[..dim], &gain[..dim]);
    let rows = dx.chunks_exact_mut(dim).zip(dout.chunks_exact(dim));
    for ((dx, dy), (x, &r)) in rows.zip(x.chunks_exact(dim).zip(rstd)) {
        // y_j = g_j r x_j, r = (mean(x²)+eps)^-1/2, ∂r/∂x_k = -r³ x_k / dim
        let c = r * r * r * weighted_dot(dy, gain, x) / dim as f32;
        // Indexing slices of one known length: the compiler vectorizes this
        // loop cleanly (a five-way zip came out as shuffles, 2x slower).
        let (dx, dy, x) = (&mut dx[..dim], &dy[..dim], &x[..dim]);
        for j in 0..dim {
            dx[j] += r * gain[j] * dy[j] - c * x[j];
            dgain[j] += dy[j] * x[j] * r;
        }
    }
}

/// `Σ a[i]·b[i]·c[i]` with eight partial sums, like [`dot`].
#[inline(always)]
fn weighted_dot(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a
        .chunks_exact(8)
        .zip(b.chunks_exact(8).zip(c.chunks_exact(8)));
    for (a, (b, c)) in chunks {
        for i in 0..8 {
            acc[i] += a[i] * b[i] * c[i];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    let done = a.len() - a.len() % 8;
    for ((a, b), c) in a[done..].iter().zip(&b[done..]).zip(&c[done..]) {
        sum += a * b * c;
    }
    sum
}

#[cfg(test)]
mod tests {
    /// The 8-lane body and the tail against the textbook formula in f64,
    /// on a width that is not a multiple of 8.
    #[test]
    fn backward_matches_the_formula_on_an_awkward_width() {
        let (n, dim) = (3, 13);
        let val = |i: usize, k: f32| ((i as f32 * k).sin() * 1.7) as f64;
        let x: Vec<f32> = (0..n * dim).map(|i| val(i, 0.7) as f32).collect();
        let dy: Vec<f32> = (0..n * dim).map(|i| val(i, 1.3) as f32).collect();
        let g: Vec<f32> = (0..dim).map(|i| 1.0 + val(i, 2.1) as f32).collect();
        let (mut y, mut rstd) = (vec![0.0; n * dim], vec![0.0; n]);
        super::forward(&mut y, &mut rstd, &x, &g, dim, 1e-5);
        let (mut dx, mut dg) = (vec![0.5; n * dim], vec![0.25; dim]);
        super::backward(&mut dx, &mut dg, &dy, &x, &rstd, &g, dim);
        let mut want_dg = vec![0.25f64; dim];
        for row in 0..n {
            let (x, dy) = (&x[row * dim..][..dim], &dy[row * dim..][..dim]);
            let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
            let r = 1.0 / (ms + 1e-5).sqrt();
            let dot: f64 = (0..dim)
                .map(|j| dy[j] as f64 * g[j] as f64 * x[j] as f64)
                .sum();
            for j in 0..dim {
                let want = 0.5 + r * g[j] as f64 * dy[j] as f64
                    - r * r * r * dot * x[j] as f64 / dim as f64;
                assert!(
                    (dx[row * dim + j] as f64 - want).abs() < 1e-5,
                    "dx {row},{j}"
                );
                want_dg[j] += dy[j] as f64 * x[j] as f64 * r;
            }
        }
        for j in 0..dim {
            assert!((dg[j] as f64 - want_dg[j]).abs() < 1e-5, "dgain {j}");
        }
    }
}
