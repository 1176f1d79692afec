//! The whole model: the forward pass as a straight loop over blocks, and the
//! backward pass as the same loop reversed. The engine's math (RMSNorm, the
//! RoPE angles from `kinglet::ops::rope_rotation`, the engine's dot and
//! quantizer, and its `exp`, `kinglet::kernels::reference::exp`, through
//! `layers::fast_exp`) with one difference: sums run in other orders
//! (matrix kernels, shards). `trainer_engine_parity` holds the
//! engine's logits on an exported f32 model to within 1e-5 of the trainer's
//! (1.2e-6 measured).

use crate::activations::{Activations, GradScratch, LayerActs};
use crate::config::ModelConfig;
use crate::layers::attention::{self, AttentionShape};
use crate::layers::rope::{self, RopeTable};
use crate::layers::{cross_entropy, embedding, linear, rmsnorm, swiglu};
use crate::params::{LayerWeights, ParamLayout};
use crate::qat;
use crate::weight_copies::{LayerCopies, Passes, WeightCopies};

fn attention_shape(c: &ModelConfig, context: usize) -> AttentionShape {
    AttentionShape {
        context,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim(),
    }
}

/// Runs the model on `inputs` (whole windows of `acts.context` tokens, at
/// most `acts.batch` of them), saving activations for [`backward`]. Returns
/// the mean cross-entropy against `targets`, or NaN without targets. The
/// logits are then in [`logits`].
///
/// params: the arena of `layout`; inputs, targets: [sequences · context],
/// every id < vocab (the caller checks ids from outside).
pub fn forward(
    layout: &ParamLayout,
    params: &[f32],
    acts: &mut Activations,
    inputs: &[u32],
    targets: Option<&[u32]>,
) -> f64 {
    forward_with(layout, params, acts, inputs, targets, false)
}

/// [`forward`], with the input of every linear layer rounded to Q8 blocks
/// when `quantize_inputs` (quantization-aware training: what the engine's
/// integer kernels see). The rounded inputs are what [`backward`] then uses
/// for the weight gradients; the input gradients pass straight through.
pub fn forward_with(
    layout: &ParamLayout,
    params: &[f32],
    acts: &mut Activations,
    inputs: &[u32],
    targets: Option<&[u32]>,
    quantize_inputs: bool,
) -> f64 {
    let copies = WeightCopies::new(layout, params, Passes::Forward);
    forward_copied(
        layout,
        params,
        &copies,
        acts,
        inputs,
        targets,
        quantize_inputs,
    )
}

/// [`forward_with`], with the linear layers' weights copied beforehand
/// (for the forward pass) from the same `params`.
pub fn forward_copied(
    layout: &ParamLayout,
    params: &[f32],
    copies: &WeightCopies<'_>,
    acts: &mut Activations,
    inputs: &[u32],
    targets: Option<&[u32]>,
    quantize_inputs: bool,
) -> f64 {
    let c = &layout.config;
    let context = acts.context;
    assert!(
        inputs.len().is_multiple_of(context),
        "inputs must be whole windows"
    );
    let w = layout.views(params);
    let (mut a, rope) = acts.views(inputs.len() / context);
    let (d, v) = (c.dim, c.vocab_size);
    embedding::forward(a.layers[0].resid_in, w.tok_embedding, inputs, d);
    for l in 0..c.n_layers {
        let (done, rest) = a.layers.split_at_mut(l + 1);
        let out: &mut [f32] = match rest.first_mut() {
            Some(next) => next.resid_in,
            None => a.head.resid_out,
        };
        block_forward(
            &mut done[l],
            out,
            &w.layers[l],
            &copies.layers[l],
            c,
            rope,
            context,
            quantize_inputs,
        );
    }
    let h = a.head;
    rmsnorm::forward(h.xn, h.rstd, h.resid_out, w.norm, d, c.norm_eps);
    if quantize_inputs {
        qat::quantize_activations(h.xn);
    }
    linear::forward_copied(h.logits, h.xn, copies.classifier.forward(), d, v, false);
    match targets {
        Some(targets) => cross_entropy::forward(h.losses, h.logits, targets, v),
        None => f64::NAN,
    }
}

