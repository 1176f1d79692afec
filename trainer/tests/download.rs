//! The TinyShakespeare download path against a local HTTP server on 127.0.0.1:
//! a good copy is verified and cached, a cached copy is reused without asking
//! the server, and every kind of bad download is rejected without caching.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kinglet_trainer::download::{
    ensure_tinyshakespeare, DownloadError, TINYSHAKESPEARE_FILE_NAME, TINYSHAKESPEARE_SHA256,
};

/// What the test server answers to every request.
#[derive(Clone)]
enum Reply {
    /// 200 with the whole body.
    Ok(Vec<u8>),
    /// 404 with a short body.
    NotFound,
    /// 200 announcing `announced` bytes, sending `body`, then closing.
    Truncated { body: Vec<u8>, announced: usize },
}

/// A one-thread HTTP/1.1 server that answers each connection once and closes it.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(reply: Reply) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (requests2, stop2) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                requests2.fetch_add(1, Ordering::SeqCst);
                // A client that hangs up early is the client's problem, not the test's.
                let _ = answer(stream, &reply);
            }
        });
        TestServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/data/tinyshakespeare/input.txt", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and ends.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(mut stream: TcpStream, reply: &Reply) -> std::io::Result<()> {
    // Only a client that never sends its request hits this; a slow one on a
    // loaded machine must not.
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    // Read the request head (bounded); its content does not matter.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let (status, body, announced): (&str, &[u8], usize) = match reply {
        Reply::Ok(body) => ("200 OK", body, body.len()),
        Reply::NotFound => ("404 Not Found", b"404: Not Found", 14),
        Reply::Truncated { body, announced } => ("200 OK", body, *announced),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// A fresh, empty directory under cargo's per-target temp dir, of this
/// process (so that two copies of these tests can run at once), removed
/// when dropped unless the test failed (the evidence stays).
fn fresh_dir(name: &str) -> Scratch {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("download-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    Scratch(dir)
}

struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn data_dir() -> PathBuf {
    match std::env::var_os("KINGLET_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")),
    }
}

/// The reference corpus, or None (after saying so) when it is missing.
fn tinyshakespeare(test: &str) -> Option<Vec<u8>> {
    let path = data_dir().join("tinyshakespeare.txt");
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            if std::env::var("KINGLET_REQUIRE_DATA").as_deref() == Ok("1") {
                panic!("{test}: {} is required: {e}", path.display());
            }
            eprintln!("{test}: skipped, {} not available: {e}", path.display());
            None
        }
    }
}

/// Every file name in `dir` (to prove nothing was left behind).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read test dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn sha256_hex_of(path: &Path) -> String {
    kinglet_tools::io::sha256_hex(&std::fs::read(path).expect("read cached file"))
}

#[test]
fn downloads_verifies_caches_then_reuses_the_cache() {
    let Some(corpus) = tinyshakespeare("downloads_verifies_caches_then_reuses_the_cache") else {
        return;
    };
    let cache = fresh_dir("good");
    let server = TestServer::start(Reply::Ok(corpus.clone()));
    let mut lines = Vec::new();

    let path = ensure_tinyshakespeare(&cache, &server.url(), &mut |l: &str| {
        lines.push(l.to_owned())
    })
    .expect("download of the real corpus");
    assert_eq!(path, cache.join(TINYSHAKESPEARE_FILE_NAME));
    assert_eq!(std::fs::read(&path).expect("cached file"), corpus);
    assert_eq!(sha256_hex_of(&path), TINYSHAKESPEARE_SHA256);
    assert_eq!(server.requests(), 1);
    assert_eq!(entries(&cache), [TINYSHAKESPEARE_FILE_NAME], "no temp left");
    let log = lines.join("\n");
    assert!(log.contains(&server.url()), "log names the address: {log}");
    assert!(log.contains("1115394 bytes"), "log gives the size: {log}");

    lines.clear();
    let again = ensure_tinyshakespeare(&cache, &server.url(), &mut |l: &str| {
        lines.push(l.to_owned())
    })
    .expect("cached corpus");
    assert_eq!(again, path);
    assert_eq!(
        server.requests(),
        1,
        "the second call must not ask the server"
    );
    assert!(lines.join("\n").contains("using cached"), "{lines:?}");
}

