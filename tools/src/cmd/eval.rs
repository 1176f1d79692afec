//! `kinglet eval`: mean cross-entropy of a model on a text, with the same
//! protocol and report as `kinglet-train eval`, so the two can be compared:
//! the scored tokens are cut into consecutive non-overlapping windows of T
//! tokens (the model's context length, or `--context`); window `k` reads
//! tokens `[kT, kT+T)` from a fresh context and predicts `[kT+1, kT+T]`,
//! every position from its in-window prefix. Tokens after the last whole
//! window are not scored; the report says how many.
//!
//! On an x86 CPU with AVX2 the quantized matrices are repacked at load
//! for faster kernels, shared by every session (`--no-pack` turns it off;
//! see `crate::packing`); the loss is the same bits either way.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kinglet::{
    ops, session::PREFILL_CHUNK, session_floats, tokenizer, Config, Error, ModelFile,
    PackedWeights, Parallel, Sequential, Session,
};
use rayon::prelude::*;

use super::{grouped, Status};
use crate::io::{open_model, read_file};
use crate::memory::{self, Budget};
use crate::packing;
use crate::threads::{thread_count, Threads};

const EXAMPLES: &str = "\
Examples:
  # The trainer's validation split: the last 10% of the tokens
  kinglet eval shakespeare.klt --text tinyshakespeare.txt --tail 0.1
  kinglet eval stories260K.klt --text story.txt
  # A text shorter than the model's context: shorter windows
  kinglet eval stories260K.klt --text sentence.txt --context 16";

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
    /// Window length T in tokens, at most the model's context length
    /// [default: the model's context length].
    #[arg(long, value_name = "N")]
    pub context: Option<usize>,
    /// Memory the tokens and sessions may take, e.g. 512M or 4G (default:
    /// the memory available when the command starts).
    #[arg(long, value_name = "SIZE", value_parser = memory::parse_size)]
    pub max_memory: Option<u64>,
    /// Don't repack the Q8_0/Q4_0 matrices at load. Repacking (on x86
    /// CPUs with AVX2 and up) makes them faster to read, costs memory about the
    /// model's size, and never changes the output.
    #[arg(long)]
    pub no_pack: bool,
    /// Threads to score on, 1 to 256 (default: one per core). The loss does
    /// not depend on it.
    #[arg(long, short = 'j')]
    pub threads: Option<usize>,
}

/// How `len` tokens split into windows of `context`: each window predicts
/// `context` tokens from the ones before them in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// Tokens per window.
    pub context: usize,
    /// Whole windows.
    pub count: usize,
    /// Tokens after the last whole window, not scored (the text's first
    /// token is never scored either: nothing comes before it).
    pub left_over: usize,
}

impl Windows {
    /// The windows of a text of `len` tokens.
    pub fn new(len: usize, context: usize) -> Windows {
        let predictable = len.saturating_sub(1);
        let count = predictable / context.max(1);
        Windows {
            context,
            count,
            left_over: predictable - count * context,
        }
    }

    /// Tokens scored: `count · context`.
    pub fn scored(&self) -> usize {
        self.count * self.context
    }
}

/// The result of scoring a text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Mean cross-entropy in nats per token.
    pub loss: f64,
    /// The windows scored.
    pub windows: Windows,
}

impl Score {
    /// The report both `kinglet eval` and `kinglet-train eval` print: the
    /// tokens scored and left over, the loss and the perplexity.
    pub fn write_report(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let w = &self.windows;
        writeln!(
            out,
            "tokens: {} scored in {} window{} of {}, {} left over",
            grouped(w.scored() as u64),
            grouped(w.count as u64),
            if w.count == 1 { "" } else { "s" },
            w.context,
            w.left_over
        )?;
        writeln!(out, "loss: {:.6}", self.loss)?;
        writeln!(out, "perplexity: {:.4}", self.loss.exp())
    }
}

/// The last `fraction` of `n` tokens start here: for 0.1 this is the
/// trainer's split point ⌊0.9·n⌋ (the small offset keeps exact products such
/// as 0.1·1000 from rounding up).
pub fn tail_start(n: usize, fraction: f64) -> usize {
    let tail = ((n as f64 * fraction) - 1e-9).ceil().clamp(0.0, n as f64) as usize;
    n - tail
}

/// Mean cross-entropy of `model` on `tokens` under the window protocol
/// with windows of `context` tokens (at most the model's context length),
/// on `threads`: a window per thread, each with its own session, or, with
/// fewer windows than threads, one window after another, its session's
/// products and attention heads split over every thread (the same bits
/// either way); summed in order.
pub fn score<T: AsRef<[u8]> + Sync>(
    model: &ModelFile<T>,
    tokens: &[u32],
    context: usize,
    threads: &Threads,
) -> Result<Score, Error> {
    score_with(model, None, tokens, context, threads)
}

