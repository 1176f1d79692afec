//! Finite-difference checks of every layer's backward, and of the whole
//! model (tied classifier, grouped KV heads) against its own forward.

use kinglet_trainer::activations::Activations;
use kinglet_trainer::config::ModelConfig;
use kinglet_trainer::layers::attention::{self, AttentionShape};
use kinglet_trainer::layers::rope::{self, RopeTable};
use kinglet_trainer::layers::{cross_entropy, linear, rmsnorm, swiglu};
use kinglet_trainer::model;
use kinglet_trainer::params::ParamLayout;
use kinglet_trainer::rng::Rng;

fn random(n: usize, rng: &mut Rng, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

/// Central differences of `loss` with respect to every element of
/// `inputs[which]`, compared with `analytic`; the error is relative to the
/// largest analytic gradient.
fn assert_gradient(
    what: &str,
    inputs: &mut [Vec<f32>],
    which: usize,
    analytic: &[f32],
    loss: &dyn Fn(&[Vec<f32>]) -> f64,
) {
    let h = 1e-2f32;
    let scale = analytic.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
    assert!(
        scale > 0.0,
        "{what}: gradient is all zero, the check would prove nothing"
    );
    let mut worst = 0.0f64;
    for i in 0..inputs[which].len() {
        let saved = inputs[which][i];
        inputs[which][i] = saved + h;
        let plus = loss(inputs);
        inputs[which][i] = saved - h;
        let minus = loss(inputs);
        inputs[which][i] = saved;
        let numeric = (plus - minus) / (2.0 * h as f64);
        worst = worst.max((numeric - analytic[i] as f64).abs());
    }
    assert!(
        worst / scale < 2e-3,
        "{what}: worst error {worst:e} vs scale {scale:e}"
    );
}

fn project(out: &[f32], r: &[f32]) -> f64 {
    out.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let (n, dim) = (3, 8);
    let mut rng = Rng::new(1);
    let mut inputs = vec![random(n * dim, &mut rng, 1.0), random(dim, &mut rng, 1.0)];
    let r = random(n * dim, &mut rng, 1.0);
    let loss = |i: &[Vec<f32>]| {
        let (mut out, mut rstd) = (vec![0.0; n * dim], vec![0.0; n]);
        rmsnorm::forward(&mut out, &mut rstd, &i[0], &i[1], dim, 1e-5);
        project(&out, &r)
    };
    let (mut out, mut rstd) = (vec![0.0; n * dim], vec![0.0; n]);
    rmsnorm::forward(&mut out, &mut rstd, &inputs[0], &inputs[1], dim, 1e-5);
    let (mut dx, mut dg) = (vec![0.0; n * dim], vec![0.0; dim]);
    rmsnorm::backward(&mut dx, &mut dg, &r, &inputs[0], &rstd, &inputs[1], dim);
    assert_gradient("rmsnorm x", &mut inputs, 0, &dx, &loss);
    assert_gradient("rmsnorm gain", &mut inputs, 1, &dg, &loss);
}

#[test]
fn linear_backward_matches_finite_differences() {
    // 70 rows: more than one parallel task, and a ragged last one.
    let (n, inp, out) = (70, 5, 37);
    let mut rng = Rng::new(2);
    let mut inputs = vec![
        random(n * inp, &mut rng, 1.0),
        random(out * inp, &mut rng, 1.0),
    ];
    let r = random(n * out, &mut rng, 1.0);
    let loss = |i: &[Vec<f32>]| {
        let mut y = vec![0.0; n * out];
        linear::forward(&mut y, &i[0], &i[1], inp, out, false);
        project(&y, &r)
    };
    // dx is written (its NaNs must not survive), dw accumulated.
    let (mut dx, mut dw) = (vec![f32::NAN; n * inp], vec![0.0; out * inp]);
    linear::backward(
        &mut dx, &mut dw, &r, &inputs[0], &inputs[1], inp, out, false,
    );
    assert_gradient("linear x", &mut inputs, 0, &dx, &loss);
    assert_gradient("linear w", &mut inputs, 1, &dw, &loss);
    // and the forward is the plain definition
    let mut y = vec![0.0; n * out];
    linear::forward(&mut y, &inputs[0], &inputs[1], inp, out, false);
    let (row, col) = (69, 36);
    let direct: f32 = (0..inp)
        .map(|i| inputs[0][row * inp + i] * inputs[1][col * inp + i])
        .sum();
    assert!((y[row * out + col] - direct).abs() < 1e-5);
}

#[test]
fn rope_backward_matches_finite_differences() {
    let (context, heads, head_dim) = (4, 2, 6);
    let width = heads * head_dim;
    let table = RopeTable::new(context, head_dim, 10000.0);
    let mut rng = Rng::new(3);
    let mut inputs = vec![random(2 * context * width, &mut rng, 1.0)];
    let r = random(2 * context * width, &mut rng, 1.0);
    let loss = |i: &[Vec<f32>]| {
        let mut x = i[0].clone();
        rope::forward(&mut x, &table, context, width);
        project(&x, &r)
    };
    let mut dx = r.clone();
    rope::backward(&mut dx, &table, context, width);
    assert_gradient("rope", &mut inputs, 0, &dx, &loss);
    // position 1, pair 0 rotates by exactly 1 radian
    let mut x = vec![0.0; context * width];
    x[width] = 1.0;
    rope::forward(&mut x, &table, context, width);
    assert!((x[width] - 1f32.cos()).abs() < 1e-6 && (x[width + 1] - 1f32.sin()).abs() < 1e-6);
}

#[test]
fn grouped_attention_backward_matches_finite_differences() {
    let shape = AttentionShape {
        context: 5,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 4,
    };
    let (b, t) = (2, shape.context);
    let (qw, kvw) = (16, 8);
    let mut rng = Rng::new(4);
    let mut inputs = vec![
        random(b * t * qw, &mut rng, 1.0),
        random(b * t * kvw, &mut rng, 1.0),
        random(b * t * kvw, &mut rng, 1.0),
    ];
    let r = random(b * t * qw, &mut rng, 1.0);
    let run = |i: &[Vec<f32>]| {
        let (mut y, mut p) = (vec![0.0; b * t * qw], vec![0.0; b * 4 * t * t]);
        attention::forward(&mut y, &mut p, &i[0], &i[1], &i[2], shape);
        (y, p)
    };
    let loss = |i: &[Vec<f32>]| project(&run(i).0, &r);
    let (_, probs) = run(&inputs);
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; b * t * qw],
        vec![0.0; b * t * kvw],
        vec![0.0; b * t * kvw],
    );
    attention::backward(
        &mut dq, &mut dk, &mut dv, &r, &probs, &inputs[0], &inputs[1], &inputs[2], shape,
    );
    assert_gradient("attention q", &mut inputs, 0, &dq, &loss);
    assert_gradient("attention k", &mut inputs, 1, &dk, &loss);
    assert_gradient("attention v", &mut inputs, 2, &dv, &loss);
    // causal: the first position attends only to itself
    assert_eq!(probs[0], 1.0);
    assert!(probs[1..t].iter().all(|&p| p == 0.0));
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let n = 24;
    let mut rng = Rng::new(5);
    let mut inputs = vec![random(n, &mut rng, 2.0), random(n, &mut rng, 1.0)];
    let r = random(n, &mut rng, 1.0);
    let loss = |i: &[Vec<f32>]| {
        let (mut g, mut sig) = (vec![0.0; n], vec![0.0; n]);
        swiglu::forward(&mut g, &mut sig, &i[0], &i[1]);
        project(&g, &r)
    };
    let (mut g, mut sig) = (vec![0.0; n], vec![0.0; n]);
    swiglu::forward(&mut g, &mut sig, &inputs[0], &inputs[1]);
    let (mut d1, mut d3) = (vec![0.0; n], vec![0.0; n]);
    swiglu::backward(&mut d1, &mut d3, &r, &sig, &inputs[0], &inputs[1]);
    assert_gradient("swiglu h1", &mut inputs, 0, &d1, &loss);
    assert_gradient("swiglu h3", &mut inputs, 1, &d3, &loss);
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let (n, vocab) = (6, 7);
    let mut rng = Rng::new(6);
    let mut inputs = vec![random(n * vocab, &mut rng, 2.0)];
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 3) % vocab as u32).collect();
    let loss = |i: &[Vec<f32>]| {
        let mut losses = vec![0.0; n];
        cross_entropy::forward(&mut losses, &i[0], &targets, vocab)
    };
    let mut d = vec![0.0; n * vocab];
    cross_entropy::backward(&mut d, &inputs[0], &targets, vocab, 1.0 / n as f32);
    assert_gradient("cross-entropy", &mut inputs, 0, &d, &loss);
}

