//! Side by side with llama2.c on the same CPU: decode tok/s of kinglet
//! against `run` (f32) and `runq` (int8), and kinglet's thread and prefill
//! ratios, printed as the ratio table of docs/PERFORMANCE.md.
//!
//! llama2.c is not part of this repository: build it beside it and name its
//! folder in `LLAMA2C_DIR` (the folder holding the `run` and `runq`
//! binaries), e.g.
//!
//! ```text
//! cd llama2.c && gcc -Ofast -march=native run.c -lm -o run \
//!             && gcc -Ofast -march=native runq.c -lm -o runq
//! LLAMA2C_DIR=$PWD cargo bench --bench llama2c
//! ```
//!
//! Models: random weights in the stories15M and stories110M shapes (the
//! code of `kinglet synth`, seed 1), written as .klt (f32, q8_0, q4_0), as
//! a llama2.c version 0 checkpoint for `run` (f32), as a version 2
//! checkpoint for `runq` (int8 in groups of 64, or the largest power of two
//! dividing `dim`, as llama2.c's export.py quantizes) and as a llama2.c
//! tokenizer.bin; the files go to a temporary folder.
//!
//! Each round runs every measurement once, kinglet and llama2.c alternating,
//! so that a change of load disturbs both; the table gives the median of
//! `KINGLET_BENCH_ROUNDS` (default 3) rounds. Decode: `KINGLET_BENCH_STEPS`
//! (default 128) greedy steps after the first token, timed as llama2.c
//! times itself (from the end of the first step). Prefill: a prompt of the
//! same length in chunks. `KINGLET_BENCH_MODELS=15m,110m` picks the shapes.
//! kinglet reads packed weights where `kinglet generate` would (q8_0 and
//! q4_0 on an x86 CPU with AVX2); `KINGLET_BENCH_PACK=0` turns them off.
//!
//! Beside the thread ratio, the memory's: a plain streaming read of the
//! model's bytes (the weights decode reads once a token) by one thread and
//! by two, each reading half, in every round. Where decode streams its
//! weights at one core's read rate, that read's 2 / 1 ratio is about the
//! most two threads can give.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "../tests/common/llama2c.rs"]
mod llama2c;

