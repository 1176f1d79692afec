//! Matrix-vector kernels, per path: weight GB/s (weight bytes read / time)
//! and GFLOP/s (2·rows·cols / time), for the stories15M / stories110M shapes
//! 288×288 (wq), 768×2048 (w2 of 110M), 32000×288 (15M classifier) and
//! 32000×768 (110M classifier), beside the GB/s of a plain streaming read
//! of the same bytes (what the memory gives one core: the bound a kernel
//! on a matrix from DRAM can reach). Then the prefill products (and, with
//! AVX-512 VNNI, the ceiling `vpdpbusd` sets them), and the
//! element-wise kernels (softmax's exponentials, SwiGLU's gate, quantizing
//! activations, RMSNorm's sums of squares, RoPE) in nanoseconds per
//! element, the sampler's draws over 32,000 logits and prefill attention's
//! kernels for one layer of the 110M shape in microseconds, and what
//! loading costs besides the read (the checksum, repacking) in GB/s.
//!
//! Quantized rows are also measured packed (`kinglet::kernels::packed`, the
//! layout the CLI repacks them into at load time) on each path that packs
//! (every x86 one), in a `packed` column after the path's own; the prefill
//! table's `cold` column is the fastest path's packed product on weights
//! from memory. `speed-up`: the portable path's time over the best.
//!
//! Quantized rows use activations already quantized (that step is the
//! caller's, once per vector). Each figure is the best of `RUNS` runs, a
//! run repeating the kernel for about `RUN_SECONDS` (1 ms) of wall time:
//! on a shared machine most such runs fall between two preemptions, so the
//! best one measures the kernel and not the other processes.
//!
//! `cargo bench --bench kernels [-- DTYPE...]` measures every path this CPU
//! supports, directly (`KINGLET_KERNELS` does not matter here); names such as
//! `q8_0 f16` restrict the dtypes.

use std::hint::black_box;
use std::time::Instant;

use kinglet::kernels::packed::{pack_matrix, packed_bytes, PackedMatrix};
use kinglet::kernels::{Path, QueryBlock};
use kinglet::quant::{quantize_activations, quantize_row, BlockQ8};
use kinglet::tensor::BLOCK_LEN;
use kinglet::{Dtype, Matrix, Sampler, SamplerConfig};
use kinglet_tools::model_bytes::huge_page_buffer;
use kinglet_tools::rng::Rng;