#[test]
fn whole_model_tied_grouped_backward_matches_finite_differences() {
    let config = ModelConfig {
        vocab_size: 11,
        context: 6,
        dim: 16,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        hidden_dim: 24,
        tied_classifier: true,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
    };
    let layout = ParamLayout::new(&config);
    let mut rng = Rng::new(7);
    // Larger than the training init so every path carries signal.
    let params = layout.init(0.3, &mut rng);
    let mut params: Vec<f32> = params
        .iter()
        .map(|p| p + (rng.normal() * 0.1) as f32)
        .collect();
    let batch = 2;
    let inputs: Vec<u32> = (0..batch * config.context)
        .map(|_| rng.below(11) as u32)
        .collect();
    let targets: Vec<u32> = (0..batch * config.context)
        .map(|_| rng.below(11) as u32)
        .collect();
    let mut acts = Activations::new(&config, batch, config.context);
    let mut grads = vec![0.0f32; layout.total];
    model::forward(&layout, &params, &mut acts, &inputs, Some(&targets));
    let positions = (batch * config.context) as f32;
    model::backward(
        &layout,
        &params,
        &mut grads,
        &mut acts,
        &inputs,
        &targets,
        1.0 / positions,
    );
    let scale = grads.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
    // Small step: the loss curves strongly in the norm gains.
    let h = 1e-3f32;
    let mut worst = 0.0f64;
    // Every 7th parameter: covers every tensor, keeps the test quick.
    for i in (0..layout.total).step_by(7) {
        let saved = params[i];
        params[i] = saved + h;
        let plus = model::forward(&layout, &params, &mut acts, &inputs, Some(&targets));
        params[i] = saved - h;
        let minus = model::forward(&layout, &params, &mut acts, &inputs, Some(&targets));
        params[i] = saved;
        let numeric = (plus - minus) / (2.0 * h as f64);
        worst = worst.max((numeric - grads[i] as f64).abs());
    }
    assert!(worst / scale < 1e-3, "worst {worst:e}, scale {scale:e}");
}
