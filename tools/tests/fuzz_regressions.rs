//! Inputs the fuzz targets (fuzz/) found, run through the `kinglet` binary.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kinglet");

/// A tiny q8_0 model with scrambled weights whose activations become NaN
/// (found by the `c_api` target): `generate` says so in one line, instead
/// of "element 3 (NaN) cannot be stored as q8_0".
#[test]
fn overflowing_activations_are_explained() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/fuzz/c_api-nan-activations.klt"
    );
    let out = Command::new(BIN)
        .args(["generate", model, "--no-verify", "--prompt", "", "-n", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("kinglet: error: the model's activations overflowed"),
        "{stderr}"
    );
}
