//! The workspace's programs (`kinglet`, `kinglet-train`) for end-to-end
//! tests. A root test cannot name another package's binaries
//! (`CARGO_BIN_EXE_*` covers only its own); `cargo test --workspace` builds
//! them anyway (for the tools' and trainer's own tests) beside this test
//! binary's `deps/` directory. When one is missing or older than a source
//! file it is built from (`cargo test --test NAME` alone after an edit), the
//! first call builds them with the profile this test was built with (which
//! can take a while: a build of only these packages may unify dependency
//! features differently from the workspace's).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;

/// Each binary and the sources it is built from.
const BINARIES: [(&str, &[&str]); 2] = [
    (
        "kinglet",
        &[
            "engine/src",
            "engine/Cargo.toml",
            "tools/src",
            "tools/Cargo.toml",
            "Cargo.lock",
        ],
    ),
    (
        "kinglet-train",
        &[
            "engine/src",
            "engine/Cargo.toml",
            "trainer/src",
            "trainer/Cargo.toml",
            "Cargo.lock",
        ],
    ),
];

/// Path of the workspace binary `name`, built if needed.
pub fn binary(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(ensure_built).join(name)
}

/// Runs the workspace program `program` with `args` in `dir`.
pub fn run_in(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(binary(program))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run the program")
}

/// The newest modification time of the files under `path`.
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest(&e.path()))
        .max()
}

fn ensure_built() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile dir>/deps/<test binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary inside target/<profile>/deps")
        .to_path_buf();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fresh = BINARIES.iter().all(|(name, sources)| {
        let built = std::fs::metadata(dir.join(name)).and_then(|m| m.modified());
        let source = sources.iter().filter_map(|p| newest(&root.join(p))).max();
        matches!((built, source), (Ok(b), Some(s)) if b >= s)
    });
    if fresh {
        return dir;
    }
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => "bench",
        _ => "test",
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--profile", profile])
        .args(["-p", "kinglet-tools", "--bin", "kinglet"])
        .args(["-p", "kinglet-trainer", "--bin", "kinglet-train"])
        .current_dir(root)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "building kinglet and kinglet-train failed"
    );
    dir
}