const RUNS: usize = 301;
const RUN_SECONDS: f64 = 0.001;
const WARM_UP_SECONDS: f64 = 0.05;
const SHAPES: [(usize, usize); 4] = [(288, 288), (768, 2048), (32000, 288), (32000, 768)];
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
        "best of {RUNS} runs of ~{RUN_SECONDS} s; GB/s = weight bytes / time, GFLOP/s = 2·rows·cols / time\n"
    );
    let mut header = format!(
        "{:<12} {:<6} {:>10} {:>12}",
        "shape", "dtype", "weight MB", "stream GB/s"
    );
    for p in &paths {
        header += &format!(" | {:>7} GB/s {:>6} GF/s", p.name(), "");
        if p.packs_weights() {
            header += &format!(" | packed GB/s {:>6} GF/s", "");
        }
    }
    if paths.len() > 1 {
        header += " | speed-up";
    }
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    let mut rng = Rng::new(1);
    for (rows, cols) in SHAPES {
        let x = rng.uniform_vec(cols);
        let mut xq = vec![BlockQ8::ZERO; cols / BLOCK_LEN];
        if let Err(e) = quantize_activations(&x, &mut xq) {
            fail(&format!("quantize activations: {e}"));
        }
        let values = rng.uniform_vec(rows * cols);
        for dtype in wanted_dtypes(&wanted) {
            let data = encode(dtype, rows, cols, &values);
            let w = matrix(dtype, rows, cols, &data);
            let mut out = vec![0.0f32; rows];
            let stream = data.len() as f64
                / best_seconds(|| {
                    black_box(stream_read(&data));
                })
                / 1e9;
            let mut line = format!(
                "{:<12} {:<6} {:>10.2} {stream:>12.2}",
                format!("{rows}x{cols}"),
                dtype.name(),
                data.len() as f64 / 1e6
            );
            let mut packed = vec![0u8; packed_bytes(&w)];
            let packed = pack(&w, &mut packed);
            // " | GB/s GF/s" of one run taking `t` seconds, the GB/s `width` wide.
            let rates = |t: f64, width: usize| {
                let gbs = data.len() as f64 / t / 1e9;
                let gflops = 2.0 * (rows * cols) as f64 / t / 1e9;
                format!(" | {gbs:>width$.2} {gflops:>11.2}")
            };
            let mut seconds = Vec::new();
            for &path in &paths {
                let t = best_seconds(|| {
                    if dtype.is_quantized() {
                        if let Err(e) = path.matvec_quantized(&mut out, &w, &xq) {
                            fail(&format!("matvec_quantized: {e}"));
                        }
                    } else {
                        if let Err(e) = path.matvec(&mut out, &w, &x) {
                            fail(&format!("matvec: {e}"));
                        }
                    }
                    black_box(&out);
                });
                line += &rates(t, 12);
                seconds.push(t);
                if let (true, Some(p)) = (path.packs_weights(), &packed) {
                    let t = best_seconds(|| {
                        if let Err(e) = path.matvec_packed(&mut out, p, &xq) {
                            fail(&format!("matvec_packed: {e}"));
                        }
                        black_box(&out);
                    });
                    line += &rates(t, 11);
                    seconds.push(t);
                } else if path.packs_weights() {
                    line += &format!(" | {:>11} {:>11}", "-", "-");
                }
            }
            if let (Some(first), Some(best)) =
                (seconds.first(), seconds.iter().copied().reduce(f64::min))
            {
                if paths.len() > 1 {
                    line += &format!(" | {:>7.1}×", first / best);
                }
            }
            println!("{line}");
        }
    }
    matmul_table(&paths, &wanted);
    #[cfg(target_arch = "x86_64")]
    vnni_ceiling::print();
    elementwise_table(&paths);
    prefill_attention_table(&paths);
    loading_table(&paths);
}

/// What opening a model costs besides reading it, in GB/s of the model's
/// bytes: the CRC32C every section is checked with (`kinglet generate`
/// verifies every tensor at load) over 1 MB on each path, and repacking
/// Q8_0 and Q4_0 matrices for the x86 kernels, one in cache and one from
/// memory.
fn loading_table(paths: &[Path]) {
    println!("\nloading, GB/s");
    let mut rng = Rng::new(4);
    let bytes: Vec<u8> = (0..1 << 20).map(|_| rng.below(256) as u8).collect();
    for &path in paths {
        let t = best_seconds(|| {
            black_box(path.crc32c_update(!0, black_box(&bytes)));
        });
        println!(
            "crc32c, 1 MB ({}): {:.2}",
            path.name(),
            bytes.len() as f64 / t / 1e9
        );
    }
    let (rows, cols) = (2048, 768);
    let values = rng.uniform_vec(rows * cols);
    for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
        let data = encode(dtype, rows, cols, &values);
        // The same rows over and over, past the last-level cache: as a
        // model's matrices are packed, from memory.
        let from_memory = data.repeat(COLD_BYTES / data.len());
        for (data, place) in [(&data, "in cache"), (&from_memory, "from memory")] {
            let rows = data.len() / dtype.row_bytes(cols).unwrap_or(1);
            let w = matrix(dtype, rows, cols, data);
            let mut buffer =
                huge_page_buffer(packed_bytes(&w)).unwrap_or_else(|e| fail(&e.to_string()));
            let t = best_seconds(|| {
                black_box(pack(&w, &mut buffer));
            });
            println!(
                "pack_matrix, {rows}x{cols} {} ({place}): {:.2}",
                dtype.name(),
                data.len() as f64 / t / 1e9
            );
        }
    }
}

