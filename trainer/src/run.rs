//! The training command: the step loop with progress bar, periodic
//! evaluation and samples, JSON Lines metrics, and checkpoints.

use crate::bail;
use crate::checkpoint::{temp_path, Checkpoint};
use crate::config::{ModelConfig, TrainConfig};
use crate::data::Corpus;
use crate::error::{Result, TrainError};
use crate::eval::{fixed_val_loss, fixed_val_loss_qat, sample};
use crate::pause::{self, Point};
use crate::plot::{self, LossPoint};
use crate::qat::Qat;
use crate::ranks::{agree, Alone, Ranks};
use crate::rng::Rng;
use crate::trainer::Trainer;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything the training command was asked to do.
pub struct RunOptions {
    /// Model shape (vocab size from the corpus).
    pub model: ModelConfig,
    /// Optimization settings; `train.steps` is the step to stop at.
    pub train: TrainConfig,
    /// The tokenized corpus.
    pub corpus: Corpus,
    /// Receives `last.ckpt` (and `metrics.jsonl` by default).
    pub out_dir: PathBuf,
    /// JSON Lines metrics file.
    pub metrics: PathBuf,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Validation windows per evaluation.
    pub eval_windows: usize,
    /// Checkpoint every this many steps (0 = only at the end).
    pub save_every: u64,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
    /// Continue from this checkpoint, read from this path.
    pub resume: Option<(PathBuf, Checkpoint)>,
    /// Characters in each evaluation sample (0 = none).
    pub sample_len: usize,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// Quantization-aware training; `None` keeps a resumed run's setting.
    pub qat: Option<Qat>,
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Steps taken in total (including before a resume).
    pub steps: u64,
    /// Training loss of the last step.
    pub train_loss: f64,
    /// Validation loss at the end.
    pub val_loss: Option<f32>,
    /// Wall time of this process's steps and evaluations.
    pub elapsed_s: f64,
    /// Training tokens per second over this process's steps.
    pub tokens_per_s: f64,
}

fn open_trainer(o: &RunOptions, say_notes: bool) -> Result<Trainer> {
    let Some((path, c)) = &o.resume else {
        let mut t = Trainer::for_corpus(o.model, o.train, &o.corpus)?;
        t.set_qat(o.qat)?;
        return Ok(t);
    };
    let c = c.clone();
    if c.model != o.model {
        bail!(
            ResumeMismatch,
            "checkpoint {} is from another config: {} \
             (pass the same --preset and shape flags as the original run)",
            path.display(),
            config_difference(&c.model, &o.model)
        );
    }
    if c.tokenizer != o.corpus.tokenizer {
        bail!(
            ResumeMismatch,
            "checkpoint {} was trained on a corpus with other characters",
            path.display()
        );
    }
    if c.corpus_sha256 != o.corpus.sha256 && say_notes {
        eprintln!("note: the corpus differs from the one the checkpoint was trained on");
    }
    let qat = match (c.qat, o.qat) {
        (Some(had), Some(asked)) if had != asked => bail!(
            ResumeMismatch,
            "checkpoint {} was trained with {had:?}, this run asks for {asked:?}",
            path.display()
        ),
        (had, asked) => asked.or(had),
    };
    let mut t = Trainer::from_checkpoint(c, o.train)?;
    t.set_qat(qat)?;
    // From here on the run trains on this corpus: record it.
    t.corpus_sha256 = o.corpus.sha256.clone();
    t.corpus_path = o.corpus.path.clone();
    Ok(t)
}

/// The fields where `held` (a checkpoint's) and `asked` (this run's)
/// differ: `dim 16 (this run: 32), ...`.
fn config_difference(held: &ModelConfig, asked: &ModelConfig) -> String {
    let fields = |m: &ModelConfig| {
        [
            ("vocabulary", m.vocab_size.to_string()),
            ("--context", m.context.to_string()),
            ("--dim", m.dim.to_string()),
            ("--layers", m.n_layers.to_string()),
            ("--heads", m.n_heads.to_string()),
            ("--kv-heads", m.n_kv_heads.to_string()),
            ("--hidden", m.hidden_dim.to_string()),
            ("--tied", m.tied_classifier.to_string()),
            ("--rope-theta", m.rope_theta.to_string()),
            ("--norm-eps", m.norm_eps.to_string()),
        ]
    };
    let differences: Vec<String> = fields(held)
        .into_iter()
        .zip(fields(asked))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, a), (_, b))| format!("{name} {a} (this run: {b})"))
        .collect();
    format!("it holds {}", differences.join(", "))
}

