//! `kinglet-train`: train a LLaMA model from scratch on a CPU, evaluate it,
//! export it as .klt, GGUF or a Hugging Face directory, or check the trainer
//! against a PyTorch reference dump.

use clap::{Args, Parser, Subcommand};
use kinglet::Dtype;
use kinglet_tools::cmd::eval::{Score, Windows};
use kinglet_tools::cmd::grouped;
use kinglet_tools::interop::Format;
use kinglet_tools::memory::{parse_size, Budget};
use kinglet_tools::threads::thread_count;
use kinglet_trainer::budget::{check_evaluation, check_training};
use kinglet_trainer::checkpoint::Checkpoint;
use kinglet_trainer::config::{preset, Decay, ModelConfig, Preset, TrainConfig, PRESET_NAMES};
use kinglet_trainer::data::Corpus;
use kinglet_trainer::download;
use kinglet_trainer::error::{Result, TrainError};
use kinglet_trainer::eval::{whole_split_loss, whole_split_loss_qat};
use kinglet_trainer::export::{export, parse_dtype};
use kinglet_trainer::params::ParamLayout;
use kinglet_trainer::qat::Qat;
use kinglet_trainer::ranks::{agree, check_rank_count, Alone, Ranks};
use kinglet_trainer::reference::{check_reference, TOLERANCE};
use kinglet_trainer::run::{run_with, RunOptions};
use kinglet_trainer::shards::shard_sequences;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Train a LLaMA model from scratch on a CPU (hand-written backward passes,
/// AdamW), then export it as a .klt file the kinglet engine runs.
///
/// Without a subcommand, trains. The Model and Optimization flags default to
/// the --preset's values, listed under Presets below.
#[derive(Parser)]
#[command(
    name = "kinglet-train",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true,
    after_help = presets_and_examples()
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Mean cross-entropy over the whole validation split (last 10%), in
    /// consecutive non-overlapping windows of the context length; prints the
    /// report `kinglet eval` prints (tokens scored and left over, loss,
    /// perplexity).
    Eval {
        /// A checkpoint written by training (e.g. out/last.ckpt).
        checkpoint: PathBuf,
        /// The corpus the model was trained on [default: the file the
        /// checkpoint records, if its sha256 still matches].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Windows per forward pass.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Worker threads, 1 to 256 (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Memory the evaluation may take, e.g. 512M or 4G (default: the
        /// memory available when it starts).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_memory: Option<u64>,
    },
    /// Write a model file: .klt, GGUF or a Hugging Face directory (char
    /// tokenizer, training metadata).
    Export {
        /// A checkpoint written by training.
        checkpoint: PathBuf,
        /// Output file (a directory for --format hf).
        #[arg(short, long)]
        output: PathBuf,
        /// Output format: klt, gguf (llama.cpp) or hf (a Hugging Face
        /// directory) [default: from the output's extension, .klt or .gguf].
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Weight type of the matrices: f32, f16, bf16, q8_0 or q4_0 (norm gains
        /// stay f32) [default: the checkpoint's --qat dtype, else f32].
        #[arg(long)]
        dtype: Option<String>,
    },
    /// Replay a PyTorch reference dump (reference-dump-1 JSON, .bin beside it)
    /// and print each quantity's worst error relative to its largest magnitude;
    /// fails if any exceeds 1e-4.
    CheckReference {
        /// e.g. ../shared/data/torch-ref/tiny_f64.json
        dump: PathBuf,
    },
}

/// Training flags. Every hyperparameter can override the preset.
#[derive(Args)]
struct TrainArgs {
    /// Starting point: `seed` (context 16, d_model 128, 4 layers, constant lr
    /// 1e-3) or `small` (context 128, d_model 192, 6 layers, warmup + cosine).
    #[arg(long, default_value = "seed")]
    preset: String,
    /// UTF-8 text to train on (characters become tokens; first 90% trains,
    /// last 10% validates). Without it, --resume continues on the corpus its
    /// checkpoint records, and a new run downloads TinyShakespeare once into
    /// the cache ($KINGLET_CACHE_DIR, else ~/.cache/kinglet) and checks its
    /// sha256.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Optimizer steps to stop at (counted from the start, also when
    /// resuming), at most 1,000,000,000.
    #[arg(long)]
    steps: Option<u64>,
    /// Output directory for last.ckpt, metrics.jsonl and loss.svg. One that
    /// already holds a run is refused, unless --resume continues it or
    /// --force starts over.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Replace the run in --out (its last.ckpt and metrics) with a new one.
    #[arg(long)]
    force: bool,
    /// JSON Lines metrics file [default: metrics.jsonl in --out].
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Validation loss and a text sample every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Validation windows per evaluation (fixed, evenly spread).
    #[arg(long, default_value_t = 256)]
    eval_windows: usize,
    /// Save last.ckpt every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    save_every: u64,
    /// Write a metrics line every N steps.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Continue from a checkpoint (same preset and shape flags).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Worker threads, 1 to 256 (default: all cores). Results are identical
    /// for any count.
    #[arg(long)]
    threads: Option<usize>,
    /// Characters per evaluation sample, at most 100,000 (0: none).
    #[arg(long, default_value_t = 200)]
    sample_len: usize,
    /// Sampling temperature of the samples (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Memory the run may take, e.g. 512M or 4G (default: the memory
    /// available when it starts). A run that needs more is refused at once.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,

    /// Quantization-aware training for this export dtype: q8_0 or q4_0. The
    /// forward pass uses the weights as the engine will (straight-through
    /// gradients); evaluations measure the quantized model.
    #[arg(long, help_heading = "Quantization-aware training")]
    qat: Option<String>,
    /// Optimizer steps in float before fake quantization starts.
    #[arg(
        long,
        default_value_t = 0,
        help_heading = "Quantization-aware training"
    )]
    qat_start: u64,
    /// Also round the inputs of every quantized matvec to 8-bit blocks, as
    /// the engine's integer kernels do.
    #[arg(long, default_value = "on", value_parser = ["on", "off"],
          help_heading = "Quantization-aware training")]
    qat_activations: String,

    /// Window length (tokens).
    #[arg(long, help_heading = "Model")]
    context: Option<usize>,
    /// Residual stream width.
    #[arg(long, help_heading = "Model")]
    dim: Option<usize>,
    /// Transformer blocks.
    #[arg(long, help_heading = "Model")]
    layers: Option<usize>,
    /// Attention (query) heads.
    #[arg(long, help_heading = "Model")]
    heads: Option<usize>,
    /// Key/value heads (divides --heads) [default: --heads].
    #[arg(long, help_heading = "Model")]
    kv_heads: Option<usize>,
    /// SwiGLU hidden width.
    #[arg(long, help_heading = "Model")]
    hidden: Option<usize>,
    /// Tie the classifier to the token embedding (true/false).
    #[arg(long, help_heading = "Model")]
    tied: Option<bool>,
    /// RoPE base frequency.
    #[arg(long, help_heading = "Model")]
    rope_theta: Option<f32>,
    /// RMSNorm epsilon.
    #[arg(long, help_heading = "Model")]
    norm_eps: Option<f32>,
    /// Most distinct characters (tokens) the corpus may hold.
    #[arg(long, default_value_t = 65_536, help_heading = "Model")]
    max_vocab: usize,

    /// Sequences per micro-batch.
    #[arg(long, help_heading = "Optimization")]
    batch: Option<usize>,
    /// Micro-batches accumulated per optimizer step, at most 65,536.
    #[arg(long, help_heading = "Optimization")]
    accum: Option<usize>,
    /// Peak learning rate.
    #[arg(long, help_heading = "Optimization")]
    lr: Option<f32>,
    /// Learning-rate floor of the cosine decay.
    #[arg(long, help_heading = "Optimization")]
    min_lr: Option<f32>,
    /// Linear warmup steps.
    #[arg(long, help_heading = "Optimization")]
    warmup: Option<u64>,
    /// After warmup: constant or cosine.
    #[arg(long, help_heading = "Optimization")]
    decay: Option<String>,
    /// AdamW beta1.
    #[arg(long, help_heading = "Optimization")]
    beta1: Option<f32>,
    /// AdamW beta2.
    #[arg(long, help_heading = "Optimization")]
    beta2: Option<f32>,
    /// AdamW epsilon.
    #[arg(long, help_heading = "Optimization")]
    adam_eps: Option<f32>,
    /// Decoupled weight decay (2-D weights only unless --decay-norms).
    #[arg(long, help_heading = "Optimization")]
    weight_decay: Option<f32>,
    /// Also apply weight decay to the norm gains.
    #[arg(long, help_heading = "Optimization")]
    decay_norms: bool,
    /// Clip the global gradient norm (0: off).
    #[arg(long, help_heading = "Optimization")]
    grad_clip: Option<f32>,
    /// Standard deviation of the normal initialization.
    #[arg(long, help_heading = "Optimization")]
    init_std: Option<f32>,
    /// Seed for initialization and batch sampling.
    #[arg(long, help_heading = "Optimization")]
    seed: Option<u64>,
}

