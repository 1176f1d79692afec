//! Chunked prefill against token-by-token forward: same logits after the
//! prompt, same KV cache (the tokens decoded after it agree too), for every
//! weight dtype, with grouped KV heads, for prompts shorter than, equal to
//! and longer than a chunk, from position 0 and from a later position; and
//! the same again for sessions sized for smaller chunks (1, 3), on every
//! kernel path this CPU has, packed weights and 1 to 3 threads; and the
//! logits after every token of a prefill (`prefill_logits`) are those of
//! each token decoded.

mod common;

use kinglet::kernels::Path;
use kinglet::session::PREFILL_CHUNK;
use kinglet::{
    packed_weights_bytes, session_floats, session_floats_for_chunk, Config, Dtype, Error,
    ModelFile, PackedWeights, Parallel, Session,
};
use kinglet_tools::threads::Threads;

/// Grouped KV heads (4 query heads on 2 KV heads), an untied classifier,
/// widths that are whole Q8 blocks, and a vocabulary that is not.
fn config() -> Config {
    Config {
        dim: 64,
        hidden_dim: 96,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 300,
        max_seq_len: 80,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: false,
    }
}

fn model_file(dtype: Dtype) -> Vec<u8> {
    common::sharp_synth_model(&config(), 7, dtype)
}

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(97)) % 300)
        .collect()
}

/// Whether `got` has exactly `want`'s bits: every kernel path computes
/// each element of a matrix product in the order of its one-vector kernel.
fn agree(dtype: Dtype, got: &[f32], want: &[f32]) -> Result<(), String> {
    let same_bits = got
        .iter()
        .zip(want)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    if same_bits && got.len() == want.len() {
        Ok(())
    } else {
        Err(format!("{dtype:?} logits differ in bits"))
    }
}

/// Logits after each position, token by token.
fn forward_all(
    model: &ModelFile<&[u8]>,
    start: &[u32],
    prompt: &[u32],
    after: &[u32],
) -> Vec<Vec<f32>> {
    let max_seq = model.config().max_seq_len;
    let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
    let mut session = Session::new(model, &mut buffer, max_seq).unwrap();
    start
        .iter()
        .chain(prompt)
        .chain(after)
        .map(|&t| session.forward(t).unwrap().to_vec())
        .collect()
}

#[test]
fn prefill_gives_forward_logits_and_cache_for_every_dtype() {
    for dtype in Dtype::ALL {
        let file = model_file(dtype);
        let model = ModelFile::new_checked(&file[..]).expect("opens");
        let max_seq = model.config().max_seq_len;
        let mut buffer = vec![f32::NAN; session_floats(model.config(), max_seq)];
        for start_len in [0, 3] {
            for prompt_len in [
                1,
                5,
                PREFILL_CHUNK,
                PREFILL_CHUNK + 1,
                2 * PREFILL_CHUNK + 5,
            ] {
                let start = tokens(start_len, 1);
                let prompt = tokens(prompt_len, prompt_len as u32 + 2);
                let after = tokens(4, 3);
                let want = forward_all(&model, &start, &prompt, &after);
                let label = format!("{dtype:?} start {start_len} prompt {prompt_len}");

                let mut session = Session::new(&model, &mut buffer, max_seq).unwrap();
                for &t in &start {
                    session.forward(t).unwrap();
                }
                let logits = session.prefill(&prompt).unwrap().to_vec();
                assert_eq!(session.pos() as usize, start_len + prompt_len, "{label}");
                let at_prompt_end = start_len + prompt_len - 1;
                agree(dtype, &logits, &want[at_prompt_end])
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                // The cache holds what forward would have put there.
                for (i, &t) in after.iter().enumerate() {
                    let got = session.forward(t).unwrap();
                    agree(dtype, got, &want[at_prompt_end + 1 + i])
                        .unwrap_or_else(|e| panic!("{label}, token {i} after: {e}"));
                }
            }
        }
    }
}

