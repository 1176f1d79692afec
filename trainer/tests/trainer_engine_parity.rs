//! The engine runs what the trainer trained: for a few sequences, the
//! engine's logits on an exported f32 model match the trainer's forward
//! within 1e-5 at every position (untied with grouped KV heads, and tied;
//! measured: 1.2e-6).

mod common;

use kinglet::session::{session_floats, Session};
use kinglet::ModelFile;
use kinglet_trainer::activations::Activations;
use kinglet_trainer::config::{preset, ModelConfig};
use kinglet_trainer::data::Corpus;
use kinglet_trainer::export::model_file_bytes;
use kinglet_trainer::model;
use kinglet_trainer::trainer::Trainer;

fn check(tied: bool, n_kv_heads: usize) {
    let corpus = Corpus::from_bytes(common::tiny_text().as_bytes(), None, 12).expect("corpus");
    let p = preset("seed").expect("preset");
    let config = ModelConfig {
        vocab_size: corpus.tokenizer.len(),
        context: 12,
        dim: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads,
        hidden_dim: 48,
        tied_classifier: tied,
        ..p.model
    };
    let train = kinglet_trainer::TrainConfig {
        batch: 4,
        lr: 1e-2,
        ..p.train
    };
    let mut t = Trainer::for_corpus(config, train, &corpus).expect("trainer");
    // A few steps so the weights are no longer the symmetric initialization.
    for _ in 0..20 {
        t.step(&corpus.train).expect("step");
    }
    let bytes = model_file_bytes(&t.checkpoint(), kinglet::Dtype::F32).expect("export");
    let file = ModelFile::new_checked(&bytes[..]).expect("engine opens the export");
    let (context, vocab) = (config.context, config.vocab_size);
    let mut acts = Activations::new(&config, 1, context);
    let mut buffer = vec![0.0f32; session_floats(file.config(), context as u32)];
    let mut worst = 0.0f32;
    for start in [0, 137, 1009, 2500] {
        let window = &corpus.train[start..start + context];
        model::forward(&t.layout, &t.params, &mut acts, window, None);
        let ours = model::logits(&mut acts, 1).to_vec();
        let mut session = Session::new(&file, &mut buffer, context as u32).expect("session");
        for (pos, &token) in window.iter().enumerate() {
            let engine = session.forward(token).expect("engine forward");
            for (a, b) in engine.iter().zip(&ours[pos * vocab..(pos + 1) * vocab]) {
                worst = worst.max((a - b).abs());
            }
        }
    }
    eprintln!("tied {tied}, kv heads {n_kv_heads}: worst logit difference {worst:e}");
    assert!(
        worst < 1e-5,
        "tied {tied}, kv heads {n_kv_heads}: worst logit difference {worst:e}"
    );
}

#[test]
fn engine_logits_match_the_trainer_untied_grouped() {
    check(false, 2);
}

#[test]
fn engine_logits_match_the_trainer_tied() {
    check(true, 4);
}
