//! Decode speed: tokens per second after the prompt, and the effective weight
//! bandwidth beside it (weight bytes one step reads × tok/s); and prefill
//! speed: prompt tokens per second through `Session::prefill`, which reads
//! each weight row once per chunk of `PREFILL_CHUNK` positions.
//!
//! Models: stories260K (imported from the reference data when present), and
//! random-weight models of the stories15M shape (and, with
//! `KINGLET_BENCH_LARGE=1`, the stories110M shape) written by the same code
//! as `kinglet synth`, so anyone can reproduce the numbers offline. Dtypes:
//! f32, q8_0, q4_0 (override with `KINGLET_BENCH_DTYPES=f32,f16,...`). Each
//! decode figure is the median of 5 runs of `KINGLET_BENCH_STEPS` (default
//! 128) greedy steps; each prefill figure the median of 5 prefills of a
//! `KINGLET_BENCH_PROMPT`-token prompt (default 64). Both run on a
//! `kinglet_tools::threads::Threads` pool, as `kinglet generate` does, of
//! each thread count in `KINGLET_BENCH_THREADS` (default `1,2`), handing
//! out tasks of at least `KINGLET_BENCH_MIN_TASK_BYTES` (default
//! `kinglet::parallel::MIN_TASK_BYTES`).
//! `KINGLET_BENCH_MODELS=260k,15m,110m` picks the models (default: 260k and
//! 15m, plus 110m with `KINGLET_BENCH_LARGE=1`). `KINGLET_BENCH_CHUNK`
//! (1 to `PREFILL_CHUNK`, default `PREFILL_CHUNK`) sizes the sessions for
//! prefill chunks of that many positions (`Session::with_chunk`): 1 is a
//! decode-only session.
//!
//! On a shared machine wall time counts other people's work against us, so
//! each rate is also given from the median time of one step (a decode
//! token; a prefill chunk of `KINGLET_BENCH_CHUNK` tokens): on an idle machine the
//! two agree, on a busy one the step figure is the one to compare across
//! runs, and "prefill ×" is the ratio of the step figures.
//!
//! Sessions read packed weights where `kinglet generate` would (on an
//! x86 CPU with AVX2, for q8_0 and q4_0; see `kinglet_tools::packing`);
//! `KINGLET_BENCH_PACK=0` reads the file's layout instead.
//!
//! `cargo bench --bench decode`

use std::time::Instant;

use kinglet::parallel::MIN_TASK_BYTES;
use kinglet::session::PREFILL_CHUNK;
use kinglet::{
    session_floats_for_chunk, Dtype, ModelFile, PackedWeights, Sampler, SamplerConfig, Session,
};
use kinglet_tools::memory::Budget;
use kinglet_tools::packing;
use kinglet_tools::threads::Threads;
use kinglet_tools::{import::llama2c, synth, DtypePlan, OwnedModel};

const RUNS: usize = 5;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Positions of a prefill chunk the sessions are sized for.
fn chunk() -> usize {
    let chunk = env_or("KINGLET_BENCH_CHUNK", PREFILL_CHUNK);
    assert!(
        (1..=PREFILL_CHUNK).contains(&chunk),
        "KINGLET_BENCH_CHUNK must be 1 to {PREFILL_CHUNK}"
    );
    chunk
}

fn dtypes() -> Vec<Dtype> {
    let list = std::env::var("KINGLET_BENCH_DTYPES").unwrap_or_else(|_| "f32,q8_0,q4_0".into());
    list.split(',')
        .map(|name| {
            Dtype::ALL
                .into_iter()
                .find(|d| d.name() == name.trim())
                .unwrap_or_else(|| panic!("unknown dtype {name:?} in KINGLET_BENCH_DTYPES"))
        })
        .collect()
}

fn stories260k() -> Option<OwnedModel> {
    let dir = std::env::var("KINGLET_DATA").unwrap_or_else(|_| "../shared/data".into());
    let checkpoint = std::fs::read(format!("{dir}/stories260K.bin")).ok()?;
    let tokenizer = std::fs::read(format!("{dir}/tok512.bin")).ok()?;
    llama2c::import(&checkpoint, &tokenizer).ok()
}

/// Bytes of weights one decode step reads: every matrix and norm, the
/// classifier, and one row of the token embedding.
fn weight_bytes_per_token<T: AsRef<[u8]>>(model: &ModelFile<T>) -> usize {
    let all: usize = model.tensors().map(|t| t.data.len()).sum();
    let embedding = model.token_embedding();
    if model.config().tied_classifier {
        all + embedding.row_bytes() // the embedding is read whole as the classifier
    } else {
        all - embedding.data.len() + embedding.row_bytes()
    }
}