/// Prefill attention's kernels for one layer of the stories110M shape (12
/// heads of 64, a 128-token prompt in chunks of 16 queries), as
/// `ops::attend_queries` calls them: per chunk, block of 16 cached positions
/// and head, the scores of every query that sees the block; then per block
/// of 32 and head, the weighted sums. Microseconds per layer, per path (the
/// softmax between them, which does not depend on the path, left out).
fn prefill_attention_table(paths: &[Path]) {
    const HEADS: usize = 12;
    const HEAD_DIM: usize = 64;
    const PROMPT: usize = 128;
    const CHUNK: usize = 16;
    const SUM_BLOCK: usize = 32;
    let dim = HEADS * HEAD_DIM;
    let mut rng = Rng::new(4);
    let keys = rng.uniform_vec(PROMPT * dim);
    let values = rng.uniform_vec(PROMPT * dim);
    let q = rng.uniform_vec(CHUNK * dim);
    let weights: Vec<f32> = rng
        .uniform_vec(CHUNK * HEADS * PROMPT)
        .iter()
        .map(|w| w.abs() / 64.0)
        .collect();
    let mut scores = vec![0.0f32; CHUNK * HEADS * PROMPT];
    let mut out = vec![0.0f32; CHUNK * dim];
    // The block of `rows` positions from `first` for head `h`, from the
    // first query of the chunk at `start` that sees it: the block, and where
    // that query's scores, head and the block's first cached row start.
    let block = |start: usize, first: usize, rows: usize, h: usize| {
        let t0 = first.saturating_sub(start);
        let block = QueryBlock {
            rows: rows.min(start + CHUNK - first),
            row_floats: dim,
            column: h * HEAD_DIM,
            head_dim: HEAD_DIM,
            queries: CHUNK - t0,
            visible: start + 1 + t0 - first,
            query_stride: dim,
            score_stride: HEADS * PROMPT,
        };
        let at_scores = t0 * HEADS * PROMPT + h * PROMPT + first;
        (block, at_scores, t0 * dim + h * HEAD_DIM, first * dim)
    };
    let layer = |path: Path, scores: &mut [f32], out: &mut [f32]| {
        for start in (0..PROMPT).step_by(CHUNK) {
            let last = start + CHUNK; // positions the chunk's last query sees
            for first in (0..last).step_by(CHUNK) {
                for h in 0..HEADS {
                    let (block, at_scores, at_head, at_rows) = block(start, first, CHUNK, h);
                    path.attention_scores_queries(
                        &mut scores[at_scores..],
                        &q[at_head..],
                        &keys[at_rows..],
                        block,
                    )
                    .expect("scores");
                }
            }
            for first in (0..last).step_by(SUM_BLOCK) {
                for h in 0..HEADS {
                    let (block, at_weights, at_out, at_rows) = block(start, first, SUM_BLOCK, h);
                    path.add_weighted_queries(
                        &mut out[at_out..],
                        &weights[at_weights..],
                        &values[at_rows..],
                        block,
                    )
                    .expect("sums");
                }
            }
        }
    };
    println!(
        "\nprefill attention, one layer ({HEADS} heads of {HEAD_DIM}, {PROMPT} positions in chunks \
         of {CHUNK}): scores and weighted sums, microseconds"
    );
    let mut line = String::new();
    for &path in paths {
        let t = best_seconds(|| {
            layer(path, &mut scores, &mut out);
            black_box(&out);
        });
        line += &format!("{}: {:.1}  ", path.name(), t * 1e6);
    }
    println!("{}", line.trim_end());
}

/// Vector lengths of the element-wise kernels: attention over 64 and 1024
/// positions, the 110M model's hidden width, a 32000-token vocabulary.
const ELEMENTWISE_LENS: [usize; 4] = [64, 1024, 2048, 32000];

