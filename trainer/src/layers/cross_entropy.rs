//! Softmax cross-entropy over the classifier's logits.

use super::fast_exp::exp;
use super::ROW_CHUNK;
use crate::gemm::vectorized;
use rayon::prelude::*;

/// Writes each position's loss `logsumexp(logits) - logits[target]` into
/// `losses` and returns their mean (summed in f64, in position order).
/// losses: `[n]`; logits: `[n, vocab]`; targets: `[n]`, each < vocab.
pub fn forward(losses: &mut [f32], logits: &[f32], targets: &[u32], vocab: usize) -> f64 {
    losses
        .par_chunks_mut(ROW_CHUNK)
        .zip(logits.par_chunks(ROW_CHUNK * vocab))
        .zip(targets.par_chunks(ROW_CHUNK))
        .for_each(|((losses, logits), targets)| {
            vectorized(
                #[inline(always)]
                || {
                    for ((loss, row), &t) in losses
                        .iter_mut()
                        .zip(logits.chunks_exact(vocab))
                        .zip(targets)
                    {
                        *loss = log_sum_exp(row) - row[t as usize];
                    }
                },
            )
        });
    losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len().max(1) as f64
}

/// `dlogits = (softmax(logits) - onehot(target)) · scale`, where `scale` is
/// `1 / (positions · accumulation steps)` for a mean loss.
/// dlogits, logits: `[n, vocab]`; targets: `[n]`.
pub fn backward(dlogits: &mut [f32], logits: &[f32], targets: &[u32], vocab: usize, scale: f32) {
    dlogits
        .par_chunks_mut(ROW_CHUNK * vocab)
        .zip(logits.par_chunks(ROW_CHUNK * vocab))
        .zip(targets.par_chunks(ROW_CHUNK))
        .for_each(|((drows, rows), targets)| {
            vectorized(
                #[inline(always)]
                || {
                    let it = drows.chunks_exact_mut(vocab).zip(rows.chunks_exact(vocab));
                    for ((d, row), &t) in it.zip(targets) {
                        let lse = log_sum_exp(row);
                        for (d, &z) in d.iter_mut().zip(row) {
                            *d = exp(z - lse) * scale;
                        }
                        d[t as usize] -= scale;
                    }
                },
            )
        });
}

/// `log Σ exp(row)`, shifted by the maximum so it cannot overflow. Both
/// reductions keep eight partial results: with one running sum the compiler
/// leaves every `exp` scalar.
#[inline(always)]
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let mut chunks = row.chunks_exact(8);
    let mut maxes = [f32::NEG_INFINITY; 8];
    for c in &mut chunks {
        for i in 0..8 {
            maxes[i] = maxes[i].max(c[i]);
        }
    }
    let max = chunks.remainder().iter().fold(
        maxes.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        |m, &z| m.max(z),
    );
    let mut chunks = row.chunks_exact(8);
    let mut sums = [0.0f32; 8];
    for c in &mut chunks {
        for i in 0..8 {
            sums[i] += exp(c[i] - max);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&z| exp(z - max)).sum();
    let sum = ((sums[0] + sums[4]) + (sums[1] + sums[5]))
        + ((sums[2] + sums[6]) + (sums[3] + sums[7]))
        + tail;
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    /// Against the plain definition in f64, on lengths around the chunk width.
    #[test]
    fn log_sum_exp_matches_the_definition() {
        for n in [1, 7, 8, 9, 65] {
            let row: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).sin() * 4.0).collect();
            let want = row.iter().map(|&z| (z as f64).exp()).sum::<f64>().ln();
            let got = super::log_sum_exp(&row) as f64;
            assert!((got - want).abs() < 1e-5, "n = {n}: {got} vs {want}");
        }
    }
}
