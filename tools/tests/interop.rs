//! Other formats in and out, through the `kinglet` binary: round trips that
//! must give back every tensor bit for bit (as `kinglet checksum` lists
//! them), and GGUF checked against ggml's own Python package (`gguf`):
//! its reader reads our export, and we import what its writer wrote.
//!
//! The Python tests skip, saying so, when `python3` cannot `import gguf,
//! numpy`; with `KINGLET_REQUIRE_PYTHON=1` (as in CI) that is a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kinglet::ModelFile;
use kinglet_tools::gguf::{tensor_name, GgmlType};
use kinglet_tools::spm::to_spm;
use kinglet_tools::{EncodedModel, EncodedTensor};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kinglet");
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gguf");
const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/shakespeare.klt");

mod common;
use common::data_file;

fn scratch(test: &str) -> PathBuf {
    common::scratch("interop", test)
}

/// Whether `python3` has ggml's `gguf` package (and numpy).
fn python_gguf() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("KINGLET_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "python3 cannot import gguf and numpy (KINGLET_REQUIRE_PYTHON=1): pip install gguf numpy"
        );
        eprintln!("skipped: python3 cannot import gguf and numpy (pip install gguf numpy)");
    }
    ok
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    let o = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn kinglet(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(run(dir, BIN, args).stdout).unwrap()
}

fn python(dir: &Path, script: &str, args: &[&str]) -> Value {
    let script = format!("{SCRIPTS}/{script}");
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    serde_json::from_slice(&run(dir, "python3", &all).stdout).unwrap()
}

/// The per-tensor lines of `kinglet checksum` (name, dtype, shape, CRC32C).
fn tensor_checksums(dir: &Path, file: &str) -> Vec<String> {
    let out = kinglet(dir, &["checksum", file]);
    let lines: Vec<String> = out
        .lines()
        .skip(2)
        .map(|l| l.trim_start_matches("# ").to_string())
        .collect();
    assert!(!lines.is_empty(), "{out}");
    lines
}

fn open(path: &Path) -> EncodedModel {
    let file = ModelFile::new_checked(fs::read(path).unwrap()).unwrap();
    EncodedModel::from_klt(&file)
}

/// The models every round trip is tested on: the bundled Q8_0 character
/// model, and stories260K (BPE) in each dtype. Returns their file names in `dir`.
fn test_models(dir: &Path) -> Vec<String> {
    fs::copy(BUNDLED, dir.join("shakespeare.klt")).unwrap();
    let mut names = vec!["shakespeare.klt".to_string()];
    if let (Some(bin), Some(tok)) = (data_file("stories260K.bin"), data_file("tok512.bin")) {
        let (bin, tok) = (bin.to_str().unwrap(), tok.to_str().unwrap());
        for dtype in ["f32", "f16", "bf16", "q8_0", "q4_0"] {
            let name = format!("stories260K-{dtype}.klt");
            kinglet(
                dir,
                &[
                    "convert",
                    bin,
                    "--tokenizer",
                    tok,
                    "--dtype",
                    dtype,
                    "-o",
                    &name,
                ],
            );
            names.push(name);
        }
    }
    names
}

#[test]
fn gguf_round_trip_gives_back_every_tensor_bit_for_bit() {
    let dir = scratch("gguf-round-trip");
    for name in test_models(&dir) {
        let stem = name.trim_end_matches(".klt");
        let gguf = format!("{stem}.gguf");
        let back = format!("{stem}-back.klt");
        let out = kinglet(&dir, &["convert", &name, "-o", &gguf]);
        assert!(out.starts_with(&format!("wrote {gguf}: ")), "{out}");
        assert!(fs::read(dir.join(&gguf)).unwrap().starts_with(b"GGUF"));
        kinglet(&dir, &["convert", &gguf, "-o", &back]);
        assert_eq!(
            tensor_checksums(&dir, &name),
            tensor_checksums(&dir, &back),
            "{name}"
        );
        // Vocabulary, config and metadata come back too: the whole file is the same.
        assert!(
            fs::read(dir.join(&name)).unwrap() == fs::read(dir.join(&back)).unwrap(),
            "{name}: the .klt written back differs"
        );
    }
}

