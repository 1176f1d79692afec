//! Reading input files with errors a person can act on, and writing output
//! files atomically so that a failed or interrupted command never leaves a
//! torn file behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use kinglet::ModelFile;
use sha2::{Digest, Sha256};

use crate::model_bytes::ModelBytes;

/// Reads a whole file, refusing directories with a clear message.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    file_length(path)?;
    fs::read(path).map_err(|e| describe_io(path, &e))
}

/// The length of the file at `path`, refusing directories with a clear
/// message.
fn file_length(path: &Path) -> Result<usize> {
    let meta = fs::metadata(path).map_err(|e| describe_io(path, &e))?;
    if meta.is_dir() {
        bail!("{}: is a directory, not a file", path.display());
    }
    usize::try_from(meta.len())
        .with_context(|| format!("{}: too large for this machine's memory", path.display()))
}

/// Reads and opens a .klt file with [`ModelFile::new_checked`] (header,
/// layout and shapes validated; tensor checksums are not read), its bytes
/// in [`ModelBytes`] (huge pages where the system gives them).
pub fn open_model(path: &Path) -> Result<ModelFile<ModelBytes>> {
    let len = file_length(path)?;
    let bytes = File::open(path)
        .and_then(|mut file| ModelBytes::read_from(&mut file, len))
        .map_err(|e| describe_io(path, &e))?;
    if bytes.as_ref().is_empty() {
        bail!("{}: file is empty", path.display());
    }
    // A short file of another kind is "not a .klt file", not "truncated".
    let opened = if bytes.as_ref().starts_with(&kinglet::format::MAGIC) {
        ModelFile::new_checked(bytes)
    } else {
        Err(kinglet::Error::BadMagic)
    };
    match opened {
        Ok(file) => Ok(file),
        Err(kinglet::Error::BadMagic) if looks_like_llama2c(path) => bail!(
            "{}: not a .klt model file; it is a llama2.c checkpoint: \
             import it with `kinglet convert {} --tokenizer TOK.bin -o OUT.klt`",
            path.display(),
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

/// Whether the file parses as a llama2.c checkpoint, for a helpful hint.
fn looks_like_llama2c(path: &Path) -> bool {
    fs::read(path).is_ok_and(|b| crate::import::llama2c::parse_checkpoint(&b).is_ok())
}

/// `path: reason` for an I/O error, without Rust's "(os error N)" noise.
pub fn describe_io(path: &Path, e: &io::Error) -> anyhow::Error {
    let reason = match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    anyhow::anyhow!("{}: {reason}", path.display())
}

/// Removes the temporary file unless the write completed.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the error that got us here is the one to report.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `path` atomically: `write` fills a temporary file in the same
/// directory (`.NAME.tmpPID.N`, distinct per process and per call), which
/// is flushed, fsynced and renamed over `path`. If `write` fails (or panics)
/// the temporary file is removed and `path` is untouched. Returns what
/// `write` returned.
pub fn write_atomic<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    write_atomic_via(path, Temp::Unique, write, |_| {})
}

/// [`write_atomic`] of a whole buffer.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |out| {
        io::Write::write_all(out, bytes).map_err(|e| describe_io(path, &e))
    })
}

/// Where [`write_atomic_via`] puts the bytes before the rename.
#[derive(Clone, Copy, Debug)]
pub enum Temp<'a> {
    /// `.NAME.tmpPID.N` beside the target, created new: two writers never
    /// share one.
    Unique,
    /// This path (in the target's directory), created or truncated: a name
    /// a reader can predict, such as a checkpoint's `last.ckpt.tmp`, where
    /// a leftover from a killed write is simply replaced.
    At(&'a Path),
}

/// The moments of an atomic write, reported to [`write_atomic_via`]'s
/// `reached` (the trainer's crash tests stop the process there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The temporary file exists and is still empty.
    TempCreated,
    /// The temporary file holds every byte, fsynced, not yet renamed.
    TempWritten,
    /// The temporary file has been renamed over the target; the directory
    /// is not yet fsynced.
    Renamed,
}

