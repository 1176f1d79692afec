//! `kinglet checksum`: the SHA-256 of a whole file in `sha256sum` format,
//! followed by each tensor's CRC32C as `#` comment lines (which
//! `sha256sum -c` skips, so the output is a valid manifest); and
//! `--check MANIFEST`, which verifies such a manifest like `sha256sum -c`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kinglet::checksum::crc32c;
use kinglet::printable::Printable;
use sha2::{Digest, Sha256};

use super::Status;
use crate::io::{describe_io, hex, open_model, read_file, sha256_hex};

const EXAMPLES: &str = "\
The first line is `<sha256>  <path>`, as sha256sum prints it; the tensor
lines start with `#`, so the output is itself a manifest for --check (or for
`sha256sum -c`).

Examples:
  kinglet checksum stories260K.klt
  kinglet checksum stories260K.klt > stories260K.sha256
  kinglet checksum --check stories260K.sha256";

/// Print a file's SHA-256 and its tensors' CRC32C, or check a manifest.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The .klt file.
    #[arg(required_unless_present = "check", conflicts_with = "check")]
    pub file: Option<PathBuf>,
    /// Verify the `<sha256>  <path>` lines of MANIFEST (like `sha256sum -c`).
    #[arg(long, value_name = "MANIFEST")]
    pub check: Option<PathBuf>,
}

/// Lower-case hex SHA-256 of the file at `path`, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// Runs `kinglet checksum`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    match (args.check, args.file) {
        (Some(manifest), _) => check(&manifest, out),
        (None, Some(file)) => list(&file, out),
        (None, None) => anyhow::bail!("give a FILE, or --check MANIFEST"),
    }
}

/// Prints the file's SHA-256 and each tensor's CRC32C (computed; a value
/// that disagrees with the stored one is flagged and the status is Failed).
fn list(path: &Path, out: &mut dyn Write) -> Result<Status> {
    let model = open_model(path)?;
    writeln!(out, "{}  {}", sha256_hex(model.as_bytes()), path.display())?;
    let width = model.tensors().map(|t| t.name.len()).max().unwrap_or(0);
    writeln!(
        out,
        "# {:width$}  {:5}  {:>12}  crc32c",
        "tensor", "dtype", "shape"
    )?;
    let mut status = Status::Ok;
    for t in model.tensors() {
        let shape = if t.ndim == 1 {
            t.shape[1].to_string()
        } else {
            format!("{}x{}", t.shape[0], t.shape[1])
        };
        let computed = crc32c(t.data);
        let flag = if computed == t.crc32c {
            String::new()
        } else {
            status = Status::Failed;
            format!("  MISMATCH: the directory records {:08x}", t.crc32c)
        };
        writeln!(
            out,
            "# {:width$}  {:5}  {:>12}  {computed:08x}{flag}",
            t.name,
            t.dtype.name(),
            shape
        )?;
    }
    Ok(status)
}

/// One parsed manifest line: `<64 hex>  <path>` (or `<hex> *<path>`).
fn parse_line(line: &str) -> Option<(&str, &str)> {
    let hash = line.get(..64)?;
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let rest = line.get(64..)?;
    let path = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))?;
    (!path.is_empty()).then_some((hash, path))
}

/// Verifies every `<sha256>  <path>` line; `#` lines and blank lines are
/// skipped, as `sha256sum -c` does. Paths are relative to the current
/// directory, as with `sha256sum -c`.
fn check(manifest: &Path, out: &mut dyn Write) -> Result<Status> {
    let bytes = read_file(manifest)?;
    let text = std::str::from_utf8(&bytes)
        .ok()
        .with_context(|| format!("{}: not a text file", manifest.display()))?;
    let mut status = Status::Ok;
    let mut checked = 0usize;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((want, path)) = parse_line(line) else {
            writeln!(
                out,
                "{}:{}: improperly formatted checksum line",
                manifest.display(),
                n + 1
            )?;
            status = Status::Failed;
            continue;
        };
        checked += 1;
        // The manifest names the files: shown with control characters escaped.
        let shown = Printable(path);
        match sha256_file(Path::new(path)) {
            Ok(got) if got.eq_ignore_ascii_case(want) => writeln!(out, "{shown}: OK")?,
            Ok(_) => {
                writeln!(out, "{shown}: FAILED")?;
                status = Status::Failed;
            }
            Err(e) => {
                let why = describe_io(Path::new(path), &e).to_string();
                let why = why.strip_prefix(&format!("{path}: ")).unwrap_or(&why);
                writeln!(out, "{shown}: FAILED open or read ({})", Printable(why))?;
                status = Status::Failed;
            }
        }
    }
    if checked == 0 {
        anyhow::bail!(
            "{}: no properly formatted checksum lines found",
            manifest.display()
        );
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_sha256sum_lines() {
        let h = "a".repeat(64);
        assert_eq!(
            parse_line(&format!("{h}  some file.klt")),
            Some((h.as_str(), "some file.klt"))
        );
        assert_eq!(
            parse_line(&format!("{h} *bin.klt")),
            Some((h.as_str(), "bin.klt"))
        );
        assert_eq!(parse_line(&format!("{h} x")), None);
        assert_eq!(parse_line(&format!("{}  x", "g".repeat(64))), None);
        assert_eq!(parse_line("short  x"), None);
        assert_eq!(parse_line(&format!("{h}  ")), None);
    }
}
