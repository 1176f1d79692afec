//! Matrix-vector kernels, per path: weight GB/s (weight bytes read / time)
//! and GFLOP/s (2·rows·cols / time), for the stories15M / stories110M shapes
//! 288×288 (wq), 768×2048 (w2 of 110M) and 32000×288 (15M classifier).
//!
//! Quantized rows use activations already quantized (that step is the
//! caller's, once per vector). Each figure is the median of `RUNS` runs, a
//! run repeating the kernel for at least `RUN_SECONDS`. Time is the thread's
//! time on a CPU (Linux `/proc/thread-self/schedstat`; wall time elsewhere),
//! so that other processes on a shared machine do not count against it.
//!
//! `cargo bench --bench kernels [-- DTYPE...]` measures every path this CPU
//! supports, directly (`KINGLET_KERNELS` does not matter here); names such as
//! `q8_0 f16` restrict the dtypes.

use std::hint::black_box;
use std::time::Instant;

use kinglet::kernels::Path;
use kinglet::quant::{quantize_activations, quantize_row, BlockQ8};
use kinglet::tensor::BLOCK_LEN;
use kinglet::{Dtype, Matrix};

const RUNS: usize = 5;
const RUN_SECONDS: f64 = 0.3;
const SHAPES: [(usize, usize); 3] = [(288, 288), (768, 2048), (32000, 288)];
const DTYPES: [Dtype; 5] = [
    Dtype::F32,
    Dtype::F16,
    Dtype::BF16,
    Dtype::Q8_0,
    Dtype::Q4_0,
];

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let paths: Vec<Path> = Path::ALL.into_iter().filter(|p| p.is_supported()).collect();
    println!(
        "kernel paths on this CPU: {} (dispatch picks {})",
        paths
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
        kinglet::kernels::active_path()
    );
    println!(
        "median of {RUNS} runs, {}; GB/s = weight bytes / time, GFLOP/s = 2·rows·cols / time\n",
        Clock::new().name()
    );
    let mut header = format!("{:<12} {:<6} {:>10}", "shape", "dtype", "weight MB");
    for p in &paths {
        header += &format!(" | {:>7} GB/s {:>6} GF/s", p.name(), "");
    }
    if paths.len() > 1 {
        header += " | speed-up";
    }
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    let mut seed = 1u64;
    for (rows, cols) in SHAPES {
        let x = random_values(&mut seed, cols);
        let mut xq = vec![BlockQ8::ZERO; cols / BLOCK_LEN];
        if let Err(e) = quantize_activations(&x, &mut xq) {
            fail(&format!("quantize activations: {e}"));
        }
        let values = random_values(&mut seed, rows * cols);
        for dtype in DTYPES {
            if !wanted.is_empty() && !wanted.iter().any(|n| n == dtype.name()) {
                continue;
            }
            let data = encode(dtype, rows, cols, &values);
            let Some(w) = Matrix::new(dtype, rows, cols, &data) else {
                fail("matrix shape")
            };
            let mut out = vec![0.0f32; rows];
            let mut line = format!(
                "{:<12} {:<6} {:>10.2}",
                format!("{rows}x{cols}"),
                dtype.name(),
                data.len() as f64 / 1e6
            );
            let mut seconds = Vec::new();
            for &path in &paths {
                let t = median_seconds(|| {
                    if dtype.is_quantized() {
                        if let Err(e) = path.matvec_quantized(&mut out, &w, &xq) {
                            fail(&format!("matvec_quantized: {e}"));
                        }
                    } else {
                        path.matvec(&mut out, &w, &x);
                    }
                    black_box(&out);
                });
                let gbs = data.len() as f64 / t / 1e9;
                let gflops = 2.0 * (rows * cols) as f64 / t / 1e9;
                line += &format!(" | {gbs:>12.2} {gflops:>11.2}");
                seconds.push(t);
            }
            if let (Some(first), Some(last)) = (seconds.first(), seconds.last()) {
                if seconds.len() > 1 {
                    line += &format!(" | {:>7.1}×", first / last);
                }
            }
            println!("{line}");
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("kernels bench: {message}");
    std::process::exit(1)
}

/// splitmix64 values in [-1, 1).
fn random_values(state: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `rows × cols` values encoded row by row.
fn encode(dtype: Dtype, rows: usize, cols: usize, values: &[f32]) -> Vec<u8> {
    let Some(row_bytes) = dtype.row_bytes(cols) else {
        fail("row size")
    };
    let mut data = vec![0u8; rows * row_bytes];
    for (dst, src) in data
        .chunks_exact_mut(row_bytes)
        .zip(values.chunks_exact(cols))
    {
        if let Err(e) = quantize_row(dtype, src, dst) {
            fail(&format!("encode {}: {e}", dtype.name()));
        }
    }
    data
}

/// Median over `RUNS` runs of the seconds one call of `f` takes.
fn median_seconds(mut f: impl FnMut()) -> f64 {
    // Warm up, and size a run by wall time (the on-CPU clock is too coarse
    // to time one call).
    let start = Instant::now();
    let mut calls = 0usize;
    while calls < 3 || start.elapsed().as_secs_f64() < RUN_SECONDS / 4.0 {
        f();
        calls += 1;
    }
    let once = start.elapsed().as_secs_f64() / calls as f64;
    let reps = ((RUN_SECONDS / once).ceil() as usize).max(1);
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Clock::new();
            for _ in 0..reps {
                f();
            }
            start.seconds() / reps as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

/// The calling thread's time on a CPU where Linux reports it (the first
/// field of `/proc/thread-self/schedstat`, nanoseconds, updated every
/// scheduler tick: hence runs of [`RUN_SECONDS`]), else wall time.
enum Clock {
    OnCpu(u64, Instant),
    Wall(Instant),
}

impl Clock {
    fn new() -> Clock {
        match on_cpu_nanos() {
            Some(ns) => Clock::OnCpu(ns, Instant::now()),
            None => Clock::Wall(Instant::now()),
        }
    }

    fn seconds(&self) -> f64 {
        match self {
            // A counter that has not moved (a run shorter than its update
            // period) falls back to the wall clock rather than dividing by 0.
            Clock::OnCpu(start, wall) => match on_cpu_nanos() {
                Some(now) if now > *start => (now - start) as f64 * 1e-9,
                Some(_) => wall.elapsed().as_secs_f64(),
                None => fail("/proc/thread-self/schedstat stopped answering"),
            },
            Clock::Wall(start) => start.elapsed().as_secs_f64(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Clock::OnCpu(..) => "thread on-CPU time",
            Clock::Wall(_) => "wall time",
        }
    }
}

fn on_cpu_nanos() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