use kinglet::canonical::{LayerPart, TensorRole};
use kinglet::{session_floats, Dtype, ModelFile, PackedWeights, Session};
use kinglet_tools::memory::Budget;
use kinglet_tools::model_bytes::ModelBytes;
use kinglet_tools::packing;
use kinglet_tools::threads::Threads;
use kinglet_tools::{synth, DtypePlan, OwnedModel};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fail(message: &str) -> ! {
    eprintln!("llama2c bench: {message}");
    std::process::exit(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------
// llama2.c's files
// ---------------------------------------------------------------------------

/// The values of tensor `role` of `model`.
fn tensor(model: &OwnedModel, role: TensorRole) -> &[f32] {
    let name = role.to_string();
    match model.tensors.iter().find(|t| t.name == name) {
        Some(t) => &t.values,
        None => fail(&format!("synth model lacks {name}")),
    }
}

/// Every layer's `part`, layer after layer.
fn all_layers(model: &OwnedModel, part: LayerPart) -> Vec<f32> {
    (0..model.config.n_layers)
        .flat_map(|layer| tensor(model, TensorRole::Layer { layer, part }).to_vec())
        .collect()
}

fn push_f32s(out: &mut Vec<u8>, values: &[f32]) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A version 0 checkpoint, as `run.c` reads it: the params, then the f32
/// weights, RoPE tables (unused: zeros) included.
fn llama2c_v0(model: &OwnedModel) -> Vec<u8> {
    let c = &model.config;
    let mut out = Vec::new();
    out.extend(llama2c::config_bytes(c, c.vocab_size as i32)); // shared classifier
    push_f32s(&mut out, tensor(model, TensorRole::TokEmbedding));
    // llama2.c stores each part for all layers together, in the .klt's part order.
    for part in LayerPart::ALL {
        push_f32s(&mut out, &all_layers(model, part));
    }
    push_f32s(&mut out, tensor(model, TensorRole::Norm));
    let rope = c.max_seq_len as usize * c.head_dim() / 2;
    push_f32s(&mut out, &vec![0.0; 2 * rope]);
    out
}

/// `values` as export.py's `quantize_q80` writes them: per group, int8
/// levels `round(w / (max|w| / 127))`, then the f32 scales after all levels.
fn push_q80(out: &mut Vec<u8>, values: &[f32], group: usize) {
    let mut scales = Vec::new();
    for g in values.chunks_exact(group) {
        let scale = g.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        let inverse = if scale == 0.0 { 0.0 } else { 1.0 / scale };
        out.extend(
            g.iter()
                .map(|v| (v * inverse).round_ties_even() as i8 as u8),
        );
        scales.push(scale);
    }
    push_f32s(out, &scales);
}

/// A version 2 checkpoint, as `runq.c` reads it: a 256-byte header (magic,
/// version, params, shared classifier, group size), the f32 norms, then the
/// int8 matrices.
fn llama2c_v2(model: &OwnedModel) -> Vec<u8> {
    let c = &model.config;
    let mut group = 64;
    while !(c.dim as usize).is_multiple_of(group) {
        group /= 2;
    }
    let mut out = Vec::new();
    out.extend_from_slice(&0x616b_3432u32.to_le_bytes());
    out.extend_from_slice(&2i32.to_le_bytes());
    out.extend(llama2c::config_bytes(c, c.vocab_size as i32)); // shared classifier
    out.push(1); // shared classifier
    out.extend_from_slice(&(group as i32).to_le_bytes());
    out.resize(256, 0);
    push_f32s(&mut out, &all_layers(model, LayerPart::AttnNorm));
    push_f32s(&mut out, &all_layers(model, LayerPart::FfnNorm));
    push_f32s(&mut out, tensor(model, TensorRole::Norm));
    push_q80(&mut out, tensor(model, TensorRole::TokEmbedding), group);
    for part in [
        LayerPart::Wq,
        LayerPart::Wk,
        LayerPart::Wv,
        LayerPart::Wo,
        LayerPart::W1,
        LayerPart::W2,
        LayerPart::W3,
    ] {
        push_q80(&mut out, &all_layers(model, part), group);
    }
    out
}

/// A llama2.c `tokenizer.bin`: the longest piece's length, then per piece
/// its score, length and bytes.
fn llama2c_tokenizer(model: &OwnedModel) -> Vec<u8> {
    let pieces = &model.vocab.pieces;
    let longest = pieces.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = (longest as i32).to_le_bytes().to_vec();
    for (piece, score) in pieces.iter().zip(&model.vocab.scores) {
        out.extend_from_slice(&score.to_le_bytes());
        out.extend_from_slice(&(piece.len() as i32).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(path, bytes) {
        fail(&format!("cannot write {}: {e}", path.display()));
    }
}

/// Runs a llama2.c binary for `steps` greedy steps and returns the tok/s it
/// reports.
fn llama2c_rate(binary: &Path, checkpoint: &Path, tokenizer: &Path, steps: u32) -> f64 {
    let output = Command::new(binary)
        .arg(checkpoint)
        .args(["-t", "0", "-n", &(steps + 1).to_string(), "-z"])
        .arg(tokenizer)
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", binary.display())));
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("achieved tok/s: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| fail(&format!("{} printed no tok/s: {stderr}", binary.display())))
}

// ---------------------------------------------------------------------------
// kinglet
// ---------------------------------------------------------------------------

/// `file` opened as `kinglet generate` opens a model: in [`ModelBytes`].
fn open(file: &[u8]) -> ModelFile<ModelBytes> {
    let bytes = ModelBytes::copy_of(file).unwrap_or_else(|e| fail(&format!("memory: {e}")));
    ModelFile::new_checked(bytes).unwrap_or_else(|e| fail(&format!("open: {e}")))
}

/// The packed-weights buffer `kinglet generate` would give `model`, unless
/// `KINGLET_BENCH_PACK=0`.
fn packed_buffer<T: AsRef<[u8]>>(
    model: &ModelFile<T>,
) -> Option<impl std::ops::DerefMut<Target = [u8]>> {
    let enabled = env_or("KINGLET_BENCH_PACK", 1) == 1;
    packing::packed_buffer(model, enabled, &Budget::new(None), Some(0))
}

/// `session` reading `model`'s weights packed into `buffer` when given, as
/// `kinglet generate` runs.
fn maybe_packed<'a, T: AsRef<[u8]>>(
    session: Session<'a, T>,
    model: &'a ModelFile<T>,
    buffer: Option<&'a mut [u8]>,
) -> Session<'a, T> {
    match buffer {
        Some(b) => {
            let packed =
                PackedWeights::new(model, b).unwrap_or_else(|e| fail(&format!("pack: {e}")));
            session
                .with_packed(packed)
                .unwrap_or_else(|e| fail(&format!("pack: {e}")))
        }
        None => session,
    }
}

/// Decode tok/s over `steps` greedy steps after the first, timed from the
/// end of the first step (as llama2.c times itself).
fn decode_rate(file: &[u8], steps: u32, threads: &Threads) -> f64 {
    let model = open(file);
    let config = *model.config();
    let max_seq = config.max_seq_len.min(steps + 1);
    let mut buffer = vec![0.0f32; session_floats(&config, max_seq)];
    let mut packed = packed_buffer(&model);
    let session = Session::new(&model, &mut buffer, max_seq)
        .unwrap_or_else(|e| fail(&format!("session: {e}")))
        .with_parallel(threads);
    let mut session = maybe_packed(session, &model, packed.as_deref_mut());
    let argmax = |logits: &[f32]| {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    let mut token = model.vocab().bos().unwrap_or(1);
    let mut start = Instant::now();
    for step in 0..max_seq {
        token = argmax(
            session
                .forward(token)
                .unwrap_or_else(|e| fail(&format!("{e}"))),
        );
        if step == 0 {
            start = Instant::now();
        }
    }
    f64::from(max_seq - 1) / start.elapsed().as_secs_f64()
}

/// Prefill tok/s of a `len`-token prompt.
fn prefill_rate(file: &[u8], len: u32, threads: &Threads) -> f64 {
    let model = open(file);
    let config = *model.config();
    let len = config.max_seq_len.min(len);
    let prompt: Vec<u32> = (0..len)
        .map(|i| i.wrapping_mul(7919) % config.vocab_size)
        .collect();
    let mut buffer = vec![0.0f32; session_floats(&config, len)];
    let mut packed = packed_buffer(&model);
    let session = Session::new(&model, &mut buffer, len)
        .unwrap_or_else(|e| fail(&format!("session: {e}")))
        .with_parallel(threads);
    let mut session = maybe_packed(session, &model, packed.as_deref_mut());
    let start = Instant::now();
    session
        .prefill(&prompt)
        .unwrap_or_else(|e| fail(&format!("{e}")));
    f64::from(len) / start.elapsed().as_secs_f64()
}

/// Bytes each streaming-read measurement reads at least, in passes over its
/// buffer, so that starting the threads is a small part of the time.
const STREAM_BYTES: usize = 1 << 30;

/// Reads every byte of `data` once, front to back, as a sum of 64-bit
/// words in eight lanes (vectorized): the plain streaming read a
/// matrix-vector product is compared with.
fn stream_read(data: &[u8]) -> u64 {
    let mut lanes = [0u64; 8];
    for line in data.chunks_exact(64) {
        for (lane, word) in lanes.iter_mut().zip(line.chunks_exact(8)) {
            let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            *lane = lane.wrapping_add(word);
        }
    }
    lanes.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// GB/s of `threads` threads reading `data` (as decode reads a model's
/// weights: the bytes once per token, the threads each a contiguous part)
/// over and over, together: the ceiling memory puts on decode at that many
/// threads, on this machine, now.
fn stream_rate(data: &[u8], threads: usize) -> f64 {
    let passes = STREAM_BYTES.div_ceil(data.len().max(1));
    let part = data.len().div_ceil(threads).next_multiple_of(64);
    let start_line = std::sync::Barrier::new(threads + 1);
    let mut start = Instant::now();
    std::thread::scope(|scope| {
        for chunk in data.chunks(part) {
            let start_line = &start_line;
            scope.spawn(move || {
                start_line.wait();
                for _ in 0..passes {
                    std::hint::black_box(stream_read(std::hint::black_box(chunk)));
                }
            });
        }
        start_line.wait();
        start = Instant::now();
    });
    (passes * data.len()) as f64 / start.elapsed().as_secs_f64() / 1e9
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// One shape's files and measurements.
struct Shape {
    name: String,
    klt: Vec<(Dtype, Vec<u8>)>,
    v0: PathBuf,
    v2: PathBuf,
    tokenizer: PathBuf,
}

/// Rates of one round, by key.
#[derive(Default)]
struct Rounds(Vec<(String, Vec<f64>)>);

impl Rounds {
    fn add(&mut self, key: String, rate: f64) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(rate),
            None => self.0.push((key, vec![rate])),
        }
    }

    fn median(&self, key: &str) -> f64 {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or(f64::NAN, |(_, v)| median(v.clone()))
    }
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let Some(dir) = std::env::var_os("LLAMA2C_DIR").map(PathBuf::from) else {
        println!(
            "llama2c bench: set LLAMA2C_DIR to a llama2.c checkout with `run` and `runq` built \
             (gcc -Ofast -march=native run.c -lm -o run; the same for runq.c): skipped"
        );
        return;
    };
    let (run, runq) = (dir.join("run"), dir.join("runq"));
    for binary in [&run, &runq] {
        if !binary.is_file() {
            fail(&format!("{} not found (build it first)", binary.display()));
        }
    }
    let steps: u32 = env_or("KINGLET_BENCH_STEPS", 128);
    let rounds: usize = env_or("KINGLET_BENCH_ROUNDS", 3);
    let wanted = std::env::var("KINGLET_BENCH_MODELS").unwrap_or_else(|_| "15m,110m".into());
    let scratch = std::env::temp_dir().join(format!("kinglet-llama2c-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        fail(&format!("cannot create {}: {e}", scratch.display()));
    }
    let dtypes = [Dtype::F32, Dtype::Q8_0, Dtype::Q4_0];
    let shapes: Vec<Shape> = wanted
        .split(',')
        .map(|name| {
            let name = name.trim();
            let config = synth::preset(name)
                .unwrap_or_else(|| fail(&format!("unknown shape {name:?} (15m, 110m)")));
            let model = synth::synth_model(&config, 1).unwrap_or_else(|e| fail(&format!("{e}")));
            let klt = dtypes
                .iter()
                .map(|&dtype| {
                    let mut file = Vec::new();
                    model
                        .write_klt(DtypePlan::from(dtype), &mut file)
                        .unwrap_or_else(|e| fail(&format!("{e}")));
                    (dtype, file)
                })
                .collect();
            let shape = Shape {
                name: name.to_string(),
                klt,
                v0: scratch.join(format!("{name}-v0.bin")),
                v2: scratch.join(format!("{name}-v2.bin")),
                tokenizer: scratch.join(format!("{name}-tokenizer.bin")),
            };
            write(&shape.v0, &llama2c_v0(&model));
            write(&shape.v2, &llama2c_v2(&model));
            write(&shape.tokenizer, &llama2c_tokenizer(&model));
            shape
        })
        .collect();
    let pools =
        [Threads::new(1), Threads::new(2)].map(|p| p.unwrap_or_else(|e| fail(&format!("{e}"))));

    let mut r = Rounds::default();
    println!("{} rounds; load average before: {}", rounds, load_average());
    let path = kinglet::kernels::Path::active();
    let packs = env_or("KINGLET_BENCH_PACK", 1) == 1 && path.packs_weights();
    println!(
        "kinglet q8_0/q4_0 read packed weights: {} (KINGLET_BENCH_PACK=0 turns them off); \
         streamed ones requested ahead on this CPU: {} (Path::requests_ahead)",
        if packs { "yes" } else { "no" },
        if kinglet::kernels::Path::requests_ahead() {
            "yes"
        } else {
            "no"
        }
    );
    for round in 0..rounds {
        for s in &shapes {
            for (dtype, file) in &s.klt {
                let (binary, checkpoint) = if *dtype == Dtype::F32 {
                    (&run, &s.v0)
                } else {
                    (&runq, &s.v2)
                };
                let key = |what: &str| format!("{} {} {what}", s.name, dtype.name());
                r.add(
                    key("llama2c"),
                    llama2c_rate(binary, checkpoint, &s.tokenizer, steps),
                );
                for pool in &pools {
                    let t = pool.count();
                    let decode = pool.install(|| decode_rate(file, steps, pool));
                    r.add(key(&format!("decode {t}")), decode);
                    let prefill = pool.install(|| prefill_rate(file, steps, pool));
                    r.add(key(&format!("prefill {t}")), prefill);
                }
                // The model's bytes where decode finds them (the packed
                // copy has the same size and pages).
                let model = open(file);
                for t in [1, 2] {
                    let read = stream_rate(model.as_bytes(), t);
                    r.add(key(&format!("read {t}")), read);
                }
            }
        }
        eprintln!(
            "round {} of {rounds} done (load {})",
            round + 1,
            load_average()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);

    println!(
        "CPU: {}; kernels: {}; load average after: {}",
        cpu_name(),
        kinglet::kernels::active_path(),
        load_average()
    );
    println!(
        "decode: {steps} steps after the first; prefill: a {steps}-token prompt; \
         medians of {rounds} alternating rounds; llama2.c: run (f32) or runq (int8), one thread\n"
    );
    println!(
        "read GB/s: a plain streaming read of the model's bytes by 1 and by 2 threads \
         (the ceiling memory sets); decode GB/s: the model's bytes × tok/s at 1 and 2 threads\n"
    );
    println!("| model | dtype | llama2.c tok/s | kinglet tok/s | ratio | 2 threads tok/s | 2 threads / 1 | read GB/s 1 / 2 threads | read 2 / 1 | decode GB/s 1 / 2 threads | prefill tok/s | prefill / decode |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &shapes {
        for (dtype, file) in &s.klt {
            let key = |what: &str| format!("{} {} {what}", s.name, dtype.name());
            let theirs = r.median(&key("llama2c"));
            let one = r.median(&key("decode 1"));
            let two = r.median(&key("decode 2"));
            let (read_one, read_two) = (r.median(&key("read 1")), r.median(&key("read 2")));
            let gb = file.len() as f64 / 1e9;
            let prefill = r.median(&key("prefill 1"));
            println!(
                "| {} | {} | {theirs:.1} ({}) | {one:.1} | {:.2}× | {two:.1} | {:.2}× | {read_one:.1} / {read_two:.1} | {:.2}× | {:.1} / {:.1} | {prefill:.1} | {:.1}× |",
                s.name,
                dtype.name(),
                if *dtype == Dtype::F32 { "run" } else { "runq" },
                one / theirs,
                two / one,
                read_two / read_one,
                one * gb,
                two * gb,
                prefill / one
            );
        }
    }
}
