//! `kinglet convert`: llama2.c checkpoint → .klt, or .klt → .klt in another
//! float dtype. The output is written atomically.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kinglet::format::MAGIC;
use kinglet::{Dtype, ModelFile};

use super::{grouped, FloatDtype, Status};
use crate::import::llama2c;
use crate::io::{read_file, write_atomic};
use crate::model::OwnedModel;

const EXAMPLES: &str = "\
Examples:
  # Import a llama2.c checkpoint (version 0 or 1) with its tokenizer.bin
  kinglet convert stories260K.bin --tokenizer tok512.bin -o stories260K.klt
  # Re-encode a .klt file; norm gains stay f32
  kinglet convert stories260K.klt --dtype f16 -o stories260K-f16.klt";

/// Import a llama2.c checkpoint, or re-encode a .klt file to another dtype.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// A llama2.c checkpoint (version 0 or 1, f32) or a .klt file.
    pub input: PathBuf,
    /// Where to write the .klt file (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The llama2.c tokenizer.bin (required for llama2.c checkpoints).
    #[arg(long, value_name = "TOK.bin")]
    pub tokenizer: Option<PathBuf>,
    /// Element type of the weight matrices; norm gains are always f32.
    #[arg(long, value_enum, default_value_t = FloatDtype::F32)]
    pub dtype: FloatDtype,
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
    metadata.push((
        "source.sha256".to_string(),
        super::checksum::sha256_hex(input),
    ));
    Ok(OwnedModel {
        config: ckpt.config,
        vocab,
        tensors: ckpt.tensors,
        metadata,
    })
}

/// Runs `kinglet convert`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    let input = read_file(&args.input)?;
    let tokenizer = match &args.tokenizer {
        Some(p) => Some(read_file(p)?),
        None => None,
    };
    let model = load_model(&input, tokenizer.as_deref())
        .with_context(|| args.input.display().to_string())?;
    drop(input);
    let dtype = Dtype::from(args.dtype);
    let bytes = write_atomic(&args.output, |w| model.write_klt(dtype, w))?;
    writeln!(
        out,
        "wrote {}: {} tensors, {} parameters, {} bytes, {} (norms f32)",
        args.output.display(),
        model.tensors.len(),
        grouped(model.parameter_count()),
        grouped(bytes),
        dtype.name()
    )?;
    Ok(Status::Ok)
}