/// Softmax's exponentials (`exp_and_sum`) and SwiGLU's gate (`silu_mul`):
/// nanoseconds per element, per path (each call includes refilling its
/// input from a copy).
fn elementwise_table(paths: &[Path]) {
    println!("\nelement-wise kernels, ns per element");
    let mut header = format!("{:<12} {:>7}", "kernel", "length");
    for p in paths {
        header += &format!(" | {:>8}", p.name());
    }
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    let mut rng = Rng::new(3);
    for n in ELEMENTWISE_LENS {
        let input: Vec<f32> = rng.uniform_vec(n).iter().map(|v| v * 8.0).collect();
        let up = rng.uniform_vec(n);
        let mut buffer = input.clone();
        let mut exp_line = format!("{:<12} {n:>7}", "exp_and_sum");
        let mut silu_line = format!("{:<12} {n:>7}", "silu_mul");
        for &path in paths {
            let t = best_seconds(|| {
                buffer.copy_from_slice(&input);
                black_box(path.exp_and_sum(&mut buffer, 8.0));
            });
            exp_line += &format!(" | {:>8.3}", t * 1e9 / n as f64);
            let t = best_seconds(|| {
                buffer.copy_from_slice(&input);
                path.silu_mul(&mut buffer, &up);
                black_box(&buffer);
            });
            silu_line += &format!(" | {:>8.3}", t * 1e9 / n as f64);
        }
        println!("{exp_line}\n{silu_line}");
        elementwise_passes(paths, &input, n);
    }
    // Draws over a vocabulary: greedy; at temperature 1 (the temperature,
    // softmax: its maximum, exponentials and division, and the draw, on the
    // active path); and with `kinglet generate`'s defaults (temperature 0.8,
    // top-p 0.9), whose threshold search is the sampler's own code, over
    // spread logits (uniform, 16 wide), over near-equal ones (1 wide:
    // nearly every probability shares its exponent), over normal ones of a
    // 110M-shaped random-weight model's spread (standard deviation 0.55:
    // top-p keeps most of the tokens), and over peaked ones (one in a
    // thousand far above the rest, as a trained model's).
    let spread: Vec<f32> = rng.uniform_vec(32000).iter().map(|v| v * 8.0).collect();
    let flat: Vec<f32> = spread.iter().map(|v| v / 16.0).collect();
    let mut random_model = vec![0.0f32; 32000];
    rng.fill_normal(&mut random_model, 0.55);
    let peaked: Vec<f32> = spread
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 1000 == 0 { v + 16.0 } else { *v })
        .collect();
    let draws = [
        ("greedy", 0.0, 1.0, &spread),
        ("temperature 1", 1.0, 1.0, &spread),
        ("temperature 0.8, top-p 0.9", 0.8, 0.9, &spread),
        (
            "temperature 0.8, top-p 0.9, near-equal logits",
            0.8,
            0.9,
            &flat,
        ),
        (
            "temperature 0.8, top-p 0.9, a random model's logits",
            0.8,
            0.9,
            &random_model,
        ),
        (
            "temperature 0.8, top-p 0.9, peaked logits",
            0.8,
            0.9,
            &peaked,
        ),
    ];
    for (name, temperature, top_p, logits) in draws {
        let config = SamplerConfig {
            temperature,
            top_p,
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(32000, config).expect("sampler");
        let mut buffer = logits.clone();
        let t = best_seconds(|| {
            buffer.copy_from_slice(logits);
            black_box(sampler.sample(&mut buffer));
        });
        println!(
            "sample, {name}, 32000 logits ({}): {:.1} us",
            kinglet::kernels::active_path(),
            t * 1e6
        );
    }
}

