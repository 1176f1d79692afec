//! Data parallelism with results that do not depend on the thread count.
//!
//! A micro-batch is always cut into the same shards of whole sequences
//! (at most [`SHARDS`], however many threads there are). Each shard runs the
//! forward and backward pass on its own activations, one rayon task per
//! shard; the first shard accumulates straight into the step's gradients,
//! every other one into its own gradient arena, which is then added to the
//! step's gradients in shard order. Every number is therefore computed
//! in the same order with 1 thread or 16, and the threads share no work
//! smaller than a whole shard's pass (tiny matrices split across threads
//! cost more in synchronization than they save).
//!
//! The trainer's parallelism policy, in one place: rayon tasks are cut by
//! data, in fixed sizes, never by operation. Here, a step's shards; inside
//! a layer (`layers/`), fixed row chunks of its products and row-wise
//! passes, which keep the pool busy when a pass runs on more rows than one
//! shard (evaluation); over whole arenas (this gradient sum, AdamW, the
//! global norm, QAT's weight rounding), fixed element chunks. Independent
//! operations are never forked against each other (`model.rs` runs its
//! products one after another), so the tasks of one level never compete
//! with another's.
//!
//! Across processes (MPI ranks, `ranks.rs`) the same shards are shared out:
//! each rank runs a contiguous run of them, and rank 0 adds the others'
//! shard gradients in shard order, element by element as here, so N ranks
//! compute the bits of one process.

use crate::activations::Activations;
use crate::config::ModelConfig;
use crate::gemm::vectorized;
use crate::model;
use crate::params::ParamLayout;
use crate::weight_copies::{Passes, WeightCopies};
use rayon::prelude::*;
use std::ops::Range;

/// Most shards per micro-batch: enough for a 4-core laptop.
pub const SHARDS: usize = 4;

/// Fewest positions (rows) a shard is cut to when the batch has more: below
/// this, packing the weights for each shard's products and summing the shard
/// gradients cost more than a second core gains.
pub const MIN_SHARD_ROWS: usize = 256;

/// Elements per parallel task in the gradient sum.
const REDUCE_CHUNK: usize = 32 * 1024;

/// One shard's working memory.
struct Shard {
    /// Sequences in this shard.
    sequences: usize,
    /// Activations for `sequences` windows.
    acts: Activations,
    /// This shard's gradient: [layout.total], empty for the first shard,
    /// which writes into the caller's gradients.
    grads: Vec<f32>,
    /// Mean loss of the last pass.
    loss: f64,
}

/// One shard's pass: its activations, its loss, where its gradient goes.
type Job<'a> = (&'a mut Activations, &'a mut f64, &'a mut [f32]);

/// The shards of a micro-batch of `batch` sequences that one process
/// computes: all of them, or an MPI rank's share (`ranks.rs`).
pub struct BatchShards {
    shards: Vec<Shard>,
    context: usize,
    /// Sequences of every shard of the micro-batch, this share's and others'.
    all_sequences: Vec<usize>,
    /// Index of this share's first shard.
    first: usize,
}

/// Sequences in each shard: `batch` windows of `context` tokens split as
/// evenly as possible into `min(SHARDS, batch, rows / MIN_SHARD_ROWS)` (at
/// least 1) contiguous groups, larger groups first. It depends only on the
/// batch shape, never on the thread count.
pub fn shard_sequences(batch: usize, context: usize) -> Vec<usize> {
    // Saturating: an absurd --batch is refused later, by the memory budget.
    let by_rows = batch.saturating_mul(context) / MIN_SHARD_ROWS;
    let count = SHARDS.min(batch).min(by_rows).max(1);
    (0..count)
        .map(|s| batch / count + usize::from(s < batch % count))
        .collect()
}

/// The mean loss of a micro-batch from each shard's `(mean loss, sequences)`,
/// in shard order.
pub fn mean_loss(shards: &[(f64, usize)]) -> f64 {
    let batch: usize = shards.iter().map(|&(_, sequences)| sequences).sum();
    shards
        .iter()
        .map(|&(loss, sequences)| loss * sequences as f64)
        .sum::<f64>()
        / batch as f64
}

