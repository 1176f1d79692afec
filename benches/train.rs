//! Training speed: tokens per second of the seed preset (context 16,
//! d_model 128, 4 layers, batch 32) and of the `small` preset (context 128,
//! d_model 192, 6 layers, batch 16), with 1 and 2 threads; then where one
//! single-threaded step's time goes, and the GFLOP/s of every matrix
//! product path the CPU runs (`gemm::Kernel`), on warm and on cold caches;
//! last, those GFLOP/s for a step at nanoGPT's shakespeare-char size.
//! The tokens/s and the breakdown use the path `KINGLET_GEMM` chooses. Run with
//! `cargo bench --bench train` (release profile).
//!
//! The machine may be shared: every figure is the median of several runs.

use kinglet_trainer::adamw::{global_norm, AdamW, AdamWStep};
use kinglet_trainer::config::{preset, ModelConfig, Preset};
use kinglet_trainer::data::{sample_batch, Corpus};
use kinglet_trainer::gemm::{sgemm_with, Kernel, Layout};
use kinglet_trainer::layers::attention::{self, AttentionShape};
use kinglet_trainer::rng::Rng;
use kinglet_trainer::shards::{shard_sequences, BatchShards};
use kinglet_trainer::trainer::Trainer;
use std::time::Instant;

fn corpus() -> Corpus {
    let dir = std::env::var("KINGLET_DATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data").into());
    let path = std::path::Path::new(&dir).join("tinyshakespeare.txt");
    match std::fs::read(&path) {
        Ok(bytes) => Corpus::from_bytes(&bytes, None, 128).expect("tinyshakespeare loads"),
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
            Corpus::from_bytes(text.as_bytes(), None, 128).expect("random corpus")
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

/// Median tokens/s of `runs` × `steps` optimizer steps, after two warm-up steps.
fn tokens_per_s(p: &Preset, corpus: &Corpus, runs: usize, steps: usize) -> f64 {
    let mut t = Trainer::for_corpus(p.model, p.train, corpus).expect("trainer");
    for _ in 0..2 {
        t.step(&corpus.train).expect("warm-up step");
    }
    let tokens = (steps * t.tokens_per_step()) as f64;
    let rates = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..steps {
                t.step(&corpus.train).expect("step");
            }
            tokens / start.elapsed().as_secs_f64()
        })
        .collect();
    median(rates)
}

/// Every matrix product of one step, shard by shard, as the layers issue
/// them: (rows of x, in, out) for forward, input gradient and weight gradient.
fn step_products(c: &ModelConfig, batch: usize) -> Vec<(usize, usize, usize)> {
    let (d, kv, f, v) = (c.dim, c.kv_dim(), c.hidden_dim, c.vocab_size);
    let mut products = Vec::new();
    for sequences in shard_sequences(batch, c.context) {
        let n = sequences * c.context;
        for _ in 0..c.n_layers {
            for (i, o) in [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)] {
                products.push((n, i, o));
            }
        }
        products.push((n, d, v));
    }
    products
}

/// Bytes of operand copies the cold-cache runs rotate through: well past the
/// shared L3, as in training, where each product's operands were last
/// touched many megabytes of activations ago.
const COLD_BYTES: usize = 96 << 20;

/// All the step's products (forward, dx, dW) on one thread, `runs` runs, in ms:
/// (fastest, median). The fastest compares kernels on a shared machine; the
/// median goes with the other medians of the breakdown. With `cold`, each
/// product works on the next of enough operand copies to fill
/// [`COLD_BYTES`], so its inputs and outputs come from memory.
fn matmul_ms(
    products: &[(usize, usize, usize)],
    kernel: Kernel,
    cold: bool,
    runs: usize,
) -> (f64, f64) {
    let gemm = |a: &[f32], la, b: &[f32], lb, c: &mut [f32], lc, acc| {
        sgemm_with(kernel, a, la, b, lb, c, lc, acc)
    };
    let big = products
        .iter()
        .map(|&(n, i, o)| n * i.max(o))
        .max()
        .unwrap_or(0);
    let wbig = products.iter().map(|&(_, i, o)| i * o).max().unwrap_or(0);
    // One copy: x, dy, y, dx [big] and w, dw [wbig].
    let copy_bytes = 4 * (4 * big + 2 * wbig);
    let copies = if cold {
        COLD_BYTES.div_ceil(copy_bytes.max(1))
    } else {
        1
    };
    let mut rng = Rng::new(9);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
    let (x, w, dy) = (
        random(big * copies),
        random(wbig * copies),
        random(big * copies),
    );
    let (mut y, mut dx, mut dw) = (
        vec![0.0; big * copies],
        vec![0.0; big * copies],
        vec![0.0; wbig * copies],
    );
    let mut next = 0;
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for &(n, i, o) in products {
                let (xl, yl) = (Layout::row_major(n, i), Layout::row_major(n, o));
                let mut copy = || {
                    next = (next + 1) % copies;
                    (next * big, next * wbig)
                };
                // y = x Wᵀ
                let (a, b) = copy();
                let wt = Layout::transposed(i, o);
                gemm(&x[a..], xl, &w[b..], wt, &mut y[a..], yl, false);
                // dx += dy W
                let (a, b) = copy();
                let wl = Layout::row_major(o, i);
                gemm(&dy[a..], yl, &w[b..], wl, &mut dx[a..], xl, true);
                // dW += dyᵀ x
                let (a, b) = copy();
                let dyt = Layout::transposed(o, n);
                let dwl = Layout::row_major(o, i);
                gemm(&dy[a..], dyt, &x[a..], xl, &mut dw[b..], dwl, true);
            }
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
    (fastest, median(times))
}