const EXAMPLES: &str = "\
Examples:
  # The seed preset on TinyShakespeare (downloaded once), then its score and a model file
  kinglet-train --preset seed --steps 1000 --out runs/seed
  kinglet-train eval runs/seed/last.ckpt
  kinglet-train export runs/seed/last.ckpt -o seed.klt --dtype q8_0
  # Continue that run to 2,000 steps (same preset and shape flags)
  kinglet-train --resume runs/seed/last.ckpt --steps 2000 --out runs/seed
  # Your own text, the small preset, a cosine schedule to 5,000 steps
  kinglet-train --preset small --data my-text.txt --out runs/small
  # Quantization-aware training for q4_0 from step 1,500
  kinglet-train --qat q4_0 --qat-start 1500 --steps 2000 --out runs/q4
  # 4 MPI ranks on the machines of a hostfile (built with --features mpi;
  # the rank count must divide the shard count; same checkpoint as one process)
  mpirun --hostfile hosts -np 4 kinglet-train --preset small --out runs/mpi";

/// The help's table of every preset's values, then the examples.
fn presets_and_examples() -> String {
    let presets: Vec<_> = PRESET_NAMES.iter().filter_map(|n| preset(n)).collect();
    let number = |v: f32| {
        if v != 0.0 && v.abs() < 1e-2 {
            format!("{v:e}")
        } else {
            v.to_string()
        }
    };
    type Value<'a> = &'a dyn Fn(&Preset) -> String;
    let rows: &[(&str, Value)] = &[
        ("--context", &|p| p.model.context.to_string()),
        ("--dim", &|p| p.model.dim.to_string()),
        ("--layers", &|p| p.model.n_layers.to_string()),
        ("--heads", &|p| p.model.n_heads.to_string()),
        ("--kv-heads", &|p| p.model.n_kv_heads.to_string()),
        ("--hidden", &|p| p.model.hidden_dim.to_string()),
        ("--tied", &|p| p.model.tied_classifier.to_string()),
        ("--rope-theta", &|p| number(p.model.rope_theta)),
        ("--norm-eps", &|p| number(p.model.norm_eps)),
        ("--batch", &|p| p.train.batch.to_string()),
        ("--accum", &|p| p.train.accum_steps.to_string()),
        ("--steps", &|p| p.train.steps.to_string()),
        ("--lr", &|p| number(p.train.lr)),
        ("--min-lr", &|p| number(p.train.min_lr)),
        ("--warmup", &|p| p.train.warmup_steps.to_string()),
        ("--decay", &|p| {
            format!("{:?}", p.train.decay).to_lowercase()
        }),
        ("--beta1", &|p| p.train.beta1.to_string()),
        ("--beta2", &|p| p.train.beta2.to_string()),
        ("--adam-eps", &|p| number(p.train.eps)),
        ("--weight-decay", &|p| number(p.train.weight_decay)),
        ("--grad-clip", &|p| p.train.grad_clip.to_string()),
        ("--init-std", &|p| number(p.train.init_std)),
        ("--seed", &|p| p.train.seed.to_string()),
    ];
    let mut text = String::from("Presets (each flag overrides its value):\n");
    let heading: Vec<String> = PRESET_NAMES.iter().map(|n| format!("{n:<12}")).collect();
    text += &format!("  {:<16}{}\n", "", heading.concat().trim_end());
    for (flag, value) in rows {
        let cells: Vec<String> = presets
            .iter()
            .map(|p| format!("{:<12}", value(p)))
            .collect();
        text += &format!("  {flag:<16}{}\n", cells.concat().trim_end());
    }
    text + "\n" + EXAMPLES
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        let n = thread_count(n).map_err(|e| TrainError::Settings(e.to_string()))?;
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| TrainError::Settings(format!("cannot start {n} threads: {e}")))?;
    }
    Ok(())
}

