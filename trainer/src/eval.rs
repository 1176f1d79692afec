//! Measuring and sampling a model: the fixed validation set used during
//! training, the whole-split protocol of `kinglet-train eval`, and text samples.

use crate::activations::Activations;
use crate::data::fixed_window_starts;
use crate::error::Result;
use crate::layers::cross_entropy::log_sum_exp;
use crate::model;
use crate::params::ParamLayout;
use crate::qat::{quantized_weights, Qat};
use crate::rng::Rng;

/// Mean loss over `windows` (start positions) of `tokens`, `batch` at a time.
fn windows_loss(
    layout: &ParamLayout,
    params: &[f32],
    tokens: &[u32],
    starts: &[usize],
    batch: usize,
    quantize_inputs: bool,
) -> f64 {
    let context = layout.config.context;
    let mut acts = Activations::new(&layout.config, batch.min(starts.len()).max(1), context);
    let (mut sum, mut count) = (0.0f64, 0usize);
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for group in starts.chunks(batch.max(1)) {
        inputs.clear();
        targets.clear();
        for &s in group {
            inputs.extend_from_slice(&tokens[s..s + context]);
            targets.extend_from_slice(&tokens[s + 1..s + context + 1]);
        }
        let loss = model::forward_with(
            layout,
            params,
            &mut acts,
            &inputs,
            Some(&targets),
            quantize_inputs,
        );
        sum += loss * group.len() as f64;
        count += group.len();
    }
    sum / count.max(1) as f64
}

/// Validation loss on `count` windows spread evenly over `val` (the same
/// windows every time, so successive evaluations are comparable).
pub fn fixed_val_loss(
    layout: &ParamLayout,
    params: &[f32],
    val: &[u32],
    count: usize,
    batch: usize,
) -> f64 {
    let starts = fixed_window_starts(val.len(), layout.config.context, count);
    windows_loss(layout, params, val, &starts, batch, false)
}

/// Mean cross-entropy over the whole of `val`, in consecutive
/// non-overlapping windows of the context length: window `k` reads tokens
/// `[kT, kT+T)` and predicts `[kT+1, kT+T]`, every position from its
/// in-window prefix. Tokens after the last whole window are not scored.
pub fn whole_split_loss(layout: &ParamLayout, params: &[f32], val: &[u32], batch: usize) -> f64 {
    let starts = whole_windows(layout, val);
    windows_loss(layout, params, val, &starts, batch, false)
}

/// The starts of the consecutive whole windows of the context length in `val`.
fn whole_windows(layout: &ParamLayout, val: &[u32]) -> Vec<usize> {
    let context = layout.config.context;
    let windows = val.len().saturating_sub(1) / context;
    (0..windows).map(|k| k * context).collect()
}

/// [`fixed_val_loss`] of the model a QAT run simulates (and the engine runs
/// after export): fake-quantized weights and, if on, matvec inputs.
pub fn fixed_val_loss_qat(
    layout: &ParamLayout,
    params: &[f32],
    val: &[u32],
    count: usize,
    batch: usize,
    qat: &Qat,
) -> Result<f64> {
    let starts = fixed_window_starts(val.len(), layout.config.context, count);
    qat_windows_loss(layout, params, val, &starts, batch, qat)
}

/// [`windows_loss`] of the fake-quantized model `qat` describes.
fn qat_windows_loss(
    layout: &ParamLayout,
    params: &[f32],
    val: &[u32],
    starts: &[usize],
    batch: usize,
    qat: &Qat,
) -> Result<f64> {
    let weights = quantized_weights(layout, params, qat.dtype)?;
    Ok(windows_loss(
        layout,
        &weights,
        val,
        starts,
        batch,
        qat.activations,
    ))
}

/// [`whole_split_loss`] of the model a QAT run simulates: the number
/// `kinglet eval --tail 0.1` computes on the exported file.
pub fn whole_split_loss_qat(
    layout: &ParamLayout,
    params: &[f32],
    val: &[u32],
    batch: usize,
    qat: &Qat,
) -> Result<f64> {
    qat_windows_loss(layout, params, val, &whole_windows(layout, val), batch, qat)
}

/// Continues `prompt` by `length` tokens: greedy when `temperature` is 0,
/// else sampled from softmax(logits / temperature). The model sees the last
/// `context` tokens (positions restart at 0, as in training).
pub fn sample(
    layout: &ParamLayout,
    params: &[f32],
    prompt: &[u32],
    length: usize,
    temperature: f32,
    rng: &mut Rng,
) -> Vec<u32> {
    let (context, vocab) = (layout.config.context, layout.config.vocab_size);
    let mut acts = Activations::new(&layout.config, 1, context);
    let mut tokens = prompt.to_vec();
    if tokens.is_empty() {
        tokens.push(0);
    }
    let mut window = vec![0u32; context];
    for _ in 0..length {
        let visible = &tokens[tokens.len().saturating_sub(context)..];
        // Causal attention: padding after the last visible token cannot
        // change its logits.
        window[..visible.len()].copy_from_slice(visible);
        window[visible.len()..].fill(0);
        model::forward(layout, params, &mut acts, &window, None);
        let logits = model::logits(&mut acts, 1);
        let row = &logits[(visible.len() - 1) * vocab..visible.len() * vocab];
        tokens.push(pick(row, temperature, rng));
    }
    tokens.split_off(prompt.len().max(1).min(tokens.len()))
}

fn pick(logits: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 {
        let mut best = 0;
        for (i, &z) in logits.iter().enumerate() {
            if z > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let scaled: Vec<f32> = logits.iter().map(|z| z / temperature).collect();
    let lse = log_sum_exp(&scaled);
    let mut u = rng.next_f64();
    for (i, &z) in scaled.iter().enumerate() {
        u -= ((z - lse) as f64).exp();
        if u <= 0.0 {
            return i as u32;
        }
    }
    (logits.len() - 1) as u32
}
