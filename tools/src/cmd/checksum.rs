//! `kinglet checksum`: the SHA-256 of a whole file in `sha256sum` format,
//! followed by each tensor's CRC32C as `#` comment lines (which
//! `sha256sum -c` skips, so the output is a valid manifest); and
//! `--check MANIFEST`, which verifies such a manifest like `sha256sum -c`
//! and names the damaged tensors of a file that fails.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kinglet::checksum::crc32c;
use kinglet::printable::Printable;
use sha2::{Digest, Sha256};

use super::{verify, Status};
use crate::io::{describe_io, hex, open_model, read_file, sha256_hex};

const EXAMPLES: &str = "\
The first line is `<sha256>  <path>`, as sha256sum prints it; the tensor
lines start with `#`, so the output is itself a manifest for --check (or for
`sha256sum -c`). --check prints `<path>: OK` or `<path>: FAILED`, and then,
for a FAILED file, one line per damaged or changed tensor.

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

/// One `<sha256>  <path>` line of a manifest and the tensor lines that
/// follow it (`# name dtype shape crc32c`, as [`list`] writes them).
struct Entry<'a> {
    hash: &'a str,
    path: &'a str,
    tensors: Vec<(&'a str, u32)>,
}

/// A manifest line: an entry, or the number of a line that is neither an
/// entry, a comment nor blank.
enum Line<'a> {
    Entry(Entry<'a>),
    Malformed(usize),
}

/// A `# name dtype shape crc32c` line's name and CRC (the heading line and
/// other comments give `None`).
fn parse_tensor_line(line: &str) -> Option<(&str, u32)> {
    let fields: Vec<&str> = line.strip_prefix('#')?.split_whitespace().collect();
    let [name, _dtype, _shape, crc, ..] = fields[..] else {
        return None;
    };
    (crc.len() == 8)
        .then(|| u32::from_str_radix(crc, 16).ok())
        .flatten()
        .map(|crc| (name, crc))
}

fn parse_manifest(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if let (Some(tensor), Some(Line::Entry(entry))) =
                (parse_tensor_line(line), lines.last_mut())
            {
                entry.tensors.push(tensor);
            }
            continue;
        }
        lines.push(match parse_line(line) {
            Some((hash, path)) => Line::Entry(Entry {
                hash,
                path,
                tensors: Vec::new(),
            }),
            None => Line::Malformed(n + 1),
        });
    }
    lines
}

/// What is wrong with a file whose SHA-256 does not match, as `verify`
/// says it: its damaged tensors by their own checksums, else the tensors
/// whose CRC32C differs from the manifest's, else the header.
fn damage(entry: &Entry<'_>) -> Vec<String> {
    let model = match open_model(Path::new(entry.path)) {
        Ok(model) => model,
        Err(e) => {
            let why = format!("{e:#}");
            let prefix = format!("{}: ", entry.path);
            return vec![why.strip_prefix(&prefix).unwrap_or(&why).to_string()];
        }
    };
    let problems = verify::problems(&model);
    if !problems.is_empty() {
        return problems;
    }
    let mut changed: Vec<String> = entry
        .tensors
        .iter()
        .filter_map(
            |&(name, want)| match model.tensors().find(|t| t.name == name) {
                None => Some(format!("{name}: not in the file")),
                Some(t) if t.crc32c != want => Some(format!(
                    "{name}: crc32c {:08x}, the manifest records {want:08x}",
                    t.crc32c
                )),
                Some(_) => None,
            },
        )
        .collect();
    if changed.is_empty() {
        changed.push(if entry.tensors.is_empty() {
            "no tensor is damaged (each matches its own checksum); \
             the manifest lists no tensor checksums to compare"
                .into()
        } else {
            "every tensor matches the manifest; the header (config, tokenizer or metadata) differs"
                .into()
        });
    }
    changed
}

/// Verifies every `<sha256>  <path>` line like `sha256sum -c`; `#` lines
/// and blank lines are skipped, and paths are relative to the current
/// directory. A file that fails is then examined, and each damaged tensor
/// named on a line of its own.
fn check(manifest: &Path, out: &mut dyn Write) -> Result<Status> {
    let bytes = read_file(manifest)?;
    let text = std::str::from_utf8(&bytes)
        .ok()
        .with_context(|| format!("{}: not a text file", manifest.display()))?;
    let mut status = Status::Ok;
    let mut checked = 0usize;
    for line in parse_manifest(text) {
        let entry = match line {
            Line::Entry(entry) => entry,
            Line::Malformed(n) => {
                writeln!(
                    out,
                    "{}:{n}: improperly formatted checksum line",
                    manifest.display()
                )?;
                status = Status::Failed;
                continue;
            }
        };
        checked += 1;
        let path = entry.path;
        // The manifest names the files: shown with control characters escaped.
        let shown = Printable(path);
        match sha256_file(Path::new(path)) {
            Ok(got) if got.eq_ignore_ascii_case(entry.hash) => writeln!(out, "{shown}: OK")?,
            Ok(_) => {
                writeln!(out, "{shown}: FAILED")?;
                for problem in damage(&entry) {
                    writeln!(out, "{shown}: {}", Printable(&problem))?;
                }
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
