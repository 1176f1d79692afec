//! RMSNorm: `y = x · 1/sqrt(mean(x²) + eps) · g`, per row (as llama2.c's run.c).

use super::dot::dot;
use super::ROW_CHUNK;
use rayon::prelude::*;

/// out: [n, dim]; rstd: [n] (saved for backward); x: [n, dim]; gain: [dim].
pub fn forward(out: &mut [f32], rstd: &mut [f32], x: &[f32], gain: &[f32], dim: usize, eps: f32) {
    out.par_chunks_mut(ROW_CHUNK * dim)
        .zip(rstd.par_chunks_mut(ROW_CHUNK))
        .zip(x.par_chunks(ROW_CHUNK * dim))
        .for_each(|((out, rstd), x)| {
            for ((o, r), x) in out.chunks_exact_mut(dim).zip(rstd).zip(x.chunks_exact(dim)) {
                let ss = dot(x, x);
                let scale = 1.0 / (ss / dim as f32 + eps).sqrt();
                *r = scale;
                for ((o, v), g) in o.iter_mut().zip(x).zip(gain) {
                    *o = g * (scale * v);
                }
            }
        });
}

/// Accumulates `dx += ∂L/∂x` and `dgain += ∂L/∂g` given `dout = ∂L/∂y`.
/// dx: [n, dim]; dgain: [dim]; dout, x: [n, dim]; rstd: [n]; gain: [dim].
pub fn backward(
    dx: &mut [f32],
    dgain: &mut [f32],
    dout: &[f32],
    x: &[f32],
    rstd: &[f32],
    gain: &[f32],
    dim: usize,
) {
    dx.par_chunks_mut(ROW_CHUNK * dim)
        .zip(dout.par_chunks(ROW_CHUNK * dim))
        .zip(x.par_chunks(ROW_CHUNK * dim))
        .zip(rstd.par_chunks(ROW_CHUNK))
        .for_each(|(((dx, dout), x), rstd)| {
            let rows = dx.chunks_exact_mut(dim).zip(dout.chunks_exact(dim));
            for ((dx, dy), (x, &r)) in rows.zip(x.chunks_exact(dim).zip(rstd)) {
                // y_j = g_j r x_j, r = (mean(x²)+eps)^-1/2, ∂r/∂x_k = -r³ x_k / dim
                let mut dot = 0.0f32;
                for ((dy, g), x) in dy.iter().zip(gain).zip(x) {
                    dot += dy * g * x;
                }
                let c = r * r * r * dot / dim as f32;
                for (((dx, dy), g), x) in dx.iter_mut().zip(dy).zip(gain).zip(x) {
                    *dx += r * g * dy - c * x;
                }
            }
        });
    // Gains are shared by all rows: one fixed-order sum.
    for ((dy, x), r) in dout.chunks_exact(dim).zip(x.chunks_exact(dim)).zip(rstd) {
        for ((dg, dy), x) in dgain.iter_mut().zip(dy).zip(x) {
            *dg += dy * x * r;
        }
    }
}
