//! `kinglet generate` sizes its context from what is asked and what fits:
//! a valid model whose max_seq_len (1,048,576) and depth (1,024 layers)
//! would need 64 GiB for a full context generates in a few megabytes, and a
//! small `--max-memory` lowers the context instead of failing. (The refusals
//! are in the bad-input catalog, `cli_bad_input.rs`.)

mod common;

use std::path::{Path, PathBuf};

use common::binaries::run_in;

/// dim 8, hidden 16, 1,024 layers, 2 heads, max_seq_len 1,048,576.
fn hostile_model() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bounded-memory");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let args: Vec<&str> = common::HOSTILE_SYNTH
        .split_whitespace()
        .chain(["-o", "hostile.klt"])
        .collect();
    let o = run_in(&dir, "kinglet", &args);
    assert!(o.status.success(), "synth: {o:?}");
    dir.join("hostile.klt")
}

/// The `context N` of generate's last stderr line, and its stdout.
fn generate(model: &Path, extra: &[&str]) -> (u32, String) {
    let model = model.to_str().expect("UTF-8 path");
    let args = [
        &[
            "generate",
            model,
            "--prompt",
            "ab",
            "-n",
            "12",
            "--temperature",
            "0",
            "--seed",
            "1",
        ][..],
        extra,
    ]
    .concat();
    let o = run_in(Path::new("."), "kinglet", &args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{args:?}: {stderr}");
    assert!(stderr.contains("generated 12 tokens"), "{stderr}");
    let context = stderr
        .split(", ")
        .find_map(|part| part.strip_prefix("context "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no context in {stderr:?}"));
    (context, String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn the_context_is_what_was_asked_and_what_fits() {
    let model = hostile_model();
    // The prompt's 4 tokens (BOS, "ab" in three) plus 12 new ones, not
    // 1,048,576.
    let (asked, text) = generate(&model, &[]);
    assert_eq!(asked, 16);
    // --max-seq overrides; the same text when the context holds it all.
    let (context, same) = generate(&model, &["--max-seq", "64"]);
    assert_eq!((context, &same), (64, &text));
    // Each position takes 64 KiB of key/value cache: 512 KiB holds fewer
    // than 8, and the context shrinks (generation goes on in fresh
    // contexts) but still holds the prompt.
    let (small, _) = generate(&model, &["--max-memory", "512K"]);
    assert!((5..8).contains(&small), "context {small}");
}
