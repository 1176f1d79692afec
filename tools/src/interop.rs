//! Every model format in and out, in one place: `kinglet convert` and
//! `kinglet-train export` both write through [`save`], and `convert` reads
//! through [`load`], which tells the input format from the content: .klt,
//! GGUF, a llama2.c checkpoint, or a Hugging Face directory.

use std::path::Path;

use anyhow::{bail, Context, Result};
use kinglet::format::MAGIC as KLT_MAGIC;
use kinglet::ModelFile;

use crate::import::llama2c;
use crate::io::{read_file, sha256_hex, write_atomic};
use crate::model::EncodedModel;
use crate::{gguf, hf};

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// kinglet's model file.
    Klt,
    /// llama.cpp's GGUF, architecture llama.
    Gguf,
    /// A Hugging Face directory (config.json, model.safetensors, tokenizer.json).
    Hf,
}

impl Format {
    /// The lower-case name, as `--format` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Klt => "klt",
            Format::Gguf => "gguf",
            Format::Hf => "hf",
        }
    }

    /// The format `asked` for, or else the one `path`'s extension names.
    pub fn for_output(path: &Path, asked: Option<Format>) -> Result<Format> {
        if let Some(f) = asked {
            return Ok(f);
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("klt") => Ok(Format::Klt),
            Some("gguf") => Ok(Format::Gguf),
            _ if path.is_dir() => bail!(
                "{}: is a directory; give a file name ending in .klt or .gguf, \
                 or --format hf to write a Hugging Face directory there",
                path.display()
            ),
            _ => bail!(
                "{}: cannot tell the output format from the name: end it in .klt or .gguf, \
                 or give --format klt|gguf|hf",
                path.display()
            ),
        }
    }
}

/// What an input file is, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Klt,
    Gguf,
    /// Anything else is tried as a llama.c checkpoint.
    Llama2c,
}

impl InputKind {
    /// The kind of a file starting with `bytes`.
    pub fn of(bytes: &[u8]) -> InputKind {
        if bytes.starts_with(&KLT_MAGIC) {
            InputKind::Klt
        } else if bytes.starts_with(&gguf::MAGIC) {
            InputKind::Gguf
        } else {
            InputKind::Llama2c
        }
    }
}

/// Reads a model of any supported format from its bytes: a .klt file (its
/// checksums verified), a GGUF file, or a llama2.c checkpoint (which needs
/// the bytes of its `tokenizer.bin`). An imported model's metadata says
/// where it came from (`source`, named `file_name` when the file does not
/// say) and the input's SHA-256 — unless it is a kinglet export carrying
/// its original metadata, which is kept as it was.
pub fn load_bytes(input: &[u8], tokenizer: Option<&[u8]>, file_name: &str) -> Result<EncodedModel> {
    if input.is_empty() {
        bail!("file is empty");
    }
    let kind = InputKind::of(input);
    if tokenizer.is_some() && kind != InputKind::Llama2c {
        bail!("--tokenizer applies to llama2.c checkpoints only; this file has its own vocabulary");
    }
    let (mut model, what) = match kind {
        InputKind::Klt => {
            let file = ModelFile::new_checked(input)?;
            file.verify()
                .context("the file is damaged (see `kinglet verify`)")?;
            return Ok(EncodedModel::from_klt(&file));
        }
        InputKind::Gguf => {
            let model = gguf::read::import(input)?;
            if !model.metadata.is_empty() {
                return Ok(model);
            }
            (model, format!("GGUF file {file_name}"))
        }
        InputKind::Llama2c => {
            let Some(tok) = tokenizer else {
                llama2c::parse_checkpoint(input)?;
                bail!("a llama2.c checkpoint has no vocabulary: give its tokenizer.bin with --tokenizer");
            };
            let model = llama2c::import(input, tok)?.encode(kinglet::Dtype::F32)?;
            (model, String::new())
        }
    };
    if !model.metadata.iter().any(|(k, _)| k == "source") {
        model.metadata.push(("source".into(), what));
    }
    model
        .metadata
        .push(("source.sha256".into(), sha256_hex(input)));
    Ok(model)
}

/// Reads the model at `path`: a Hugging Face directory, or a file (see
/// [`load_bytes`]).
pub fn load(path: &Path, tokenizer: Option<&Path>) -> Result<EncodedModel> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if path.is_dir() {
        if !hf::read::is_model_dir(path) {
            bail!(
                "{}: is a directory without config.json, not a Hugging Face model",
                path.display()
            );
        }
        if tokenizer.is_some() {
            bail!("--tokenizer applies to llama2.c checkpoints only; this directory has tokenizer.json");
        }
        let mut model = hf::read::import_dir(path).with_context(|| path.display().to_string())?;
        if model.metadata.is_empty() {
            model
                .metadata
                .push(("source".into(), format!("Hugging Face directory {name}")));
        }
        return Ok(model);
    }
    let input = read_file(path)?;
    let tokenizer = tokenizer.map(read_file).transpose()?;
    load_bytes(&input, tokenizer.as_deref(), &name).with_context(|| path.display().to_string())
}

/// Writes `model` to `path` in `format`, atomically. Returns the bytes written.
pub fn save(model: &EncodedModel, path: &Path, format: Format) -> Result<u64> {
    match format {
        Format::Klt => write_atomic(path, |w| model.write_klt(w)),
        Format::Gguf => {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kinglet model".into());
            write_atomic(path, |w| gguf::write::export(model, &name, w))
        }
        Format::Hf => hf::write::export(model, path),
    }
    .with_context(|| format!("cannot write {} as {}", path.display(), format.name()))
}
