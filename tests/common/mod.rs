//! Helpers shared by the end-to-end tests: tiny model files and reference data.
#![allow(dead_code)]

use kinglet::format::{sort_pieces, write_model, IoSink, TensorSpec, TokenizerKind, TokenizerSpec};
use kinglet::{CanonicalTensor, Config, Dtype};
use std::path::PathBuf;

pub mod binaries;

pub use kinglet_tools::rng::Rng;

/// Runs test `name` of this test binary alone in a child process with
/// `KINGLET_KERNELS` forcing `path`, its output captured.
pub fn run_test_on_path(name: &str, path: kinglet::kernels::Path) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary path");
    std::process::Command::new(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("KINGLET_KERNELS", path.name())
        .output()
        .expect("run the test binary")
}

/// Runs test `name` of this test binary once on every kernel path the CPU
/// has, each in a child process ([`run_test_on_path`]), and fails unless
/// each passes; says which paths the CPU lacks.
pub fn assert_passes_on_every_path(name: &str) {
    for path in kinglet::kernels::Path::ALL {
        if let Some(feature) = path.missing_feature() {
            println!("{}: skipped, CPU lacks {feature}", path.name());
            continue;
        }
        let output = run_test_on_path(name, path);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{}: {stdout}{stderr}",
            path.name()
        );
    }
}

/// llama2.c's stories260K with its tokenizer, imported and written as a
/// `.klt` in `dtype`; `None` (the test skips) without the reference data.
pub fn stories260k(dtype: Dtype) -> Option<Vec<u8>> {
    let checkpoint = std::fs::read(data_file("stories260K.bin")?).unwrap();
    let tokenizer = std::fs::read(data_file("tok512.bin")?).unwrap();
    let model = kinglet_tools::import::llama2c::import(&checkpoint, &tokenizer)
        .expect("stories260K imports");
    let mut out = Vec::new();
    model.write_klt(dtype, &mut out).expect("writes");
    Some(out)
}

/// A tiny config with grouped KV heads and an untied classifier.
pub fn tiny_config() -> Config {
    Config {
        dim: 24,
        hidden_dim: 40,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 6,
        max_seq_len: 32,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: false,
    }
}

/// Writes a model with random F32 weights (norm gains near 1) and a
/// character vocabulary "abcdef…" of `vocab_size` letters.
pub fn random_model(config: &Config, seed: u64, metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let layout: Vec<(String, CanonicalTensor)> = kinglet::canonical_tensors(config)
        .map(|t| (t.role.to_string(), t))
        .collect();
    let data: Vec<Vec<u8>> = layout
        .iter()
        .map(|(_, t)| {
            (0..t.elements())
                .flat_map(|_| {
                    let x = if t.role.is_norm() {
                        1.0 + 0.1 * rng.uniform()
                    } else {
                        0.3 * rng.uniform()
                    };
                    x.to_le_bytes()
                })
                .collect()
        })
        .collect();
    let tensors: Vec<TensorSpec> = layout
        .iter()
        .zip(&data)
        .map(|((name, t), data)| TensorSpec {
            name,
            dtype: Dtype::F32,
            shape: t.dims(),
            data,
        })
        .collect();
    let chars: Vec<String> = (0..config.vocab_size)
        .map(|i| char::from_u32('a' as u32 + i).unwrap_or('?').to_string())
        .collect();
    let pieces: Vec<&[u8]> = chars.iter().map(|c| c.as_bytes()).collect();
    let scores = vec![0.0; pieces.len()];
    let mut sorted = vec![0; pieces.len()];
    sort_pieces(&pieces, &mut sorted);
    let tok = char_tokenizer(&pieces, &scores, &sorted);
    let mut out = IoSink(Vec::new());
    write_model(&mut out, config, &tok, &tensors, metadata).expect("valid tiny model");
    out.0
}

