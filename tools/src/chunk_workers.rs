//! Threads that wait for a session's parallel calls by spinning, so that a
//! call's chunks start without a wake-up.
//!
//! A decode step makes about a hundred short parallel calls (one per matrix
//! and one for attention, per layer), each a few to a few tens of
//! microseconds of work, with work on the calling thread alone between
//! them. Handed to rayon's pool, two threads gained little over one: on a
//! two-core Zen 4, two threads over one (`--bench decode`, four alternating
//! runs each) were 0.88–1.14× with rayon and 1.20–1.32× with these workers
//! on 15M q8_0, 1.12–1.21× and 1.22–1.68× on 110M q8_0 (docs/PERFORMANCE.md,
//! 2026-12-04, late night). A worker spins for [`SPIN_BEFORE_PARK`] after its
//! last chunk, then parks until the next call, so an idle program does not
//! keep a core busy.
//!
//! A call publishes its job and takes chunks itself, as the workers do: the
//! chunks nobody has started yet never wait for a worker, so a call is never
//! slower than running its chunks in turn by more than one chunk.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use kinglet::parallel::ChunkFn;

/// How long an idle worker spins before it parks: longer than the gaps
/// between a decode step's parallel calls, short enough to leave the core
/// to others when the machine is busy: beside six busy processes on two
/// cores, 15M q8_0 two-thread decode ran 621 and 478 tok/s spinning 1 ms
/// against rayon's 1,082 and 624, and 554 and 603 spinning 100 µs against
/// rayon's 527 and 563.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_micros(100);

/// Spins between two looks at the clock while a worker waits for a call,
/// and between two yields while a call waits for a worker's chunk.
const SPINS_PER_CLOCK_LOOK: u32 = 256;

/// One call's work: `out` in chunks of `chunk` floats, each given to `f`.
/// Raw pointers: the call that publishes it outlives every use (see
/// [`ChunkWorkers::run`]).
#[derive(Clone, Copy)]
struct Job {
    out: *mut f32,
    len: usize,
    chunk: usize,
    f: *const ChunkFn<'static>,
}

// SAFETY: a `Job` only carries pointers to a `&mut [f32]` and a `Sync`
// closure between threads; the chunks it hands out are disjoint, and its
// publisher waits for every chunk before the borrows end.
unsafe impl Send for Job {}

/// What the calling thread and the workers share.
struct Shared {
    /// The current call's number (high 32 bits) and its next unclaimed chunk
    /// (low 32 bits): a chunk is claimed by one compare-and-swap, and only
    /// while its call is the current one.
    claims: AtomicU64,
    /// The current call's job, written before its number is published.
    job: Mutex<Option<Job>>,
    /// Chunks of the current call.
    chunks: AtomicUsize,
    /// Chunks of the current call that have returned (or panicked).
    finished: AtomicUsize,
    /// The first panic of the current call, raised again in the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Set when the workers should exit.
    stop: AtomicBool,
}

/// One worker as the caller sees it: how to wake it when it is parked.
struct Worker {
    parked: Arc<AtomicBool>,
    thread: Thread,
    handle: Option<JoinHandle<()>>,
}

/// `count` spinning worker threads that help run the chunks of one
/// parallel call at a time (with the calling thread).
pub struct ChunkWorkers {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    /// Set while a call runs: a second call at the same time (another
    /// thread, or a chunk calling back) runs its chunks itself.
    busy: AtomicBool,
}