/// Most characters an evaluation sample may ask for: samples are read, not
/// stored.
const MAX_SAMPLE_LEN: usize = 100_000;

/// `--temperature` and `--sample-len`, checked as kinglet checks its own.
fn check_sampling(temperature: f32, sample_len: usize) -> Result<()> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(TrainError::Settings(format!(
            "--temperature must be a finite number >= 0 (got {temperature})"
        )));
    }
    if sample_len > MAX_SAMPLE_LEN {
        return Err(TrainError::Settings(format!(
            "--sample-len must be at most {MAX_SAMPLE_LEN} (got {sample_len})"
        )));
    }
    Ok(())
}

/// The cached TinyShakespeare, downloaded (and its sha256 checked) if absent.
/// What it did goes to stdout with the rest of the training log (when
/// `say`), so a failure leaves stderr with the one error line.
fn tinyshakespeare(say: bool) -> Result<PathBuf> {
    let url = std::env::var("KINGLET_TINYSHAKESPEARE_URL")
        .unwrap_or_else(|_| download::TINYSHAKESPEARE_URL.to_string());
    download::ensure_tinyshakespeare(&download::default_cache_dir(), &url, &mut |line| {
        if say {
            println!("{line}")
        }
    })
    .map_err(|e| TrainError::Download(e.to_string()))
}

