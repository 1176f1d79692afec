//! Causal multi-head attention with grouped KV heads: query head `h` reads
//! KV head `h / (n_heads / n_kv_heads)`; scores are scaled by 1/sqrt(head_dim).

use super::fast_exp::exp;
use crate::gemm::{sgemm_masked, vectorized, Layout, Mask};
use kinglet::kernels::dot;
use rayon::prelude::*;
use std::cell::RefCell;

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

/// One head's rows inside a [T, width] buffer: `T × hd` at row stride `width`.
fn head_rows(t_len: usize, hd: usize, width: usize) -> Layout {
    Layout {
        rows: t_len,
        cols: hd,
        row_stride: width,
        col_stride: 1,
    }
}

/// The transpose of [`head_rows`]: `hd × T`.
fn head_cols(t_len: usize, hd: usize, width: usize) -> Layout {
    Layout {
        rows: hd,
        cols: t_len,
        row_stride: 1,
        col_stride: width,
    }
}

thread_local! {
    /// ∂L/∂probs of one head, reused by every backward task on this thread. [T, T]
    static DPROBS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// y: [b·T, H·hd]; probs: [b, H, T, T] (saved for backward; zero above the
/// diagonal); q: [b·T, H·hd]; k, v: [b·T, KVH·hd]. Parallel over sequences;
/// per head, the scores `Q Kᵀ` and the output `P V` are matrix products
/// that skip the masked half (`Mask`), tile by tile: what they compute past
/// the diagonal the softmax zeroes, and `P V` adds no term past it.
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
    let square = Layout::row_major(t_len, t_len);
    y.par_chunks_mut(t_len * qw)
        .zip(probs.par_chunks_mut(s.n_heads * t_len * t_len))
        .zip(q.par_chunks(t_len * qw))
        .zip(k.par_chunks(t_len * kvw).zip(v.par_chunks(t_len * kvw)))
        .for_each(|(((y, probs), q), (k, v))| {
            for (h, p) in probs.chunks_exact_mut(t_len * t_len).enumerate() {
                let kvh = h / s.group();
                // scores = Q_h K_hᵀ: [T, T]
                let (q_h, k_h) = (&q[h * hd..], &k[kvh * hd..]);
                let (lq, lkt) = (head_rows(t_len, hd, qw), head_cols(t_len, hd, kvw));
                sgemm_masked(q_h, lq, k_h, lkt, p, square, false, Mask::LowerC);
                vectorized(
                    #[inline(always)]
                    || {
                        for (t, row) in p.chunks_exact_mut(t_len).enumerate() {
                            softmax_causal(row, t, s.scale());
                        }
                    },
                );
                // y_h = P V_h: [T, hd]
                let lv = head_rows(t_len, hd, kvw);
                let ly = head_rows(t_len, hd, qw);
                let (v_h, y_h) = (&v[kvh * hd..], &mut y[h * hd..]);
                sgemm_masked(p, square, v_h, lv, y_h, ly, false, Mask::LowerA);
            }
        });
}

