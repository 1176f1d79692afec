//! The SwiGLU gate: `gate = silu(h1) · h3`, with h1 = W1 x and h3 = W3 x.

use super::fast_exp::exp;
use crate::gemm::vectorized;

/// Writes `gate` and saves `sigmoid(h1)` for the backward.
/// gate, sig, h1, h3: [n, hidden].
pub fn forward(gate: &mut [f32], sig: &mut [f32], h1: &[f32], h3: &[f32]) {
    vectorized(
        #[inline(always)]
        || gate_rows(gate, sig, h1, h3),
    );
}

#[inline(always)]
fn gate_rows(gate: &mut [f32], sig: &mut [f32], h1: &[f32], h3: &[f32]) {
    // Eight lanes at a time through local arrays: the compiler left the
    // plain four-way zip scalar (about 10x slower than this).
    let mut outs = gate.chunks_exact_mut(8).zip(sig.chunks_exact_mut(8));
    let mut ins = h1.chunks_exact(8).zip(h3.chunks_exact(8));
    for ((g, s), (a, b)) in (&mut outs).zip(&mut ins) {
        let (mut g8, mut s8) = ([0.0f32; 8], [0.0f32; 8]);
        for i in 0..8 {
            s8[i] = 1.0 / (1.0 + exp(-a[i]));
            g8[i] = a[i] * s8[i] * b[i];
        }
        g.copy_from_slice(&g8);
        s.copy_from_slice(&s8);
    }
    let done = gate.len() - gate.len() % 8;
    let tail = gate[done..].iter_mut().zip(&mut sig[done..]);
    for ((g, s), (&a, &b)) in tail.zip(h1[done..].iter().zip(&h3[done..])) {
        *s = 1.0 / (1.0 + exp(-a));
        *g = a * *s * b;
    }
}

/// Writes `dh1`, `dh3` from `dgate`. All slices: [n, hidden].
pub fn backward(
    dh1: &mut [f32],
    dh3: &mut [f32],
    dgate: &[f32],
    sig: &[f32],
    h1: &[f32],
    h3: &[f32],
) {
    vectorized(
        #[inline(always)]
        || gate_grads(dh1, dh3, dgate, sig, h1, h3),
    );
}

#[inline(always)]
fn gate_grads(
    dh1: &mut [f32],
    dh3: &mut [f32],
    dgate: &[f32],
    sig: &[f32],
    h1: &[f32],
    h3: &[f32],
) {
    let grads = dh1.iter_mut().zip(dh3.iter_mut());
    let saved = sig.iter().zip(h1.iter().zip(h3));
    for (((d1, d3), &dg), (&s, (&a, &b))) in grads.zip(dgate).zip(saved) {
        let silu = a * s;
        // silu'(a) = s + a·s·(1 - s)
        *d1 = dg * b * (s + a * s * (1.0 - s));
        *d3 = dg * silu;
    }
}

#[cfg(test)]
mod tests {
    /// The 8-lane body and the scalar tail compute the same thing.
    #[test]
    fn every_element_is_gated_on_an_awkward_length() {
        let n = 8 * 3 + 5;
        let h1: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 5.0).collect();
        let h3: Vec<f32> = (0..n).map(|i| 1.5 - i as f32 * 0.11).collect();
        let (mut gate, mut sig) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        super::forward(&mut gate, &mut sig, &h1, &h3);
        for i in 0..n {
            let s = 1.0 / (1.0 + (-h1[i]).exp());
            assert!((sig[i] - s).abs() < 1e-6, "sig at {i}");
            assert!((gate[i] - h1[i] * s * h3[i]).abs() < 1e-5, "gate at {i}");
        }
    }
}
