//! Decode speed: tokens per second on one thread, and the effective weight
//! bandwidth (weight bytes read per token × tok/s).
//!
//! Runs a stories15M-shaped synthetic model (dim 288, hidden 768, 6 layers,
//! 6 heads, vocab 32000, random weights) in f32, f16 and bf16, and the .klt
//! file named by `KINGLET_MODEL` when that is set. Each measurement is the
//! median of 5 runs of `KINGLET_BENCH_STEPS` (default 128) greedy decode steps.
//!
//! `cargo bench --bench decode`

use std::time::Instant;

use kinglet::format::{sort_pieces, write_model, IoSink, TensorSpec, TokenizerKind, TokenizerSpec};
use kinglet::{session_floats, Config, Dtype, ModelFile, Sampler, SamplerConfig, Session};

const RUNS: usize = 5;

fn main() {
    let steps: u32 = match std::env::var("KINGLET_BENCH_STEPS") {
        Ok(s) => match s.parse() {
            Ok(n) if n > 0 => n,
            _ => fail(&format!(
                "KINGLET_BENCH_STEPS={s:?} is not a positive integer"
            )),
        },
        Err(_) => 128,
    };
    match std::env::var_os("KINGLET_MODEL") {
        Some(path) => {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.to_string_lossy())));
            bench(&path.to_string_lossy(), &bytes, steps);
        }
        None => println!("KINGLET_MODEL is not set: skipping the real model, synthetic only"),
    }
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let bytes = synthetic_stories15m(dtype);
        bench(
            &format!("synthetic stories15M shape, {}", dtype.name()),
            &bytes,
            steps,
        );
    }
}

fn fail(message: &str) -> ! {
    eprintln!("decode bench: {message}");
    std::process::exit(1)
}

fn bench(label: &str, bytes: &[u8], steps: u32) {
    let model = ModelFile::new_checked(bytes).unwrap_or_else(|e| fail(&format!("{label}: {e}")));
    let config = *model.config();
    let steps = steps.min(config.max_seq_len);
    let mut buffer = vec![0.0f32; session_floats(&config, steps)];
    let mut session =
        Session::new(&model, &mut buffer, steps).unwrap_or_else(|e| fail(&format!("{label}: {e}")));
    let mut greedy = Sampler::new(config.vocab_size, SamplerConfig::default())
        .unwrap_or_else(|e| fail(&format!("{label}: {e}")));
    let start_token = model.vocab().bos().unwrap_or(0);

    let mut rates = Vec::with_capacity(RUNS);
    // Tokens per CPU-second: what one uncontended core would do, on a shared machine.
    let mut cpu_rates = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        session.reset();
        let mut token = start_token;
        let (start, cpu_start) = (Instant::now(), process_cpu_seconds());
        for _ in 0..steps {
            if let Err(e) = session.forward(token) {
                fail(&format!("{label}: {e}"));
            }
            token = greedy.sample(session.logits_mut());
        }
        rates.push(steps as f64 / start.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu_start, process_cpu_seconds()) {
            cpu_rates.push(steps as f64 / (b - a).max(0.01));
        }
    }
    rates.sort_by(f64::total_cmp);
    cpu_rates.sort_by(f64::total_cmp);
    let tok_s = rates[RUNS / 2];
    let per_token = weight_bytes_per_token(&model);
    println!(
        "{label}: {tok_s:.1} tok/s (median of {RUNS} × {steps} steps, range {:.1}..{:.1}), \
         {:.2} GB/s effective ({:.1} MB of weights per token)",
        rates[0],
        rates[RUNS - 1],
        per_token as f64 * tok_s / 1e9,
        per_token as f64 / 1e6,
    );
    if cpu_rates.len() == RUNS {
        let cpu_tok_s = cpu_rates[RUNS / 2];
        println!(
            "{label}: {cpu_tok_s:.1} tok per CPU-second (median), {:.2} GB/s per CPU-second",
            per_token as f64 * cpu_tok_s / 1e9
        );
    }
}

