//! `kinglet eval`: mean cross-entropy of a model on a text, with the same
//! protocol as `kinglet-train eval`, so the two can be compared: the scored
//! tokens are cut into consecutive non-overlapping windows of the model's
//! context length; window `k` reads tokens `[kT, kT+T)` from a fresh context
//! and predicts `[kT+1, kT+T]`, every position from its in-window prefix.
//! Tokens after the last whole window are not scored.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kinglet::{session_floats, tokenizer, Error, ModelFile, Session};
use rayon::prelude::*;

use super::Status;
use crate::io::{open_model, read_file};

const EXAMPLES: &str = "\
Examples:
  # The trainer's validation split: the last 10% of the tokens
  kinglet eval shakespeare.klt --text tinyshakespeare.txt --tail 0.1
  kinglet eval stories260K.klt --text story.txt";

/// Measure a model's mean cross-entropy on a text.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The .klt model file.
    pub model: PathBuf,
    /// The UTF-8 text to score.
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
    /// Score only this last fraction of the tokens (0.1: the trainer's
    /// validation split, the tokens after the first 90%).
    #[arg(long, value_name = "FRACTION", default_value_t = 1.0)]
    pub tail: f64,
}

/// The result of scoring a text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Mean cross-entropy in nats per token.
    pub loss: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// Windows of the context length.
    pub windows: usize,
}

/// The last `fraction` of `n` tokens start here: for 0.1 this is the
/// trainer's split point ⌊0.9·n⌋ (the small offset keeps exact products such
/// as 0.1·1000 from rounding up).
pub fn tail_start(n: usize, fraction: f64) -> usize {
    let tail = ((n as f64 * fraction) - 1e-9).ceil().clamp(0.0, n as f64) as usize;
    n - tail
}

/// Mean cross-entropy of `model` on `tokens` under the window protocol,
/// windows run in parallel (each with its own session), summed in order.
pub fn score<T: AsRef<[u8]> + Sync>(model: &ModelFile<T>, tokens: &[u32]) -> Result<Score, Error> {
    let context = model.config().max_seq_len as usize;
    let windows = tokens.len().saturating_sub(1) / context;
    let losses: Vec<f64> = (0..windows)
        .into_par_iter()
        .map_init(
            || vec![0.0f32; session_floats(model.config(), context as u32)],
            |buffer, k| window_loss(model, buffer, &tokens[k * context..=(k + 1) * context]),
        )
        .collect::<Result<_, _>>()?;
    let scored = windows * context;
    Ok(Score {
        loss: losses.iter().sum::<f64>() / scored.max(1) as f64,
        tokens: scored,
        windows,
    })
}

/// Summed negative log-likelihood of `window[1..]`, each predicted from the
/// tokens before it, in a fresh session.
fn window_loss<T: AsRef<[u8]>>(
    model: &ModelFile<T>,
    buffer: &mut [f32],
    window: &[u32],
) -> Result<f64, Error> {
    let mut session = Session::new(model, buffer, (window.len() - 1) as u32)?;
    let mut sum = 0.0f64;
    for pair in window.windows(2) {
        let logits = session.forward(pair[0])?;
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z)) as f64;
        let log_z = max
            + logits
                .iter()
                .map(|&z| (z as f64 - max).exp())
                .sum::<f64>()
                .ln();
        sum += log_z - logits[pair[1] as usize] as f64;
    }
    Ok(sum)
}

/// Runs `kinglet eval`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    if !(args.tail > 0.0 && args.tail <= 1.0) {
        bail!("--tail must be in (0, 1], got {}", args.tail);
    }
    let model = open_model(&args.model)?;
    model
        .verify()
        .with_context(|| format!("{}: the file is damaged", args.model.display()))?;
    let bytes = read_file(&args.text)?;
    if bytes.is_empty() {
        bail!("{}: file is empty", args.text.display());
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            args.text.display(),
            e.valid_up_to()
        )
    })?;
    let mut tokens = vec![0u32; tokenizer::max_tokens(text, false)];
    let n = tokenizer::encode(&model.vocab(), text, false, &mut tokens).with_context(|| {
        format!(
            "cannot encode {} with the model's vocabulary",
            args.text.display()
        )
    })?;
    tokens.truncate(n);
    let scored = &tokens[tail_start(n, args.tail)..];
    let context = model.config().max_seq_len as usize;
    if scored.len() <= context {
        bail!(
            "{} tokens to score, fewer than one window of the context length {context} plus one",
            scored.len()
        );
    }
    let s = score(&model, scored)?;
    writeln!(
        out,
        "tokens: {} in {} windows of {context}",
        s.tokens, s.windows
    )?;
    writeln!(out, "loss: {:.6}", s.loss)?;
    writeln!(out, "perplexity: {:.4}", s.loss.exp())?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_matches_the_trainers_split() {
        for n in [10, 11, 19, 1000, 1_115_394, 999_999] {
            assert_eq!(tail_start(n, 0.1), n / 10 * 9 + n % 10 * 9 / 10, "n = {n}");
        }
        assert_eq!(tail_start(1_115_394, 0.1), 1_115_394 - 111_540);
        assert_eq!(tail_start(7, 1.0), 0);
    }
}
