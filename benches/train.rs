//! Training speed of the seed preset (context 16, d_model 128, 4 layers,
//! batch 32): tokens per second with 1 and 2 threads, and where a step's
//! time goes. Run with `cargo bench --bench train` (release profile).
//!
//! The machine may be shared: every figure is the median of several runs.

use kinglet_trainer::activations::Activations;
use kinglet_trainer::adamw::{global_norm, AdamW, AdamWStep};
use kinglet_trainer::config::{preset, ModelConfig};
use kinglet_trainer::data::{sample_batch, Corpus};
use kinglet_trainer::layers::attention::{self, AttentionShape};
use kinglet_trainer::layers::linear;
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

/// Median time of the step's matrix products (every linear's forward, dx
/// and dW, all layers and the classifier) and of attention (forward and
/// backward), on random data of the step's shapes.
fn matmul_and_attention_ms(c: &ModelConfig, batch: usize) -> (f64, f64) {
    let n = batch * c.context;
    let (d, kv, f, v) = (c.dim, c.kv_dim(), c.hidden_dim, c.vocab_size);
    // (in, out) of every product in one layer
    let shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)];
    let mut rng = Rng::new(9);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
    let big = d.max(f).max(v);
    let (x, w, dy) = (random(n * big), random(big * big), random(n * big));
    let (mut y, mut dx, mut dw) = (vec![0.0; n * big], vec![0.0; n * big], vec![0.0; big * big]);
    let mut matmul = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..c.n_layers {
            for &(i, o) in &shapes {
                linear::forward(&mut y[..n * o], &x[..n * i], &w[..o * i], i, o, false);
                linear::backward(
                    &mut dx[..n * i],
                    &mut dw[..o * i],
                    &dy[..n * o],
                    &x[..n * i],
                    &w[..o * i],
                    i,
                    o,
                );
            }
        }
        linear::forward(&mut y[..n * v], &x[..n * d], &w[..v * d], d, v, false);
        linear::backward(
            &mut dx[..n * d],
            &mut dw[..v * d],
            &dy[..n * v],
            &x[..n * d],
            &w[..v * d],
            d,
            v,
        );
        matmul.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let shape = AttentionShape {
        context: c.context,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim(),
    };
    let (q, k, vv) = (random(n * d), random(n * kv), random(n * kv));
    let mut probs = vec![0.0; batch * c.n_heads * c.context * c.context];
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * d], vec![0.0; n * kv], vec![0.0; n * kv]);
    let mut att = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..c.n_layers {
            attention::forward(&mut y[..n * d], &mut probs, &q, &k, &vv, shape);
            attention::backward(
                &mut dq,
                &mut dk,
                &mut dv,
                &dy[..n * d],
                &probs,
                &q,
                &k,
                &vv,
                shape,
            );
        }
        att.push(start.elapsed().as_secs_f64() * 1e3);
    }
    (median(matmul), median(att))
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
            let (matmul_ms, attention_ms) = matmul_and_attention_ms(&model_cfg, p.train.batch);
            println!("  of which: matmuls {matmul_ms:.2} ms, attention {attention_ms:.2} ms (forward + backward, all layers)");
        });
    }
}
