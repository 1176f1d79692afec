//! Text that comes from a file (a model's metadata, a manifest's file
//! names) or from a hostile path reaches the terminal with its control
//! characters escaped: no escape sequence, carriage return, newline or
//! bidirectional override gets through raw.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::binaries::run_in;

/// A fresh directory for one test (tests run in parallel: each needs its own).
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("untrusted-text")
        .join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Characters that must never reach the terminal raw (a newline is allowed
/// only as a line end, so it is checked per line).
fn has_raw_controls(text: &str) -> bool {
    text.lines().any(|line| {
        line.chars()
            .any(|c| (c.is_control() && c != '\t') || ('\u{202a}'..='\u{202e}').contains(&c))
    })
}

#[test]
fn inspect_escapes_metadata_keys_and_values() {
    let dir = scratch("inspect_escapes_metadata_keys_and_values");
    let model = common::random_model(
        &common::tiny_config(),
        7,
        &[
            ("\u{1b}[2Jclear", "\u{1b}]0;title\u{7}"),
            ("multi\nline", "carriage\rreturn\u{202e}txt.exe\\"),
        ],
    );
    fs::write(dir.join("m.klt"), model).unwrap();
    let o = run_in(&dir, "kinglet", &["inspect", "m.klt"]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(!has_raw_controls(&out), "{out:?}");
    assert!(
        out.contains("  \\u{1b}[2Jclear = \\u{1b}]0;title\\u{7}\n"),
        "{out}"
    );
    assert!(
        out.contains("  multi\\nline = carriage\\rreturn\\u{202e}txt.exe\\\n"),
        "{out}"
    );
}

#[test]
fn checksum_check_escapes_the_names_a_manifest_gives() {
    let dir = scratch("checksum_check_escapes_the_names_a_manifest_gives");
    let name = "evil\u{1b}[31m\rname.klt";
    let manifest = format!("{}  {name}\n", "0".repeat(64));
    fs::write(dir.join("m.sha256"), manifest).unwrap();
    let o = run_in(&dir, "kinglet", &["checksum", "--check", "m.sha256"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(!has_raw_controls(&out), "{out:?}");
    assert!(
        out.starts_with("evil\\u{1b}[31m\\rname.klt: FAILED open or read"),
        "{out}"
    );
}

#[test]
fn error_lines_escape_hostile_paths() {
    let dir = scratch("error_lines_escape_hostile_paths");
    // (A command line clap rejects comes back with its escape sequences
    // already stripped: only one clean line is asked of it.)
    for (program, args, shown) in [
        ("kinglet", vec!["verify", "new\nline\u{1b}[1m.klt"], true),
        ("kinglet", vec!["inspect", "--bogus\n\u{1b}[1m\r"], false),
        (
            "kinglet-train",
            vec!["eval", "new\nline\u{1b}[1m.ckpt"],
            true,
        ),
        ("kinglet-train", vec!["--bogus\n\u{1b}[1m\r"], false),
    ] {
        let o = run_in(&dir, program, &args);
        let err = String::from_utf8(o.stderr.clone()).unwrap();
        assert!(matches!(o.status.code(), Some(1 | 2)), "{args:?}: {o:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(!has_raw_controls(&err), "{args:?}: {err:?}");
        assert!(
            !shown || err.contains("new\\nline\\u{1b}[1m"),
            "{args:?}: {err:?}"
        );
    }
}
