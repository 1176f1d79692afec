//! `kinglet generate`: stream text from a model. The prompt is printed as it
//! is read, then the sampled text as each token arrives; a last line on
//! stderr gives the counts and the prompt and generation speeds.
//!
//! The model runs on a pool of `--threads` threads: the session's matrix
//! products and attention heads are split over them (the text is the same
//! for any count). Generation itself runs on a pool thread, so the
//! session's many short parallel calls start inside the pool, and sends its
//! text back to this thread, which writes it (gathered for at most a
//! millisecond).
//!
//! On an x86 CPU with AVX2 the quantized matrices are repacked at load
//! for faster kernels (`--no-pack` turns it off; see `crate::packing`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kinglet::format::TokenizerKind;
use kinglet::generate::{Generator, Stop};
use kinglet::{
    session_floats, tokenizer, Config, ModelFile, PackedWeights, Sampler, SamplerConfig, Session,
};

use super::verify::problems;
use super::{grouped, Status};
use crate::bundled;
use crate::io::{open_model, read_file};
use crate::memory::{self, Budget};
use crate::model_bytes::ModelBytes;
use crate::packing;
use crate::threads::{thread_count, Threads};

const EXAMPLES: &str = "\
Examples:
  kinglet generate stories260K.klt --prompt \"Once upon a time\" --temperature 0
  kinglet generate stories260K.klt -n 100 --temperature 0.8 --top-p 0.9 --seed 42
  kinglet generate shakespeare.klt --prompt \"ROMEO:\" --top-k 40
  kinglet generate stories15M.klt --threads 1 --temperature 0
  kinglet generate stories260K.klt --prompt-file story-start.txt -n 200
  echo \"Once upon a time\" | kinglet generate stories260K.klt --prompt -";

/// Generate text from a model.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The .klt model file (default: the bundled TinyShakespeare model).
    pub model: Option<PathBuf>,
    /// Text to start from (BPE models also get BOS first); `-` reads it from
    /// standard input. Character-level models start from a newline when no
    /// prompt is given.
    #[arg(long, short, default_value = "")]
    pub prompt: String,
    /// Read the prompt from FILE (UTF-8), exactly as it is.
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
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
    /// Context positions to allocate, at most the model's max_seq_len
    /// (default: the prompt's tokens plus -n, as far as the model and
    /// memory allow). Past a full context, generation continues in a fresh
    /// one that starts from the last half of the text.
    #[arg(long)]
    pub max_seq: Option<u32>,
    /// Memory the session may take, e.g. 512M or 4G (default: the memory
    /// available when the command starts).
    #[arg(long, value_name = "SIZE", value_parser = memory::parse_size)]
    pub max_memory: Option<u64>,
    /// Skip the tensor checksum verification at load.
    #[arg(long)]
    pub no_verify: bool,
    /// Threads to run the model on, 1 to 256 (default: one per core). The
    /// text does not depend on it.
    #[arg(long, short = 'j')]
    pub threads: Option<usize>,
    /// Don't repack the Q8_0/Q4_0 matrices at load. Repacking (on x86
    /// CPUs with AVX2 and up) makes them faster to read, costs memory about the
    /// model's size, and never changes the output.
    #[arg(long)]
    pub no_pack: bool,
}

/// What the generation thread reports.
struct Counts {
    /// Seconds from the start to the end of the prompt (its prefill included).
    prompt_seconds: f64,
    /// Seconds from the end of the prompt to the end.
    generation_seconds: f64,
    generated: u32,
}

