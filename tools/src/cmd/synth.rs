//! `kinglet synth`: write a model with random weights and a synthetic
//! vocabulary, in the shape of a known model — for benchmarks and tests.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kinglet::Dtype;

use super::{Status, WeightDtype};
use crate::interop::Format;
use crate::io::write_atomic;
use crate::memory::{self, Budget};
use crate::synth::{preset, synth_model};

const EXAMPLES: &str = "\
Shapes: 260k (dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512, seq 512),
        15m  (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000, seq 256),
        110m (dim 768, hidden 2048, 12 layers, 12 heads, vocab 32000, seq 1024).
Any field can be overridden (--dim, --n-layers, ...) for a custom shape.
Weights are N(0, 0.02^2) from --seed; norm gains are 1.

Examples:
  kinglet synth --shape 15m -o synth15m.klt
  kinglet synth --shape 110m --dtype bf16 --seed 3 -o synth110m-bf16.klt
  kinglet synth --shape 260k --n-layers 2 --vocab-size 300 --untied -o tiny.klt";

/// Write a model with random weights and a synthetic vocabulary.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Base shape: 260k, 15m or 110m.
    #[arg(long, default_value = "260k", value_parser = ["260k", "15m", "110m"])]
    pub shape: String,
    /// Element type of the weight matrices; norm gains are always f32.
    #[arg(long, value_enum, default_value_t = WeightDtype::F32)]
    pub dtype: WeightDtype,
    /// Seed of the weight generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the .klt file (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Override the shape's dim.
    #[arg(long)]
    pub dim: Option<u32>,
    /// Override the shape's hidden_dim.
    #[arg(long)]
    pub hidden_dim: Option<u32>,
    /// Override the shape's n_layers.
    #[arg(long)]
    pub n_layers: Option<u32>,
    /// Override the shape's n_heads.
    #[arg(long)]
    pub n_heads: Option<u32>,
    /// Override the shape's n_kv_heads.
    #[arg(long)]
    pub n_kv_heads: Option<u32>,
    /// Override the shape's vocab_size.
    #[arg(long)]
    pub vocab_size: Option<u32>,
    /// Override the shape's max_seq_len.
    #[arg(long)]
    pub max_seq_len: Option<u32>,
    /// Give the model its own classifier instead of tying it to the embedding.
    #[arg(long)]
    pub untied: bool,
    /// Memory the weights may take while they are written, e.g. 512M or 4G
    /// (default: the memory available when the command starts).
    #[arg(long, value_name = "SIZE", value_parser = memory::parse_size)]
    pub max_memory: Option<u64>,
}

/// Runs `kinglet synth`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    let mut c = preset(&args.shape).with_context(|| format!("unknown shape {}", args.shape))?;
    c.dim = args.dim.unwrap_or(c.dim);
    c.hidden_dim = args.hidden_dim.unwrap_or(c.hidden_dim);
    c.n_layers = args.n_layers.unwrap_or(c.n_layers);
    c.n_heads = args.n_heads.unwrap_or(c.n_heads);
    c.n_kv_heads = args.n_kv_heads.unwrap_or(c.n_kv_heads);
    c.vocab_size = args.vocab_size.unwrap_or(c.vocab_size);
    c.max_seq_len = args.max_seq_len.unwrap_or(c.max_seq_len);
    c.tied_classifier = !args.untied;
    c.validate()?;
    // The f32 weights, and their encoding beside them while it is written.
    let elements =
        kinglet::canonical_tensors(&c).try_fold(0u64, |n, t| n.checked_add(t.elements()));
    Budget::new(args.max_memory).check(
        elements.and_then(|n| n.checked_mul(8)),
        &format!(
            "writing {} weights",
            super::grouped(elements.unwrap_or(u64::MAX))
        ),
        "a smaller --dim, --hidden-dim, --n-layers or --vocab-size lowers it",
    )?;
    let model = synth_model(&c, args.seed)?.encode(Dtype::from(args.dtype))?;
    let bytes = write_atomic(&args.output, |w| model.write_klt(w))?;
    writeln!(out, "{}", model.written(&args.output, Format::Klt, bytes))?;
    Ok(Status::Ok)
}
