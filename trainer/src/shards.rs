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

use crate::activations::Activations;
use crate::config::ModelConfig;
use crate::model;
use crate::params::ParamLayout;
use rayon::prelude::*;

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

/// The shards of a micro-batch of `batch` sequences.
pub struct BatchShards {
    shards: Vec<Shard>,
    context: usize,
}

/// Sequences in each shard: `batch` windows of `context` tokens split as
/// evenly as possible into `min(SHARDS, batch, rows / MIN_SHARD_ROWS)` (at
/// least 1) contiguous groups, larger groups first. It depends only on the
/// batch shape, never on the thread count.
pub fn shard_sequences(batch: usize, context: usize) -> Vec<usize> {
    let by_rows = (batch * context) / MIN_SHARD_ROWS;
    let count = SHARDS.min(batch).min(by_rows).max(1);
    (0..count)
        .map(|s| batch / count + usize::from(s < batch % count))
        .collect()
}

impl BatchShards {
    /// Buffers for micro-batches of `batch` sequences of `context` tokens.
    pub fn new(config: &ModelConfig, batch: usize, context: usize) -> Self {
        let total = ParamLayout::new(config).total;
        let shards = shard_sequences(batch, context)
            .into_iter()
            .enumerate()
            .map(|(index, sequences)| Shard {
                sequences,
                acts: Activations::new(config, sequences, context),
                grads: vec![0.0; if index == 0 { 0 } else { total }],
                loss: 0.0,
            })
            .collect();
        BatchShards { shards, context }
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
        (inputs, targets): (&[u32], &[u32]),
        scale: f32,
        quantize_inputs: bool,
    ) -> f64 {
        let context = self.context;
        let batch: usize = self.shards.iter().map(|s| s.sequences).sum();
        assert_eq!(inputs.len(), batch * context, "inputs must fill the batch");
        assert_eq!(targets.len(), inputs.len(), "one target per input");
        // Each shard's slice of the batch: [sequences · context]
        let mut windows = Vec::with_capacity(self.shards.len());
        let mut start = 0;
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
        let run = |((acts, loss, g), (x, y)): (Job<'_>, &(&[u32], &[u32]))| {
            *loss = model::forward_with(layout, weights, acts, x, Some(y), quantize_inputs);
            if loss.is_finite() {
                model::backward(layout, weights, g, acts, x, y, scale);
            }
        };
        jobs.into_par_iter().zip(&windows).for_each(run);
        let loss = self
            .shards
            .iter()
            .map(|s| s.loss * s.sequences as f64)
            .sum::<f64>()
            / batch as f64;
        if !loss.is_finite() {
            for shard in &mut self.shards {
                shard.grads.fill(0.0);
            }
            return loss;
        }
        // grads += Σ other shards' grads in shard order, emptying each arena
        // for the next pass on the way (one sweep instead of a sum and a fill).
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
            for part in chunk.iter_mut() {
                for (g, p) in g.iter_mut().zip(part.iter_mut()) {
                    *g += *p;
                    *p = 0.0;
                }
            }
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
        let layout = ParamLayout::new(&config);
        let mut rng = Rng::new(4);
        let params = layout.init(0.1, &mut rng);
        let tokens: Vec<u32> = (0..batch * config.context + 1)
            .map(|_| rng.below(config.vocab_size) as u32)
            .collect();
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
}
