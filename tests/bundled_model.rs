//! The model committed under models/ is what the README says it is: it
//! verifies, its sha256 and its validation loss (kinglet eval's protocol on
//! the last 10% of TinyShakespeare) match the README's line, it fits in 2 MB,
//! and `kinglet generate` runs it with no model path.

mod common;

use kinglet::ModelFile;
use kinglet_tools::bundled;
use kinglet_tools::cmd::eval::{score, tail_start};
use kinglet_tools::threads::Threads;

const README: &str = include_str!("../README.md");

/// The README line `Bundled model: `models/shakespeare.klt`, sha256 `…`, validation loss `…``.
fn readme_fact(label: &str) -> String {
    let line = README
        .lines()
        .find(|l| l.starts_with("Bundled model:"))
        .expect("README names the bundled model");
    let after = line
        .split(label)
        .nth(1)
        .unwrap_or_else(|| panic!("no {label} in {line:?}"));
    after
        .trim_start()
        .trim_start_matches('`')
        .split('`')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn bundled_model_verifies_and_matches_the_readme() {
    let model = ModelFile::new_checked(bundled::BYTES).expect("opens");
    model.verify().expect("every checksum");
    assert!(
        bundled::BYTES.len() <= 2_000_000,
        "{} bytes",
        bundled::BYTES.len()
    );
    let sha = kinglet_tools::io::sha256_hex(bundled::BYTES);
    assert_eq!(sha, readme_fact("sha256"));
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/shakespeare.klt"
    ))
    .unwrap();
    assert_eq!(
        on_disk,
        bundled::BYTES,
        "the binary embeds the committed file"
    );

    let Some(path) = common::data_file("tinyshakespeare.txt") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    let mut tokens = vec![0u32; kinglet::tokenizer::max_tokens(&text, false)];
    let n = kinglet::tokenizer::encode(&model.vocab(), &text, false, &mut tokens).unwrap();
    let loss = score(
        &model,
        &tokens[tail_start(n, 0.1)..n],
        64,
        &Threads::new(0).unwrap(),
    )
    .unwrap()
    .loss;
    let stated: f64 = readme_fact("validation loss").parse().unwrap();
    assert!(
        (loss - stated).abs() < 5e-5,
        "measured {loss:.6}, README says {stated}"
    );
}
