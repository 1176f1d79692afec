//! `kinglet verify`: open a .klt file with every layout check, then read
//! every byte and check each tensor's CRC32C, that its values are finite,
//! and all padding.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use kinglet::{Error, ModelFile};

use super::Status;
use crate::io::open_model;

const EXAMPLES: &str = "\
Prints OK and exits 0, or prints one line per problem and exits 1.

Examples:
  kinglet verify stories260K.klt
  kinglet verify model.klt || echo damaged";

/// Check a .klt file's layout and every tensor checksum.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The .klt file.
    pub file: PathBuf,
}

/// The problems [`ModelFile::verify_each`] finds, one readable line each,
/// starting with the tensor's name where the problem has one.
pub fn problems<T: AsRef<[u8]>>(file: &ModelFile<T>) -> Vec<String> {
    let mut lines = Vec::new();
    file.verify_each(|e| lines.push(describe(file, &e)));
    lines
}

/// `name: error` for errors about one tensor, else the error alone.
pub fn describe<T: AsRef<[u8]>>(file: &ModelFile<T>, e: &Error) -> String {
    let index = match *e {
        Error::TensorChecksum { index, .. }
        | Error::NonFiniteWeight { index, .. }
        | Error::TensorName { index }
        | Error::TensorDtype { index, .. }
        | Error::TensorShape { index, .. }
        | Error::TensorPlacement { index, .. }
        | Error::UnsupportedDtype { index } => Some(index),
        Error::NonZeroPadding { offset } => {
            file.tensors().find(|t| t.offset >= offset).map(|t| t.index)
        }
        _ => None,
    };
    match index.and_then(|i| file.tensor(i)) {
        Some(t) if matches!(e, Error::NonZeroPadding { .. }) => {
            format!("padding before {}: {e}", t.name)
        }
        Some(t) => format!("{}: {e}", t.name),
        None => e.to_string(),
    }
}

/// Runs `kinglet verify`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    let file = open_model(&args.file)?;
    let lines = problems(&file);
    if lines.is_empty() {
        writeln!(out, "OK")?;
        return Ok(Status::Ok);
    }
    for line in &lines {
        writeln!(out, "{}: {line}", args.file.display())?;
    }
    Ok(Status::Failed)
}