/// The corpus to train on: `--data`, else the one the `--resume`
/// checkpoint records, else TinyShakespeare, fetched by one rank after
/// another so that ranks sharing a cache never write it at once.
fn read_corpus(
    data: Option<&Path>,
    resume: Option<&Checkpoint>,
    context: usize,
    ranks: &mut dyn Ranks,
) -> Result<Corpus> {
    let path = match (data, resume) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(checkpoint)) => agree(ranks, checkpoint.recorded_corpus())?,
        (None, None) => {
            let mut fetched = PathBuf::new();
            for turn in 0..ranks.size() {
                let mine = turn == ranks.rank();
                let result = if mine {
                    tinyshakespeare(ranks.is_root())
                } else {
                    Ok(PathBuf::new())
                };
                let path = agree(ranks, result)?;
                if mine {
                    fetched = path;
                }
            }
            fetched
        }
    };
    let corpus = agree(ranks, Corpus::load(&path, context))?;
    // Every rank must train on the same text.
    let mut root_sha = corpus.sha256.clone().into_bytes();
    ranks.broadcast_bytes(&mut root_sha);
    let same = if root_sha == corpus.sha256.as_bytes() {
        Ok(corpus)
    } else {
        Err(TrainError::Corpus(format!(
            "the corpus {} is not rank 0's (sha256 {}…, rank 0's {}…): \
             every rank must read the same text",
            path.display(),
            &corpus.sha256[..16],
            String::from_utf8_lossy(&root_sha[..16.min(root_sha.len())])
        )))
    };
    agree(ranks, same)
}

/// The `--resume` checkpoint: rank 0 reads it and sends it to the other
/// ranks, which need not see its file.
fn load_checkpoint(path: &Path, ranks: &mut dyn Ranks) -> Result<Checkpoint> {
    if ranks.size() == 1 {
        return Checkpoint::load(path);
    }
    let read = if ranks.is_root() {
        Checkpoint::load(path).map(|c| c.to_bytes())
    } else {
        Ok(Vec::new())
    };
    let mut bytes = agree(ranks, read)?;
    ranks.broadcast_bytes(&mut bytes);
    agree(ranks, Checkpoint::from_bytes(&bytes))
}