fn thread_counts() -> Vec<usize> {
    let list = std::env::var("KINGLET_BENCH_THREADS").unwrap_or_else(|_| "1,2".into());
    list.split(',')
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad thread count {n:?} in KINGLET_BENCH_THREADS"))
        })
        .collect()
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Rates from one set of runs: items per second over whole runs (median
/// of the runs), and one over the median time of a single step (a token,
/// or a chunk of prefill), which a busy machine disturbs much less: most
/// steps run between two preemptions.
struct Rates {
    whole: Vec<f64>,
    steps: Vec<f64>,
    items_per_step: f64,
}

impl Rates {
    fn new(items_per_step: f64) -> Rates {
        Rates {
            whole: Vec::new(),
            steps: Vec::new(),
            items_per_step,
        }
    }

    /// (median whole-run rate, rate of the median step). Without a step
    /// (a prompt shorter than one prefill chunk) the step rate is the
    /// whole-run rate.
    fn medians(self) -> (f64, f64) {
        let whole = median(self.whole);
        if self.steps.is_empty() {
            return (whole, whole);
        }
        (whole, self.items_per_step / median(self.steps))
    }
}

/// The packed-weights buffer `kinglet generate` would give `model`, unless
/// `KINGLET_BENCH_PACK=0`.
fn packed_buffer<T: AsRef<[u8]>>(
    model: &ModelFile<T>,
) -> Option<impl std::ops::DerefMut<Target = [u8]>> {
    let enabled = env_or("KINGLET_BENCH_PACK", 1) == 1;
    packing::packed_buffer(model, enabled, &Budget::new(None), Some(0))
}

/// `session` reading the `packed` weights when given.
fn maybe_packed<'a, T: AsRef<[u8]>>(
    session: Session<'a, T>,
    packed: Option<PackedWeights<'a>>,
) -> Session<'a, T> {
    match packed {
        Some(p) => session
            .with_packed(p)
            .expect("packed weights of this model"),
        None => session,
    }
}

/// Decode tok/s (median run, median token) of `steps` greedy steps after a
/// one-token prompt.
fn decode_rate(file: &[u8], steps: u32, threads: &Threads) -> (f64, f64) {
    let model = ModelFile::new_checked(file).expect("bench model opens");
    let config = *model.config();
    let max_seq = config.max_seq_len.min(steps + 1);
    let chunk = chunk();
    let mut buffer = vec![0.0f32; session_floats_for_chunk(&config, max_seq, chunk)];
    let mut packed_buffer = packed_buffer(&model);
    let packed = packed_buffer
        .as_deref_mut()
        .map(|b| PackedWeights::new(&model, b).expect("packs"));
    let mut rates = Rates::new(1.0);
    for _ in 0..RUNS {
        let session = Session::with_chunk(&model, &mut buffer, max_seq, chunk)
            .expect("session")
            .with_parallel(threads);
        let mut session = maybe_packed(session, packed);
        let mut sampler =
            Sampler::new(config.vocab_size, SamplerConfig::default()).expect("sampler");
        let mut token = model.vocab().bos().unwrap_or(0);
        session.forward(token).expect("forward");
        let start = Instant::now();
        for _ in 1..max_seq {
            let step = Instant::now();
            token = sampler.sample(session.logits_mut());
            session.forward(token).expect("forward");
            rates.steps.push(step.elapsed().as_secs_f64());
        }
        rates
            .whole
            .push((max_seq - 1) as f64 / start.elapsed().as_secs_f64());
    }
    rates.medians()
}