/// Paths a run is about to create, removed again if it fails before it
/// saves a checkpoint: a failed run leaves nothing behind.
struct NewPaths {
    /// Files that do not exist yet.
    files: Vec<PathBuf>,
    /// Directories that do not exist yet, deepest first.
    dirs: Vec<PathBuf>,
}

impl NewPaths {
    fn before(out_dir: &Path, files: [PathBuf; 4]) -> NewPaths {
        NewPaths {
            files: files.into_iter().filter(|f| !f.exists()).collect(),
            dirs: out_dir
                .ancestors()
                .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
                .map(Path::to_path_buf)
                .collect(),
        }
    }

    /// Removes them; a directory only when it is empty (nothing of
    /// anyone else's is touched).
    fn remove(&self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Trains until `train.steps`, writing metrics and checkpoints as it goes.
/// A run that fails before its first checkpoint removes the files and
/// directories it created.
pub fn run(o: &RunOptions) -> Result<RunSummary> {
    run_with(o, &mut Alone)
}

/// [`run`] as one of `ranks`: each runs its share of every step, rank 0
/// alone evaluates and writes the files and the log.
pub fn run_with(o: &RunOptions, ranks: &mut dyn Ranks) -> Result<RunSummary> {
    let opened = open_trainer(o, ranks.is_root());
    let mut trainer = agree(ranks, opened)?;
    let spread = trainer.spread_over(ranks);
    agree(ranks, spread)?;
    let ckpt_path = o.out_dir.join("last.ckpt");
    let new = NewPaths::before(
        &o.out_dir,
        [
            o.metrics.clone(),
            o.out_dir.join("loss.svg"),
            temp_path(&ckpt_path),
            ckpt_path,
        ],
    );
    let mut saved = None;
    let result = train_and_save(o, &mut trainer, &mut saved, ranks);
    // Only rank 0 creates files.
    if result.is_err() && saved.is_none() && ranks.is_root() {
        new.remove();
    }
    result
}

/// [`run`]'s work; `last_saved` is the step of the last checkpoint saved.
fn train_and_save(
    o: &RunOptions,
    trainer: &mut Trainer,
    last_saved: &mut Option<u64>,
    ranks: &mut dyn Ranks,
) -> Result<RunSummary> {
    let root = ranks.is_root();
    let ckpt_path = o.out_dir.join("last.ckpt");
    let files = if root {
        open_files(o, &ckpt_path).map(Some)
    } else {
        Ok(None)
    };
    let mut metrics = agree(ranks, files)?;

    let total = o.train.steps;
    let bar = if o.progress && root {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.step);
    // The training log is the command's output: stdout, so that stderr
    // holds only the progress bar (on a terminal) and errors.
    let say = |line: String| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    let prompt: Vec<u32> = trainer.tokenizer.encode("\n").unwrap_or_default();
    let start = Instant::now();
    let (mut tokens_done, mut last_loss) = (0usize, f64::NAN);
    while trainer.step < total {
        let stats = match trainer.step_with(&o.corpus.train, ranks) {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                let kept = match *last_saved {
                    Some(s) => format!(
                        "; the last good checkpoint (step {s}) is kept at {}",
                        ckpt_path.display()
                    ),
                    None if ckpt_path.exists() => {
                        format!("; the earlier checkpoint {} is kept", ckpt_path.display())
                    }
                    None => "; no checkpoint was written".into(),
                };
                // Every rank meets a step's error at the same step.
                return agree(ranks, Err(e.map_message(|m| format!("{m}{kept}"))));
            }
        };
        pause::at(Point::AfterStep);
        tokens_done += trainer.tokens_per_step();
        last_loss = stats.loss;
        let elapsed = start.elapsed().as_secs_f64();
        let tokens_per_s = tokens_done as f64 / elapsed.max(1e-9);
        let s = trainer.step;
        bar.set_position(s);
        bar.set_message(format!(
            "loss {:.4} | {:.0} tok/s",
            stats.loss, tokens_per_s
        ));

        // The rest is rank 0's: evaluations, the log, the files.
        let Some(metrics) = &mut metrics else {
            continue;
        };
        let evaluate = s == total || (o.eval_every > 0 && s.is_multiple_of(o.eval_every));
        let mut val_loss = None;
        if evaluate {
            let v = match &trainer.qat {
                Some(q) => fixed_val_loss_qat(
                    &trainer.layout,
                    &trainer.params,
                    &o.corpus.val,
                    o.eval_windows,
                    o.train.batch,
                    q,
                )
                .map_err(|e| ranks.lone_failure(e))?,
                None => fixed_val_loss(
                    &trainer.layout,
                    &trainer.params,
                    &o.corpus.val,
                    o.eval_windows,
                    o.train.batch,
                ),
            };
            trainer.val_loss = Some(v as f32);
            val_loss = Some(v);
            say(format!(
                "step {s}: train loss {:.4}, val loss {v:.4}",
                stats.loss
            ));
            if o.sample_len > 0 {
                let mut rng = Rng::new(o.train.seed.wrapping_add(s));
                let ids = sample(
                    &trainer.layout,
                    &trainer.params,
                    &trainer.tokenizer,
                    &prompt,
                    o.sample_len,
                    o.temperature,
                    &mut rng,
                )?;
                say(format!(
                    "sample: {}",
                    trainer.tokenizer.decode(&ids).replace('\n', "\n        ")
                ));
            }
        }
        if evaluate || (o.log_every > 0 && s.is_multiple_of(o.log_every)) {
            let mut line = serde_json::json!({
                "step": s,
                "train_loss": stats.loss,
                "lr": stats.lr,
                "tokens_per_s": tokens_per_s,
                "elapsed_s": elapsed,
            });
            if let Some(v) = val_loss {
                line["val_loss"] = serde_json::json!(v);
            }
            writeln!(metrics, "{line}").map_err(|e| {
                ranks.lone_failure(TrainError::Io(format!(
                    "cannot write {}: {e}",
                    o.metrics.display()
                )))
            })?;
        }
        if s == total || (o.save_every > 0 && s.is_multiple_of(o.save_every)) {
            trainer
                .checkpoint()
                .save(&ckpt_path)
                .map_err(|e| ranks.lone_failure(e))?;
            *last_saved = Some(s);
        }
    }
    bar.finish();
    if !bar.is_hidden() {
        // The bar's line has no newline of its own; the summary needs one.
        eprintln!();
    }
    if metrics.take().is_some() {
        let svg = o.out_dir.join("loss.svg");
        loss_points(&o.metrics)
            .and_then(|points| plot::write_loss_svg(&svg, &points, "kinglet-train: loss"))
            .map_err(|e| ranks.lone_failure(e))?;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(RunSummary {
        steps: trainer.step,
        train_loss: last_loss,
        val_loss: trainer.val_loss,
        elapsed_s,
        tokens_per_s: tokens_done as f64 / elapsed_s.max(1e-9),
    })
}

/// Rank 0's files: the output directory and the metrics file, opened for
/// appending when resuming.
fn open_files(o: &RunOptions, ckpt_path: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(&o.out_dir)
        .map_err(|e| TrainError::Io(format!("cannot create {}: {e}", o.out_dir.display())))?;
    // A write killed half-way leaves its temporary file; nothing reads it
    // (the next save would overwrite it), so tidy it away.
    let _ = std::fs::remove_file(temp_path(ckpt_path));
    std::fs::OpenOptions::new()
        .create(true)
        .append(o.resume.is_some())
        .write(true)
        .truncate(o.resume.is_none())
        .open(&o.metrics)
        .map_err(|e| {
            TrainError::Io(format!(
                "cannot open metrics file {}: {e}",
                o.metrics.display()
            ))
        })
}

/// The loss curve of every step logged in the metrics file, including those
/// of earlier runs a resumed run appended to.
fn loss_points(metrics: &std::path::Path) -> Result<Vec<LossPoint>> {
    let text = std::fs::read_to_string(metrics)
        .map_err(|e| TrainError::Io(format!("cannot read {}: {e}", metrics.display())))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            Some(LossPoint {
                step: v["step"].as_u64()?,
                train_loss: v["train_loss"].as_f64()? as f32,
                val_loss: v["val_loss"].as_f64().map(|x| x as f32),
            })
        })
        .collect())
}
