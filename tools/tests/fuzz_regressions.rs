//! Inputs the fuzz targets (fuzz/) found, run through the `kinglet` binary.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kinglet");

const OVERFLOWING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/fuzz/c_api-nan-activations.klt"
);

/// Runs `kinglet ARGS` and asserts exit 1 with one stderr line saying that
/// the activations overflowed (not "element 3 (NaN) cannot be stored as q8_0").
fn assert_overflow_explained(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("kinglet: error: the model's activations overflowed"),
        "{stderr}"
    );
}

/// A tiny q8_0 model with scrambled weights whose activations become NaN
/// (found by the `c_api` target): `generate` says so in one line, and
/// `eval`'s scoring returns the same error (its CLI verifies checksums
/// first, which this file fails, so the library is called directly).
#[test]
fn overflowing_activations_are_explained() {
    assert_overflow_explained(&[
        "generate",
        OVERFLOWING,
        "--no-verify",
        "--prompt",
        "",
        "-n",
        "3",
    ]);
    let bytes = std::fs::read(OVERFLOWING).unwrap();
    let model = kinglet::ModelFile::new_checked(bytes.as_slice()).unwrap();
    let context = model.config().max_seq_len as usize;
    let tokens = vec![0u32; 4 * context + 1];
    let threads = kinglet_tools::threads::Threads::new(0).unwrap();
    let err = kinglet_tools::cmd::eval::score(&model, &tokens, context, &threads).unwrap_err();
    assert_eq!(err, kinglet::Error::ActivationsOverflowed);
}
