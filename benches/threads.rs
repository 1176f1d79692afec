//! What one parallel call of a session costs on two threads: microseconds
//! per call of `Parallel::for_each_chunk` over two chunks of a fixed amount
//! of work, each call followed by a stretch of work on the calling thread
//! alone (as a decode step does between its products: norms, activations,
//! rotations). Three ways, alternating call batch by call batch:
//! - `sequential`: both chunks on the calling thread;
//! - `rayon`: `par_chunks_mut` on a rayon pool of two threads, entered from
//!   one of its threads (the hook `kinglet_tools::threads` used before);
//! - `chunk workers`: `Threads` (the calling thread and one spinning worker).
//!
//! Ideal on two free cores: half the sequential chunk time plus the gap.
//! Each figure is the median of the batches. `cargo bench --bench threads`
//! (about 30 s).

use std::time::Instant;

use kinglet::parallel::Parallel;
use kinglet_tools::threads::Threads;
use rayon::prelude::*;

const BATCHES: usize = 7;
const CALLS: usize = 5_000;
/// Floats per chunk and floats of work between calls: on a Zen 4, about 3
/// and 13 µs of chunk, and none, 0.6, 12 or 57 µs between (a decode step's
/// gaps range from a norm's to a sampling's over the vocabulary).
const SHAPES: [(usize, usize); 6] = [
    (4_000, 0),
    (4_000, 1_000),
    (4_000, 20_000),
    (4_000, 100_000),
    (20_000, 20_000),
    (20_000, 100_000),
];

/// A chunk's work: one square root per float, so that the time is the
/// core's and not the memory's.
fn work(first: usize, part: &mut [f32]) {
    for (i, v) in part.iter_mut().enumerate() {
        *v = (*v + (first + i) as f32).sqrt();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let threads = Threads::new(2).expect("thread pool");
    println!(
        "µs per parallel call over 2 chunks, median of {BATCHES} batches of {CALLS} calls, 2 threads"
    );
    println!(
        "{:>13} {:>11} {:>11} {:>8} {:>14} {:>16}",
        "chunk floats", "gap floats", "sequential", "rayon", "chunk workers", "rayon / workers"
    );
    for (chunk, gap) in SHAPES {
        let mut out = vec![0.0f32; 2 * chunk];
        let mut between = vec![1.0f32; gap];
        let mut time = |run: &mut dyn FnMut(&mut [f32])| {
            let start = Instant::now();
            for _ in 0..CALLS {
                run(&mut out);
                work(0, &mut between);
            }
            start.elapsed().as_secs_f64() / CALLS as f64 * 1e6
        };
        let (mut seq, mut ray, mut ours) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..BATCHES {
            seq.push(time(&mut |out| {
                for (i, part) in out.chunks_mut(chunk).enumerate() {
                    work(i * chunk, part);
                }
            }));
            ray.push(rayon_pool.install(|| {
                time(&mut |out| {
                    out.par_chunks_mut(chunk)
                        .enumerate()
                        .for_each(|(i, part)| work(i * chunk, part))
                })
            }));
            ours.push(
                threads.install(|| time(&mut |out| threads.for_each_chunk(out, chunk, &work))),
            );
        }
        let (seq, ray, ours) = (median(seq), median(ray), median(ours));
        println!(
            "{chunk:>13} {gap:>11} {seq:>11.2} {ray:>8.2} {ours:>14.2} {:>15.2}×",
            ray / ours
        );
    }
}
