//! The parallel-for hook changes no bit: a prompt prefilled and 64 tokens
//! decoded greedily on rayon pools of 1, 2 and 3 threads give the same token
//! stream and the same logits, bit for bit, as the sequential session.

mod common;

use kinglet::{session_floats, Config, Dtype, ModelFile, Parallel, Session};
use kinglet_tools::threads::Threads;

/// Wide enough that every matrix product and the attention split into
/// several tasks (8 heads over 4 KV heads).
fn config() -> Config {
    Config {
        dim: 128,
        hidden_dim: 352,
        n_layers: 2,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        max_seq_len: 128,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: true,
    }
}

fn model_file(dtype: Dtype) -> Vec<u8> {
    common::sharp_synth_model(&config(), 11, dtype)
}

/// Greedy decoding of 64 tokens after a 21-token prompt: the tokens, and
/// the bits of every logit seen.
fn greedy(file: &[u8], parallel: &dyn Parallel) -> (Vec<u32>, Vec<u32>) {
    let model = ModelFile::new_checked(file).expect("opens");
    let max_seq = model.config().max_seq_len;
    let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
    let mut session = Session::new(&model, &mut buffer, max_seq)
        .unwrap()
        .with_parallel(parallel);
    let prompt: Vec<u32> = (0..21).map(|i| (i * 37 + 5) % 512).collect();
    let mut logits_bits: Vec<u32> = Vec::new();
    let mut logits = session.prefill(&prompt).unwrap().to_vec();
    let mut tokens = Vec::new();
    for _ in 0..64 {
        logits_bits.extend(logits.iter().map(|v| v.to_bits()));
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap();
        tokens.push(next);
        logits = session.forward(next).unwrap().to_vec();
    }
    (tokens, logits_bits)
}

#[test]
fn token_streams_and_logits_are_identical_for_1_2_and_3_threads() {
    for dtype in [Dtype::F32, Dtype::Q8_0, Dtype::Q4_0] {
        let file = model_file(dtype);
        let (want_tokens, want_bits) = greedy(&file, &kinglet::Sequential);
        let distinct: std::collections::HashSet<_> = want_tokens.iter().collect();
        assert!(
            distinct.len() > 4,
            "{dtype:?}: a degenerate stream proves little"
        );
        for threads in [1, 2, 3] {
            let pool = Threads::new(threads).unwrap();
            let (tokens, bits) = greedy(&file, &pool);
            assert_eq!(tokens, want_tokens, "{dtype:?}, {threads} threads");
            assert!(
                bits == want_bits,
                "{dtype:?}, {threads} threads: logits differ"
            );
            // Inside the pool (how the tools run it): the same again.
            let (tokens, bits) = pool.install(|| greedy(&file, &pool));
            assert_eq!(
                tokens, want_tokens,
                "{dtype:?}, {threads} threads, installed"
            );
            assert!(bits == want_bits, "{dtype:?}, {threads} threads, installed");
        }
    }
}

#[test]
fn every_task_split_changes_no_bit_either() {
    // The small model's products fall under the default least task size;
    // without one, every product and attention step is split as finely as
    // the pool allows.
    for dtype in [Dtype::F32, Dtype::Q8_0, Dtype::Q4_0] {
        let file = model_file(dtype);
        let want = greedy(&file, &kinglet::Sequential);
        for threads in [2, 3] {
            let pool = Threads::new(threads).unwrap().with_min_task_bytes(0);
            let got = pool.install(|| greedy(&file, &pool));
            assert!(got == want, "{dtype:?}, {threads} threads, every split");
        }
    }
}