/// One block: `x += Wo·attn(rope(Wq·n1(x)), rope(Wk·n1(x)), Wv·n1(x))`, then
/// `x += W2·(silu(W1·n2(x)) · W3·n2(x))`, written into `out`. out: [n, dim].
#[allow(clippy::too_many_arguments)]
fn block_forward(
    la: &mut LayerActs<'_>,
    out: &mut [f32],
    lw: &LayerWeights<&[f32]>,
    lc: &LayerCopies<'_>,
    c: &ModelConfig,
    rope_table: &RopeTable,
    context: usize,
    quantize_inputs: bool,
) {
    // The norm, attention and SwiGLU backward passes recompute from their
    // own saved inputs, so the matvec inputs may be rounded in place.
    let round = |x: &mut [f32]| {
        if quantize_inputs {
            qat::quantize_activations(x);
        }
    };
    let (d, kv, f, eps) = (c.dim, c.kv_dim(), c.hidden_dim, c.norm_eps);
    rmsnorm::forward(la.attn_xn, la.attn_rstd, la.resid_in, lw.attn_norm, d, eps);
    round(la.attn_xn);
    let (xn, q, k, v) = (&*la.attn_xn, &mut *la.q, &mut *la.k, &mut *la.v);
    linear::forward_copied(q, xn, lc.wq.forward(), d, d, false);
    linear::forward_copied(k, xn, lc.wk.forward(), d, kv, false);
    linear::forward_copied(v, xn, lc.wv.forward(), d, kv, false);
    rope::forward(la.q, rope_table, context, d);
    rope::forward(la.k, rope_table, context, kv);
    let shape = attention_shape(c, context);
    attention::forward(la.att_y, la.probs, la.q, la.k, la.v, shape);
    round(la.att_y);
    la.resid_mid.copy_from_slice(la.resid_in);
    linear::forward_copied(la.resid_mid, la.att_y, lc.wo.forward(), d, d, true);
    rmsnorm::forward(la.ffn_xn, la.ffn_rstd, la.resid_mid, lw.ffn_norm, d, eps);
    round(la.ffn_xn);
    let (xn, h1, h3) = (&*la.ffn_xn, &mut *la.h1, &mut *la.h3);
    linear::forward_copied(h1, xn, lc.w1.forward(), d, f, false);
    linear::forward_copied(h3, xn, lc.w3.forward(), d, f, false);
    swiglu::forward(la.gate, la.sig, la.h1, la.h3);
    round(la.gate);
    out.copy_from_slice(la.resid_mid);
    linear::forward_copied(out, la.gate, lc.w2.forward(), f, d, true);
}

/// The logits of the last [`forward`]: [sequences · context, vocab].
pub fn logits(acts: &mut Activations, sequences: usize) -> &[f32] {
    let (views, _) = acts.views(sequences);
    views.head.logits
}

/// Accumulates `∂(scale · Σ position losses)/∂params` into `grads`, using the
/// activations of the last [`forward`] on the same `inputs` and `targets`.
/// For the mean loss, `scale = 1 / positions` (divided again by the number
/// of accumulated micro-batches).
pub fn backward(
    layout: &ParamLayout,
    params: &[f32],
    grads: &mut [f32],
    acts: &mut Activations,
    inputs: &[u32],
    targets: &[u32],
    scale: f32,
) {
    let copies = WeightCopies::new(layout, params, Passes::Backward);
    backward_copied(layout, params, &copies, grads, acts, inputs, targets, scale);
}