#[test]
fn format_comes_from_the_flag_or_the_extension() {
    let dir = scratch("gguf-format");
    fs::copy(BUNDLED, dir.join("m.klt")).unwrap();
    kinglet(
        &dir,
        &["convert", "m.klt", "--format", "gguf", "-o", "m.bin"],
    );
    assert!(fs::read(dir.join("m.bin")).unwrap().starts_with(b"GGUF"));
    // Detected from the content, whatever the name.
    kinglet(&dir, &["convert", "m.bin", "-o", "back.klt"]);
    let o = Command::new(BIN)
        .args(["convert", "m.klt", "-o", "m.out"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("--format"), "{err}");
}

/// What a GGUF export of `model` holds for tensor `t`: its bytes, with
/// `extra_rows` copies of one of its rows appended to the embedding and
/// classifier of a character model (which row is the exporter's choice).
fn expected_sha256(t: &EncodedTensor, extra_rows: usize, found: &str) -> bool {
    use sha2::{Digest, Sha256};
    let hex = |b: &[u8]| -> String {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    if extra_rows == 0 || !(t.name == "tok_embedding" || t.name == "classifier") {
        return hex(&t.data) == found;
    }
    let row = t.row_bytes();
    (0..t.rows_cols().0).any(|k| {
        let mut data = t.data.clone();
        for _ in 0..extra_rows {
            data.extend_from_slice(&t.data[k * row..(k + 1) * row]);
        }
        hex(&data) == found
    })
}

#[test]
fn ggml_reader_reads_our_gguf() {
    if !python_gguf() {
        return;
    }
    let dir = scratch("gguf-py-reads");
    for name in test_models(&dir) {
        let gguf = name.replace(".klt", ".gguf");
        kinglet(&dir, &["convert", &name, "-o", &gguf]);
        let found = python(&dir, "read_export.py", &[&gguf]);
        let model = open(&dir.join(&name));
        let spm = to_spm(&model.vocab).unwrap();
        let c = &model.config;
        let f = &found["fields"];
        assert_eq!(f["general.architecture"], "llama", "{name}");
        for (key, value) in [
            ("llama.embedding_length", c.dim),
            ("llama.feed_forward_length", c.hidden_dim),
            ("llama.block_count", c.n_layers),
            ("llama.attention.head_count", c.n_heads),
            ("llama.attention.head_count_kv", c.n_kv_heads),
            ("llama.context_length", c.max_seq_len),
            ("llama.rope.dimension_count", c.head_dim() as u32),
            ("llama.vocab_size", spm.tokens.len() as u32),
        ] {
            assert_eq!(f[key], value, "{name}: {key}");
        }
        assert_eq!(
            f["llama.rope.freq_base"].as_f64(),
            Some(c.rope_theta as f64)
        );
        assert_eq!(
            f["llama.attention.layer_norm_rms_epsilon"].as_f64(),
            Some(c.norm_eps as f64)
        );
        assert_eq!(f["tokenizer.ggml.model"], "llama");
        let tokens: Vec<Vec<u8>> = f["tokenizer.ggml.tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().as_bytes().to_vec())
            .collect();
        assert_eq!(tokens, spm.tokens, "{name}");
        let types: Vec<i64> = f["tokenizer.ggml.token_type"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        assert_eq!(
            types,
            spm.types.iter().map(|&t| t as i64).collect::<Vec<_>>()
        );
        assert_eq!(f["tokenizer.ggml.bos_token_id"], spm.bos.unwrap());
        assert_eq!(f["tokenizer.ggml.eos_token_id"], spm.eos.unwrap());

        let tensors = found["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), model.tensors.len(), "{name}");
        let extra_rows = spm.tokens.len() - model.vocab.pieces.len();
        let roles = kinglet::canonical_tensors(c).map(|t| t.role);
        for ((t, role), g) in model.tensors.iter().zip(roles).zip(tensors) {
            assert_eq!(g["name"], tensor_name(role), "{name}");
            assert_eq!(g["type"], GgmlType::of(t.dtype).name, "{name} {}", t.name);
            let (rows, cols) = t.rows_cols();
            let rows = if matches!(t.name.as_str(), "tok_embedding" | "classifier") {
                rows + extra_rows
            } else {
                rows
            };
            // gguf-py lists the shape in ggml order, row length first.
            let shape: Vec<u64> = if t.shape.len() == 1 {
                vec![cols as u64]
            } else {
                vec![cols as u64, rows as u64]
            };
            assert_eq!(g["shape"], serde_json::json!(shape), "{name} {}", t.name);
            assert!(
                expected_sha256(t, extra_rows, g["sha256"].as_str().unwrap()),
                "{name} {}: the bytes differ",
                t.name
            );
        }
    }
}

#[test]
fn imports_a_gguf_written_by_ggml_writer() {
    if !python_gguf() {
        return;
    }
    let dir = scratch("gguf-py-writes");
    let expected = python(&dir, "write_model.py", &["py.gguf"]);
    let out = kinglet(&dir, &["convert", "py.gguf", "-o", "py.klt"]);
    assert!(
        out.contains(" bytes, q4_0, q8_0, f16, bf16 (norms f32)"),
        "{out}"
    );
    let model = open(&dir.join("py.klt"));
    let c = model.config;
    assert_eq!(
        (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads),
        (64, 96, 2, 4, 2)
    );
    assert_eq!((c.max_seq_len, c.vocab_size), (32, 271));
    assert_eq!((c.rope_theta, c.norm_eps), (500000.0, 1e-6));
    assert!(!c.tied_classifier);
    assert_eq!(model.vocab.pieces[1], b"\n<s>\n");
    assert_eq!(model.vocab.pieces[3], b"<0x00>");
    assert_eq!(model.vocab.pieces[266], b" the");
    assert_eq!((model.vocab.bos, model.vocab.eos), (Some(1), Some(2)));
    let roles = kinglet::canonical_tensors(&c).map(|t| t.role);
    for (t, role) in model.tensors.iter().zip(roles) {
        let e = &expected["tensors"][tensor_name(role)];
        assert_eq!(e["type"], GgmlType::of(t.dtype).name, "{}", t.name);
        assert!(
            expected_sha256(t, 0, e["sha256"].as_str().unwrap()),
            "{}",
            t.name
        );
    }
    let text = kinglet(
        &dir,
        &[
            "generate",
            "py.klt",
            "--prompt",
            "the",
            "-n",
            "8",
            "--temperature",
            "0",
        ],
    );
    assert!(text.starts_with("the"), "{text}");

    // Version 2 has the same layout: only the version field differs.
    let mut v2 = fs::read(dir.join("py.gguf")).unwrap();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    fs::write(dir.join("v2.gguf"), v2).unwrap();
    kinglet(&dir, &["convert", "v2.gguf", "-o", "v2.klt"]);
    assert_eq!(
        tensor_checksums(&dir, "v2.klt"),
        tensor_checksums(&dir, "py.klt")
    );
    let source = |m: &EncodedModel| m.metadata[0].clone();
    assert_eq!(
        source(&open(&dir.join("v2.klt"))),
        ("source".to_string(), "GGUF file v2.gguf".to_string())
    );
    assert_eq!(source(&model).1, "GGUF file py.gguf");
}

#[test]
fn refuses_other_ggml_types_naming_the_tensor_and_type() {
    if !python_gguf() {
        return;
    }
    let dir = scratch("gguf-py-q4k");
    python(&dir, "write_model.py", &["q4k.gguf", "q4_k"]);
    let o = Command::new(BIN)
        .args(["convert", "q4k.gguf", "-o", "q4k.klt"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("tensor blk.0.attn_q.weight is Q4_K"), "{err}");
    assert!(!dir.join("q4k.klt").exists());
}

/// The model in `dir` read back from the Hugging Face directory `hf`.
fn hf_round_trip(dir: &Path, name: &str) -> (EncodedModel, EncodedModel) {
    let stem = name.trim_end_matches(".klt");
    let hf = format!("{stem}-hf");
    let back = format!("{stem}-from-hf.klt");
    let out = kinglet(dir, &["convert", name, "--format", "hf", "-o", &hf]);
    assert!(out.starts_with(&format!("wrote {hf}: ")), "{out}");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(dir.join(&hf).join(file).is_file(), "{hf}/{file}");
    }
    kinglet(dir, &["convert", &hf, "-o", &back]);
    assert_eq!(
        tensor_checksums(dir, name),
        tensor_checksums(dir, &back),
        "{name}"
    );
    (open(&dir.join(name)), open(&dir.join(&back)))
}

#[test]
fn hf_round_trip_gives_back_every_tensor_bit_for_bit() {
    let dir = scratch("hf-round-trip");
    for name in test_models(&dir) {
        let (before, after) = hf_round_trip(&dir, &name);
        assert_eq!(before.config, after.config, "{name}");
        assert_eq!(before.metadata, after.metadata, "{name}");
        assert_eq!(before.tensors, after.tensors, "{name}");
        let (v, w) = (&before.vocab, &after.vocab);
        assert_eq!((v.kind, v.bos, v.eos), (w.kind, w.bos, w.eos), "{name}");
        assert_eq!(v.pieces, w.pieces, "{name}");
        // tokenizer.json keeps merges, not scores: the scores read back
        // order the merges as the original scores did.
        let merged: Vec<usize> = (0..v.scores.len())
            .filter(|&i| w.scores[i] != 0.0 || v.scores[i] != 0.0)
            .collect();
        for pair in merged.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if w.scores[a] != 0.0 && w.scores[b] != 0.0 {
                assert_eq!(
                    v.scores[a].total_cmp(&v.scores[b]),
                    w.scores[a].total_cmp(&w.scores[b]),
                    "{name}: pieces {a} and {b}"
                );
            }
        }
    }
}

#[test]
fn hf_export_permutes_q_and_k_rows_and_names_tensors_as_transformers_does() {
    let dir = scratch("hf-layout");
    let Some(name) = test_models(&dir).into_iter().find(|n| n.contains("f32")) else {
        return;
    };
    kinglet(&dir, &["convert", &name, "--format", "hf", "-o", "hf"]);
    let model = open(&dir.join(&name));
    let st = fs::read(dir.join("hf/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    let c = model.config;
    let head = c.head_dim();
    for (klt, hf, heads) in [
        (
            "layers.2.wq",
            "model.layers.2.self_attn.q_proj.weight",
            c.n_heads,
        ),
        (
            "layers.2.wk",
            "model.layers.2.self_attn.k_proj.weight",
            c.n_kv_heads,
        ),
    ] {
        let t = model.tensors.iter().find(|t| t.name == klt).unwrap();
        let view = st.tensor(hf).unwrap();
        let row = t.row_bytes();
        assert_eq!(view.data().len(), t.data.len());
        for h in 0..heads as usize {
            for i in 0..head / 2 {
                for j in 0..2 {
                    // kinglet row 2i+j of head h is HF row j·head/2 + i.
                    let k = h * head + 2 * i + j;
                    let f = h * head + j * head / 2 + i;
                    assert_eq!(
                        &t.data[k * row..(k + 1) * row],
                        &view.data()[f * row..(f + 1) * row],
                        "{klt} head {h} pair {i}"
                    );
                }
            }
        }
    }
    assert!(st.tensor("model.layers.0.mlp.gate_proj.weight").is_ok());
    assert!(st.tensor("lm_head.weight").is_err(), "tied: no lm_head");
    let config: Value =
        serde_json::from_slice(&fs::read(dir.join("hf/config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["num_key_value_heads"], c.n_kv_heads);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["rms_norm_eps"].as_f64().unwrap() as f32, c.norm_eps);
    let tokenizer: Value =
        serde_json::from_slice(&fs::read(dir.join("hf/tokenizer.json")).unwrap()).unwrap();
    assert_eq!(tokenizer["model"]["type"], "BPE");
    assert_eq!(tokenizer["model"]["byte_fallback"], true);
    assert_eq!(tokenizer["model"]["vocab"]["\u{2581}the"], 265);
    assert_eq!(
        tokenizer["model"]["merges"][0],
        serde_json::json!(["\u{2581}", "t"])
    );
}
