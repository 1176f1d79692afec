//! The processes that train one model together: one process ([`Alone`]), or
//! the ranks of an MPI job (`mpi_ranks.rs`, with the `mpi` feature).
//!
//! The ranks split each micro-batch by the shards of `shards.rs`: rank `r`
//! of `N` runs the `S / N` shards starting at `r · S / N`, so `N` must
//! divide the shard count `S`. Rank 0 adds every other shard's gradient in
//! shard order, exactly as one process does, and after the step's last
//! micro-batch sends the sum to every rank, which then all take the same
//! AdamW step: every rank holds the bits one process would. Rank 0 alone
//! writes files (checkpoint, metrics, plot) and evaluates.
//!
//! Errors: a step every rank takes separately (reading the corpus, checking
//! the settings) ends in [`agree`], so that all ranks stop together and one
//! of them prints the error. An error only one rank meets while the others
//! wait for its messages (rank 0 failing to write a checkpoint) goes to
//! [`Ranks::lone_failure`], which under MPI ends the whole job at once.

use crate::error::{Result, TrainError};
use crate::shards::BatchShards;
use std::ops::Range;

/// One process's place among those training one model.
pub trait Ranks {
    /// This process's rank; rank 0 writes the files.
    fn rank(&self) -> usize;

    /// How many processes train together.
    fn size(&self) -> usize;

    /// Whether this process writes the files and prints the log.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// After this rank's shards of a micro-batch ran ([`BatchShards::run`]
    /// into `grads`): on rank 0, adds every other shard's gradient into
    /// `grads` in shard order and returns the micro-batch's mean loss; on
    /// the others, hands this rank's shard gradients to rank 0, empties
    /// `grads` and the arenas, and returns NaN (the loss comes with
    /// [`Ranks::share_step`]). grads: [layout.total]
    fn combine_micro_batch(&mut self, shards: &mut BatchShards, grads: &mut [f32]) -> f64;

    /// After a step's micro-batches: every rank receives rank 0's `losses`
    /// and, when they are all finite, its `grads`. grads: [layout.total]
    fn share_step(&mut self, losses: &mut [f64], grads: &mut [f32]);

    /// The lowest rank whose `ok` is false, if any (every rank calls this).
    fn first_failure(&mut self, ok: bool) -> Option<usize>;

    /// Replaces `bytes` on every rank with rank 0's (every rank calls this).
    fn broadcast_bytes(&mut self, bytes: &mut Vec<u8>);

    /// An error only this rank met, while the others may be waiting for it:
    /// alone, it is returned; under MPI it is printed and every rank ends
    /// (MPI_Abort), since the others cannot be told otherwise.
    fn lone_failure(&self, error: TrainError) -> TrainError;
}

/// A process that trains alone: every shard is its own.
pub struct Alone;

impl Ranks for Alone {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn combine_micro_batch(&mut self, shards: &mut BatchShards, grads: &mut [f32]) -> f64 {
        shards.add_into(grads)
    }

    fn share_step(&mut self, _losses: &mut [f64], _grads: &mut [f32]) {}

    fn first_failure(&mut self, ok: bool) -> Option<usize> {
        (!ok).then_some(0)
    }

    fn broadcast_bytes(&mut self, _bytes: &mut Vec<u8>) {}

    fn lone_failure(&self, error: TrainError) -> TrainError {
        error
    }
}

/// The shards rank `rank` of `size` runs, of `count` (which `size` divides).
pub fn share(rank: usize, size: usize, count: usize) -> Range<usize> {
    let per_rank = count / size;
    rank * per_rank..(rank + 1) * per_rank
}

/// Whether `size` ranks can share micro-batches cut into `shards` shards
/// (see `shards::shard_sequences`): `size` must divide `shards`.
pub fn check_rank_count(size: usize, shards: usize, batch: usize, context: usize) -> Result<()> {
    if shards.is_multiple_of(size) {
        return Ok(());
    }
    let allowed: Vec<String> = (1..=shards)
        .filter(|&n| shards.is_multiple_of(n))
        .map(|n| n.to_string())
        .collect();
    Err(TrainError::Settings(format!(
        "{size} ranks cannot share the {shards} shards of a micro-batch (--batch {batch}, \
         --context {context}; the shard count is min(4, batch, batch × context / 256)): \
         run with -np {}",
        allowed.join(" or -np ")
    )))
}

/// `result` on every rank if every rank's is `Ok`; otherwise an error on
/// every rank: the lowest failing rank keeps its own (named `rank R:` when
/// R is not 0) and prints it, the others get [`TrainError::OtherRank`],
/// which they do not print.
pub fn agree<T>(ranks: &mut dyn Ranks, result: Result<T>) -> Result<T> {
    match (ranks.first_failure(result.is_ok()), result) {
        (None, result) => result,
        (Some(r), Err(e)) if r == ranks.rank() => Err(named(r, e)),
        (Some(r), _) => Err(TrainError::OtherRank(format!(
            "rank {r} failed and printed its error"
        ))),
    }
}

/// `error`, naming the rank that met it when there are several.
pub fn named(rank: usize, error: TrainError) -> TrainError {
    if rank == 0 {
        error
    } else {
        error.context(format_args!("rank {rank}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_contiguous_and_cover_the_shards() {
        assert_eq!(share(0, 1, 4), 0..4);
        assert_eq!(share(1, 2, 4), 2..4);
        assert_eq!(share(3, 4, 4), 3..4);
        assert!(check_rank_count(2, 4, 16, 128).is_ok());
        let e = check_rank_count(3, 4, 16, 128).unwrap_err();
        assert!(matches!(e, TrainError::Settings(_)));
        assert!(e.to_string().contains("-np 1 or -np 2 or -np 4"), "{e}");
    }

    #[test]
    fn alone_agrees_with_itself() {
        assert_eq!(agree(&mut Alone, Ok(3)), Ok(3));
        let e = TrainError::Io("cannot read x".into());
        assert_eq!(agree::<()>(&mut Alone, Err(e.clone())), Err(e));
    }
}