/// [`backward`], with the linear layers' weights copied beforehand (for
/// the backward pass) from the same `params`.
#[allow(clippy::too_many_arguments)]
pub fn backward_copied(
    layout: &ParamLayout,
    params: &[f32],
    copies: &WeightCopies<'_>,
    grads: &mut [f32],
    acts: &mut Activations,
    inputs: &[u32],
    targets: &[u32],
    scale: f32,
) {
    let c = &layout.config;
    let context = acts.context;
    let w = layout.views(params);
    let mut gw = layout.views_mut(grads);
    let (mut a, rope) = acts.views(inputs.len() / context);
    let (d, v) = (c.dim, c.vocab_size);
    let (h, g) = (a.head, &mut a.grad);

    cross_entropy::backward(g.dlogits, h.logits, targets, v, scale);
    let classifier = copies.classifier.input_grad();
    let dclassifier: &mut [f32] = match gw.classifier.as_mut() {
        Some(dc) => dc,
        None => gw.tok_embedding,
    };
    linear::backward_copied(g.dxn, dclassifier, g.dlogits, h.xn, classifier, d, v, false);
    g.dresid.fill(0.0);
    rmsnorm::backward(g.dresid, gw.norm, g.dxn, h.resid_out, h.rstd, w.norm, d);

    for l in (0..c.n_layers).rev() {
        block_backward(
            &a.layers[l],
            g,
            &mut gw.layers[l],
            &w.layers[l],
            &copies.layers[l],
            c,
            rope,
            context,
        );
    }
    embedding::backward(gw.tok_embedding, g.dresid, inputs, d);
}

/// Turns `g.dresid = ∂L/∂(block output)` into `∂L/∂(block input)`,
/// accumulating the block's weight gradients into `gw`.
#[allow(clippy::too_many_arguments)]
fn block_backward(
    la: &LayerActs<'_>,
    g: &mut GradScratch<'_>,
    gw: &mut LayerWeights<&mut [f32]>,
    lw: &LayerWeights<&[f32]>,
    lc: &LayerCopies<'_>,
    c: &ModelConfig,
    rope_table: &RopeTable,
    context: usize,
) {
    let (d, kv, f) = (c.dim, c.kv_dim(), c.hidden_dim);
    // MLP branch: out = resid_mid + W2·gate; dresid passes straight through.
    // The first linear layer into an input gradient writes it, the
    // others add: no zeroing first.
    linear::backward_copied(
        g.dgate,
        gw.w2,
        g.dresid,
        la.gate,
        lc.w2.input_grad(),
        f,
        d,
        false,
    );
    swiglu::backward(g.dh1, g.dh3, g.dgate, la.sig, la.h1, la.h3);
    // One copy of the norm's output serves both weight gradients.
    let xn = linear::copy_input(la.ffn_xn, d);
    linear::backward_input(g.dxn, g.dh1, lc.w1.input_grad(), d, f, false);
    linear::backward_weight_copied(gw.w1, g.dh1, &xn, d, f);
    linear::backward_input(g.dxn, g.dh3, lc.w3.input_grad(), d, f, true);
    linear::backward_weight_copied(gw.w3, g.dh3, &xn, d, f);
    drop(xn);
    rmsnorm::backward(
        g.dresid,
        gw.ffn_norm,
        g.dxn,
        la.resid_mid,
        la.ffn_rstd,
        lw.ffn_norm,
        d,
    );

    // Attention branch: resid_mid = resid_in + Wo·att_y.
    linear::backward_copied(
        g.datt_y,
        gw.wo,
        g.dresid,
        la.att_y,
        lc.wo.input_grad(),
        d,
        d,
        false,
    );
    // attention::backward writes dq, dk, dv whole: no zeroing needed.
    let shape = attention_shape(c, context);
    attention::backward(
        g.dq, g.dk, g.dv, g.datt_y, la.probs, la.q, la.k, la.v, shape,
    );
    rope::backward(g.dq, rope_table, context, d);
    rope::backward(g.dk, rope_table, context, kv);
    // One copy of the norm's output serves the three weight gradients.
    let xn = linear::copy_input(la.attn_xn, d);
    linear::backward_input(g.dxn, g.dq, lc.wq.input_grad(), d, d, false);
    linear::backward_weight_copied(gw.wq, g.dq, &xn, d, d);
    linear::backward_input(g.dxn, g.dk, lc.wk.input_grad(), d, kv, true);
    linear::backward_weight_copied(gw.wk, g.dk, &xn, d, kv);
    linear::backward_input(g.dxn, g.dv, lc.wv.input_grad(), d, kv, true);
    linear::backward_weight_copied(gw.wv, g.dv, &xn, d, kv);
    drop(xn);
    rmsnorm::backward(
        g.dresid,
        gw.attn_norm,
        g.dxn,
        la.resid_in,
        la.attn_rstd,
        lw.attn_norm,
        d,
    );
}