/// `row[..=t] = softmax(scale · row[..=t])`, `row[t+1..] = 0`. The
/// exponentials run over whole 8-lane chunks with the masked lanes set to 0
/// afterwards, which the compiler vectorizes; a loop over `..=t` alone stays
/// scalar (its length is rarely a multiple of the vector width). Chunks past
/// position t are only zeroed: their exponentials would all be masked, and
/// adding their zeros changed no sum. The maximum, exact in any order, is
/// taken 8 lanes at a time too.
#[inline(always)]
fn softmax_causal(row: &mut [f32], t: usize, scale: f32) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut scores = row[..=t].chunks_exact(8);
    for chunk in &mut scores {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    let rest = scores
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let max = lanes.into_iter().fold(rest, f32::max) * scale;
    let first = row.len() - row.len() % 8;
    // The whole chunks that hold a position ≤ t.
    let live = (t + 1).div_ceil(8).saturating_mul(8).min(first);
    let mut sums = [0.0f32; 8];
    for (c, chunk) in row[..live].chunks_exact_mut(8).enumerate() {
        let mut x = [0.0f32; 8];
        x.copy_from_slice(chunk);
        for (lane, (x, sum)) in x.iter_mut().zip(&mut sums).enumerate() {
            let e = exp(*x * scale - max);
            *x = if c * 8 + lane <= t { e } else { 0.0 };
            *sum += *x;
        }
        chunk.copy_from_slice(&x);
    }
    row[live..first].fill(0.0);
    let mut tail = 0.0f32;
    for (j, x) in row[first..].iter_mut().enumerate() {
        *x = if first + j <= t {
            exp(*x * scale - max)
        } else {
            0.0
        };
        tail += *x;
    }
    let sum = ((sums[0] + sums[4]) + (sums[1] + sums[5]))
        + ((sums[2] + sums[6]) + (sums[3] + sums[7]))
        + tail;
    let inv = 1.0 / sum;
    for p in row[..=t].iter_mut() {
        *p *= inv;
    }
}

/// Writes `dq`, `dk`, `dv` from `dy` (shapes as in [`forward`]; their old
/// contents are ignored, so the caller need not zero them). Each sequence is
/// one task, and the heads sharing a KV head run in order inside it, so the
/// `dk`/`dv` sums have a fixed order; the first head of a group overwrites.
/// P and dS are zero past the diagonal: the products skip that half, as in
/// [`forward`].
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
    let square = Layout::row_major(t_len, t_len);
    let square_t = Layout::transposed(t_len, t_len);
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
            DPROBS.with(|cell| {
                let mut dprobs = cell.borrow_mut();
                // dprobs: [T, T]
                dprobs.resize(t_len * t_len, 0.0);
                for (h, p) in probs.chunks_exact(t_len * t_len).enumerate() {
                    let kvh = h / s.group();
                    // The first query head of a KV group writes dK, dV.
                    let kv_accumulate = h % s.group() != 0;
                    let (lq, lkv) = (head_rows(t_len, hd, qw), head_rows(t_len, hd, kvw));
                    let (dy_h, v_h) = (&dy[h * hd..], &v[kvh * hd..]);
                    // dV_h (+)= Pᵀ dY_h
                    let dv_h = &mut dv[kvh * hd..];
                    sgemm_masked(
                        p,
                        square_t,
                        dy_h,
                        lq,
                        dv_h,
                        lkv,
                        kv_accumulate,
                        Mask::UpperA,
                    );
                    // dP = dY_h V_hᵀ, on and below the diagonal
                    let lvt = head_cols(t_len, hd, kvw);
                    sgemm_masked(dy_h, lq, v_h, lvt, &mut dprobs, square, false, Mask::LowerC);
                    // softmax backward, then the score scale: dS in place of
                    // dP; zero past the diagonal, as P
                    let rows = dprobs.chunks_exact_mut(t_len).zip(p.chunks_exact(t_len));
                    vectorized(
                        #[inline(always)]
                        || {
                            for (t, (ds, p)) in rows.enumerate() {
                                let (live, masked) = ds.split_at_mut(t + 1);
                                let weighted = dot(&p[..=t], live);
                                for (d, &pj) in live.iter_mut().zip(p) {
                                    *d = pj * (*d - weighted) * s.scale();
                                }
                                masked.fill(0.0);
                            }
                        },
                    );
                    // dQ_h = dS K_h; dK_h (+)= dSᵀ Q_h
                    let (k_h, q_h) = (&k[kvh * hd..], &q[h * hd..]);
                    let dq_h = &mut dq[h * hd..];
                    sgemm_masked(&dprobs, square, k_h, lkv, dq_h, lq, false, Mask::LowerA);
                    let dk_h = &mut dk[kvh * hd..];
                    sgemm_masked(
                        &dprobs,
                        square_t,
                        q_h,
                        lq,
                        dk_h,
                        lkv,
                        kv_accumulate,
                        Mask::UpperA,
                    );
                }
            });
        });
}