/// [`score`] with every session reading `packed` copies of the model's
/// quantized matrices when given (the same bits).
pub fn score_with<T: AsRef<[u8]> + Sync>(
    model: &ModelFile<T>,
    packed: Option<PackedWeights<'_>>,
    tokens: &[u32],
    context: usize,
    threads: &Threads,
) -> Result<Score, Error> {
    let windows = Windows::new(tokens.len(), context);
    let window = |k: usize| &tokens[k * context..=(k + 1) * context];
    let buffers = || {
        let config = model.config();
        let session = vec![0.0f32; session_floats(config, context as u32)];
        (session, vec![0.0f32; logits_floats(config)])
    };
    let losses: Vec<f64> = if sessions_at_once(windows.count, threads) == 1 {
        let (mut buffer, mut logits) = buffers();
        (0..windows.count)
            .map(|k| window_loss(model, packed, threads, &mut buffer, &mut logits, window(k)))
            .collect::<Result<_, _>>()?
    } else {
        threads.install(|| {
            (0..windows.count)
                .into_par_iter()
                .map_init(buffers, |(buffer, logits), k| {
                    window_loss(model, packed, &Sequential, buffer, logits, window(k))
                })
                .collect::<Result<_, _>>()
        })?
    };
    Ok(Score {
        loss: losses.iter().sum::<f64>() / windows.scored().max(1) as f64,
        windows,
    })
}

/// Sessions [`score`] runs at once for `windows` windows on `threads`: one
/// per thread, or one that every thread works on when there are fewer
/// windows.
fn sessions_at_once(windows: usize, threads: &Threads) -> usize {
    if windows >= threads.count() {
        threads.count()
    } else {
        1
    }
}

/// Floats of one chunk's logits, `[PREFILL_CHUNK × vocab_size]`: a
/// window's positions go through the model a chunk at a time.
fn logits_floats(config: &Config) -> usize {
    PREFILL_CHUNK * config.vocab_size as usize
}

/// Summed negative log-likelihood of `window[1..]`, each predicted from the
/// tokens before it, in a fresh session, a chunk of positions at a time
/// (`logits`: [`logits_floats`]).
fn window_loss<T: AsRef<[u8]>>(
    model: &ModelFile<T>,
    packed: Option<PackedWeights<'_>>,
    parallel: &dyn Parallel,
    buffer: &mut [f32],
    logits: &mut [f32],
    window: &[u32],
) -> Result<f64, Error> {
    let mut session =
        Session::new(model, buffer, (window.len() - 1) as u32)?.with_parallel(parallel);
    if let Some(packed) = packed {
        session = session.with_packed(packed)?;
    }
    let vocab = model.config().vocab_size as usize;
    let (inputs, targets) = (&window[..window.len() - 1], &window[1..]);
    let mut sum = 0.0f64;
    for (inputs, targets) in inputs
        .chunks(PREFILL_CHUNK)
        .zip(targets.chunks(PREFILL_CHUNK))
    {
        let rows = &mut logits[..inputs.len() * vocab];
        session.prefill_logits(inputs, rows)?;
        for (row, &target) in rows.chunks_exact_mut(vocab).zip(targets) {
            let z = row[target as usize];
            sum += ops::log_sum_exp(row) - z as f64;
        }
    }
    Ok(sum)
}

/// Runs `kinglet eval`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    if !(args.tail > 0.0 && args.tail <= 1.0) {
        bail!("--tail must be in (0, 1], got {}", args.tail);
    }
    let threads = Threads::new(args.threads.map(thread_count).transpose()?.unwrap_or(0))?;
    threads
        .install(|| score_text(&args, &threads))?
        .write_report(out)?;
    Ok(Status::Ok)
}

/// [`run`]'s scoring, on the pool of `--threads` threads (its loading and
/// packing too).
fn score_text(args: &Args, threads: &Threads) -> Result<Score> {
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
    let budget = Budget::new(args.max_memory);
    let mut tokens = budget.zeroed(
        tokenizer::max_tokens(text, false),
        "encoding the text",
        "a shorter --text needs less",
    )?;
    let n = tokenizer::encode(&model.vocab(), text, false, &mut tokens).with_context(|| {
        format!(
            "cannot encode {} with the model's vocabulary",
            args.text.display()
        )
    })?;
    tokens.truncate(n);
    let scored = &tokens[tail_start(n, args.tail)..];
    let model_context = model.config().max_seq_len as usize;
    let context = args.context.unwrap_or(model_context);
    if context == 0 || context > model_context {
        bail!("--context must be between 1 and the model's context length {model_context}");
    }
    if scored.len() <= context {
        bail!(
            "{} tokens to score, fewer than one window of {context} plus one \
             (a shorter --context scores shorter windows)",
            scored.len()
        );
    }
    let sessions = sessions_at_once(Windows::new(scored.len(), context).count, threads);
    let logits_bytes = logits_floats(model.config()) as u64 * 4;
    let per_session = memory::session_bytes(model.config(), context as u32)
        .and_then(|b| b.checked_add(logits_bytes));
    budget.check(
        per_session.and_then(|b| b.checked_mul(sessions as u64)),
        &format!(
            "scoring {sessions} windows of {} positions at once (one per thread)",
            grouped(context as u64)
        ),
        "a smaller --context lowers it",
    )?;
    let mut packed_buffer = packing::packed_buffer(
        &model,
        !args.no_pack,
        &budget,
        per_session.and_then(|b| b.checked_mul(sessions as u64)),
    );
    let packed = match packed_buffer.as_deref_mut() {
        Some(buffer) => Some(PackedWeights::new(&model, buffer)?),
        None => None,
    };
    Ok(score_with(&model, packed, scored, context, threads)?)
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
