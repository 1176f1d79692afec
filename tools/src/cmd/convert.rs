//! `kinglet convert`: llama2.c checkpoint → .klt, or .klt → .klt in another
//! dtype (float or ggml-quantized). The output is written atomically.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kinglet::format::MAGIC;
use kinglet::{Dtype, ModelFile};

use super::{Status, WeightDtype};
use crate::import::llama2c;
use crate::io::{read_file, write_atomic};
use crate::model::{DtypePlan, OwnedModel};

const EXAMPLES: &str = "\
Examples:
  # Import a llama2.c checkpoint (version 0, 1, or 2 = int8) with its tokenizer.bin
  kinglet convert stories260K.bin --tokenizer tok512.bin -o stories260K.klt
  # Re-encode a .klt file; norm gains stay f32
  kinglet convert stories260K.klt --dtype f16 -o stories260K-f16.klt
  # Quantize to ggml Q8_0 blocks, keeping the embedding in f16
  kinglet convert model.klt --dtype q8_0 --embedding-dtype f16 -o model-q8.klt";

/// Import a llama2.c checkpoint, or re-encode a .klt file to another dtype.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The input, output and embedding dtype.
    #[command(flatten)]
    pub files: Files,
    /// Element type of the weight matrices; norm gains are always f32.
    /// Matrices whose rows are not whole blocks of 32 stay f16 under q8_0/q4_0 (with a note).
    #[arg(long, value_enum, default_value_t = WeightDtype::F32)]
    pub dtype: WeightDtype,
}

/// What `convert` and `quantize` share.
#[derive(Debug, clap::Args)]
pub struct Files {
    /// A llama2.c checkpoint (version 0 or 1 in f32, version 2 in int8) or a .klt file.
    pub input: PathBuf,
    /// Where to write the .klt file (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The llama2.c tokenizer.bin (required for llama2.c checkpoints).
    #[arg(long, value_name = "TOK.bin")]
    pub tokenizer: Option<PathBuf>,
    /// Element type of the token embedding and classifier, when it should
    /// differ from --dtype (small models lose the most there).
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub embedding_dtype: Option<WeightDtype>,
}

/// Builds the model in memory from the input file's bytes: a .klt file
/// (its checksums verified first) or a llama2.c checkpoint, which needs the
/// bytes of its `tokenizer.bin`.
pub fn load_model(input: &[u8], tokenizer: Option<&[u8]>) -> Result<OwnedModel> {
    if input.is_empty() {
        bail!("file is empty");
    }
    if input.starts_with(&MAGIC) {
        if tokenizer.is_some() {
            bail!("--tokenizer applies to llama2.c checkpoints only; a .klt file has its own");
        }
        let file = ModelFile::new_checked(input)?;
        file.verify()
            .context("the file is damaged (see `kinglet verify`)")?;
        return Ok(OwnedModel::from_klt(&file));
    }
    let ckpt = llama2c::parse_checkpoint(input)?;
    let tok = tokenizer.context(
        "a llama2.c checkpoint has no vocabulary: give its tokenizer.bin with --tokenizer",
    )?;
    let vocab = llama2c::parse_tokenizer(tok, ckpt.config.vocab_size).context("tokenizer")?;
    let mut metadata = vec![(
        "source".to_string(),
        format!("llama2.c checkpoint version {}", ckpt.version),
    )];
    metadata.push(("source.sha256".to_string(), crate::io::sha256_hex(input)));
    Ok(OwnedModel {
        config: ckpt.config,
        vocab,
        tensors: ckpt.tensors,
        metadata,
    })
}

/// Runs `kinglet convert`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    convert(args.files, args.dtype.into(), out)
}

/// Writes `files.input` as a .klt file with its matrices in `matrices`.
pub fn convert(files: Files, matrices: Dtype, out: &mut dyn Write) -> Result<Status> {
    let input = read_file(&files.input)?;
    let tokenizer = match &files.tokenizer {
        Some(p) => Some(read_file(p)?),
        None => None,
    };
    let model = load_model(&input, tokenizer.as_deref())
        .with_context(|| files.input.display().to_string())?;
    drop(input);
    let plan = DtypePlan {
        matrices,
        embedding: files.embedding_dtype.map(Dtype::from),
    };
    let bytes = write_atomic(&files.output, |w| model.write_klt(plan, w))?;
    for note in plan.notes(&model) {
        writeln!(out, "note: {note}")?;
    }
    writeln!(out, "{}", model.written(&files.output, plan, bytes))?;
    Ok(Status::Ok)
}