/// Median ms of attention forward + backward of one step, all layers, one thread.
fn attention_ms(c: &ModelConfig, batch: usize) -> f64 {
    let n = batch * c.context;
    let (d, kv) = (c.dim, c.kv_dim());
    let shape = AttentionShape {
        context: c.context,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim(),
    };
    let mut rng = Rng::new(5);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
    let (q, k, v, dy) = (random(n * d), random(n * kv), random(n * kv), random(n * d));
    let mut y = vec![0.0; n * d];
    let mut probs = vec![0.0; batch * c.n_heads * c.context * c.context];
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * d], vec![0.0; n * kv], vec![0.0; n * kv]);
    let times = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..c.n_layers {
                attention::forward(&mut y, &mut probs, &q, &k, &v, shape);
                attention::backward(&mut dq, &mut dk, &mut dv, &dy, &probs, &q, &k, &v, shape);
            }
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(times)
}

/// Where one step's time goes, on one thread.
fn breakdown(name: &str, p: &Preset, corpus: &Corpus) {
    let (c, batch) = (p.model, p.train.batch);
    let t = Trainer::for_corpus(c, p.train, corpus).expect("trainer");
    let layout = &t.layout;
    let mut params = t.params.clone();
    let mut grads = vec![0.0f32; layout.total];
    let mut adamw = AdamW::new(layout.total);
    let mut shards = BatchShards::new(&c, batch, c.context);
    let mut rng = Rng::new(3);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let scale = 1.0 / (batch * c.context) as f32;
    let mut phases = [Vec::new(), Vec::new(), Vec::new()];
    for step in 1..=12u64 {
        let t0 = Instant::now();
        sample_batch(&corpus.train, batch, c.context, &mut rng, &mut x, &mut y);
        let t1 = Instant::now();
        grads.fill(0.0);
        shards.forward_backward(layout, &params, &mut grads, (&x, &y), scale, false);
        let t2 = Instant::now();
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
        let t3 = Instant::now();
        for (phase, d) in phases.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
            phase.push(d.as_secs_f64() * 1e3);
        }
    }
    let [data, passes, optimizer] = phases.map(median);
    let products = step_products(&c, batch);
    let (_, matmul) = matmul_ms(&products, Kernel::chosen(), false, 9);
    let attention = attention_ms(&c, batch);
    // What the passes spend outside matmuls and attention (medians of
    // separate runs: on a busy machine this difference is rough).
    let elementwise = (passes - matmul - attention).max(0.0);
    let total = data + passes + optimizer;
    let pct = |ms: f64| 100.0 * ms / total;
    println!("  {name}, one step on 1 thread: {total:.2} ms");
    println!(
        "    matmuls {matmul:.2} ms ({:.0}%), attention {attention:.2} ms ({:.0}%), \
         elementwise + gradient sum {elementwise:.2} ms ({:.0}%), optimizer {optimizer:.2} ms ({:.0}%), \
         data {data:.3} ms",
        pct(matmul),
        pct(attention),
        pct(elementwise),
        pct(optimizer),
    );
    product_rates(&products, 9);
}

/// The GFLOP/s of every path this CPU runs on `products`, warm then cold,
/// one after the other, fastest of `runs`.
fn product_rates(products: &[(usize, usize, usize)], runs: usize) {
    let flop: f64 = products
        .iter()
        .map(|&(n, i, o)| 6.0 * (n * i * o) as f64)
        .sum();
    let rate = |ms: f64| flop / ms / 1e6;
    let rates: Vec<String> = Kernel::ALL
        .into_iter()
        .filter(|k| k.available())
        .map(|k| {
            let (warm, _) = matmul_ms(products, k, false, runs);
            let (cold, _) = matmul_ms(products, k, true, runs);
            format!("{} {:.1} / {:.1}", k.name(), rate(warm), rate(cold))
        })
        .collect();
    println!(
        "    matrix products, fastest of {runs}, GFLOP/s warm / cold caches: {}",
        rates.join(", ")
    );
}

fn main() {
    let corpus = corpus();
    let vocab = corpus.tokenizer.len();
    for (name, runs, steps) in [("seed", 7, 10), ("small", 3, 2)] {
        let mut p = preset(name).expect("preset");
        p.model.vocab_size = vocab;
        for threads in [1, 2] {
            let rate = with_threads(threads, || tokens_per_s(&p, &corpus, runs, steps));
            println!(
                "{name} preset, {threads} thread(s): {rate:.0} tokens/s (median of {runs} × {steps} steps)"
            );
        }
        with_threads(1, || breakdown(name, &p, &corpus));
    }
    // nanoGPT's shakespeare-char size (benches/train_vs_pytorch.sh): only
    // its products, a step's worth being 3.5 s of one core.
    let mut c = preset("seed").expect("preset").model;
    (c.vocab_size, c.context, c.dim, c.n_layers) = (vocab, 256, 384, 6);
    (c.n_heads, c.n_kv_heads, c.hidden_dim) = (6, 6, 1024);
    println!(
        "  nanoGPT's size (context 256, d_model 384, 6 layers, hidden 1024, batch 16), one step:"
    );
    with_threads(1, || product_rates(&step_products(&c, 16), 3));
}
