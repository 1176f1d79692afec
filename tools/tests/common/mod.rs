//! What the tools' end-to-end tests share: scratch directories and the
//! reference data beside the repository.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// A fresh, empty directory `<kind>-<test>` for one test.
pub fn scratch(kind: &str, test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{kind}-{test}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The reference file `name` (in `KINGLET_DATA`, default `../shared/data`),
/// or `None`, saying so, when it is missing; with `KINGLET_REQUIRE_DATA=1`
/// a missing file fails the test.
pub fn data_file(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KINGLET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"))
        });
    let path = dir.join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("KINGLET_REQUIRE_DATA").as_deref() != Ok("1"),
        "{} missing (KINGLET_REQUIRE_DATA=1)",
        path.display()
    );
    eprintln!("skipped: {} not found", path.display());
    None
}
