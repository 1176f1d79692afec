//! Causal multi-head attention with grouped KV heads: query head `h` reads
//! KV head `h / (n_heads / n_kv_heads)`; scores are scaled by 1/sqrt(head_dim).

use super::dot::dot;
use super::fast_exp::exp;
use rayon::prelude::*;

/// The sizes attention needs.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Window length T.
    pub context: usize,
    /// Query heads H.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttentionShape {
    fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// y: [b·T, H·hd]; probs: [b, H, T, T] (saved for backward; zero above the
/// diagonal); q: [b·T, H·hd]; k, v: [b·T, KVH·hd]. Parallel over sequences.
pub fn forward(
    y: &mut [f32],
    probs: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttentionShape,
) {
    let (t_len, hd) = (s.context, s.head_dim);
    let (qw, kvw) = (s.q_width(), s.kv_width());
    y.par_chunks_mut(t_len * qw)
        .zip(probs.par_chunks_mut(s.n_heads * t_len * t_len))
        .zip(q.par_chunks(t_len * qw))
        .zip(k.par_chunks(t_len * kvw).zip(v.par_chunks(t_len * kvw)))
        .for_each(|(((y, probs), q), (k, v))| {
            for h in 0..s.n_heads {
                let kvh = h / s.group();
                for t in 0..t_len {
                    let q_row = &q[t * qw + h * hd..][..hd];
                    let p = &mut probs[(h * t_len + t) * t_len..][..t_len];
                    let mut max = f32::NEG_INFINITY;
                    for (j, p) in p[..=t].iter_mut().enumerate() {
                        *p = dot(q_row, &k[j * kvw + kvh * hd..][..hd]) * s.scale();
                        max = max.max(*p);
                    }
                    let mut sum = 0.0f32;
                    for p in &mut p[..=t] {
                        *p = exp(*p - max);
                        sum += *p;
                    }
                    let inv = 1.0 / sum;
                    for p in &mut p[..=t] {
                        *p *= inv;
                    }
                    p[t + 1..].fill(0.0);
                    let out = &mut y[t * qw + h * hd..][..hd];
                    out.fill(0.0);
                    for (j, &pj) in p[..=t].iter().enumerate() {
                        for (o, vv) in out.iter_mut().zip(&v[j * kvw + kvh * hd..][..hd]) {
                            *o += pj * vv;
                        }
                    }
                }
            }
        });
}

/// Accumulates `dq`, `dk`, `dv` from `dy` (shapes as in [`forward`]). Each
/// sequence is one task, and the heads sharing a KV head run in order inside
/// it, so `dk`/`dv` sums have a fixed order.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dy: &[f32],
    probs: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttentionShape,
) {
    let (t_len, hd) = (s.context, s.head_dim);
    let (qw, kvw) = (s.q_width(), s.kv_width());
    let grads = dq
        .par_chunks_mut(t_len * qw)
        .zip(dk.par_chunks_mut(t_len * kvw))
        .zip(dv.par_chunks_mut(t_len * kvw));
    let inputs = dy
        .par_chunks(t_len * qw)
        .zip(probs.par_chunks(s.n_heads * t_len * t_len))
        .zip(q.par_chunks(t_len * qw))
        .zip(k.par_chunks(t_len * kvw).zip(v.par_chunks(t_len * kvw)));
    grads
        .zip(inputs)
        .for_each(|(((dq, dk), dv), (((dy, probs), q), (k, v)))| {
            // dprobs[j] for one query row: [T]
            let mut dprobs = vec![0.0f32; t_len];
            for h in 0..s.n_heads {
                let kvh = h / s.group();
                for t in 0..t_len {
                    let p = &probs[(h * t_len + t) * t_len..][..t_len];
                    let dy_row = &dy[t * qw + h * hd..][..hd];
                    let mut weighted = 0.0f32;
                    for j in 0..=t {
                        let at = j * kvw + kvh * hd;
                        dprobs[j] = dot(dy_row, &v[at..at + hd]);
                        weighted += p[j] * dprobs[j];
                        for (d, g) in dv[at..at + hd].iter_mut().zip(dy_row) {
                            *d += p[j] * g;
                        }
                    }
                    // softmax backward, then the score scale
                    let q_row = &q[t * qw + h * hd..][..hd];
                    for j in 0..=t {
                        let dscore = p[j] * (dprobs[j] - weighted) * s.scale();
                        let at = j * kvw + kvh * hd;
                        let dq_row = &mut dq[t * qw + h * hd..][..hd];
                        for (d, kk) in dq_row.iter_mut().zip(&k[at..at + hd]) {
                            *d += dscore * kk;
                        }
                        for (d, qq) in dk[at..at + hd].iter_mut().zip(q_row) {
                            *d += dscore * qq;
                        }
                    }
                }
            }
        });
}