/// Refuses an `--out` that already holds a run, unless it is resumed or
/// `--force` replaces it.
fn check_out_is_free(a: &TrainArgs, metrics: &Path) -> Result<()> {
    if a.resume.is_some() || a.force {
        return Ok(());
    }
    let held: Vec<String> = [a.out.join("last.ckpt"), metrics.to_path_buf()]
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(TrainError::Settings(format!(
        "{} already holds a run ({}): pass --resume {} to continue it, \
         --force to start over, or another --out",
        a.out.display(),
        held.join(", "),
        a.out.join("last.ckpt").display()
    )))
}

/// The model, the optimization and the QAT settings the flags ask for, checked,
/// for `ranks` processes.
fn settings(a: &TrainArgs, ranks: usize) -> Result<(ModelConfig, TrainConfig, Option<Qat>)> {
    let Some(p) = preset(&a.preset) else {
        return Err(TrainError::Settings(format!(
            "unknown --preset {:?}: choose one of {}",
            a.preset,
            PRESET_NAMES.join(", ")
        )));
    };
    let (mut m, mut t) = (p.model, p.train);
    m.context = a.context.unwrap_or(m.context);
    m.dim = a.dim.unwrap_or(m.dim);
    m.n_layers = a.layers.unwrap_or(m.n_layers);
    m.n_heads = a.heads.unwrap_or(m.n_heads);
    m.n_kv_heads = a.kv_heads.unwrap_or(m.n_heads);
    m.hidden_dim = a.hidden.unwrap_or(m.hidden_dim);
    m.tied_classifier = a.tied.unwrap_or(m.tied_classifier);
    m.rope_theta = a.rope_theta.unwrap_or(m.rope_theta);
    m.norm_eps = a.norm_eps.unwrap_or(m.norm_eps);
    t.batch = a.batch.unwrap_or(t.batch);
    t.accum_steps = a.accum.unwrap_or(t.accum_steps);
    t.steps = a.steps.unwrap_or(t.steps);
    t.lr = a.lr.unwrap_or(t.lr);
    t.min_lr = a
        .min_lr
        .unwrap_or(if a.lr.is_some() && t.decay == Decay::Constant {
            t.lr
        } else {
            t.min_lr
        });
    t.warmup_steps = a.warmup.unwrap_or(t.warmup_steps);
    t.decay = match a.decay.as_deref() {
        None => t.decay,
        Some("constant") => Decay::Constant,
        Some("cosine") => Decay::Cosine,
        Some(other) => {
            return Err(TrainError::Settings(format!(
                "unknown --decay {other:?}: constant or cosine"
            )))
        }
    };
    t.beta1 = a.beta1.unwrap_or(t.beta1);
    t.beta2 = a.beta2.unwrap_or(t.beta2);
    t.eps = a.adam_eps.unwrap_or(t.eps);
    t.weight_decay = a.weight_decay.unwrap_or(t.weight_decay);
    t.decay_norms = a.decay_norms || t.decay_norms;
    t.grad_clip = a.grad_clip.unwrap_or(t.grad_clip);
    t.init_std = a.init_std.unwrap_or(t.init_std);
    t.seed = a.seed.unwrap_or(t.seed);
    // Shape errors before reading a large corpus.
    m.validate()?;
    t.validate()?;
    check_sampling(a.temperature, a.sample_len)?;
    let qat = match &a.qat {
        Some(dtype) => {
            let q = Qat {
                dtype: Qat::parse_dtype(dtype)?,
                start: a.qat_start,
                activations: a.qat_activations == "on",
            };
            q.check_model(&m)?;
            Some(q)
        }
        None => None,
    };
    let shards = shard_sequences(t.batch, m.context).len();
    check_rank_count(ranks, shards, t.batch, m.context)?;
    Ok((m, t, qat))
}

