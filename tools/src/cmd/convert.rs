//! `kinglet convert`: any supported model format to any other — .klt,
//! GGUF, Hugging Face directories and llama2.c checkpoints in; .klt, GGUF
//! and Hugging Face out — optionally re-encoding the weights. The input
//! format is told from the content, the output format from `--format` or
//! the file name. The output is written atomically.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use kinglet::Dtype;

use super::{Status, WeightDtype};
use crate::interop::{load, save, Format};
use crate::model::DtypePlan;

const EXAMPLES: &str = "\
Examples:
  # Import a llama2.c checkpoint (version 0, 1, or 2 = int8) with its tokenizer.bin
  kinglet convert stories260K.bin --tokenizer tok512.bin -o stories260K.klt
  # Re-encode a .klt file; norm gains stay f32
  kinglet convert stories260K.klt --dtype f16 -o stories260K-f16.klt
  # Quantize to ggml Q8_0 blocks, keeping the embedding in f16
  kinglet convert model.klt --dtype q8_0 --embedding-dtype f16 -o model-q8.klt
  # Run a model in llama.cpp: export it as GGUF (the blocks are copied as they are)
  kinglet convert model.klt -o model.gguf
  # Run a GGUF model with kinglet (F32, F16, BF16, Q8_0 and Q4_0 tensors)
  kinglet convert model.gguf -o model.klt
  # Load a model in transformers: write a Hugging Face directory, and back
  kinglet convert model.klt --format hf -o model-hf/
  kinglet convert model-hf/ -o model.klt";

/// Convert a model between formats (.klt, GGUF, Hugging Face, llama2.c), or re-encode it.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The input, output and embedding dtype.
    #[command(flatten)]
    pub files: Files,
    /// Element type of the weight matrices (default: each tensor keeps its
    /// own); norm gains are always f32. Matrices whose rows are not whole
    /// blocks of 32 stay f16 under q8_0/q4_0 (with a note).
    #[arg(long, value_enum)]
    pub dtype: Option<WeightDtype>,
}

/// What `convert` and `quantize` share.
#[derive(Debug, clap::Args)]
pub struct Files {
    /// The model: a .klt file, a GGUF file (architecture llama), a Hugging
    /// Face directory (config.json, *.safetensors, tokenizer.json), or a
    /// llama2.c checkpoint (version 0 or 1 in f32, version 2 in int8).
    pub input: PathBuf,
    /// Where to write the model (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format (default: from the output's extension, .klt or .gguf);
    /// hf writes a directory.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The llama2.c tokenizer.bin (required for llama2.c checkpoints).
    #[arg(long, value_name = "TOK.bin")]
    pub tokenizer: Option<PathBuf>,
    /// Element type of the token embedding and classifier, when it should
    /// differ from --dtype (small models lose the most there).
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub embedding_dtype: Option<WeightDtype>,
}

/// Runs `kinglet convert`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    convert(args.files, args.dtype.map(Dtype::from), out)
}

/// Writes `files.input` in the output format, with its matrices re-encoded
/// in `matrices` when given (otherwise each tensor keeps its bytes).
pub fn convert(files: Files, matrices: Option<Dtype>, out: &mut dyn Write) -> Result<Status> {
    let format = Format::for_output(&files.output, files.format)?;
    let embedding = files.embedding_dtype.map(Dtype::from);
    let plan = match (matrices, embedding) {
        (Some(matrices), embedding) => Some(DtypePlan {
            matrices,
            embedding,
        }),
        (None, Some(_)) => {
            bail!("--embedding-dtype needs --dtype (the dtype of the other matrices)")
        }
        (None, None) => None,
    };
    let mut model = load(&files.input, files.tokenizer.as_deref())?;
    if let Some(plan) = plan {
        for note in plan.notes(&model) {
            writeln!(out, "note: {note}")?;
        }
        model = model.recode(plan)?;
    }
    let bytes = save(&model, &files.output, format)?;
    writeln!(out, "{}", model.written(&files.output, format, bytes))?;
    Ok(Status::Ok)
}
