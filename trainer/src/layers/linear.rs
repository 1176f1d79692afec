//! Linear layer `y = x Wᵀ` with W stored (out, in), as in the .klt format.

use crate::gemm::{sgemm_packed, Layout, PackedB};
use rayon::prelude::*;

/// Rows of `x` per parallel matmul task. Large on purpose: sgemm copies A
/// once per call (B, shared by the tasks, is copied once per product);
/// 512 rows of A's copy for a 256-deep pass (512 KiB) still fit a Zen 4's
/// 1 MiB L2. Fixed (not derived from the thread count), though each row of
/// C is a sum of its own, which no split changes.
const ROWS_PER_TASK: usize = 512;
/// Rows of W per parallel task in the weight-gradient matmul.
const OUTS_PER_TASK: usize = 256;

/// `y = x Wᵀ`, or `y += x Wᵀ` when `accumulate` (a residual add for free).
/// y: [n, out]; x: [n, inp]; w: [out, inp].
pub fn forward(y: &mut [f32], x: &[f32], w: &[f32], inp: usize, out: usize, accumulate: bool) {
    let wt = PackedB::new(w, Layout::transposed(inp, out));
    forward_copied(y, x, &wt, inp, out, accumulate);
}

/// [`forward`] with Wᵀ copied beforehand (`weight_copies`), as
/// `PackedB::new(w, Layout::transposed(inp, out))`.
pub fn forward_copied(
    y: &mut [f32],
    x: &[f32],
    wt: &PackedB<'_>,
    inp: usize,
    out: usize,
    accumulate: bool,
) {
    y.par_chunks_mut(ROWS_PER_TASK * out)
        .zip(x.par_chunks(ROWS_PER_TASK * inp))
        .for_each(|(y, x)| {
            let rows = x.len() / inp;
            let (lx, ly) = (Layout::row_major(rows, inp), Layout::row_major(rows, out));
            sgemm_packed(x, lx, wt, y, ly, accumulate);
        });
}

/// `dx = dy W` (`dx += dy W` when `accumulate`) and `dw += dyᵀ x`.
/// dx: [n, inp]; dw: [out, inp]; dy: [n, out]; x: [n, inp]; w: [out, inp].
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dx: &mut [f32],
    dw: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    inp: usize,
    out: usize,
    accumulate: bool,
) {
    let w = PackedB::new(w, Layout::row_major(out, inp));
    backward_copied(dx, dw, dy, x, &w, inp, out, accumulate);
}

/// [`backward`] with W copied beforehand (`weight_copies`), as
/// `PackedB::new(w, Layout::row_major(out, inp))`.
#[allow(clippy::too_many_arguments)]
pub fn backward_copied(
    dx: &mut [f32],
    dw: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &PackedB<'_>,
    inp: usize,
    out: usize,
    accumulate: bool,
) {
    backward_input(dx, dy, w, inp, out, accumulate);
    backward_weight(dw, dy, x, inp, out);
}

/// `dx = dy W`, or `dx += dy W` when `accumulate` (writing the first input
/// gradient saves zeroing it first). dx: [n, inp]; dy: [n, out]; w: W
/// [out, inp] copied as `PackedB::new(w, Layout::row_major(out, inp))`.
pub fn backward_input(
    dx: &mut [f32],
    dy: &[f32],
    w: &PackedB<'_>,
    inp: usize,
    out: usize,
    accumulate: bool,
) {
    dx.par_chunks_mut(ROWS_PER_TASK * inp)
        .zip(dy.par_chunks(ROWS_PER_TASK * out))
        .for_each(|(dx, dy)| {
            let rows = dy.len() / out;
            let (ldy, ldx) = (Layout::row_major(rows, out), Layout::row_major(rows, inp));
            sgemm_packed(dy, ldy, w, dx, ldx, accumulate);
        });
}

/// `dw += dyᵀ x`, split over rows of W so no two tasks touch the same sum.
/// dw: [out, inp]; dy: [n, out]; x: [n, inp].
pub fn backward_weight(dw: &mut [f32], dy: &[f32], x: &[f32], inp: usize, out: usize) {
    backward_weight_copied(dw, dy, &copy_input(x, inp), inp, out);
}

/// An input x [n, inp] copied for the weight gradients' products, once for
/// the layers that read the same x (queries, keys and values; W1 and W3).
pub fn copy_input(x: &[f32], inp: usize) -> PackedB<'_> {
    PackedB::new(x, Layout::row_major(x.len() / inp, inp))
}

/// [`backward_weight`] with x copied beforehand ([`copy_input`]).
pub fn backward_weight_copied(dw: &mut [f32], dy: &[f32], x: &PackedB<'_>, inp: usize, out: usize) {
    let n = dy.len() / out;
    dw.par_chunks_mut(OUTS_PER_TASK * inp)
        .enumerate()
        .for_each(|(task, dw)| {
            let first = task * OUTS_PER_TASK;
            let outs = dw.len() / inp;
            // dyᵀ restricted to columns first..first+outs: an (outs × n) view.
            let dy_t = Layout {
                rows: outs,
                cols: n,
                row_stride: 1,
                col_stride: out,
            };
            sgemm_packed(
                &dy[first..],
                dy_t,
                x,
                dw,
                Layout::row_major(outs, inp),
                true,
            );
        });
}
