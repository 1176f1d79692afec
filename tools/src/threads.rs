//! The engine's parallel-for hook on a rayon thread pool.
//!
//! The engine decides the chunks; rayon only decides which thread runs each,
//! so results are the same bits for any thread count. A session makes many
//! short parallel calls per token (one per matrix and one for attention, per
//! layer): run the whole generation inside [`Threads::install`] so those
//! calls start from a pool thread, which is much cheaper than entering the
//! pool from outside every time.

use anyhow::{Context, Result};
use kinglet::parallel::{ChunkFn, Parallel};
use rayon::prelude::*;

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
/// [`Parallel`] hook.
pub struct Threads {
    pool: rayon::ThreadPool,
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
        Ok(Threads {
            pool,
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
        let chunk = chunk.max(1);
        if out.len() <= chunk || self.count() == 1 {
            // One chunk, or one thread: no hand-off is worth its cost.
            for (i, part) in out.chunks_mut(chunk).enumerate() {
                f(i * chunk, part);
            }
            return;
        }
        self.pool.install(|| {
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, part)| f(i * chunk, part));
        });
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
