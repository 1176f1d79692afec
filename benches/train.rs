//! Training speed of the seed preset (context 16, d_model 128, 4 layers,
//! batch 32): tokens per second with 1 and 2 threads, and where a step's
//! time goes. Run with `cargo bench --bench train` (release profile).
//!
//! The machine may be shared: every figure is the median of several runs.

use kinglet_trainer::activations::Activations;
use kinglet_trainer::adamw::{global_norm, AdamW, AdamWStep};
use kinglet_trainer::config::preset;
use kinglet_trainer::data::{sample_batch, Corpus};
use kinglet_trainer::model;
use kinglet_trainer::rng::Rng;
use kinglet_trainer::trainer::Trainer;
use std::time::Instant;

fn corpus() -> Corpus {
    let dir = std::env::var("KINGLET_DATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data").into());
    let path = std::path::Path::new(&dir).join("tinyshakespeare.txt");
    match std::fs::read(&path) {
        Ok(bytes) => Corpus::from_bytes(&bytes, None, 16).expect("tinyshakespeare loads"),
        Err(_) => {
            eprintln!(
                "{} not found; using random text (speed does not depend on it)",
                path.display()
            );
            let mut rng = Rng::new(1);
            let alphabet: Vec<char> = (32u8..97).map(char::from).collect();
            let text: String = (0..200_000)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            Corpus::from_bytes(text.as_bytes(), None, 16).expect("random corpus")
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let corpus = corpus();
    let p = preset("seed").expect("seed preset");
    let mut model_cfg = p.model;
    model_cfg.vocab_size = corpus.tokenizer.len();
    let tokens_per_step = (p.train.batch * model_cfg.context) as f64;
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        pool.install(|| {
            let mut t = Trainer::new(
                model_cfg,
                p.train,
                corpus.tokenizer.clone(),
                corpus.sha256.clone(),
            )
            .expect("trainer");
            for _ in 0..3 {
                t.step(&corpus.train).expect("warmup step");
            }
            let runs: Vec<f64> = (0..7)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..10 {
                        t.step(&corpus.train).expect("step");
                    }
                    10.0 * tokens_per_step / start.elapsed().as_secs_f64()
                })
                .collect();
            println!(
                "seed preset, {threads} thread(s): {:.0} tokens/s (median of 7 × 10 steps)",
                median(runs)
            );

            // Where the time goes: the same step, phase by phase.
            let layout = &t.layout;
            let mut params = t.params.clone();
            let mut grads = vec![0.0f32; layout.total];
            let mut adamw = AdamW::new(layout.total);
            let mut acts = Activations::new(&model_cfg, p.train.batch, model_cfg.context);
            let mut rng = Rng::new(3);
            let (mut x, mut y) = (Vec::new(), Vec::new());
            let mut phases = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            for step in 1..=20u64 {
                let t0 = Instant::now();
                sample_batch(
                    &corpus.train,
                    p.train.batch,
                    model_cfg.context,
                    &mut rng,
                    &mut x,
                    &mut y,
                );
                let t1 = Instant::now();
                model::forward(layout, &params, &mut acts, &x, Some(&y));
                let t2 = Instant::now();
                grads.fill(0.0);
                model::backward(
                    layout,
                    &params,
                    &mut grads,
                    &mut acts,
                    &x,
                    &y,
                    1.0 / tokens_per_step as f32,
                );
                let t3 = Instant::now();
                global_norm(&grads);
                let s = AdamWStep {
                    lr: 1e-3,
                    beta1: 0.9,
                    beta2: 0.95,
                    eps: 1e-8,
                    weight_decay: 0.1,
                    decay_norms: false,
                    t: step,
                };
                adamw.step(layout, &mut params, &grads, s);
                let t4 = Instant::now();
                for (phase, d) in phases.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                    phase.push(d.as_secs_f64() * 1e3);
                }
            }
            let names = ["data", "forward", "backward", "optimizer"];
            let line: Vec<String> = names
                .iter()
                .zip(phases)
                .map(|(n, v)| format!("{n} {:.2} ms", median(v)))
                .collect();
            println!("  per step: {}", line.join(", "));
        });
    }
}