/// `grads += part`, element by element (the order of the sum of shards is
/// the order of these calls). grads, part: [layout.total]
pub fn add_gradient(grads: &mut [f32], part: &[f32]) {
    grads
        .par_chunks_mut(REDUCE_CHUNK)
        .zip(part.par_chunks(REDUCE_CHUNK))
        .for_each(|(g, p)| {
            vectorized(
                #[inline(always)]
                || {
                    for (g, p) in g.iter_mut().zip(p) {
                        *g += *p;
                    }
                },
            )
        });
}

impl BatchShards {
    /// Buffers for micro-batches of `batch` sequences of `context` tokens.
    pub fn new(config: &ModelConfig, batch: usize, context: usize) -> Self {
        let count = shard_sequences(batch, context).len();
        Self::share(config, batch, context, 0..count)
    }

    /// Buffers for the shards `share` (indices in [`shard_sequences`]) of
    /// micro-batches of `batch` sequences of `context` tokens.
    pub fn share(config: &ModelConfig, batch: usize, context: usize, share: Range<usize>) -> Self {
        let total = ParamLayout::new(config).total;
        let all_sequences = shard_sequences(batch, context);
        let shards = all_sequences[share.clone()]
            .iter()
            .enumerate()
            .map(|(index, &sequences)| Shard {
                sequences,
                acts: Activations::new(config, sequences, context),
                grads: vec![0.0; if index == 0 { 0 } else { total }],
                loss: 0.0,
            })
            .collect();
        BatchShards {
            shards,
            context,
            all_sequences,
            first: share.start,
        }
    }

    /// Sequences of every shard of the micro-batch, in shard order.
    pub fn all_sequences(&self) -> &[usize] {
        &self.all_sequences
    }

    /// Runs forward and backward on one micro-batch, adding
    /// `∂(scale · Σ position losses)/∂params` into `grads`. Returns the mean
    /// loss over all positions; after a non-finite result `grads` may hold
    /// part of the sum and must be discarded (the trainer stops).
    ///
    /// weights, grads: [layout.total]; inputs, targets: [batch · context].
    pub fn forward_backward(
        &mut self,
        layout: &ParamLayout,
        weights: &[f32],
        grads: &mut [f32],
        batch: (&[u32], &[u32]),
        scale: f32,
        quantize_inputs: bool,
    ) -> f64 {
        self.run(layout, weights, grads, batch, scale, quantize_inputs);
        self.add_into(grads)
    }

    /// The passes of this share's shards on their part of the micro-batch
    /// `(inputs, targets)`: the first shard adds its gradient into `grads`,
    /// the others write theirs into their own arenas for [`Self::add_into`]
    /// or [`Self::parts`].
    ///
    /// weights, grads: [layout.total]; inputs, targets: [batch · context].
    pub fn run(
        &mut self,
        layout: &ParamLayout,
        weights: &[f32],
        grads: &mut [f32],
        (inputs, targets): (&[u32], &[u32]),
        scale: f32,
        quantize_inputs: bool,
    ) {
        let context = self.context;
        let batch: usize = self.all_sequences.iter().sum();
        assert_eq!(inputs.len(), batch * context, "inputs must fill the batch");
        assert_eq!(targets.len(), inputs.len(), "one target per input");
        // Each shard's slice of the batch: [sequences · context]
        let mut windows = Vec::with_capacity(self.shards.len());
        let mut start = self.all_sequences[..self.first].iter().sum::<usize>() * context;
        for shard in &self.shards {
            let end = start + shard.sequences * context;
            windows.push((&inputs[start..end], &targets[start..end]));
            start = end;
        }
        // The first shard accumulates into `grads` directly (saves a sweep
        // over an arena of its own), the others into their arenas, which
        // are zero here: new, or emptied by the last sum.
        let mut jobs: Vec<Job<'_>> = Vec::new();
        let mut first = Some(&mut *grads);
        for shard in &mut self.shards {
            let target = match first.take() {
                Some(grads) => grads,
                None => &mut shard.grads[..],
            };
            jobs.push((&mut shard.acts, &mut shard.loss, target));
        }
        // The weights are copied for the products once, for every shard.
        let copies = WeightCopies::new(layout, weights, Passes::Both);
        let run = |((acts, loss, g), (x, y)): (Job<'_>, &(&[u32], &[u32]))| {
            let targets = Some(*y);
            *loss =
                model::forward_copied(layout, weights, &copies, acts, x, targets, quantize_inputs);
            if loss.is_finite() {
                model::backward_copied(layout, weights, &copies, g, acts, x, y, scale);
            }
        };
        jobs.into_par_iter().zip(&windows).for_each(run);
    }