/// Prefill tok/s (median run, median chunk) of a `prompt_len`-token prompt
/// (BOS, then tokens spread over the vocabulary) from position 0.
fn prefill_rate(file: &[u8], prompt_len: u32, threads: &Threads) -> (f64, f64) {
    let model = ModelFile::new_checked(file).expect("bench model opens");
    let config = *model.config();
    let max_seq = config.max_seq_len.min(prompt_len);
    let bos = model.vocab().bos().unwrap_or(0);
    let prompt: Vec<u32> = std::iter::once(bos)
        .chain((1..max_seq).map(|i| i.wrapping_mul(7919) % config.vocab_size))
        .collect();
    let chunk = chunk();
    let mut buffer = vec![0.0f32; session_floats_for_chunk(&config, max_seq, chunk)];
    let mut packed_buffer = packed_buffer(&model);
    let packed = packed_buffer
        .as_deref_mut()
        .map(|b| PackedWeights::new(&model, b).expect("packs"));
    let session = Session::with_chunk(&model, &mut buffer, max_seq, chunk)
        .expect("session")
        .with_parallel(threads);
    let mut session = maybe_packed(session, packed);
    let mut rates = Rates::new(chunk as f64);
    for _ in 0..RUNS {
        session.reset();
        let start = Instant::now();
        // Chunk by chunk (what one `prefill` call does inside), to time
        // each; the last, partial chunk is left out of the step times.
        for part in prompt.chunks(chunk) {
            let step = Instant::now();
            session.prefill(part).expect("prefill");
            if part.len() == chunk {
                rates.steps.push(step.elapsed().as_secs_f64());
            }
        }
        rates
            .whole
            .push(prompt.len() as f64 / start.elapsed().as_secs_f64());
    }
    rates.medians()
}

fn main() {
    let steps: u32 = env_or("KINGLET_BENCH_STEPS", 128);
    let prompt_len: u32 = env_or("KINGLET_BENCH_PROMPT", 64);
    let default_models = if env_or("KINGLET_BENCH_LARGE", 0) == 1 {
        "260k,15m,110m"
    } else {
        "260k,15m"
    };
    let wanted = std::env::var("KINGLET_BENCH_MODELS").unwrap_or_else(|_| default_models.into());
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let mut models: Vec<(String, OwnedModel)> = Vec::new();
    if wanted.contains(&"260k") {
        match stories260k() {
            Some(m) => models.push(("stories260K".into(), m)),
            None => println!("stories260K.bin/tok512.bin not found under KINGLET_DATA: skipped"),
        }
    }
    for shape in ["15m", "110m"].into_iter().filter(|s| wanted.contains(s)) {
        let config = synth::preset(shape).expect("known shape");
        models.push((
            format!("{shape}-shaped (random)"),
            synth::synth_model(&config, 1).expect("synth"),
        ));
    }
    println!(
        "decode: median of {RUNS} runs of {steps} steps; \
         prefill: median of {RUNS} prompts of {prompt_len} tokens"
    );
    println!(
        "sessions for prefill chunks of {} positions (KINGLET_BENCH_CHUNK)",
        chunk()
    );
    let path = kinglet::kernels::Path::active();
    println!(
        "packed weights for q8_0/q4_0: {} (kernel path {}; KINGLET_BENCH_PACK=0 turns them off); \
         streamed ones requested ahead on this CPU: {} (Path::requests_ahead)",
        if env_or("KINGLET_BENCH_PACK", 1) == 1 && path.packs_weights() {
            "yes"
        } else {
            "no"
        },
        path.name(),
        if kinglet::kernels::Path::requests_ahead() {
            "yes"
        } else {
            "no"
        }
    );
    println!(
        "{:<24} {:>6} {:>7} {:>9} {:>10} {:>9} {:>7} {:>13} {:>13} {:>9}",
        "model",
        "dtype",
        "threads",
        "tok/s",
        "step tok/s",
        "MB/token",
        "GB/s",
        "prefill tok/s",
        "prefill step",
        "prefill ×"
    );
    let pools: Vec<Threads> = thread_counts()
        .into_iter()
        .map(|n| {
            let pool = Threads::new(n).expect("thread pool");
            pool.with_min_task_bytes(env_or("KINGLET_BENCH_MIN_TASK_BYTES", MIN_TASK_BYTES))
        })
        .collect();
    for (name, model) in &models {
        for dtype in dtypes() {
            let mut file = Vec::new();
            model
                .write_klt(DtypePlan::from(dtype), &mut file)
                .expect("encodes");
            let per_token =
                weight_bytes_per_token(&ModelFile::new_checked(&file[..]).expect("opens"));
            for pool in &pools {
                // Inside the pool, as `kinglet generate` runs: the session's
                // many short parallel calls then start from a pool thread.
                let (rate, step_rate) = pool.install(|| decode_rate(&file, steps, pool));
                let (prefill, step_prefill) =
                    pool.install(|| prefill_rate(&file, prompt_len, pool));
                println!(
                    "{name:<24} {:>6} {:>7} {rate:>9.1} {step_rate:>10.1} {:>9.2} {:>7.2} {prefill:>13.1} {step_prefill:>13.1} {:>9.1}",
                    dtype.name(),
                    pool.count(),
                    per_token as f64 / 1e6,
                    per_token as f64 * rate / 1e9,
                    step_prefill / step_rate
                );
            }
        }
    }
}
