//! End to end on a model someone else trained: import llama2.c's stories260K
//! with its tokenizer, greedy-decode 300 tokens from "Once upon a time", and
//! compare with llama2.c's token stream and text, token for token.

mod common;

use kinglet::generate::{Generator, Stop};
use kinglet::{session_floats, tokenizer, Dtype, ModelFile, Sampler, SamplerConfig, Session};

const REFERENCE_IDS: &str = include_str!("data/stories260K_greedy.ids");
const REFERENCE_TEXT: &str = include_str!("data/stories260K_greedy.txt");

fn reference_ids(label: &str) -> Vec<u32> {
    let line = REFERENCE_IDS
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .expect("label in fixture");
    line.split_whitespace()
        .map(|t| t.parse().expect("id"))
        .collect()
}

/// Greedy generation: (prompt ids, generated ids, text, stop).
fn greedy(file: &[u8], prompt: &str, n: u32) -> (Vec<u32>, Vec<u32>, String, Option<Stop>) {
    let model = ModelFile::new_checked(file).expect("opens");
    model.verify().expect("checksums");
    let mut prompt_ids = vec![0u32; tokenizer::max_tokens(prompt, true)];
    let len = tokenizer::encode(&model.vocab(), prompt, true, &mut prompt_ids).unwrap();
    prompt_ids.truncate(len);
    let max_seq = model.config().max_seq_len;
    let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
    let mut session = Session::new(&model, &mut buffer, max_seq).unwrap();
    let mut sampler = Sampler::new(model.config().vocab_size, SamplerConfig::default()).unwrap();
    let mut generator = Generator::new(&mut session, &mut sampler, &prompt_ids, n).unwrap();
    let (mut generated, mut text) = (Vec::new(), String::new());
    while let Some(token) = generator.step(|piece| text.push_str(piece)).unwrap() {
        if !token.from_prompt {
            generated.push(token.id);
        }
    }
    let stop = generator.stop();
    (prompt_ids, generated, text, stop)
}

#[test]
fn greedy_decoding_reproduces_llama2c_token_for_token() {
    let Some(file) = common::stories260k(Dtype::F32) else {
        return;
    };
    let (prompt, generated, text, stop) = greedy(&file, "Once upon a time", 300);
    let mut want_prompt = vec![1];
    want_prompt.extend(reference_ids("prompt:"));
    assert_eq!(
        prompt, want_prompt,
        "BOS, then llama2.c's encoding of the prompt"
    );
    let want = reference_ids("generated:");
    assert_eq!(want.len(), 300);
    let first_difference = generated.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "token streams differ");
    assert_eq!(generated.len(), 300);
    assert_eq!(stop, Some(Stop::Length));
    assert_eq!(text, REFERENCE_TEXT);
    assert!(text.starts_with(
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. \
         One day, she saw a big, red ball. She wanted to play with it, but it was too high."
    ));
}

/// Half-precision copies round the weights, so their streams may drift from
/// llama2.c's eventually; they still tell the same story at the start.
#[test]
fn half_precision_copies_start_the_same_story() {
    for dtype in [Dtype::F16, Dtype::BF16] {
        let Some(file) = common::stories260k(dtype) else {
            return;
        };
        let (_, _, text, _) = greedy(&file, "Once upon a time", 20);
        assert!(
            text.starts_with("Once upon a time, there was a"),
            "{dtype:?}: {text}"
        );
    }
}

#[test]
fn generation_stops_when_the_context_is_full() {
    let Some(file) = common::stories260k(Dtype::F32) else {
        return;
    };
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let mut buffer = vec![0.0f32; session_floats(model.config(), 8)];
    let mut session = Session::new(&model, &mut buffer, 8).unwrap();
    let mut sampler = Sampler::new(512, SamplerConfig::default()).unwrap();
    let prompt = [1, 403, 407, 261, 378];
    let mut generator = Generator::new(&mut session, &mut sampler, &prompt, 100).unwrap();
    let mut tokens = 0;
    while generator.step(|_| {}).unwrap().is_some() {
        tokens += 1;
    }
    // Five prompt positions and three sampled ones fill the context; the
    // logits of the eighth give one more token.
    assert_eq!(tokens, 9);
    assert_eq!(generator.stop(), Some(Stop::ContextFull));
    // A prompt longer than the room left is refused up front.
    let long = [1u32; 9];
    let mut buffer = vec![0.0f32; session_floats(model.config(), 8)];
    let mut session = Session::new(&model, &mut buffer, 8).unwrap();
    let mut sampler = Sampler::new(512, SamplerConfig::default()).unwrap();
    assert!(Generator::new(&mut session, &mut sampler, &long, 1).is_err());
    assert!(Generator::new(&mut session, &mut sampler, &[], 1).is_err());
    assert!(Generator::new(&mut session, &mut sampler, &[512], 1).is_err());
}
