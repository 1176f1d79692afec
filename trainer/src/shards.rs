//! Data parallelism with results that do not depend on the thread count.
//!
//! A micro-batch is always cut into the same shards of whole sequences
//! (at most [`SHARDS`], however many threads there are). Each shard runs the
//! forward and backward pass on its own activations into its own gradient
//! arena, one rayon task per shard; then the shard gradients are summed into
//! the step's gradients in shard order. Every number is therefore computed
//! in the same order with 1 thread or 16, and the threads share no work
//! smaller than a whole shard's pass (tiny matrices split across threads
//! cost more in synchronization than they save).

use crate::activations::Activations;
use crate::config::ModelConfig;
use crate::model;
use crate::params::ParamLayout;
use rayon::prelude::*;

/// Shards per micro-batch: enough for a 4-core laptop, few enough that the
/// matrices of a shard stay large (seed preset: 8 sequences, 128 rows).
pub const SHARDS: usize = 4;

/// Elements per parallel task in the gradient sum.
const REDUCE_CHUNK: usize = 32 * 1024;

/// One shard's working memory.
struct Shard {
    /// Sequences in this shard.
    sequences: usize,
    /// Activations for `sequences` windows.
    acts: Activations,
    /// This shard's gradient. [layout.total]
    grads: Vec<f32>,
    /// Mean loss of the last pass.
    loss: f64,
}

/// The shards of a micro-batch of `batch` sequences.
pub struct BatchShards {
    shards: Vec<Shard>,
    context: usize,
}

/// Sequences in each shard: `batch` split as evenly as possible into
/// `min(SHARDS, batch)` contiguous groups, larger groups first.
pub fn shard_sequences(batch: usize) -> Vec<usize> {
    let count = SHARDS.min(batch).max(1);
    (0..count)
        .map(|s| batch / count + usize::from(s < batch % count))
        .collect()
}

impl BatchShards {
    /// Buffers for micro-batches of `batch` sequences of `context` tokens.
    pub fn new(config: &ModelConfig, batch: usize, context: usize) -> Self {
        let total = ParamLayout::new(config).total;
        let shards = shard_sequences(batch)
            .into_iter()
            .map(|sequences| Shard {
                sequences,
                acts: Activations::new(config, sequences, context),
                grads: vec![0.0; total],
                loss: 0.0,
            })
            .collect();
        BatchShards { shards, context }
    }

    /// Runs forward and, when every shard's loss is finite, backward on one
    /// micro-batch, adding `∂(scale · Σ position losses)/∂params` into
    /// `grads`. Returns the mean loss over all positions; a non-finite
    /// result means nothing was added.
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
        let run = |(shard, (x, y)): (&mut Shard, &(&[u32], &[u32]))| {
            shard.loss = model::forward_with(
                layout,
                weights,
                &mut shard.acts,
                x,
                Some(y),
                quantize_inputs,
            );
            // shard.grads is zero here: new, or emptied by the last sum.
            if shard.loss.is_finite() {
                model::backward(
                    layout,
                    weights,
                    &mut shard.grads,
                    &mut shard.acts,
                    x,
                    y,
                    scale,
                );
            }
        };
        self.shards.par_iter_mut().zip(&windows).for_each(run);
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
        // grads += Σ shard grads in shard order, emptying each shard's arena
        // for the next pass on the way (one sweep instead of a sum and a fill).
        let mut parts: Vec<_> = self
            .shards
            .iter_mut()
            .map(|s| s.grads.chunks_mut(REDUCE_CHUNK))
            .collect();
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
    #[test]
    fn shards_cover_the_batch_evenly() {
        assert_eq!(super::shard_sequences(32), vec![8, 8, 8, 8]);
        assert_eq!(super::shard_sequences(10), vec![3, 3, 2, 2]);
        assert_eq!(super::shard_sequences(2), vec![1, 1]);
        assert_eq!(super::shard_sequences(1), vec![1]);
    }
}
