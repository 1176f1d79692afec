// Shared by the trainer's integration tests (included with `mod`).

/// A few thousand characters of varied text over a small alphabet.
#[allow(dead_code)]
pub fn tiny_text() -> String {
    let words = [
        "the", "king", "is", "dead", "long", "live", "queen", "and", "so", "we", "sing", "of",
        "wrens", "little", "birds", "flying", "north",
    ];
    let mut state = 12345u32;
    let mut text = String::new();
    for i in 0..900 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        text.push_str(words[(state >> 16) as usize % words.len()]);
        text.push(if i % 11 == 10 { '\n' } else { ' ' });
    }
    text
}

/// A two-layer model with grouped KV heads (`dim` wide, SwiGLU `hidden`)
/// on [`tiny_text`], and a schedule with warmup, cosine decay, clipping and
/// accumulation: every piece of training state matters.
#[allow(dead_code)]
pub fn tiny_setup(
    dim: usize,
    hidden: usize,
) -> (
    kinglet_trainer::config::ModelConfig,
    kinglet_trainer::config::TrainConfig,
    kinglet_trainer::data::Corpus,
) {
    use kinglet_trainer::config::{preset, ModelConfig, TrainConfig};
    let corpus =
        kinglet_trainer::data::Corpus::from_bytes(tiny_text().as_bytes(), None, 8).expect("corpus");
    let p = preset("small").expect("preset");
    let model = ModelConfig {
        vocab_size: corpus.tokenizer.len(),
        context: 8,
        dim,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        hidden_dim: hidden,
        ..p.model
    };
    let train = TrainConfig {
        batch: 3,
        accum_steps: 2,
        steps: 8,
        warmup_steps: 3,
        ..p.train
    };
    (model, train, corpus)
}