#[test]
fn prefill_in_pieces_equals_one_prefill() {
    let file = model_file(Dtype::F32);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let max_seq = model.config().max_seq_len;
    let prompt = tokens(40, 9);
    let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
    let mut session = Session::new(&model, &mut buffer, max_seq).unwrap();
    let whole = session.prefill(&prompt).unwrap().to_vec();
    session.reset();
    session.prefill(&prompt[..7]).unwrap();
    session.prefill(&prompt[7..30]).unwrap();
    let pieces = session.prefill(&prompt[30..]).unwrap();
    // The same kernels on the same positions: the same bits.
    assert!(whole
        .iter()
        .zip(pieces)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn prefill_and_prefill_logits_refuse_bad_prompts_and_leave_the_session_alone() {
    let file = model_file(Dtype::Q8_0);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let max_seq = 20;
    let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
    let mut session = Session::new(&model, &mut buffer, max_seq).unwrap();
    session.prefill(&tokens(3, 1)).unwrap();
    let before = session.logits().to_vec();
    assert_eq!(session.prefill(&[]).err(), Some(Error::EmptyPrompt));
    assert_eq!(
        session.prefill(&[1, 2, 300, 4]).err(),
        Some(Error::TokenOutOfRange {
            token: 300,
            vocab_size: 300
        })
    );
    assert_eq!(
        session.prefill(&tokens(18, 2)).err(),
        Some(Error::SequenceFull { max_seq_len: 20 })
    );
    // `prefill_logits` refuses the same, and a buffer short of a row.
    let mut rows = vec![0.0f32; 18 * 300];
    assert_eq!(
        session
            .prefill_logits(&tokens(5, 2), &mut rows[..4 * 300])
            .err(),
        Some(Error::BufferTooSmall {
            needed: 5 * 300,
            available: 4 * 300
        })
    );
    let refused = [&[][..], &[1, 300], &tokens(18, 2)];
    let errors = refused.map(|prompt| session.prefill_logits(prompt, &mut rows).err());
    assert_eq!(
        errors,
        [
            Some(Error::EmptyPrompt),
            Some(Error::TokenOutOfRange {
                token: 300,
                vocab_size: 300
            }),
            Some(Error::SequenceFull { max_seq_len: 20 })
        ]
    );
    assert_eq!(session.pos(), 3);
    assert_eq!(session.logits(), before.as_slice());
    // Exactly filling the context is fine; one more position is not.
    session.prefill(&tokens(17, 2)).unwrap();
    assert_eq!(session.pos(), 20);
    assert_eq!(
        session.forward(5).err(),
        Some(Error::SequenceFull { max_seq_len: 20 })
    );
}

/// A session of `chunk` positions per prefill in a buffer of exactly its
/// size (NaN, so a read before a write would show), packed when `packed`:
/// the logits after `prompt` prefilled (after `start` decoded), then after
/// each of `after` decoded. With `every_position`, the prompt goes through
/// `prefill_logits`, and the logits after each of its tokens come first,
/// then the session's own.
fn chunked_logits(
    model: &ModelFile<&[u8]>,
    chunk: usize,
    packed: bool,
    parallel: &dyn Parallel,
    every_position: bool,
    [start, prompt, after]: [&[u32]; 3],
) -> Vec<Vec<f32>> {
    let max_seq = model.config().max_seq_len;
    let mut buffer = vec![f32::NAN; session_floats_for_chunk(model.config(), max_seq, chunk)];
    let mut packed_bytes = vec![0u8; packed_weights_bytes(model)];
    let session = Session::with_chunk(model, &mut buffer, max_seq, chunk)
        .unwrap()
        .with_parallel(parallel);
    assert_eq!(session.chunk(), chunk);
    let mut session = if packed {
        let weights = PackedWeights::new(model, &mut packed_bytes).expect("packs");
        session.with_packed(weights).expect("same model")
    } else {
        session
    };
    for &t in start {
        session.forward(t).unwrap();
    }
    let mut logits = Vec::new();
    if every_position {
        let vocab = model.config().vocab_size as usize;
        let mut rows = vec![f32::NAN; prompt.len() * vocab];
        session.prefill_logits(prompt, &mut rows).unwrap();
        logits.extend(rows.chunks_exact(vocab).map(<[f32]>::to_vec));
        logits.push(session.logits().to_vec());
    } else {
        logits.push(session.prefill(prompt).unwrap().to_vec());
    }
    for &t in after {
        logits.push(session.forward(t).unwrap().to_vec());
    }
    logits
}

/// Run on the active kernel path; `prefill_chunks_agree_on_every_kernel_path`
/// runs it again on each other path this CPU has.
#[test]
fn every_prefill_chunk_gives_the_bits_of_token_by_token() {
    let path = Path::active();
    for dtype in Dtype::ALL {
        let file = model_file(dtype);
        let model = ModelFile::new_checked(&file[..]).expect("opens");
        let packs = path.packs_weights() && packed_weights_bytes(&model) > 0;
        for (start_len, prompt_len) in [(0, 1), (0, 7), (3, 16), (0, 17), (3, 37)] {
            let start = tokens(start_len, 1);
            let prompt = tokens(prompt_len, prompt_len as u32 + 2);
            let after = tokens(4, 3);
            let want = forward_all(&model, &start, &prompt, &after);
            for chunk in [1, 3, PREFILL_CHUNK] {
                let label = format!(
                    "{} {dtype:?} chunk {chunk} start {start_len} prompt {prompt_len}",
                    path.name()
                );
                let run = |packed: bool, parallel: &dyn Parallel, how: &str| {
                    let inputs = [&start[..], &prompt, &after];
                    let got = chunked_logits(&model, chunk, packed, parallel, false, inputs);
                    for (i, (got, want)) in got
                        .iter()
                        .zip(&want[start_len + prompt_len - 1..])
                        .enumerate()
                    {
                        // 0: after the prompt; then the tokens decoded after it.
                        agree(dtype, got, want)
                            .unwrap_or_else(|e| panic!("{label}, {how}, logits {i}: {e}"));
                    }
                    // Every position's logits, then the last one's again.
                    let got = chunked_logits(&model, chunk, packed, parallel, true, inputs);
                    let last = start_len + prompt_len - 1;
                    let want_every = want[start_len..=last].iter().chain(&want[last..]);
                    assert_eq!(got.len(), prompt_len + 1 + after.len(), "{label}");
                    for (i, (got, want)) in got.iter().zip(want_every).enumerate() {
                        agree(dtype, got, want).unwrap_or_else(|e| {
                            panic!("{label}, {how}, every position's logits, row {i}: {e}")
                        });
                    }
                };
                run(false, &kinglet::Sequential, "sequential");
                if packs {
                    run(true, &kinglet::Sequential, "packed");
                }
                // Split even these small products and heads among threads.
                for threads in [2, 3] {
                    let pool = Threads::new(threads).unwrap().with_min_task_bytes(0);
                    let how = format!("{threads} threads");
                    run(false, &pool, &how);
                    if packs {
                        run(true, &pool, &format!("{how}, packed"));
                    }
                }
            }
        }
    }
}

#[test]
fn prefill_chunks_agree_on_every_kernel_path() {
    if std::env::var_os("KINGLET_KERNELS").is_some() {
        return; // a child of this test, or a run forcing one path
    }
    common::assert_passes_on_every_path("every_prefill_chunk_gives_the_bits_of_token_by_token");
}

#[test]
fn a_session_refuses_a_bad_chunk_or_a_buffer_for_a_smaller_one() {
    let file = model_file(Dtype::Q8_0);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let max_seq = 20;
    let config = model.config();
    let mut buffer = vec![0.0f32; session_floats(config, max_seq)];
    for chunk in [0, PREFILL_CHUNK + 1] {
        assert!(
            matches!(
                Session::with_chunk(&model, &mut buffer, max_seq, chunk).err(),
                Some(Error::InvalidInput { reason }) if reason.contains("prefill chunk")
            ),
            "chunk {chunk}"
        );
    }
    let for_3 = session_floats_for_chunk(config, max_seq, 3);
    let for_4 = session_floats_for_chunk(config, max_seq, 4);
    assert!(session_floats_for_chunk(config, max_seq, 1) < for_3 && for_3 < for_4);
    assert_eq!(
        Session::with_chunk(&model, &mut buffer[..for_3], max_seq, 4).err(),
        Some(Error::BufferTooSmall {
            needed: for_4,
            available: for_3
        })
    );
    assert_eq!(
        Session::with_chunk(&model, &mut buffer[..for_3 - 1], max_seq, 3).err(),
        Some(Error::BufferTooSmall {
            needed: for_3,
            available: for_3 - 1
        })
    );
    let session = Session::with_chunk(&model, &mut buffer[..for_3], max_seq, 3).unwrap();
    assert_eq!(session.chunk(), 3);
    let session = Session::new(&model, &mut buffer, max_seq).unwrap();
    assert_eq!(session.chunk(), PREFILL_CHUNK);
}