/// The passes around the products, per path, in ns per element of `input`
/// (`n` floats, a multiple of 64): quantizing activations (with its
/// finiteness check), RMSNorm's sums of squares of the floats as sixteen
/// rows, and RoPE with heads of 64.
fn elementwise_passes(paths: &[Path], input: &[f32], n: usize) {
    let mut blocks = vec![BlockQ8::ZERO; n / BLOCK_LEN];
    let rotations: Vec<f32> = (0..64).map(|i| (i as f32 * 0.1).cos()).collect();
    let mut buffer = input.to_vec();
    let mut quant_line = format!("{:<12} {n:>7}", "quantize");
    let mut norm_line = format!("{:<12} {n:>7}", "norm_sums");
    let mut rope_line = format!("{:<12} {n:>7}", "rope");
    for &path in paths {
        let t = best_seconds(|| {
            path.quantize_activations(black_box(input), &mut blocks)
                .expect("finite input");
            black_box(&blocks);
        });
        quant_line += &format!(" | {:>8.3}", t * 1e9 / n as f64);
        let t = best_seconds(|| {
            black_box(
                path.sum_of_squares_rows(black_box(input), n / 16)
                    .expect("16 rows"),
            );
        });
        norm_line += &format!(" | {:>8.3}", t * 1e9 / n as f64);
        let t = best_seconds(|| {
            buffer.copy_from_slice(input);
            path.rope(&mut buffer, &rotations);
            black_box(&buffer);
        });
        rope_line += &format!(" | {:>8.3}", t * 1e9 / n as f64);
    }
    println!("{quant_line}\n{norm_line}\n{rope_line}");
}

