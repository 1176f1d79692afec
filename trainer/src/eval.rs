//! Measuring and sampling a model: the fixed validation set used during
//! training, the whole-split protocol of `kinglet-train eval`, and text samples.

use crate::activations::Activations;
use crate::data::fixed_window_starts;
use crate::data::CharTokenizer;
use crate::error::{Result, TrainError};
use crate::export::parameters_model;
use crate::layers::cross_entropy::log_sum_exp;
use crate::model;
use crate::params::ParamLayout;
use crate::qat::{quantized_weights, Qat};
use crate::rng::Rng;
use kinglet::{session_floats, Dtype, ModelFile, Session};

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
///
/// The model runs in the engine, from the .klt file `kinglet-train export`
/// would write (F32): new tokens extend its key-value cache while they fit
/// the context, and only a window that slides runs again, all of it, as one
/// prefill. A full forward pass of the window per token took 12.6 s per
/// 200-character sample at nanoGPT's size on two threads, 0.25 s this way
/// (docs/PERFORMANCE.md, 2026-12-05).
///
/// Errors: [`TrainError::Diverged`] when the parameters make the
/// activations overflow; [`TrainError::Export`] should the engine refuse
/// the model it was given.
pub fn sample(
    layout: &ParamLayout,
    params: &[f32],
    tokenizer: &CharTokenizer,
    prompt: &[u32],
    length: usize,
    temperature: f32,
    rng: &mut Rng,
) -> Result<Vec<u32>> {
    let mut file = Vec::new();
    parameters_model(&layout.config, params, tokenizer)
        .write_klt(Dtype::F32, &mut file)
        .map_err(|e| TrainError::Export(format!("cannot sample: {e:#}")))?;
    let engine_error = |e: kinglet::Error| match e {
        kinglet::Error::ActivationsOverflowed => TrainError::Diverged(format!("sampling: {e}")),
        e => TrainError::Export(format!("cannot sample: {e}")),
    };
    let model = ModelFile::new_checked(&file[..]).map_err(engine_error)?;
    let context = layout.config.context;
    let mut buffer = vec![0.0f32; session_floats(model.config(), context as u32)];
    let mut session = Session::new(&model, &mut buffer, context as u32).map_err(engine_error)?;
    let mut tokens = prompt.to_vec();
    if tokens.is_empty() {
        tokens.push(0);
    }
    let visible = |tokens: &[u32]| tokens.len().saturating_sub(context);
    session
        .prefill(&tokens[visible(&tokens)..])
        .map_err(engine_error)?;
    for left in (0..length).rev() {
        let next = pick(session.logits(), temperature, rng);
        tokens.push(next);
        if left == 0 {
            break;
        }
        if (session.pos() as usize) < context {
            session.forward(next).map_err(engine_error)?;
        } else {
            session.reset();
            session
                .prefill(&tokens[visible(&tokens)..])
                .map_err(engine_error)?;
        }
    }
    Ok(tokens.split_off(prompt.len().max(1).min(tokens.len())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    /// The sample's cache and sliding window against the plain protocol:
    /// before every token a fresh session runs the last `context` tokens
    /// from position 0. The same model and draws, so the same tokens,
    /// greedy and sampled, from prompts shorter and longer than the context.
    #[test]
    fn samples_extend_the_cache_then_slide_the_window_as_a_fresh_run_would() {
        let chars: Vec<char> = "\nabcdefghijk".chars().collect();
        let tokenizer = CharTokenizer::from_chars(chars).unwrap();
        let config = ModelConfig {
            vocab_size: tokenizer.len(),
            context: 8,
            dim: 32,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            hidden_dim: 48,
            tied_classifier: false,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
        };
        let layout = ParamLayout::new(&config);
        let params = layout.init(0.5, &mut Rng::new(3));
        let mut file = Vec::new();
        parameters_model(&config, &params, &tokenizer)
            .write_klt(Dtype::F32, &mut file)
            .unwrap();
        let model = ModelFile::new_checked(&file[..]).unwrap();
        let mut buffer = vec![0.0f32; session_floats(model.config(), 8)];
        for prompt in [vec![11], vec![1, 2, 3, 4, 5], (0..12).collect()] {
            for temperature in [0.0, 0.8] {
                let got = sample(
                    &layout,
                    &params,
                    &tokenizer,
                    &prompt,
                    30,
                    temperature,
                    &mut Rng::new(9),
                )
                .unwrap();
                let mut rng = Rng::new(9);
                let mut tokens = prompt.clone();
                for _ in 0..30 {
                    let mut session = Session::new(&model, &mut buffer, 8).unwrap();
                    let logits = session
                        .prefill(&tokens[tokens.len().saturating_sub(8)..])
                        .unwrap();
                    tokens.push(pick(logits, temperature, &mut rng));
                }
                assert_eq!(
                    got,
                    tokens[prompt.len()..],
                    "prompt {prompt:?}, temperature {temperature}"
                );
            }
        }
    }
}
