//! The README's promise that the same model and input give the same bits on
//! every CPU, checked against values pinned once: the logits of stories260K
//! in each dtype, over a prompt and greedy steps, hashed bit for bit. Every
//! kernel path this CPU has runs it (a child process each); on another
//! architecture (aarch64, docs/PERFORMANCE.md) the portable path must give
//! the same hashes.

mod common;

use kinglet::kernels::Path;
use kinglet::sampler::argmax;
use kinglet::{session_floats, tokenizer, Dtype, ModelFile, Session};

/// FNV-1a of the logits' bits, pinned on AMD Zen 4 (x86-64) and checked on
/// aarch64 (qemu) and every x86 kernel path.
const PINNED: [(Dtype, u64); 5] = [
    (Dtype::F32, 0xdcef_9b9f_35f1_0643),
    (Dtype::F16, 0x8ca2_98b5_be69_f503),
    (Dtype::BF16, 0xabd8_9877_44f3_0d56),
    (Dtype::Q8_0, 0x12bc_c4a9_7df9_7968),
    (Dtype::Q4_0, 0x9191_962e_d553_b8ce),
];

/// Greedy steps after the prompt whose logits are hashed too.
const STEPS: usize = 24;

fn fnv1a(mut hash: u64, values: &[f32]) -> u64 {
    for v in values {
        for byte in v.to_bits().to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The hash of the logits after the prompt and after each greedy step.
fn logits_hash(file: &[u8]) -> u64 {
    let model = ModelFile::new_checked(file).expect("opens");
    let prompt = "Once upon a time";
    let mut ids = vec![0u32; tokenizer::max_tokens(prompt, true)];
    let len = tokenizer::encode(&model.vocab(), prompt, true, &mut ids).unwrap();
    ids.truncate(len);
    let max_seq = u32::try_from(len + STEPS).unwrap();
    let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
    let mut session = Session::new(&model, &mut buffer, max_seq).unwrap();
    let mut logits = session.prefill(&ids).unwrap().to_vec();
    let mut hash = fnv1a(0xcbf2_9ce4_8422_2325, &logits);
    for _ in 0..STEPS {
        let next = argmax(&logits);
        logits = session.forward(next).unwrap().to_vec();
        hash = fnv1a(hash, &logits);
    }
    hash
}

#[test]
fn logits_have_the_pinned_bits() {
    let path = Path::active().name();
    let mut wrong = Vec::new();
    for (dtype, want) in PINNED {
        let Some(file) = common::stories260k(dtype) else {
            return;
        };
        let got = logits_hash(&file);
        println!("{dtype:?} on {path}: {got:#018x}");
        if got != want {
            wrong.push(format!("{dtype:?}: {got:#018x}, pinned {want:#018x}"));
        }
    }
    assert!(wrong.is_empty(), "on {path}: {}", wrong.join("; "));
}

#[test]
fn every_kernel_path_gives_the_pinned_bits() {
    if std::env::var_os("KINGLET_KERNELS").is_some() {
        return; // a child of this test, or a run forcing one path
    }
    common::assert_passes_on_every_path("logits_have_the_pinned_bits");
}