/// Reads every byte once, front to back, as a vectorized sum of 64-bit
/// words in eight lanes: the plain streaming read a matvec is compared with.
fn stream_read(data: &[u8]) -> u64 {
    let mut lanes = [0u64; 8];
    for line in data.chunks_exact(64) {
        for (j, lane) in lanes.iter_mut().enumerate() {
            let word = u64::from_le_bytes(line[8 * j..8 * j + 8].try_into().unwrap_or([0; 8]));
            *lane = lane.wrapping_add(word);
        }
    }
    lanes.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// The prefill products' shapes: stories15M's wq, and stories110M's wq
/// (and wk, wv, wo), w1 (and w3) and w2.
const MATMUL_SHAPES: [(usize, usize); 4] = [(288, 288), (768, 768), (2048, 768), (768, 2048)];

/// Positions of the matrix × several vectors kernels (one prefill chunk).
const POSITIONS: usize = kinglet::session::PREFILL_CHUNK;

/// The prefill kernels: each matrix times [`POSITIONS`] vectors, GFLOP/s
/// per path.
fn matmul_table(paths: &[Path], wanted: &[String]) {
    println!("\nmatrix × {POSITIONS} vectors (prefill), GFLOP/s = 2·rows·cols·{POSITIONS} / time");
    let mut header = format!("{:<12} {:<6}", "shape", "dtype");
    for p in paths {
        header += &format!(" | {:>8} GF/s", p.name());
        if p.packs_weights() {
            header += &format!(" | {:>8} GF/s", "packed");
        }
    }
    // The cold column: the fastest path's packed product from memory.
    let packer = paths.iter().copied().rfind(|p| p.packs_weights());
    if packer.is_some() {
        header += &format!(" | {:>8} GF/s", "cold");
    }
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    let mut rng = Rng::new(2);
    for (rows, cols) in MATMUL_SHAPES {
        let x = rng.uniform_vec(POSITIONS * cols);
        let mut xq = vec![BlockQ8::ZERO; POSITIONS * cols / BLOCK_LEN];
        for (x, q) in x
            .chunks_exact(cols)
            .zip(xq.chunks_exact_mut(cols / BLOCK_LEN))
        {
            if let Err(e) = quantize_activations(x, q) {
                fail(&format!("quantize activations: {e}"));
            }
        }
        let values = rng.uniform_vec(rows * cols);
        for dtype in wanted_dtypes(wanted) {
            let data = encode(dtype, rows, cols, &values);
            let w = matrix(dtype, rows, cols, &data);
            let mut out = vec![0.0f32; rows * POSITIONS];
            let mut line = format!("{:<12} {:<6}", format!("{rows}x{cols}"), dtype.name());
            let mut packed = vec![0u8; packed_bytes(&w)];
            let packed = pack(&w, &mut packed);
            for &path in paths {
                let t = best_seconds(|| {
                    let done = if dtype.is_quantized() {
                        path.matmul_quantized(&mut out, &w, &xq, POSITIONS)
                    } else {
                        path.matmul(&mut out, &w, &x, POSITIONS)
                    };
                    if let Err(e) = done {
                        fail(&format!("matmul: {e}"));
                    }
                    black_box(&out);
                });
                let gflops = 2.0 * (rows * cols * POSITIONS) as f64 / t / 1e9;
                line += &format!(" | {gflops:>13.2}");
                if let (true, Some(p)) = (path.packs_weights(), &packed) {
                    let t = best_seconds(|| {
                        if let Err(e) = path.matmul_packed(&mut out, p, &xq, POSITIONS) {
                            fail(&format!("matmul_packed: {e}"));
                        }
                        black_box(&out);
                    });
                    let gflops = 2.0 * (rows * cols * POSITIONS) as f64 / t / 1e9;
                    line += &format!(" | {gflops:>13.2}");
                } else if path.packs_weights() {
                    line += &format!(" | {:>13}", "-");
                }
            }
            if let (Some(path), true) = (packer, packed.is_some()) {
                let t = cold_packed_seconds(path, &w, &xq, &mut out);
                let gflops = 2.0 * (rows * cols * POSITIONS) as f64 / t / 1e9;
                line += &format!(" | {gflops:>13.2}");
            }
            println!("{line}");
        }
    }
}

/// What `vpdpbusd` allows the AVX-512 quantized prefill products on this
/// CPU, in the prefill table's unit (a `vpdpbusd` is 64 multiply-adds, 128
/// operations): independent `vpdpbusd` alone, and the reference's steps per
/// block of 32 columns for sixteen rows and eight positions as the packed
/// kernel runs them (per position: 8 chained `vpdpbusd`, a convert, two
/// multiplies and an add, never fused), with everything in registers.
#[cfg(target_arch = "x86_64")]
mod vnni_ceiling {
    #![allow(unsafe_code)]
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Blocks per timed call: long enough to hide the call.
    const REPEATS: usize = 10_000;

    pub fn print() {
        if !is_x86_feature_detected!("avx512vnni") || !is_x86_feature_detected!("avx512bw") {
            println!("vpdpbusd ceiling: skipped: CPU lacks avx512vnni");
            return;
        }
        // SAFETY: the features were detected just above.
        let alone = super::best_seconds(|| {
            black_box(unsafe { alone(REPEATS) });
        });
        let steps = super::best_seconds(|| {
            black_box(unsafe { with_steps(REPEATS) });
        });
        // 64 `vpdpbusd` a block either way, 128 operations each.
        let gops = |t: f64| (REPEATS * 64 * 128) as f64 / t / 1e9;
        println!(
            "vpdpbusd ceiling (GOP/s, the table's unit, one core): alone {:.1}; with the reference's float steps {:.1}",
            gops(alone),
            gops(steps)
        );
    }

    /// 64 independent-enough `vpdpbusd` per repeat (16 chains).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn alone(repeats: usize) -> __m512i {
        let (w, x) = (
            black_box(_mm512_set1_epi8(3)),
            black_box(_mm512_set1_epi8(5)),
        );
        let mut acc = [_mm512_setzero_si512(); 16];
        for _ in 0..repeats {
            for _ in 0..4 {
                for a in acc.iter_mut() {
                    *a = _mm512_dpbusd_epi32(*a, w, x);
                }
            }
        }
        acc.into_iter()
            .fold(_mm512_setzero_si512(), |s, a| _mm512_add_epi32(s, a))
    }

    /// One block of sixteen rows for eight positions per repeat, as the
    /// packed prefill kernel computes it.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn with_steps(repeats: usize) -> __m512 {
        let levels: [__m512i; 8] = core::array::from_fn(|k| black_box(_mm512_set1_epi8(k as i8)));
        let words: [i32; 64] = black_box(core::array::from_fn(|i| i as i32));
        let (dw, dx) = (black_box(_mm512_set1_ps(1.0001)), black_box([0.5f32; 8]));
        let mut sums = [_mm512_setzero_ps(); 8];
        for r in 0..repeats {
            for (p, sum) in sums.iter_mut().enumerate() {
                // Starting from the repeat's number, so that nothing is
                // hoisted out of the loop (the offsets' role in the kernel).
                let mut totals = _mm512_set1_epi32((r + p) as i32);
                for (k, l) in levels.iter().enumerate() {
                    totals = _mm512_dpbusd_epi32(totals, *l, _mm512_set1_epi32(words[8 * p + k]));
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(dx[p]));
                *sum = _mm512_add_ps(*sum, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(totals)));
            }
        }
        sums.into_iter()
            .fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, a))
    }
}

