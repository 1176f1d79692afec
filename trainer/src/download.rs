//! Fetching the default corpus: TinyShakespeare, downloaded once into a cache
//! directory and trusted only when its sha256 matches.
//!
//! The file is streamed into a temporary file beside its final name (through
//! kinglet-tools' atomic writer), hashed on the way, and renamed into place
//! only after the hash matched, so the cache never holds a partial or
//! corrupted copy.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kinglet_tools::io::{hex, sha256_hex};
use sha2::{Digest, Sha256};

/// Public address of the corpus: `data/tinyshakespeare/input.txt` of karpathy/char-rnn.
pub const TINYSHAKESPEARE_URL: &str =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";

/// sha256 of the 1,115,394 bytes of TinyShakespeare, lowercase hex.
pub const TINYSHAKESPEARE_SHA256: &str =
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";

/// Name of the verified corpus inside the cache directory.
pub const TINYSHAKESPEARE_FILE_NAME: &str = "tinyshakespeare.txt";

/// The real file is about 1.1 MB; a body past this is not it, so stop reading.
const MAX_DOWNLOAD_BYTES: u64 = 16 << 20;

/// Why the corpus could not be made available.
#[derive(Debug)]
#[non_exhaustive]
pub enum DownloadError {
    /// The server could not be reached, answered with an error status, or the
    /// transfer broke off (including a body shorter than its Content-Length).
    Network { url: String, reason: String },
    /// The server sent bytes that are not TinyShakespeare; nothing was cached.
    HashMismatch {
        url: String,
        bytes: u64,
        expected: String,
        actual: String,
    },
    /// Reading or writing the cache directory failed.
    Cache { path: PathBuf, source: io::Error },
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Network { url, reason } => write!(
                f,
                "could not download TinyShakespeare from {url}: {reason}; \
                 pass --data FILE to train on a local text file"
            ),
            DownloadError::HashMismatch {
                url,
                bytes,
                expected,
                actual,
            } => write!(
                f,
                "the {bytes} bytes downloaded from {url} are not TinyShakespeare \
                 (sha256 {actual}, expected {expected}); nothing was cached; \
                 pass --data FILE to train on a local text file"
            ),
            DownloadError::Cache { path, source } => write!(
                f,
                "cache file {}: {source}; set KINGLET_CACHE_DIR to another directory \
                 or pass --data FILE to train on a local text file",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DownloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DownloadError::Cache { source, .. } => Some(source),
            DownloadError::Network { .. } | DownloadError::HashMismatch { .. } => None,
        }
    }
}

