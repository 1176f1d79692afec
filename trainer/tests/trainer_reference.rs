//! `check-reference` against the PyTorch float64 dump in the shared data.

use kinglet_trainer::reference::{check_reference, TOLERANCE};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    std::env::var_os("KINGLET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")))
}

#[test]
fn matches_the_pytorch_float64_reference() {
    let dump = data_dir().join("torch-ref/tiny_f64.json");
    if !dump.exists() {
        assert!(
            std::env::var("KINGLET_REQUIRE_DATA").as_deref() != Ok("1"),
            "{} is missing and KINGLET_REQUIRE_DATA=1",
            dump.display()
        );
        eprintln!("skipped: {} not found", dump.display());
        return;
    }
    let report = check_reference(&dump).expect("the dump loads");
    for row in &report.rows {
        eprintln!("{:<40} {:.3e}", row.quantity, row.worst_relative);
    }
    // loss, logits, 21 gradients, 21 updated tensors, step losses
    assert!(
        report.rows.len() == 2 + 2 * 21 + 1,
        "{} rows",
        report.rows.len()
    );
    assert!(
        report.passes(),
        "worst relative error {:e} > {TOLERANCE:e}",
        report.worst()
    );
}