/// Runs `kinglet generate`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    let (model, name) = match &args.model {
        Some(path) => (open_model(path)?, path.display().to_string()),
        None => (
            ModelFile::new_checked(ModelBytes::copy_of(bundled::BYTES)?)?,
            bundled::PATH.to_string(),
        ),
    };
    if !args.no_verify {
        if let Some(first) = problems(&model).first() {
            bail!("{name}: {first} (the file is damaged; --no-verify skips this check)");
        }
    }
    if args.tokens == 0 {
        bail!("-n must be at least 1: there is nothing to generate");
    }
    let config = *model.config();
    let vocab = model.vocab();
    let given = prompt_text(&args)?;
    let text = if given.is_empty() && vocab.kind() == TokenizerKind::Char {
        "\n"
    } else {
        &given
    };
    let budget = Budget::new(args.max_memory);
    let limit = args.max_seq.unwrap_or(config.max_seq_len);
    if limit == 0 || limit > config.max_seq_len {
        bail!(
            "--max-seq must be between 1 and the model's max_seq_len ({})",
            config.max_seq_len
        );
    }
    // No token covers more than the longest piece's bytes, so a prompt
    // longer than the context's positions × that cannot fit: say so before
    // encoding it.
    let longest = vocab.max_piece_len().max(1);
    if text.len() > limit as usize * longest {
        bail!(
            "the prompt is {} bytes, more than the {limit} positions of the context can hold ({longest} bytes per token at most)",
            text.len()
        );
    }
    let mut prompt = budget.zeroed(
        tokenizer::max_tokens(text, true),
        "encoding the prompt",
        "a shorter prompt needs less",
    )?;
    let n =
        tokenizer::encode(&vocab, text, true, &mut prompt).context("cannot encode the prompt")?;
    prompt.truncate(n);
    if prompt.is_empty() {
        bail!("the prompt is empty and this model has no BOS token: give --prompt TEXT");
    }
    if prompt.len() > limit as usize {
        bail!(
            "the prompt is {} tokens, more than the {limit} positions of the context",
            prompt.len()
        );
    }
    let max_seq = context_positions(&config, prompt.len(), args.tokens, args.max_seq, &budget)?;
    let mut packed = packing::packed_buffer(
        &model,
        !args.no_pack,
        &budget,
        memory::session_bytes(&config, max_seq),
    );
    let packing = if packed.is_some() {
        ", packed weights"
    } else {
        ""
    };
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
    let threads = Threads::new(args.threads.map(thread_count).transpose()?.unwrap_or(0))?;

    let (text_tx, text_rx) = mpsc::channel::<String>();
    let mut counts = None;
    let mut write_error = None;
    threads.in_place_scope(|scope| {
        let (model, prompt, sampler, threads, counts) =
            (&model, &prompt, &mut sampler, &threads, &mut counts);
        let packed = packed.as_deref_mut();
        scope.spawn(move |_| {
            // Text goes to the writing thread until it hangs up (a write
            // failed), which stops generation.
            let mut text = TextSender::new(text_tx);
            let result = generate(
                model,
                packed,
                max_seq,
                prompt,
                sampler,
                args.tokens,
                threads,
                |piece| text.push(piece),
            );
            text.send();
            *counts = Some(result);
        });
        for piece in text_rx {
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_error = Some(e);
                break; // drops the receiver
            }
        }
    });
    if let Some(e) = write_error {
        return Err(e).context("cannot write the text");
    }
    let counts = counts.context("the generation thread stopped without a result")??;
    if let Err(e) = out.write_all(b"\n").and_then(|_| out.flush()) {
        return Err(e).context("cannot write the text");
    }
    let rate = |tokens: f64, seconds: f64| if seconds > 0.0 { tokens / seconds } else { 0.0 };
    let Counts {
        prompt_seconds,
        generation_seconds,
        generated,
    } = counts;
    eprintln!(
        "seed {seed}, {} threads{packing}, context {max_seq}, prefill {:.1} tok/s, prompt {} tokens, generated {generated} tokens in {generation_seconds:.3} s, {:.1} tok/s",
        threads.count(),
        rate(prompt.len() as f64, prompt_seconds),
        prompt.len(),
        rate(generated as f64, generation_seconds),
    );
    Ok(Status::Ok)
}

/// How long text may wait for the writing thread: sent a token at a time,
/// waking that thread took a sixth of the bundled model's generation
/// (docs/PERFORMANCE.md, 2026-12-05). A millisecond is no delay to a
/// reader, and a model slower than a token a millisecond still sends each
/// token as it comes.
const SEND_EVERY: Duration = Duration::from_millis(1);

/// The generation thread's end of the text channel: pieces gathered for up
/// to [`SEND_EVERY`], then sent together.
struct TextSender {
    channel: mpsc::Sender<String>,
    pending: String,
    last_sent: Instant,
}

impl TextSender {
    fn new(channel: mpsc::Sender<String>) -> Self {
        TextSender {
            channel,
            pending: String::new(),
            last_sent: Instant::now(),
        }
    }

    /// Adds a piece, sending what waits once [`SEND_EVERY`] has passed;
    /// false once the writing thread has hung up.
    fn push(&mut self, piece: &str) -> bool {
        self.pending.push_str(piece);
        self.last_sent.elapsed() < SEND_EVERY || self.send()
    }

    /// Sends what waits; false once the writing thread has hung up.
    fn send(&mut self) -> bool {
        self.last_sent = Instant::now();
        self.pending.is_empty() || self.channel.send(std::mem::take(&mut self.pending)).is_ok()
    }
}

