//! `unsafe` lives only in `engine/src/kernels/`, the trainer's matrix
//! product and the tools' thread hand-off (`chunk_workers.rs`): every other
//! engine module starts with `#![forbid(unsafe_code)]` and the engine's and
//! trainer's roots deny it (so the kernel files can opt in with
//! `#![allow(unsafe_code)]`); inside those files every `unsafe` block says
//! why it is sound, every `unsafe fn` has a `# Safety` section, and the
//! intrinsics files deny `unsafe_op_in_unsafe_fn`. (The C API in `ffi/` is
//! unsafe by nature and checked by its own tests.)

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

/// The files that may hold `unsafe` code; the intrinsics files among them
/// must also deny `unsafe_op_in_unsafe_fn`.
const MAY_USE_UNSAFE: [(&str, bool); 10] = [
    ("engine/src/kernels/avx2.rs", true),
    ("engine/src/kernels/avx2_packed.rs", true),
    ("engine/src/kernels/avx512.rs", true),
    ("engine/src/kernels/avxvnni.rs", true),
    ("engine/src/kernels/path.rs", false),
    ("engine/src/kernels/mod.rs", false),
    ("trainer/src/gemm.rs", false),
    ("trainer/src/gemm/avx2.rs", true),
    ("trainer/src/gemm/avx512.rs", true),
    ("tools/src/chunk_workers.rs", false),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("source directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_code_is_confined_and_explained_in_the_engine_trainer_and_tools() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let trainer_lib = fs::read_to_string(root.join("trainer/src/lib.rs")).expect("lib.rs");
    assert!(trainer_lib
        .lines()
        .any(|l| l.trim() == "#![deny(unsafe_code)]"));
    let mut files = Vec::new();
    rust_files(&root.join("engine/src"), &mut files);
    rust_files(&root.join("trainer/src"), &mut files);
    rust_files(&root.join("tools/src"), &mut files);
    let mut blocks = 0;
    for path in &files {
        let name = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(path).expect("source");
        let lines: Vec<&str> = text.lines().collect();
        // Code only: a line's text before any `//` comment.
        let code = |l: &str| l.split("//").next().unwrap_or("").to_string();
        let uses_unsafe = lines.iter().any(|l| {
            let c = code(l);
            c.contains("unsafe {") || c.contains("unsafe fn") || c.contains("unsafe impl")
        });
        let allowed = MAY_USE_UNSAFE.iter().find(|(f, _)| *f == name);
        assert!(
            !uses_unsafe || allowed.is_some(),
            "{name} uses unsafe code outside the allowed files"
        );
        if let Some((_, intrinsics)) = allowed {
            if *intrinsics {
                assert!(
                    text.contains("#![deny(unsafe_op_in_unsafe_fn)]"),
                    "{name} must deny unsafe_op_in_unsafe_fn"
                );
            }
        }
        for (i, l) in lines.iter().enumerate() {
            let c = code(l);
            let before = lines[i.saturating_sub(8)..=i].join("\n");
            if c.contains("unsafe {") {
                blocks += 1;
                assert!(
                    before.contains("SAFETY:"),
                    "{name}:{}: unsafe block without a SAFETY comment above it",
                    i + 1
                );
            }
            if c.contains("unsafe fn") {
                let doc = lines[i.saturating_sub(40)..i].join("\n");
                assert!(
                    doc.contains("# Safety"),
                    "{name}:{}: unsafe fn without a # Safety section",
                    i + 1
                );
            }
        }
    }
    assert!(blocks >= 10, "only {blocks} unsafe blocks found");
}