    /// Each shard's `(mean loss, sequences)` of the last [`Self::run`], in
    /// shard order.
    pub fn losses(&self) -> impl Iterator<Item = (f64, usize)> + '_ {
        self.shards.iter().map(|s| (s.loss, s.sequences))
    }

    /// The gradients of this share's shards after the first (which went into
    /// the caller's gradients), in shard order.
    pub fn parts(&self) -> impl Iterator<Item = &[f32]> {
        self.shards[1..].iter().map(|s| &s.grads[..])
    }

    /// Empties the arenas of [`Self::parts`] for the next pass.
    pub fn clear_parts(&mut self) {
        for shard in &mut self.shards[1..] {
            shard.grads.fill(0.0);
        }
    }

    /// After [`Self::run`]: adds the other shards' gradients into `grads` in
    /// shard order, emptying their arenas for the next pass, and returns the
    /// share's mean loss. When that is not finite, only empties them.
    pub fn add_into(&mut self, grads: &mut [f32]) -> f64 {
        let loss = mean_loss(&self.losses().collect::<Vec<_>>());
        if !loss.is_finite() {
            self.clear_parts();
            return loss;
        }
        // One sweep that adds and empties, instead of a sum and a fill.
        let mut parts: Vec<_> = self.shards[1..]
            .iter_mut()
            .map(|s| s.grads.chunks_mut(REDUCE_CHUNK))
            .collect();
        if parts.is_empty() {
            return loss;
        }
        let mut tasks = Vec::with_capacity(grads.len().div_ceil(REDUCE_CHUNK));
        for g in grads.chunks_mut(REDUCE_CHUNK) {
            let chunk: Vec<&mut [f32]> = parts.iter_mut().filter_map(|p| p.next()).collect();
            tasks.push((g, chunk));
        }
        tasks.into_par_iter().for_each(|(g, mut chunk)| {
            vectorized(
                #[inline(always)]
                || {
                    for part in chunk.iter_mut() {
                        for (g, p) in g.iter_mut().zip(part.iter_mut()) {
                            *g += *p;
                            *p = 0.0;
                        }
                    }
                },
            )
        });
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn shards_cover_the_batch_evenly() {
        // seed preset: 32 × 16 = 512 rows, 2 shards; small: 16 × 128, 4
        assert_eq!(shard_sequences(32, 16), vec![16, 16]);
        assert_eq!(shard_sequences(16, 128), vec![4, 4, 4, 4]);
        assert_eq!(shard_sequences(10, 128), vec![3, 3, 2, 2]);
        assert_eq!(shard_sequences(3, 256), vec![1, 1, 1]);
        assert_eq!(shard_sequences(4, 16), vec![4]);
        assert_eq!(shard_sequences(1, 1), vec![1]);
    }

    /// A model's layout, random parameters and `batch · context + 1` random
    /// tokens (inputs and targets one apart), from `seed`.
    fn random_step(
        config: &ModelConfig,
        batch: usize,
        seed: u64,
    ) -> (ParamLayout, Vec<f32>, Vec<u32>) {
        let layout = ParamLayout::new(config);
        let mut rng = Rng::new(seed);
        let params = layout.init(0.1, &mut rng);
        let tokens = (0..batch * config.context + 1)
            .map(|_| rng.below(config.vocab_size) as u32)
            .collect();
        (layout, params, tokens)
    }

    /// Several shards: the same gradient bits with 1, 2 and 3 threads.
    #[test]
    fn gradients_do_not_depend_on_the_thread_count() {
        let config = ModelConfig {
            vocab_size: 11,
            context: 128,
            dim: 16,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            hidden_dim: 24,
            tied_classifier: false,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
        };
        let batch = 7;
        assert_eq!(shard_sequences(batch, config.context).len(), 3);
        let (layout, params, tokens) = random_step(&config, batch, 4);
        let (inputs, targets) = (&tokens[..tokens.len() - 1], &tokens[1..]);
        let run = |threads: usize| {
            let pool = kinglet_tools::threads::Threads::new(threads).expect("pool");
            pool.install(|| {
                let mut shards = BatchShards::new(&config, batch, config.context);
                let mut grads = vec![0.0f32; layout.total];
                let loss = shards.forward_backward(
                    &layout,
                    &params,
                    &mut grads,
                    (inputs, targets),
                    0.01,
                    false,
                );
                (
                    loss.to_bits(),
                    grads.iter().map(|g| g.to_bits()).collect::<Vec<_>>(),
                )
            })
        };
        let one = run(1);
        assert!(one.1.iter().any(|&g| g != 0), "a gradient was computed");
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    /// The element-wise passes compiled for AVX2 (`gemm::vectorized`) give
    /// the baseline build's bits: a step's loss, gradients, clipped norm,
    /// and the parameters and moments after AdamW, over several shards.
    #[test]
    fn element_wise_passes_give_the_baseline_bits() {
        use crate::adamw::{clip_global_norm, AdamW, AdamWStep};
        use crate::gemm::{Kernel, BASELINE_ONLY};
        if Kernel::chosen() == Kernel::Portable {
            eprintln!("skipped: the portable product path runs the baseline passes only");
            return;
        }
        let config = ModelConfig {
            vocab_size: 37,
            context: 96,
            dim: 48,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            hidden_dim: 72,
            tied_classifier: true,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
        };
        let batch = 9;
        assert!(shard_sequences(batch, config.context).len() > 1);
        let (layout, params, tokens) = random_step(&config, batch, 11);
        let (inputs, targets) = (&tokens[..tokens.len() - 1], &tokens[1..]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // One thread, so every pass runs where the flag is set.
        let pool = kinglet_tools::threads::Threads::new(1).expect("pool");
        let run = |baseline: bool| {
            pool.install(|| {
                BASELINE_ONLY.with(|b| b.set(baseline));
                let mut shards = BatchShards::new(&config, batch, config.context);
                let mut grads = vec![0.0f32; layout.total];
                let mut params = params.clone();
                let mut adamw = AdamW::new(layout.total);
                let mut trace = Vec::new();
                for t in 1..=2 {
                    grads.iter_mut().for_each(|g| *g = 0.0);
                    let loss = shards.forward_backward(
                        &layout,
                        &params,
                        &mut grads,
                        (inputs, targets),
                        0.01,
                        false,
                    );
                    let norm = clip_global_norm(&mut grads, 0.5);
                    let step = AdamWStep {
                        lr: 1e-2,
                        beta1: 0.9,
                        beta2: 0.95,
                        eps: 1e-8,
                        weight_decay: 0.1,
                        decay_norms: false,
                        t,
                    };
                    adamw.step(&layout, &mut params, &grads, step);
                    trace.push((loss.to_bits(), norm.to_bits(), bits(&grads)));
                }
                BASELINE_ONLY.with(|b| b.set(false));
                (trace, bits(&params), bits(&adamw.m), bits(&adamw.v))
            })
        };
        let vectorized = run(false);
        assert!(
            vectorized.0[0].2.iter().any(|&g| g != 0),
            "a gradient was computed"
        );
        assert!(vectorized == run(true), "the AVX2 passes changed a bit");
    }
}