#[test]
fn corrupted_download_is_rejected_and_not_cached() {
    let Some(mut corpus) = tinyshakespeare("corrupted_download_is_rejected_and_not_cached") else {
        return;
    };
    corpus[500_000] ^= 0x01;
    let cache = fresh_dir("corrupt");
    let server = TestServer::start(Reply::Ok(corpus));

    let err = ensure_tinyshakespeare(&cache, &server.url(), &mut |_: &str| {})
        .expect_err("a corrupted copy must be rejected");
    match &err {
        DownloadError::HashMismatch {
            bytes,
            expected,
            actual,
            ..
        } => {
            assert_eq!(*bytes, 1_115_394);
            assert_eq!(expected, TINYSHAKESPEARE_SHA256);
            assert_ne!(actual, TINYSHAKESPEARE_SHA256);
            let message = err.to_string();
            assert!(message.contains(expected.as_str()) && message.contains(actual.as_str()));
            assert!(message.contains("--data"), "{message}");
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    assert!(
        entries(&cache).is_empty(),
        "nothing cached: {:?}",
        entries(&cache)
    );
}

#[test]
fn wrong_cached_file_is_replaced_by_a_fresh_download() {
    let Some(corpus) = tinyshakespeare("wrong_cached_file_is_replaced_by_a_fresh_download") else {
        return;
    };
    let cache = fresh_dir("stale");
    std::fs::write(cache.join(TINYSHAKESPEARE_FILE_NAME), &corpus[..1000]).expect("seed cache");
    let server = TestServer::start(Reply::Ok(corpus.clone()));
    let mut lines = Vec::new();

    let path = ensure_tinyshakespeare(&cache, &server.url(), &mut |l: &str| {
        lines.push(l.to_owned())
    })
    .expect("re-download");
    assert_eq!(std::fs::read(&path).expect("cached file"), corpus);
    assert_eq!(server.requests(), 1);
    let log = lines.join("\n");
    assert!(log.contains("removing it"), "the log says why: {log}");
}

#[test]
fn not_found_names_the_data_flag() {
    let cache = fresh_dir("404");
    let server = TestServer::start(Reply::NotFound);
    let err = ensure_tinyshakespeare(&cache, &server.url(), &mut |_: &str| {})
        .expect_err("404 must fail");
    let message = err.to_string();
    assert!(matches!(err, DownloadError::Network { .. }), "{err:?}");
    assert!(message.contains("404"), "{message}");
    assert!(message.contains("--data"), "{message}");
    assert!(message.contains(&server.url()), "{message}");
    assert!(entries(&cache).is_empty(), "{:?}", entries(&cache));
}

#[test]
fn refused_connection_names_the_data_flag() {
    // Bind then drop a listener: nothing listens on that port afterwards.
    let dead = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let url = format!("http://{dead}/input.txt");
    let cache = fresh_dir("refused");
    let err = ensure_tinyshakespeare(&cache, &url, &mut |_: &str| {})
        .expect_err("a refused connection must fail");
    let message = err.to_string();
    assert!(matches!(err, DownloadError::Network { .. }), "{err:?}");
    assert!(
        message.starts_with(&format!("could not download TinyShakespeare from {url}: ")),
        "{message}"
    );
    assert!(
        message.ends_with("pass --data FILE to train on a local text file"),
        "{message}"
    );
    assert!(entries(&cache).is_empty(), "{:?}", entries(&cache));
}

#[test]
fn truncated_response_is_rejected_as_a_broken_transfer() {
    // The body is cut short of its Content-Length; the download must fail on
    // that, not merely on the hash, and leave nothing behind.
    let body = b"First Citizen:\nBefore we proceed any further, hear me speak.\n".repeat(100);
    let cache = fresh_dir("truncated");
    let server = TestServer::start(Reply::Truncated {
        announced: body.len() + 10_000,
        body,
    });
    let err = ensure_tinyshakespeare(&cache, &server.url(), &mut |_: &str| {})
        .expect_err("a truncated body must fail");
    assert!(matches!(err, DownloadError::Network { .. }), "{err:?}");
    assert!(err.to_string().contains("--data"), "{err}");
    assert!(entries(&cache).is_empty(), "{:?}", entries(&cache));
}

#[test]
fn unwritable_cache_is_a_cache_error() {
    // The cache "directory" is a regular file, so it cannot be created or used.
    let parent = fresh_dir("unwritable");
    let not_a_dir = parent.join("file");
    std::fs::write(&not_a_dir, b"x").expect("make file");
    let server = TestServer::start(Reply::NotFound);
    let err = ensure_tinyshakespeare(&not_a_dir, &server.url(), &mut |_: &str| {})
        .expect_err("must fail");
    assert!(matches!(err, DownloadError::Cache { .. }), "{err:?}");
    assert_eq!(server.requests(), 0, "fails before touching the network");
}

/// The CLI end to end: no --data, so `kinglet-train` downloads the corpus
/// (from the local server named by KINGLET_TINYSHAKESPEARE_URL) into
/// KINGLET_CACHE_DIR, trains, and leaves a checkpoint, metrics and the loss
/// curve in --out.
#[test]
fn training_without_data_downloads_then_trains() {
    let Some(corpus) = tinyshakespeare("training_without_data_downloads_then_trains") else {
        return;
    };
    let (cache, out) = (fresh_dir("cli-cache"), fresh_dir("cli-out"));
    let server = TestServer::start(Reply::Ok(corpus));
    let tiny = [
        "--context",
        "8",
        "--dim",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--hidden",
        "32",
    ];
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kinglet-train"))
        .args(tiny)
        .args([
            "--batch",
            "2",
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--eval-windows",
            "4",
        ])
        .args(["--sample-len", "0", "--quiet", "--out"])
        .arg(&out)
        .env("KINGLET_TINYSHAKESPEARE_URL", server.url())
        .env("KINGLET_CACHE_DIR", &cache)
        .output()
        .expect("run kinglet-train");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("sha256 verified"), "{stdout}");
    assert_eq!(entries(&cache), [TINYSHAKESPEARE_FILE_NAME]);
    for file in ["last.ckpt", "metrics.jsonl", "loss.svg"] {
        assert!(
            out.join(file).is_file(),
            "{file} missing: {:?}",
            entries(&out)
        );
    }
    assert_eq!(server.requests(), 1);
}
