//! A session given packed weights (the quantized matrices repacked at load
//! time for the x86 kernels) computes the same logits, bit for bit, as one
//! reading the file's ggml blocks: prefill and decode, tied and separate
//! classifiers, matrices whose rows are not a multiple of 16, one and two
//! threads. Where the active kernel path does not pack (a CPU without
//! AVX2, or `KINGLET_KERNELS=portable`) the tests say so and skip.

mod common;

use kinglet::kernels::Path;
use kinglet::{
    packed_weights_bytes, session_floats, Config, Dtype, Error, ModelFile, PackedWeights, Parallel,
    Session,
};
use kinglet_tools::threads::Threads;

/// Whether the active path packs; prints why not.
fn packing_path() -> bool {
    let active = Path::active();
    if active.packs_weights() {
        return true;
    }
    match Path::Avx2.missing_feature() {
        Some(feature) => println!("skipped: CPU lacks {feature}"),
        None => println!("skipped: the active kernel path is {}", active.name()),
    }
    false
}

/// KV rows 24 (12 heads of 8, 3 KV heads) and a vocabulary of 500: both
/// leave rows over after the groups of 16.
fn config(tied_classifier: bool) -> Config {
    Config {
        dim: 96,
        hidden_dim: 256,
        n_layers: 2,
        n_heads: 12,
        n_kv_heads: 3,
        vocab_size: 500,
        max_seq_len: 64,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier,
    }
}

/// The bits of every logit of a 21-token prefill and 24 greedy steps, with
/// or without packed weights.
fn logits_bits(file: &[u8], packed: bool, parallel: &dyn Parallel) -> Vec<u32> {
    let model = ModelFile::new_checked(file).expect("opens");
    let config = *model.config();
    let max_seq = config.max_seq_len.min(64);
    let mut buffer = vec![0.0f32; session_floats(&config, max_seq)];
    let mut packed_buffer = vec![0u8; packed_weights_bytes(&model)];
    let session = Session::new(&model, &mut buffer, max_seq)
        .unwrap()
        .with_parallel(parallel);
    let mut session = if packed {
        let weights = PackedWeights::new(&model, &mut packed_buffer).expect("packs");
        assert_eq!(weights.len(), packed_weights_bytes(&model));
        session.with_packed(weights).expect("same model")
    } else {
        session
    };
    let vocab = config.vocab_size;
    let prompt: Vec<u32> = (0..21).map(|i| (i * 37 + 5) % vocab).collect();
    let mut logits = session.prefill(&prompt).unwrap().to_vec();
    let mut bits = Vec::new();
    for _ in 0..24 {
        bits.extend(logits.iter().map(|v| v.to_bits()));
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap();
        logits = session.forward(next).unwrap().to_vec();
    }
    bits.extend(logits.iter().map(|v| v.to_bits()));
    bits
}

fn assert_packing_changes_no_bit(file: &[u8], what: &str) {
    let model = ModelFile::new_checked(file).expect("opens");
    assert!(packed_weights_bytes(&model) > 0, "{what}: nothing to pack");
    let want = logits_bits(file, false, &kinglet::Sequential);
    for threads in [1, 2] {
        let pool = Threads::new(threads).unwrap();
        let got = logits_bits(file, true, &pool);
        assert!(got == want, "{what}, {threads} threads: logits differ");
    }
    // These matrices are under the default least task size: split them
    // anyway, so that tasks meet the packed groups (and the 24 KV rows'
    // partial group).
    for threads in [2, 3] {
        let pool = Threads::new(threads).unwrap().with_min_task_bytes(0);
        let got = logits_bits(file, true, &pool);
        assert!(
            got == want,
            "{what}, {threads} threads, every split: logits differ"
        );
    }
}

#[test]
fn packed_weights_give_the_same_logits_on_synth_models() {
    if !packing_path() {
        return;
    }
    for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
        for tied in [true, false] {
            let file = common::sharp_synth_model(&config(tied), 5, dtype);
            assert_packing_changes_no_bit(&file, &format!("synth {dtype:?} tied={tied}"));
        }
    }
}

#[test]
fn packed_weights_give_the_same_logits_on_stories260k() {
    if !packing_path() {
        return;
    }
    for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
        let Some(file) = common::stories260k(dtype) else {
            return;
        };
        assert_packing_changes_no_bit(&file, &format!("stories260K {dtype:?}"));
    }
}

#[test]
fn packed_weights_over_32_mib_are_streamed_and_change_no_bit() {
    if !packing_path() {
        return;
    }
    // Five layers of 1024 × 2816 in Q4_0: about 38 MB packed, so the
    // products request bytes ahead; the small models above are not marked.
    let large = Config {
        dim: 1024,
        hidden_dim: 2816,
        n_layers: 5,
        n_heads: 16,
        n_kv_heads: 16,
        vocab_size: 1000,
        max_seq_len: 64,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: false,
    };
    let file = common::sharp_synth_model(&large, 7, Dtype::Q4_0);
    let model = ModelFile::new_checked(&file[..]).expect("opens");
    let mut buffer = vec![0u8; packed_weights_bytes(&model)];
    assert!(buffer.len() > 32 << 20, "{} bytes", buffer.len());
    assert!(PackedWeights::new(&model, &mut buffer)
        .expect("packs")
        .is_streamed());
    let small = common::sharp_synth_model(&config(true), 5, Dtype::Q4_0);
    let small_model = ModelFile::new_checked(&small[..]).expect("opens");
    let mut small_buffer = vec![0u8; packed_weights_bytes(&small_model)];
    let packed = PackedWeights::new(&small_model, &mut small_buffer).expect("packs");
    assert!(!packed.is_streamed());
    let want = logits_bits(&file, false, &kinglet::Sequential);
    let got = logits_bits(&file, true, &kinglet::Sequential);
    assert!(got == want, "streamed packed weights: logits differ");
}

#[test]
fn packed_weights_refuse_small_buffers_and_other_models() {
    let float = common::sharp_synth_model(&config(true), 5, Dtype::F32);
    let float_model = ModelFile::new_checked(&float[..]).expect("opens");
    // Nothing to pack: any buffer, any path.
    assert_eq!(packed_weights_bytes(&float_model), 0);
    let empty = PackedWeights::new(&float_model, &mut []).expect("nothing to pack");
    assert!(empty.is_empty());
    if !packing_path() {
        return;
    }
    let file = common::sharp_synth_model(&config(true), 5, Dtype::Q4_0);
    let model = ModelFile::new_checked(&file[..]).expect("opens");
    let needed = packed_weights_bytes(&model);
    let mut buffer = vec![0u8; needed - 1];
    assert!(matches!(
        PackedWeights::new(&model, &mut buffer),
        Err(Error::BufferTooSmall { needed: n, available }) if n == needed && available == needed - 1
    ));
    let mut buffer = vec![0u8; needed];
    let packed = PackedWeights::new(&model, &mut buffer).expect("packs");
    // The same bytes in another buffer are another model.
    let copy = file.clone();
    let other = ModelFile::new_checked(&copy[..]).expect("opens");
    let mut floats = vec![0.0f32; session_floats(other.config(), 8)];
    let session = Session::new(&other, &mut floats, 8).unwrap();
    assert!(matches!(
        session.with_packed(packed),
        Err(Error::InvalidInput { .. })
    ));
}