/// Whether the model the corpus gives fits `--max-vocab` and the memory
/// budget.
fn check_fits(a: &TrainArgs, m: &ModelConfig, t: &TrainConfig, qat: bool) -> Result<()> {
    if m.vocab_size > a.max_vocab {
        return Err(TrainError::Corpus(format!(
            "the corpus has {} distinct characters, more than --max-vocab {}: \
             each is a token (raise --max-vocab to train on it anyway)",
            grouped(m.vocab_size as u64),
            grouped(a.max_vocab as u64)
        )));
    }
    m.validate()?;
    check_training(&Budget::new(a.max_memory), m, t, a.eval_windows.max(1), qat)
}

/// Trains, alone or as one rank of an MPI job: rank 0 prints the log.
fn train(a: TrainArgs, ranks: &mut dyn Ranks) -> Result<()> {
    let root = ranks.is_root();
    let asked = settings(&a, ranks.size());
    let (mut m, t, qat) = agree(ranks, asked)?;
    let metrics = a
        .metrics
        .clone()
        .unwrap_or_else(|| a.out.join("metrics.jsonl"));
    let free = if root {
        check_out_is_free(&a, &metrics)
    } else {
        Ok(())
    };
    agree(ranks, free)?;
    agree(ranks, set_threads(a.threads))?;
    let resume = match &a.resume {
        Some(path) => Some((path.clone(), load_checkpoint(path, ranks)?)),
        None => None,
    };
    let checkpoint = resume.as_ref().map(|(_, c)| c);
    let corpus = read_corpus(a.data.as_deref(), checkpoint, m.context, ranks)?;
    m.vocab_size = corpus.tokenizer.len();
    // Every rank checks what it read.
    let fits = check_fits(&a, &m, &t, qat.is_some());
    agree(ranks, fits)?;
    let params = ParamLayout::new(&m).total;
    let say = |line: String| {
        if root {
            println!("{line}")
        }
    };
    say(format!(
        "model: {params} parameters (dim {}, {} layers, {} heads / {} kv, hidden {}, context {}, vocab {}); \
         corpus: {} train / {} val tokens",
        m.dim,
        m.n_layers,
        m.n_heads,
        m.n_kv_heads,
        m.hidden_dim,
        m.context,
        m.vocab_size,
        corpus.train.len(),
        corpus.val.len()
    ));
    if ranks.size() > 1 {
        let shards = shard_sequences(t.batch, m.context).len();
        say(format!(
            "ranks: {} MPI processes, each running {} of the {shards} shards of every micro-batch",
            ranks.size(),
            shards / ranks.size()
        ));
    }
    let options = RunOptions {
        model: m,
        train: t,
        corpus,
        out_dir: a.out.clone(),
        metrics,
        eval_every: a.eval_every,
        eval_windows: a.eval_windows.max(1),
        save_every: a.save_every,
        log_every: a.log_every,
        resume,
        sample_len: a.sample_len,
        temperature: a.temperature,
        progress: !a.quiet && std::io::stderr().is_terminal(),
        qat,
    };
    let s = run_with(&options, ranks)?;
    let val = s
        .val_loss
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "-".into());
    say(format!(
        "done: {} steps, train loss {:.4}, val loss {val}, {:.1} s, {:.0} tokens/s; checkpoint {}",
        s.steps,
        s.train_loss,
        s.elapsed_s,
        s.tokens_per_s,
        a.out.join("last.ckpt").display()
    ));
    Ok(())
}

/// Trains as a rank of the MPI job an MPI launcher started this process in,
/// else alone.
fn train_as_launched(a: TrainArgs) -> ExitCode {
    #[cfg(feature = "mpi")]
    if let Some(mut ranks) = kinglet_trainer::mpi_ranks::MpiRanks::from_launcher() {
        // Reported before MPI_Finalize, which waits for every rank: the
        // error line comes before mpirun's report of the exit statuses.
        return report(train(a, &mut ranks));
    }
    report(train(a, &mut Alone))
}

/// The exit status of `result`, after printing its error line (another
/// rank prints an [`TrainError::OtherRank`]).
fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(TrainError::OtherRank(_)) => ExitCode::FAILURE,
        Err(e) => {
            e.print();
            ExitCode::FAILURE
        }
    }
}

