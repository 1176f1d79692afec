//! The engine's parallel-for hook: a rayon thread pool for the commands'
//! own work, and spinning workers ([`ChunkWorkers`]) for a session's
//! parallel calls.
//!
//! The engine decides the chunks; the threads only decide which one runs
//! each, so results are the same bits for any thread count. A session makes
//! many short parallel calls per token (one per matrix and one for
//! attention, per layer), too short for rayon's hand-off: the calling thread
//! and `n − 1` workers that wait by spinning take their chunks.

use anyhow::{Context, Result};

use crate::chunk_workers::ChunkWorkers;
use kinglet::parallel::{ChunkFn, Parallel};

/// Most threads either program starts (`--threads`): each needs a stack,
/// and no CPU these programs run on has more cores.
pub const MAX_THREADS: usize = 256;

/// A `--threads` value checked: 1 to [`MAX_THREADS`].
pub fn thread_count(n: usize) -> Result<usize> {
    match n {
        0 => anyhow::bail!("--threads must be at least 1 (leave it out to use every core)"),
        n if n > MAX_THREADS => {
            anyhow::bail!("--threads {n} is more than the {MAX_THREADS} threads allowed")
        }
        n => Ok(n),
    }
}

/// A rayon pool of a fixed number of threads, usable as a session's
/// [`Parallel`] hook (whose calls run on the calling thread and the
/// pool's count less one [`ChunkWorkers`]).
pub struct Threads {
    pool: rayon::ThreadPool,
    chunk_workers: ChunkWorkers,
    /// [`Parallel::min_task_bytes`].
    min_task_bytes: usize,
}

impl Threads {
    /// A pool of `threads` threads; 0 means one per available core.
    pub fn new(threads: usize) -> Result<Threads> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kinglet-{i}"))
            .build()
            .context("cannot start the thread pool")?;
        let chunk_workers = ChunkWorkers::new(pool.current_num_threads() - 1)
            .context("cannot start the thread pool")?;
        Ok(Threads {
            pool,
            chunk_workers,
            min_task_bytes: kinglet::parallel::MIN_TASK_BYTES,
        })
    }

    /// The pool handing out tasks that read fewer than `bytes` too (0:
    /// every product and attention step split among all threads), e.g. to
    /// test the split on a small model.
    pub fn with_min_task_bytes(mut self, bytes: usize) -> Threads {
        self.min_task_bytes = bytes;
        self
    }

    /// Threads in the pool.
    pub fn count(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` on one of the pool's threads and returns its result.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }

    /// Runs `work` on the calling thread with a scope whose spawned tasks
    /// run on the pool (see `rayon::ThreadPool::in_place_scope`): a way to
    /// keep a non-`Send` writer here while the model runs inside the pool.
    pub fn in_place_scope<'scope, R>(&self, work: impl FnOnce(&rayon::Scope<'scope>) -> R) -> R {
        self.pool.in_place_scope(work)
    }
}

impl Parallel for Threads {
    fn threads(&self) -> usize {
        self.count()
    }

    fn min_task_bytes(&self) -> usize {
        self.min_task_bytes
    }

    fn for_each_chunk(&self, out: &mut [f32], chunk: usize, f: &ChunkFn<'_>) {
        self.chunk_workers.run(out, chunk, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_once_at_its_offset_on_any_pool() {
        for threads in [1, 2, 3] {
            let pool = Threads::new(threads).unwrap();
            assert_eq!(pool.count(), threads);
            let mut out = vec![0.0f32; 1001];
            pool.for_each_chunk(&mut out, 10, &|first, part| {
                assert!(part.len() == 10 || first == 1000);
                for (i, v) in part.iter_mut().enumerate() {
                    *v += (first + i) as f32;
                }
            });
            for (i, &v) in out.iter().enumerate() {
                assert_eq!(v, i as f32, "{threads} threads");
            }
        }
    }
}
