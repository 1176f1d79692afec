//! The "parallel for" hook: how a session spreads independent work (rows of
//! a matrix product, attention heads) over threads without the engine
//! knowing about threads.
//!
//! The engine cuts an output slice into one chunk per thread
//! ([`Parallel::threads`]): a static split, one task per thread and call,
//! so a matrix product costs one hand-off per thread rather than one per
//! small task; work too small to pay for a hand-off
//! ([`Parallel::min_task_bytes`]) gets fewer chunks, down to one. Every
//! output element is computed by the same code, with the same operations
//! in the same order, whichever chunk it falls in (the
//! kernels' results do not depend on which rows go together), so the
//! results are bit-identical for every implementation of [`Parallel`] and
//! every number of threads. Each chunk is a disjoint `&mut` sub-slice, so
//! no `unsafe` is needed on either side.
//!
//! [`Sequential`] runs the chunks in order on the calling thread (the
//! default). A host with threads implements [`Parallel`] with its own pool;
//! the std tools use rayon's `par_chunks_mut`.
#![forbid(unsafe_code)]

/// Work handed to [`Parallel::for_each_chunk`]: called with the index in
/// `out` of a chunk's first element and the chunk itself.
pub type ChunkFn<'f> = dyn Fn(usize, &mut [f32]) + Sync + 'f;

/// Runs a function over the chunks of a slice, possibly on several threads.
/// `Sync`, so that a session using it can itself move between threads.
pub trait Parallel: Sync {
    /// Calls `f(first, chunk)` exactly once for every chunk of
    /// `out.chunks_mut(chunk)` (`chunk ≥ 1`; the last chunk may be shorter),
    /// where `first` is the chunk's first element index in `out`, in any
    /// order and on any threads, and returns when every call has returned.
    ///
    /// An implementation must not merge or split chunks: the engine relies
    /// on every chunk being computed by one call.
    fn for_each_chunk(&self, out: &mut [f32], chunk: usize, f: &ChunkFn<'_>);

    /// How many threads run the chunks: the engine cuts its work into this
    /// many chunks. 1 unless overridden.
    fn threads(&self) -> usize {
        1
    }

    /// The least work, in bytes read (weights, or cached keys and values),
    /// worth a task of its own: smaller products and attention steps are
    /// cut into fewer chunks than [`threads`](Self::threads), down to one,
    /// because a hand-off and a join cost about what such a task takes.
    /// [`MIN_TASK_BYTES`] unless overridden; 0 gives every thread a chunk
    /// of everything. The results do not depend on it.
    fn min_task_bytes(&self) -> usize {
        MIN_TASK_BYTES
    }
}

/// The default [`Parallel::min_task_bytes`]: on a two-core Zen 4 with a
/// rayon pool, 15M-shaped q4_0 decode (matrices of 46–124 KB) ran slower
/// on two threads than on one when every product was split (see
/// docs/PERFORMANCE.md, 2026-12-03).
pub const MIN_TASK_BYTES: usize = 128 * 1024;

/// Every chunk in order, on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

impl Parallel for Sequential {
    fn for_each_chunk(&self, out: &mut [f32], chunk: usize, f: &ChunkFn<'_>) {
        let chunk = chunk.max(1);
        for (i, part) in out.chunks_mut(chunk).enumerate() {
            f(i * chunk, part);
        }
    }
}

/// The [`Sequential`] hook sessions start with.
pub static SEQUENTIAL: Sequential = Sequential;

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn sequential_visits_every_chunk_once_with_its_offset() {
        let mut out = [0.0f32; 10];
        let calls = AtomicUsize::new(0);
        SEQUENTIAL.for_each_chunk(&mut out, 4, &|first, chunk| {
            calls.fetch_add(1, Ordering::Relaxed);
            for (i, v) in chunk.iter_mut().enumerate() {
                *v = (first + i) as f32;
            }
        });
        assert_eq!(calls.load(Ordering::Relaxed), 3); // 4 + 4 + 2
        for (i, &v) in out.iter().enumerate() {
            assert_eq!(v, i as f32);
        }
    }

    #[test]
    fn sequential_treats_a_zero_chunk_as_one() {
        let mut out = [0.0f32; 3];
        SEQUENTIAL.for_each_chunk(&mut out, 0, &|first, chunk| {
            assert_eq!(chunk.len(), 1);
            chunk[0] = first as f32 + 1.0;
        });
        assert_eq!(out, [1.0, 2.0, 3.0]);
    }
}