/// Bytes of weights the `cold` column cycles through: far more than the
/// last-level cache, as a prefill chunk streams every layer's weights.
const COLD_BYTES: usize = 96 << 20;

/// Seconds per [`POSITIONS`]-vector product of `w` packed, each call on the
/// next of enough packed copies to fill [`COLD_BYTES`]: the weights come
/// from memory, not from the cache (the `packed` column's case), on huge
/// pages as the CLI's packed weights are.
fn cold_packed_seconds(path: Path, w: &Matrix<'_>, xq: &[BlockQ8], out: &mut [f32]) -> f64 {
    let bytes = packed_bytes(w);
    let copies = COLD_BYTES.div_ceil(bytes.max(1));
    let Ok(mut buffer) = huge_page_buffer(bytes * copies) else {
        fail("cold copies: no memory")
    };
    let packed: Vec<PackedMatrix<'_>> = buffer
        .chunks_exact_mut(bytes)
        .filter_map(|b| pack(w, b))
        .collect();
    let mut next = 0;
    best_seconds(|| {
        if let Err(e) = path.matmul_packed(out, &packed[next], xq, POSITIONS) {
            fail(&format!("matmul_packed: {e}"));
        }
        next = (next + 1) % packed.len();
        black_box(&*out);
    })
}

/// The dtypes `wanted` names, every one when it names none.
fn wanted_dtypes(wanted: &[String]) -> impl Iterator<Item = Dtype> + '_ {
    DTYPES
        .into_iter()
        .filter(move |dtype| wanted.is_empty() || wanted.iter().any(|n| n == dtype.name()))
}

/// `w` packed into `buffer` (`packed_bytes(w)` long); `None` for a float
/// matrix.
fn pack<'b>(w: &Matrix<'_>, buffer: &'b mut [u8]) -> Option<PackedMatrix<'b>> {
    if !w.dtype.is_quantized() {
        return None;
    }
    match pack_matrix(w, buffer) {
        Ok(p) => Some(p),
        Err(e) => fail(&format!("pack: {e}")),
    }
}

/// `data` as a `rows × cols` matrix of `dtype`.
fn matrix(dtype: Dtype, rows: usize, cols: usize, data: &[u8]) -> Matrix<'_> {
    Matrix::new(dtype, rows, cols, data).unwrap_or_else(|| fail("matrix shape"))
}

fn fail(message: &str) -> ! {
    eprintln!("kernels bench: {message}");
    std::process::exit(1)
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

/// The shortest of `RUNS` runs, in seconds per call of `f`: a run repeats
/// `f` for about [`RUN_SECONDS`] of wall time, short enough that many runs
/// fall between two preemptions on a busy machine, so the shortest is the
/// kernel's own speed rather than other processes' share.
fn best_seconds(mut f: impl FnMut()) -> f64 {
    // Warm up (caches, frequency), and size a run.
    let start = Instant::now();
    let mut calls = 0usize;
    while calls < 3 || start.elapsed().as_secs_f64() < WARM_UP_SECONDS {
        f();
        calls += 1;
    }
    let once = start.elapsed().as_secs_f64() / calls as f64;
    let reps = ((RUN_SECONDS / once).ceil() as usize).max(1);
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}