/// [`write_atomic`] with the temporary file's name chosen by `temp`, and
/// `reached` called at each [`Stage`]. The one atomic writer: every file the
/// tools and the trainer write goes through it.
pub fn write_atomic_via<T>(
    path: &Path,
    temp: Temp<'_>,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
    mut reached: impl FnMut(Stage),
) -> Result<T> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let shown = path.display();
    if path.is_dir() {
        bail!("{shown}: is a directory; give an output file name");
    }
    let file_name = path
        .file_name()
        .with_context(|| format!("{shown}: not a file name"))?;
    let mut options = OpenOptions::new();
    options.write(true);
    let temp_path = match temp {
        Temp::Unique => {
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(file_name);
            let call = CALLS.fetch_add(1, Ordering::Relaxed);
            temp_name.push(format!(".tmp{}.{call}", std::process::id()));
            options.create_new(true);
            directory_of(path).join(temp_name)
        }
        Temp::At(temp_path) => {
            options.create(true).truncate(true);
            temp_path.to_path_buf()
        }
    };
    // Named by the target: the user never chose the temporary name, and a
    // missing or unwritable directory is the target's problem too.
    let file = options
        .open(&temp_path)
        .map_err(|e| describe_io(path, &e))?;
    let mut guard = TempFile {
        path: temp_path,
        armed: true,
    };
    reached(Stage::TempCreated);
    let mut out = BufWriter::new(file);
    let value = write(&mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| describe_io(&guard.path, e.error()))?;
    file.sync_all().map_err(|e| describe_io(&guard.path, &e))?;
    drop(file);
    reached(Stage::TempWritten);
    fs::rename(&guard.path, path).map_err(|e| describe_io(path, &e))?;
    guard.armed = false;
    reached(Stage::Renamed);
    // Make the rename itself durable; not every platform lets a directory be
    // opened for this, and the data is already safe, so failure is ignored.
    if let Ok(d) = File::open(directory_of(path)) {
        let _ = d.sync_all();
    }
    Ok(value)
}

/// The directory holding `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sha256_hex_matches_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kinglet-io-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = scratch("ok");
        let path = dir.join("out.bin");
        fs::write(&path, b"old").unwrap();
        let n = write_atomic(&path, |w| {
            w.write_all(b"new contents")?;
            Ok(12)
        })
        .unwrap();
        assert_eq!(n, 12);
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "temp file left");
    }

    #[test]
    fn failed_write_leaves_old_file_and_no_temp() {
        let dir = scratch("fail");
        let path = dir.join("out.bin");
        fs::write(&path, b"old").unwrap();
        let r: Result<()> = write_atomic(&path, |w| {
            w.write_all(b"partial")?;
            bail!("bad weights")
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "temp file left");
    }

    #[test]
    fn a_named_temp_replaces_a_leftover_and_the_stages_come_in_order() {
        let dir = scratch("via");
        let path = dir.join("last.ckpt");
        let temp = dir.join("last.ckpt.tmp");
        fs::write(&temp, b"torn leftover of a killed write").unwrap();
        let mut stages = Vec::new();
        write_atomic_via(
            &path,
            Temp::At(&temp),
            |w| {
                assert_eq!(fs::read(&temp).unwrap(), b"", "truncated");
                Ok(w.write_all(b"state")?)
            },
            |stage| stages.push(stage),
        )
        .unwrap();
        assert_eq!(
            stages,
            [Stage::TempCreated, Stage::TempWritten, Stage::Renamed]
        );
        assert_eq!(fs::read(&path).unwrap(), b"state");
        assert!(!temp.exists());
    }

    #[test]
    fn read_errors_name_the_path() {
        let dir = scratch("read");
        let e = read_file(&dir).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let missing = dir.join("nope");
        let e = read_file(&missing).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("no such file"), "{e}");
        let e = write_atomic(&dir, |_| Ok(())).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
    }
}