/// User + system CPU time of this process, from `/proc/self/stat` (Linux;
/// `None` elsewhere). Clock ticks are assumed to be the usual 100 Hz.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, i.e. the 12th and 13th after it.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Bytes of weights one decode step reads: every layer tensor, the final
/// norm, the classifier, and one embedding row.
fn weight_bytes_per_token<T: AsRef<[u8]>>(model: &ModelFile<T>) -> usize {
    let config = model.config();
    let layers: usize = (0..config.n_layers as usize)
        .map(|l| {
            let w = model.layer(l);
            [
                w.attn_norm,
                w.wq,
                w.wk,
                w.wv,
                w.wo,
                w.ffn_norm,
                w.w1,
                w.w2,
                w.w3,
            ]
            .iter()
            .map(|m| m.data.len())
            .sum::<usize>()
        })
        .sum();
    let embedding_row = model.token_embedding().row_bytes();
    layers + model.final_norm().data.len() + model.classifier().data.len() + embedding_row
}

/// A stories15M-shaped model with random weights, as .klt bytes.
fn synthetic_stories15m(dtype: Dtype) -> Vec<u8> {
    let config = Config {
        dim: 288,
        hidden_dim: 768,
        n_layers: 6,
        n_heads: 6,
        n_kv_heads: 6,
        vocab_size: 32000,
        max_seq_len: 256,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: true,
    };
    let mut state = 0x5eed_u64;
    let mut random = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u32 << 23) as f32 - 1.0
    };
    let mut tensor = |name: String, shape: Vec<u32>, norm: bool| {
        let n = shape.iter().product::<u32>() as usize;
        let scale = 1.0 / (*shape.last().unwrap_or(&1) as f32).sqrt();
        let dtype = if norm { Dtype::F32 } else { dtype };
        let mut data = Vec::with_capacity(n * 4);
        for _ in 0..n {
            let v = if norm { 1.0 } else { random() * scale };
            match dtype {
                Dtype::F16 => data.extend(half::f16::from_f32(v).to_bits().to_le_bytes()),
                Dtype::BF16 => data.extend(half::bf16::from_f32(v).to_bits().to_le_bytes()),
                _ => data.extend(v.to_le_bytes()),
            }
        }
        (name, dtype, shape, data)
    };
    let (d, h, v) = (config.dim, config.hidden_dim, config.vocab_size);
    let mut tensors = vec![tensor("tok_embedding".into(), vec![v, d], false)];
    for l in 0..config.n_layers {
        for (part, shape, norm) in [
            ("attn_norm", vec![d], true),
            ("wq", vec![d, d], false),
            ("wk", vec![d, d], false),
            ("wv", vec![d, d], false),
            ("wo", vec![d, d], false),
            ("ffn_norm", vec![d], true),
            ("w1", vec![h, d], false),
            ("w2", vec![d, h], false),
            ("w3", vec![h, d], false),
        ] {
            tensors.push(tensor(format!("layers.{l}.{part}"), shape, norm));
        }
    }
    tensors.push(tensor("norm".into(), vec![d], true));

    let names: Vec<Vec<u8>> = (0..v).map(|i| format!("<{i}>").into_bytes()).collect();
    let pieces: Vec<&[u8]> = names.iter().map(|p| p.as_slice()).collect();
    let scores = vec![0.0f32; pieces.len()];
    let mut sorted = vec![0u32; pieces.len()];
    sort_pieces(&pieces, &mut sorted);
    let tokenizer = TokenizerSpec {
        kind: TokenizerKind::Bpe,
        bos: Some(1),
        eos: Some(2),
        pieces: &pieces,
        scores: &scores,
        sorted: &sorted,
    };
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| TensorSpec {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    let mut sink = IoSink(Vec::new());
    write_model(&mut sink, &config, &tokenizer, &specs, &[])
        .unwrap_or_else(|e| fail(&format!("writing the synthetic model: {e}")));
    sink.0
}