impl ChunkWorkers {
    /// Starts `count` workers (0: every call runs on the calling thread).
    pub fn new(count: usize) -> std::io::Result<ChunkWorkers> {
        let shared = Arc::new(Shared {
            claims: AtomicU64::new(0),
            job: Mutex::new(None),
            chunks: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            panic: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let parked = Arc::new(AtomicBool::new(false));
            let (s, p) = (shared.clone(), parked.clone());
            let spawned = thread::Builder::new()
                .name(format!("kinglet-chunks-{}", i + 1))
                .spawn(move || work(&s, &p));
            let handle = match spawned {
                Ok(handle) => handle,
                Err(e) => {
                    // Stop the ones started (dropping them joins them).
                    drop(ChunkWorkers {
                        shared,
                        workers,
                        busy: AtomicBool::new(false),
                    });
                    return Err(e);
                }
            };
            workers.push(Worker {
                parked,
                thread: handle.thread().clone(),
                handle: Some(handle),
            });
        }
        Ok(ChunkWorkers {
            shared,
            workers,
            busy: AtomicBool::new(false),
        })
    }

    /// Calls `f(i · chunk, part)` once for every `part` of
    /// `out.chunks_mut(chunk)` (`chunk ≥ 1`), on this thread and the
    /// workers, and returns when all have returned. A panic in `f` is
    /// raised here once every chunk has finished.
    pub fn run(&self, out: &mut [f32], chunk: usize, f: &ChunkFn<'_>) {
        let chunk = chunk.max(1);
        let chunks = out.len().div_ceil(chunk);
        let alone = self.workers.is_empty()
            || chunks <= 1
            || u32::try_from(chunks).is_err()
            || self
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err();
        if alone {
            for (i, part) in out.chunks_mut(chunk).enumerate() {
                f(i * chunk, part);
            }
            return;
        }
        let shared = &*self.shared;
        // SAFETY: only the lifetime is erased. The job's pointers are used
        // by claimed chunks only, and this call returns (or unwinds) after
        // `finished` reached `chunks`, i.e. after every claimed chunk
        // returned; a worker late for this call finds no chunk left to
        // claim under its number.
        let f = unsafe { std::mem::transmute::<*const ChunkFn<'_>, *const ChunkFn<'static>>(f) };
        let job = Job {
            out: out.as_mut_ptr(),
            len: out.len(),
            chunk,
            f,
        };
        *lock(&shared.job) = Some(job);
        shared.chunks.store(chunks, Ordering::Relaxed);
        shared.finished.store(0, Ordering::Relaxed);
        let call = (shared.claims.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xffff_ffff;
        // SeqCst with the workers' `parked` flags: a worker that parks
        // after this store sees the new call first, one that parked before
        // it is woken below.
        shared.claims.store(call << 32, Ordering::SeqCst);
        for w in &self.workers {
            if w.parked.swap(false, Ordering::SeqCst) {
                w.thread.unpark();
            }
        }
        run_claimed(shared, call, Some(job));
        let mut spins = 0u32;
        while shared.finished.load(Ordering::Acquire) < chunks {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(SPINS_PER_CLOCK_LOOK) {
                // A worker in the middle of a chunk lost its core.
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        *lock(&shared.job) = None;
        let panic = lock(&shared.panic).take();
        self.busy.store(false, Ordering::Release);
        if let Some(payload) = panic {
            panic::resume_unwind(payload);
        }
    }
}

impl Drop for ChunkWorkers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in &mut self.workers {
            w.thread.unpark();
            if let Some(handle) = w.handle.take() {
                // A worker never panics (chunks' panics are caught).
                let _ = handle.join();
            }
        }
    }
}

/// A worker's life: wait for a call (spinning, then parked), take its
/// chunks, repeat until told to stop.
fn work(shared: &Shared, parked: &AtomicBool) {
    let mut seen = 0u64;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        let call = loop {
            let call = shared.claims.load(Ordering::Acquire) >> 32;
            if call != seen {
                break call;
            }
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(SPINS_PER_CLOCK_LOOK) {
                std::hint::spin_loop();
            } else if since.elapsed() >= SPIN_BEFORE_PARK {
                parked.store(true, Ordering::SeqCst);
                // Look once more after saying so: a call published before
                // the flag was set did not wake this worker.
                let call = shared.claims.load(Ordering::SeqCst) >> 32;
                if call == seen && !shared.stop.load(Ordering::SeqCst) {
                    thread::park();
                }
                parked.store(false, Ordering::SeqCst);
                since = Instant::now();
            }
        };
        seen = call;
        run_claimed(shared, call, None);
    }
}

/// Claims and runs chunks of call number `call` until none is left; `job`
/// is the call's, or `None` to read it from the slot (once, on claiming a
/// first chunk).
fn run_claimed(shared: &Shared, call: u64, mut job: Option<Job>) {
    loop {
        let claims = shared.claims.load(Ordering::Acquire);
        let next = (claims & 0xffff_ffff) as usize;
        if claims >> 32 != call || next >= shared.chunks.load(Ordering::Acquire) {
            return;
        }
        let claimed =
            shared
                .claims
                .compare_exchange(claims, claims + 1, Ordering::AcqRel, Ordering::Relaxed);
        if claimed.is_err() {
            continue;
        }
        // Chunk `next` of call `call` is ours, and the call cannot end
        // before it finishes: its job is the one in the slot.
        if job.is_none() {
            job = *lock(&shared.job);
        }
        if let Some(job) = job {
            let result = panic::catch_unwind(AssertUnwindSafe(|| run_chunk(job, next)));
            if let Err(payload) = result {
                lock(&shared.panic).get_or_insert(payload);
            }
        }
        shared.finished.fetch_add(1, Ordering::Release);
    }
}

/// Runs chunk `index` of `job`, which the caller claimed for a call that
/// is still running.
fn run_chunk(job: Job, index: usize) {
    let first = index * job.chunk;
    let len = job.chunk.min(job.len - first);
    // SAFETY: chunk `index` is `out[first .. first + len]`, inside `out`
    // (index < chunks) and disjoint from every other chunk (each index is
    // claimed once); `out` and `f` outlive the call (see `ChunkWorkers::run`).
    let (part, f) = unsafe {
        (
            std::slice::from_raw_parts_mut(job.out.add(first), len),
            &*job.f,
        )
    };
    f(first, part);
}

/// A lock that a panic elsewhere does not make unusable (what it guards
/// stays consistent: whole values are written).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(workers: &ChunkWorkers, len: usize, chunk: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; len];
        workers.run(&mut out, chunk, &|first, part| {
            for (i, v) in part.iter_mut().enumerate() {
                *v += (first + i) as f32;
            }
        });
        out
    }

    #[test]
    fn every_chunk_runs_once_at_its_offset() {
        for count in [0, 1, 3] {
            let workers = ChunkWorkers::new(count).unwrap();
            for (len, chunk) in [(1001, 10), (7, 1), (5, 0), (0, 3), (64, 64)] {
                for _ in 0..50 {
                    let out = filled(&workers, len, chunk);
                    assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32));
                }
            }
        }
    }

    #[test]
    fn parked_workers_wake_for_the_next_call() {
        let workers = ChunkWorkers::new(2).unwrap();
        thread::sleep(SPIN_BEFORE_PARK * 5);
        let out = filled(&workers, 300, 7);
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32));
    }

    #[test]
    fn a_panicking_chunk_reaches_the_caller_after_the_others_finish() {
        let workers = ChunkWorkers::new(2).unwrap();
        let ran = AtomicUsize::new(0);
        let mut out = vec![0.0f32; 40];
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            workers.run(&mut out, 4, &|first, _| {
                ran.fetch_add(1, Ordering::Relaxed);
                if first == 8 {
                    panic!("chunk at {first}");
                }
            })
        }));
        let message = caught.unwrap_err();
        assert_eq!(message.downcast_ref::<String>().unwrap(), "chunk at 8");
        assert_eq!(ran.load(Ordering::Relaxed), 10);
        // Still usable.
        let out = filled(&workers, 50, 3);
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32));
    }

    #[test]
    fn calls_at_the_same_time_and_nested_ones_all_complete() {
        let workers = ChunkWorkers::new(1).unwrap();
        thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let out = filled(&workers, 97, 5);
                        assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32));
                    }
                });
            }
        });
        let mut out = vec![0.0f32; 20];
        workers.run(&mut out, 10, &|first, part| {
            let inner = filled(&workers, 9, 2);
            part[0] = first as f32 + inner[8];
        });
        assert_eq!((out[0], out[10]), (8.0, 18.0));
    }
}