/// The prompt: `--prompt TEXT`, standard input for `--prompt -`, or the
/// contents of `--prompt-file FILE`.
fn prompt_text(args: &Args) -> Result<String> {
    let (bytes, source) = match (&args.prompt_file, args.prompt.as_str()) {
        (Some(path), _) => (read_file(path)?, path.display().to_string()),
        (None, "-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the prompt from standard input")?;
            (bytes, "standard input".to_string())
        }
        (None, text) => return Ok(text.to_string()),
    };
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "the prompt from {source} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Context positions to allocate: `--max-seq` if given (it must fit the
/// budget), else room for the prompt and every new token, at most the
/// model's max_seq_len, lowered to what fits the budget (as past
/// max_seq_len, generation then continues in a fresh context).
fn context_positions(
    config: &Config,
    prompt: usize,
    tokens: u32,
    asked: Option<u32>,
    budget: &Budget,
) -> Result<u32> {
    let needs = |n: u32| memory::session_bytes(config, n);
    let positions = |n: u32| format!("a context of {} positions", grouped(n as u64));
    if let Some(n) = asked {
        budget.check(needs(n), &positions(n), "a smaller --max-seq lowers it")?;
        return Ok(n);
    }
    // The prompt fits max_seq_len (checked), so these fit in u32.
    let wanted = (prompt as u64 + tokens as u64).min(config.max_seq_len as u64) as u32;
    let least = (prompt as u32 + 1).min(wanted);
    budget.check(
        needs(least),
        &format!("{} for the prompt", positions(least)),
        "a shorter prompt lowers it",
    )?;
    // The largest context in [least, wanted] that fits: sizes grow with n.
    let (mut low, mut high) = (least, wanted);
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if budget.fits(needs(mid)) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    Ok(low)
}

/// Runs the prompt and samples up to `max_new_tokens` on `threads`, passing
/// the text to `emit` until it returns false; with the model's weights
/// packed into `packed` when given.
#[allow(clippy::too_many_arguments)]
fn generate<T: AsRef<[u8]>>(
    model: &kinglet::ModelFile<T>,
    packed: Option<&mut [u8]>,
    max_seq: u32,
    prompt: &[u32],
    sampler: &mut Sampler,
    max_new_tokens: u32,
    threads: &Threads,
    mut emit: impl FnMut(&str) -> bool,
) -> Result<Counts> {
    // Its size was checked against the budget; the allocator may still
    // refuse it.
    let mut buffer = memory::zeroed(
        session_floats(model.config(), max_seq),
        "the session",
        "--max-seq lowers it",
    )?;
    let mut session = Session::new(model, &mut buffer, max_seq)?.with_parallel(threads);
    if let Some(packed) = packed {
        session = session.with_packed(PackedWeights::new(model, packed)?)?;
    }
    let started = Instant::now();
    let mut prompt_done = None;
    let mut listening = true;
    let mut generated = 0;
    // The whole sequence so far, and the part of it the context starts from.
    let mut history = prompt.to_vec();
    let mut window = prompt.to_vec();
    let mut first_round = true;
    loop {
        session.reset();
        let mut generator =
            Generator::new(&mut session, sampler, &window, max_new_tokens - generated)?;
        while listening {
            // A window replayed into a fresh context was printed already.
            let replaying = !first_round && generator.prompt_tokens_done() < window.len();
            let step = generator.step(|piece| {
                if !replaying {
                    listening &= emit(piece);
                }
            })?;
            if prompt_done.is_none() && generator.prompt_tokens_done() == window.len() {
                prompt_done = Some(Instant::now());
            }
            match step {
                Some(token) if !token.from_prompt => history.push(token.id),
                Some(_) => {}
                None => break,
            }
        }
        generated += generator.new_tokens();
        let context_full = generator.stop() == Some(Stop::ContextFull);
        if !listening || !context_full || generated >= max_new_tokens {
            break;
        }
        // The context is full: continue in a fresh one that starts from the
        // last half of the text, positions from 0 again (as in training).
        let keep = (max_seq as usize / 2).max(1);
        window = history[history.len().saturating_sub(keep)..].to_vec();
        first_round = false;
    }
    let prompt_done = prompt_done.unwrap_or(started);
    Ok(Counts {
        prompt_seconds: prompt_done.duration_since(started).as_secs_f64(),
        generation_seconds: prompt_done.elapsed().as_secs_f64(),
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the clock does between pieces, the writing thread gets
    /// every piece once, in order, by the last send.
    #[test]
    fn sent_text_is_every_piece_in_order() {
        let (tx, rx) = mpsc::channel();
        let mut text = TextSender::new(tx);
        let pieces: Vec<String> = (0..500).map(|i| format!("{i} ")).collect();
        for (i, piece) in pieces.iter().enumerate() {
            if i % 100 == 0 {
                std::thread::sleep(SEND_EVERY);
            }
            assert!(text.push(piece));
        }
        assert!(text.send());
        drop(text);
        let received: Vec<String> = rx.iter().collect();
        assert!(received.len() >= 5, "a send after each pause");
        assert_eq!(received.concat(), pieces.concat());
    }

    /// Once the writing thread hangs up, the next send says so (and
    /// generation stops).
    #[test]
    fn a_hung_up_writer_stops_the_sender() {
        let (tx, rx) = mpsc::channel();
        let mut text = TextSender::new(tx);
        drop(rx);
        std::thread::sleep(SEND_EVERY);
        assert!(!text.push("a"));
        assert!(!text.push("b") || !text.send());
    }
}
