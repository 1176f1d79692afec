//! The SwiGLU gate: `gate = silu(h1) · h3`, with h1 = W1 x and h3 = W3 x.

use super::fast_exp::exp;

/// Writes `gate` and saves `sigmoid(h1)` for the backward.
/// gate, sig, h1, h3: [n, hidden].
pub fn forward(gate: &mut [f32], sig: &mut [f32], h1: &[f32], h3: &[f32]) {
    for (((g, s), &a), &b) in gate.iter_mut().zip(sig.iter_mut()).zip(h1).zip(h3) {
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
    let grads = dh1.iter_mut().zip(dh3.iter_mut());
    let saved = sig.iter().zip(h1.iter().zip(h3));
    for (((d1, d3), &dg), (&s, (&a, &b))) in grads.zip(dgate).zip(saved) {
        let silu = a * s;
        // silu'(a) = s + a·s·(1 - s)
        *d1 = dg * b * (s + a * s * (1.0 - s));
        *d3 = dg * silu;
    }
}