/// Where downloaded corpora are kept: `$KINGLET_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/kinglet`, else `$HOME/.cache/kinglet`, else (no home at
/// all) `kinglet-cache` in the system temporary directory.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(
        std::env::var_os("KINGLET_CACHE_DIR"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// The rule of [`default_cache_dir`] on explicit values, so it can be tested
/// without touching the process environment. Empty values count as unset, and
/// a relative `XDG_CACHE_HOME` is ignored, as the XDG spec asks.
fn cache_dir_from(
    kinglet_cache_dir: Option<std::ffi::OsString>,
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    let non_empty = |v: Option<std::ffi::OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(kinglet_cache_dir) {
        return dir;
    }
    if let Some(xdg) = non_empty(xdg_cache_home).filter(|p| p.is_absolute()) {
        return xdg.join("kinglet");
    }
    if let Some(home) = non_empty(home) {
        return home.join(".cache").join("kinglet");
    }
    std::env::temp_dir().join("kinglet-cache")
}

/// Returns the path of a verified copy of TinyShakespeare in `cache_dir`,
/// downloading it from `url` first if there is no good copy. Every action is
/// reported through `log`, one line per call.
pub fn ensure_tinyshakespeare(
    cache_dir: &Path,
    url: &str,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf, DownloadError> {
    let target = cache_dir.join(TINYSHAKESPEARE_FILE_NAME);
    match fs::read(&target) {
        Ok(cached) => {
            let actual = sha256_hex(&cached);
            if actual == TINYSHAKESPEARE_SHA256 {
                log(&format!(
                    "using cached TinyShakespeare at {} ({} bytes, sha256 verified)",
                    target.display(),
                    cached.len()
                ));
                return Ok(target);
            }
            log(&format!(
                "cached {} has sha256 {actual}, expected {TINYSHAKESPEARE_SHA256}; \
                 removing it and downloading again",
                target.display()
            ));
            fs::remove_file(&target).map_err(|source| cache_error(&target, source))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(cache_error(&target, source)),
    }

    fs::create_dir_all(cache_dir).map_err(|source| cache_error(cache_dir, source))?;
    log(&format!("downloading TinyShakespeare from {url}"));
    // kinglet-tools' atomic writer: the hash is checked inside the write, so
    // a mismatch, like any failure, removes the temporary file and caches
    // nothing.
    let written = kinglet_tools::io::write_atomic(&target, |file| {
        let (bytes, actual) = download_to(url, file, &target)?;
        if actual != TINYSHAKESPEARE_SHA256 {
            return Err(DownloadError::HashMismatch {
                url: url.to_owned(),
                bytes,
                expected: TINYSHAKESPEARE_SHA256.to_owned(),
                actual,
            }
            .into());
        }
        Ok(bytes)
    });
    let bytes = written.map_err(|e| match e.downcast::<DownloadError>() {
        Ok(download) => download,
        // The writer's own failures: the temporary file or the rename.
        Err(other) => cache_error(&target, io::Error::other(format!("{other:#}"))),
    })?;
    log(&format!(
        "downloaded {bytes} bytes, sha256 verified, saved to {}",
        target.display()
    ));
    Ok(target)
}

/// Streams the body at `url` into `file` (the temporary file of `target`),
/// returning its length and sha256.
fn download_to(
    url: &str,
    file: &mut impl Write,
    target: &Path,
) -> Result<(u64, String), DownloadError> {
    let network = |reason: String| DownloadError::Network {
        url: url.to_owned(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .user_agent(concat!("kinglet-train/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        // A stalled connection fails after this long without a byte...
        .timeout_per_read(Some(Duration::from_secs(30)))
        // ...and a very slow one after this long in total.
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| network(e.to_string()))?;
    let expected_len = response.body().content_length();
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(MAX_DOWNLOAD_BYTES)
        .reader();

    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024]; // [64 KiB] one network read
    let mut bytes: u64 = 0;
    loop {
        let n = match body.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(network(format!("transfer failed after {bytes} bytes: {e}"))),
        };
        hasher.update(&chunk[..n]);
        file.write_all(&chunk[..n])
            .map_err(|source| cache_error(target, source))?;
        bytes += n as u64;
    }
    // ureq already rejects a body cut short of its Content-Length; this keeps
    // the promise explicit should that ever change.
    if let Some(expected) = expected_len {
        if expected != bytes {
            return Err(network(format!(
                "the server announced {expected} bytes but sent {bytes}"
            )));
        }
    }
    Ok((bytes, hex(&hasher.finalize())))
}

fn cache_error(path: &Path, source: io::Error) -> DownloadError {
    DownloadError::Cache {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn cache_dir_prefers_kinglet_then_xdg_then_home() {
        assert_eq!(
            cache_dir_from(os("/k"), os("/x"), os("/h")),
            PathBuf::from("/k")
        );
        assert_eq!(
            cache_dir_from(None, os("/x"), os("/h")),
            PathBuf::from("/x/kinglet")
        );
        assert_eq!(
            cache_dir_from(os(""), os(""), os("/h")),
            PathBuf::from("/h/.cache/kinglet")
        );
        // A relative XDG_CACHE_HOME is invalid per the spec and skipped.
        assert_eq!(
            cache_dir_from(None, os("rel"), os("/h")),
            PathBuf::from("/h/.cache/kinglet")
        );
        assert_eq!(
            cache_dir_from(None, None, None),
            std::env::temp_dir().join("kinglet-cache")
        );
    }
}
