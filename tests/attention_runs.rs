//! Attention over a run of heads (`ops::attend_heads`, the scores and the
//! weighted sums taken a block of positions at a time across the heads, as
//! decode and prefill run them) against one head at a time
//! (`ops::attend_head`), on the active kernel path: the same bits, weights
//! and outputs, for grouped-query layouts, heads that are not a whole
//! number of 16-float vectors, runs that start inside a group, and more
//! positions than one block.

use kinglet::kernels::{active_path, HeadRun};
use kinglet::ops::{attend_head, attend_heads, Heads};
use kinglet_tools::rng::Rng;

fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

#[test]
fn head_runs_give_the_bits_of_one_head_at_a_time() {
    println!("kernel path: {}", active_path());
    let mut rng = Rng::new(13);
    // (n_heads, n_kv_heads, head_dim): the 110M shape's heads, stories260K's
    // (8 on 4 KV heads of 8), and odd widths.
    for (n_heads, n_kv_heads, head_dim) in [(12, 12, 64), (8, 4, 8), (6, 2, 20), (6, 3, 48)] {
        let heads = Heads {
            n_heads,
            n_kv_heads,
            head_dim,
        };
        let (dim, kv_dim, group) = (n_heads * head_dim, heads.kv_dim(), n_heads / n_kv_heads);
        for positions in [1, 5, 16, 17, 40, 100] {
            let q = rng.uniform_vec(dim);
            let keys = rng.uniform_vec(positions * kv_dim);
            let values = rng.uniform_vec(positions * kv_dim);
            let score_stride = positions + 2;
            let mut want_out = vec![f32::NAN; dim];
            let mut want_weights = vec![f32::NAN; n_heads * score_stride];
            for h in 0..n_heads {
                attend_head(
                    &mut want_out[h * head_dim..][..head_dim],
                    &mut want_weights[h * score_stride..][..positions],
                    &q[h * head_dim..][..head_dim],
                    &keys,
                    &values,
                    kv_dim,
                    h / group * head_dim,
                )
                .expect("one head");
            }
            // Every split of the heads into runs, as threads would take them.
            for run_heads in 1..=n_heads {
                for first_head in (0..n_heads).step_by(run_heads) {
                    let heads_here = run_heads.min(n_heads - first_head);
                    let run = HeadRun {
                        positions,
                        row_floats: kv_dim,
                        head_dim,
                        first_head,
                        heads: heads_here,
                        group,
                        score_stride,
                    };
                    let span = first_head * head_dim..(first_head + heads_here) * head_dim;
                    let mut out = vec![f32::NAN; span.len()];
                    let mut weights = vec![f32::NAN; heads_here * score_stride];
                    attend_heads(
                        &mut out,
                        &mut weights,
                        &q[span.clone()],
                        &keys,
                        &values,
                        run,
                    )
                    .expect("a run of heads");
                    let what = format!(
                        "{n_heads} heads on {n_kv_heads} of {head_dim}, run \
                         {first_head}+{heads_here}, {positions} positions"
                    );
                    assert_bits_eq(&out, &want_out[span], &format!("outputs {what}"));
                    let want = &want_weights[first_head * score_stride..][..weights.len()];
                    assert_bits_eq(&weights, want, &format!("weights {what}"));
                }
            }
        }
    }
}