fn eval(
    checkpoint: &Path,
    data: Option<&Path>,
    batch: usize,
    threads: Option<usize>,
    max_memory: Option<u64>,
) -> Result<()> {
    if batch == 0 {
        return Err(TrainError::Settings("--batch must be at least 1".into()));
    }
    set_threads(threads)?;
    let c = Checkpoint::load(checkpoint)?;
    let recorded;
    let path = match data {
        Some(path) => path,
        None => {
            recorded = c.recorded_corpus()?;
            &recorded
        }
    };
    let bytes = std::fs::read(path)
        .map_err(|e| TrainError::Io(format!("cannot read corpus {}: {e}", path.display())))?;
    let corpus = Corpus::from_bytes(&bytes, Some(&c.tokenizer), c.model.context)
        .map_err(|e| e.context(format_args!("corpus {}", path.display())))?;
    if corpus.sha256 != c.corpus_sha256 {
        eprintln!(
            "note: {} is not the corpus the checkpoint was trained on (its sha256 differs)",
            path.display()
        );
    }
    let windows = corpus.val.len().saturating_sub(1) / c.model.context;
    check_evaluation(
        &Budget::new(max_memory),
        &c.model,
        batch.min(windows).max(1),
        c.qat.is_some(),
    )?;
    let layout = ParamLayout::new(&c.model);
    let loss = match &c.qat {
        Some(q) => whole_split_loss_qat(&layout, &c.params, &corpus.val, batch.max(1), q)?,
        None => whole_split_loss(&layout, &c.params, &corpus.val, batch.max(1)),
    };
    let score = Score {
        loss,
        windows: Windows::new(corpus.val.len(), c.model.context),
    };
    score
        .write_report(&mut std::io::stdout().lock())
        .map_err(|e| TrainError::Io(format!("cannot write the report: {e}")))
}

/// `--dtype` if given (warning when it is not what a QAT checkpoint was
/// trained for), else the checkpoint's QAT dtype, else f32.
fn export_dtype(c: &Checkpoint, asked: Option<&str>) -> Result<Dtype> {
    match (asked, &c.qat) {
        (Some(s), qat) => {
            let dtype = parse_dtype(s)?;
            if let Some(q) = qat.filter(|q| q.dtype != dtype) {
                eprintln!(
                    "warning: the checkpoint was trained for {} (--qat) but is exported as {}",
                    q.dtype.name(),
                    dtype.name()
                );
            }
            Ok(dtype)
        }
        (None, Some(q)) => {
            eprintln!(
                "exporting as {}, the dtype the checkpoint was trained for (--qat)",
                q.dtype.name()
            );
            Ok(q.dtype)
        }
        (None, None) => Ok(Dtype::F32),
    }
}

fn main() -> ExitCode {
    let cli = match kinglet_tools::cmd::parse_args::<Cli>("kinglet-train") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.command {
        None => return train_as_launched(cli.train),
        Some(Command::Eval {
            checkpoint,
            data,
            batch,
            threads,
            max_memory,
        }) => eval(&checkpoint, data.as_deref(), batch, threads, max_memory),
        Some(Command::Export {
            checkpoint,
            output,
            format,
            dtype,
        }) => Checkpoint::load(&checkpoint).and_then(|c| {
            let format = Format::for_output(&output, format)
                .map_err(|e| TrainError::Settings(format!("{e:#}")))?;
            let dtype = export_dtype(&c, dtype.as_deref())?;
            println!("{}", export(&c, &output, dtype, format)?);
            Ok(())
        }),
        Some(Command::CheckReference { dump }) => check_reference(&dump).and_then(|report| {
            for row in &report.rows {
                println!("{:<40} {:.3e}", row.quantity, row.worst_relative);
            }
            println!("worst: {:.3e} (tolerance {TOLERANCE:e})", report.worst());
            if report.passes() {
                Ok(())
            } else {
                Err(TrainError::Reference(format!(
                    "the trainer differs from the reference by {:.3e} > {TOLERANCE:e}",
                    report.worst()
                )))
            }
        }),
    };
    report(result)
}
