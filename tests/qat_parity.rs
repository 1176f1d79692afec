//! What "quantization-aware" promises: for a model trained with `--qat`
//! and exported in that dtype, the engine (integer kernels, `kinglet eval`'s
//! protocol) and the trainer's whole-split eval agree on the val split.

mod common;

use kinglet::{Dtype, ModelFile};
use kinglet_tools::cmd::eval::score;
use kinglet_tools::threads::Threads;
use kinglet_trainer::config::{preset, ModelConfig, TrainConfig};
use kinglet_trainer::data::Corpus;
use kinglet_trainer::eval::{whole_split_loss, whole_split_loss_qat};
use kinglet_trainer::export::model_file_bytes;
use kinglet_trainer::qat::Qat;
use kinglet_trainer::trainer::Trainer;

/// Measured gaps: 3.6e-7 (q8_0) and 3.7e-6 (q4_0); the runs are
/// deterministic, so this bound only leaves room for other summation orders.
const TOLERANCE: f64 = 5e-5;
/// Characters from the start of TinyShakespeare (the last 10% validates).
const TEXT_BYTES: usize = 40_000;
const STEPS: usize = 30;

fn train_and_compare(text: &[u8], dtype: Dtype) {
    let p = preset("seed").expect("preset");
    let context = 32;
    let corpus = Corpus::from_bytes(text, None, context).expect("corpus");
    let model = ModelConfig {
        vocab_size: corpus.tokenizer.len(),
        context,
        dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        hidden_dim: 128,
        ..p.model
    };
    let train = TrainConfig {
        batch: 8,
        lr: 3e-3,
        min_lr: 3e-3,
        ..p.train
    };
    let qat = Qat {
        dtype,
        start: 0,
        activations: true,
    };
    let mut t = Trainer::for_corpus(model, train, &corpus).expect("trainer");
    t.set_qat(Some(qat)).expect("qat");
    let first = t.step(&corpus.train).expect("step").loss;
    for _ in 1..STEPS {
        t.step(&corpus.train).expect("step");
    }
    let bytes = model_file_bytes(&t.checkpoint(), dtype).expect("export");
    let file = ModelFile::new_checked(&bytes[..]).expect("engine opens the export");
    assert_eq!(file.layer(0).unwrap().w2.dtype, dtype);

    let engine = score(
        &file,
        &corpus.val,
        file.config().max_seq_len as usize,
        &Threads::new(0).unwrap(),
    )
    .expect("engine eval");
    let trainer = whole_split_loss_qat(&t.layout, &t.params, &corpus.val, 16, &qat).expect("eval");
    let float = whole_split_loss(&t.layout, &t.params, &corpus.val, 16);
    let gap = (engine.loss - trainer).abs();
    eprintln!(
        "{}: {} windows; engine {:.6}, trainer (QAT eval) {trainer:.6}, gap {gap:.2e}; \
         float eval {float:.6}",
        dtype.name(),
        engine.windows.count,
        engine.loss
    );
    assert!(
        engine.windows.count > 100,
        "{} windows",
        engine.windows.count
    );
    assert!(trainer < first - 0.3, "did not learn: {first} -> {trainer}");
    assert!(
        gap < TOLERANCE,
        "{}: engine {} vs trainer {trainer}: gap {gap:e}",
        dtype.name(),
        engine.loss
    );
}

fn shakespeare() -> Option<Vec<u8>> {
    let path = common::data_file("tinyshakespeare.txt")?;
    let mut text = std::fs::read(path).expect("read tinyshakespeare.txt");
    text.truncate(TEXT_BYTES);
    Some(text)
}

#[test]
fn engine_and_trainer_agree_on_a_q8_0_qat_model() {
    if let Some(text) = shakespeare() {
        train_and_compare(&text, Dtype::Q8_0);
    }
}

#[test]
fn engine_and_trainer_agree_on_a_q4_0_qat_model() {
    if let Some(text) = shakespeare() {
        train_and_compare(&text, Dtype::Q4_0);
    }
}
