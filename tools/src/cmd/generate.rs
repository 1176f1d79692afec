//! `kinglet generate`: stream text from a model. The prompt is printed as it
//! is read, then the sampled text as each token arrives; a last line on
//! stderr gives the counts and the generation speed.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kinglet::format::TokenizerKind;
use kinglet::generate::Generator;
use kinglet::{session_floats, tokenizer, Sampler, SamplerConfig, Session};

use super::verify::problems;
use super::Status;
use crate::io::open_model;

const EXAMPLES: &str = "\
Examples:
  kinglet generate stories260K.klt --prompt \"Once upon a time\" --temperature 0
  kinglet generate stories260K.klt -n 100 --temperature 0.8 --top-p 0.9 --seed 42
  kinglet generate shakespeare.klt --prompt \"ROMEO:\" --top-k 40";

/// Generate text from a model.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The .klt model file.
    pub model: PathBuf,
    /// Text to start from (BPE models also get BOS first). Character-level
    /// models start from a newline when no prompt is given.
    #[arg(long, short, default_value = "")]
    pub prompt: String,
    /// New tokens to generate after the prompt.
    #[arg(long = "tokens", short = 'n', default_value_t = 256)]
    pub tokens: u32,
    /// Sampling temperature; 0 picks the most likely token every time.
    #[arg(long, short, default_value_t = 0.8)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    /// Sample only among the most likely tokens whose probabilities add up to P (1: no limit).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Random seed; the same seed and settings give the same text. Default: the clock.
    #[arg(long, short)]
    pub seed: Option<u64>,
    /// Context positions to allocate (default: the model's max_seq_len).
    #[arg(long)]
    pub max_seq: Option<u32>,
    /// Skip the tensor checksum verification at load.
    #[arg(long)]
    pub no_verify: bool,
}

/// Runs `kinglet generate`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    let model = open_model(&args.model)?;
    if !args.no_verify {
        if let Some(first) = problems(&model).first() {
            bail!(
                "{}: {first} (the file is damaged; --no-verify skips this check)",
                args.model.display()
            );
        }
    }
    let config = *model.config();
    let vocab = model.vocab();
    let text = if args.prompt.is_empty() && vocab.kind() == TokenizerKind::Char {
        "\n"
    } else {
        &args.prompt
    };
    let mut prompt = vec![0u32; tokenizer::max_tokens(text, true)];
    let n =
        tokenizer::encode(&vocab, text, true, &mut prompt).context("cannot encode the prompt")?;
    prompt.truncate(n);
    if prompt.is_empty() {
        bail!("the prompt is empty and this model has no BOS token: give --prompt TEXT");
    }

    let max_seq = args.max_seq.unwrap_or(config.max_seq_len);
    if max_seq == 0 || max_seq > config.max_seq_len {
        bail!(
            "--max-seq must be between 1 and the model's max_seq_len ({})",
            config.max_seq_len
        );
    }
    if prompt.len() > max_seq as usize {
        bail!(
            "the prompt is {} tokens, more than the {max_seq} positions of the context",
            prompt.len()
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let sampling = SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed,
    };
    let mut sampler = Sampler::new(config.vocab_size, sampling).context("bad sampling settings")?;
    let mut buffer = vec![0.0f32; session_floats(&config, max_seq)];
    let mut session = Session::new(&model, &mut buffer, max_seq)?;
    let mut generator = Generator::new(&mut session, &mut sampler, &prompt, args.tokens)?;

    let mut write_error = None;
    let mut emit = |piece: &str| {
        if write_error.is_none() {
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_error = Some(e);
            }
        }
    };
    let started = Instant::now();
    let mut generation_started = None;
    while generator.step(&mut emit)?.is_some() {
        if generation_started.is_none() && generator.prompt_tokens_done() == prompt.len() {
            generation_started = Some(Instant::now());
        }
    }
    emit("\n");
    if let Some(e) = write_error {
        return Err(e).context("cannot write the text");
    }
    let generated = generator.new_tokens();
    let seconds = generation_started
        .unwrap_or(started)
        .elapsed()
        .as_secs_f64();
    let rate = if seconds > 0.0 {
        generated as f64 / seconds
    } else {
        0.0
    };
    eprintln!(
        "seed {seed}, prompt {} tokens, generated {generated} tokens in {seconds:.3} s, {rate:.1} tok/s",
        prompt.len()
    );
    Ok(Status::Ok)
}