/// A character-level tokenizer of `pieces`, no BOS or EOS.
pub fn char_tokenizer<'a>(
    pieces: &'a [&'a [u8]],
    scores: &'a [f32],
    sorted: &'a [u32],
) -> TokenizerSpec<'a> {
    TokenizerSpec {
        kind: TokenizerKind::Char,
        bos: None,
        eos: None,
        pieces,
        scores,
        sorted,
    }
}

/// The folder holding the reference data, or `None` (with a note) when the
/// file is missing. With `KINGLET_REQUIRE_DATA=1` a missing file fails.
pub fn data_file(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KINGLET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")));
    let path = dir.join(name);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("KINGLET_REQUIRE_DATA").as_deref() == Ok("1") {
        panic!(
            "reference file {} is missing and KINGLET_REQUIRE_DATA=1",
            path.display()
        );
    }
    eprintln!("skipped: reference file {} is missing", path.display());
    None
}

/// A random model of `config` in `dtype`, its matrices scaled up from the
/// synth default so that attention is far from uniform and the logits far
/// from flat (differences between code paths then show).
pub fn sharp_synth_model(config: &Config, seed: u64, dtype: Dtype) -> Vec<u8> {
    let mut model = kinglet_tools::synth::synth_model(config, seed).expect("synth");
    for t in &mut model.tensors {
        if t.shape.len() == 2 {
            t.values.iter_mut().for_each(|v| *v *= 8.0);
        }
    }
    let mut file = Vec::new();
    model.write_klt(dtype, &mut file).expect("writes");
    file
}

/// Deterministic text with a few dozen distinct characters.
pub fn corpus_text() -> String {
    let words = [
        "the", "king", "is", "dead", "long", "live", "queen", "and", "so", "we", "sing", "of",
        "wrens", "little", "birds", "flying", "north",
    ];
    let mut state = 12345u32;
    let mut text = String::new();
    for i in 0..2000 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        text.push_str(words[(state >> 16) as usize % words.len()]);
        text.push(if i % 11 == 10 { '\n' } else { ' ' });
    }
    text
}

/// `file` with its header CRC recomputed after `edit` changed the header
/// (e.g. a config field at its offset in docs/FORMAT.md): a hostile file
/// that checksums cannot catch.
pub fn patch_header(file: &[u8], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut out = file.to_vec();
    edit(&mut out);
    let header_bytes = u32::from_le_bytes(out[12..16].try_into().unwrap()) as usize;
    let crc = kinglet::checksum::crc32c(&out[..header_bytes - 4]);
    out[header_bytes - 4..header_bytes].copy_from_slice(&crc.to_le_bytes());
    out
}

/// `file` with `edit` applied to the data of tensor `index`, and that
/// tensor's CRC (in its directory entry, found by its zero-padded name) and
/// the header CRC recomputed to match.
pub fn patch_tensor(file: &[u8], index: u32, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let model = kinglet::ModelFile::new_checked(file).expect("a valid model to patch");
    let t = model.tensor(index).expect("tensor index");
    let range = t.offset as usize..t.offset as usize + t.data.len();
    let mut name = [0u8; kinglet::format::NAME_BYTES];
    name[..t.name.len()].copy_from_slice(t.name.as_bytes());
    let header = model.header_bytes();
    let entry = file[..header]
        .windows(name.len())
        .position(|w| w == name)
        .expect("the directory entry");
    let mut out = file.to_vec();
    edit(&mut out[range.clone()]);
    let crc = kinglet::checksum::crc32c(&out[range]);
    out[entry + 72..entry + 76].copy_from_slice(&crc.to_le_bytes());
    patch_header(&out, |_| {})
}

/// `kinglet synth` arguments (then `-o FILE`) for a valid 3.5 MB model whose
/// sizes are hostile: dim 8, hidden 16, 1,024 layers, 2 heads, a 300-piece
/// vocabulary and max_seq_len 1,048,576 (a full context: 64 GiB).
pub const HOSTILE_SYNTH: &str = "synth --dim 8 --hidden-dim 16 --n-layers 1024 --n-heads 2 \
                                 --n-kv-heads 2 --vocab-size 300 --max-seq-len 1048576";
