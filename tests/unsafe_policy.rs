//! `unsafe` lives only in `engine/src/kernels/`: every other engine module
//! starts with `#![forbid(unsafe_code)]`, and the crate root denies it (so
//! the kernel files can opt in with `#![allow(unsafe_code)]`).

use std::fs;
use std::path::Path;

const FORBID: &str = "#![forbid(unsafe_code)]";

#[test]
fn engine_modules_outside_the_kernels_forbid_unsafe_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    assert!(lib.lines().any(|l| l.trim() == "#![deny(unsafe_code)]"));
    let mut checked = 0;
    for entry in fs::read_dir(&src).expect("engine/src").flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // kernels/ is a directory; lib.rs is the crate root.
        if !name.ends_with(".rs") || name == "lib.rs" {
            continue;
        }
        let text = fs::read_to_string(&path).expect("module source");
        // An inner attribute: after the module's `//!` docs, before any item.
        let first_code = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("//"));
        assert_eq!(first_code, Some(FORBID), "{name} must start with {FORBID}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} modules found");
}
