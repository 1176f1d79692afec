//! The llama2.c importer against the real stories260K checkpoint and against
//! version 0 and 1 files written here from random weights: every tensor of
//! the written .klt file equals the source floats at the offsets the
//! llama2.c format defines.

use std::path::PathBuf;

#[path = "common/llama2c.rs"]
mod llama2c;

use kinglet::format::TokenizerKind;
use kinglet::{Config, Dtype, ModelFile};
use kinglet_tools::import::llama2c::{import, parse_checkpoint, parse_tokenizer, MAGIC};
use kinglet_tools::model::{decode_tensor, f32s_from_le};
use kinglet_tools::rng::Rng;

fn data_file(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("KINGLET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")));
    match std::fs::read(dir.join(name)) {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                std::env::var("KINGLET_REQUIRE_DATA").as_deref() != Ok("1"),
                "{name}: {e} (KINGLET_REQUIRE_DATA=1)"
            );
            eprintln!("skipped: {name} not found in {}", dir.display());
            None
        }
    }
}

/// Writes the model as .klt bytes and opens them with every check.
fn to_klt(model: &kinglet_tools::OwnedModel, dtype: Dtype) -> ModelFile<Vec<u8>> {
    let mut bytes = Vec::new();
    let n = model.write_klt(dtype, &mut bytes).unwrap();
    assert_eq!(n as usize, bytes.len());
    let file = ModelFile::new_checked(bytes).unwrap();
    file.verify().unwrap();
    file
}

fn floats(m: kinglet::Matrix<'_>) -> Vec<f32> {
    assert_eq!(m.dtype, Dtype::F32);
    f32s_from_le(m.data)
}

/// Reads consecutive f32 arrays from a llama2.c weight blob.
struct Cursor<'a>(&'a [f32], usize);

impl<'a> Cursor<'a> {
    fn next(&mut self, n: usize) -> &'a [f32] {
        let s = &self.0[self.1..self.1 + n];
        self.1 += n;
        s
    }
}

/// Per-layer source arrays in the klt layer order: attn_norm, wq, wk, wv,
/// wo, ffn_norm, w1, w2, w3.
type Layers<'a> = Vec<[&'a [f32]; 9]>;

/// Checks every tensor of `file` against the llama2.c source arrays.
fn assert_tensors_equal(
    file: &ModelFile<Vec<u8>>,
    embedding: &[f32],
    layers: &Layers<'_>,
    final_norm: &[f32],
    classifier: Option<&[f32]>,
) {
    assert_eq!(floats(file.token_embedding()), embedding);
    for (l, src) in layers.iter().enumerate() {
        let w = file.layer(l).unwrap();
        let got = [
            w.attn_norm,
            w.wq,
            w.wk,
            w.wv,
            w.wo,
            w.ffn_norm,
            w.w1,
            w.w2,
            w.w3,
        ];
        for (part, (m, want)) in got.into_iter().zip(src).enumerate() {
            assert_eq!(floats(m), *want, "layer {l} part {part}");
        }
    }
    assert_eq!(floats(file.final_norm()), final_norm);
    assert_eq!(floats(file.classifier()), classifier.unwrap_or(embedding));
}

/// Splits `count` consecutive per-layer arrays of `n` floats each.
fn per_layer<'a>(c: &mut Cursor<'a>, layers: usize, n: usize) -> Vec<&'a [f32]> {
    (0..layers).map(|_| c.next(n)).collect()
}

#[test]
fn stories260k_imports_exactly() {
    let (Some(ckpt), Some(tok)) = (data_file("stories260K.bin"), data_file("tok512.bin")) else {
        return;
    };
    let model = import(&ckpt, &tok).unwrap();
    let file = to_klt(&model, Dtype::F32);
    let want = kinglet::config::stories::STORIES260K;
    assert_eq!(*file.config(), want);

    // Version 0 layout: header of 7 i32, then the arrays in run.c's order.
    let src = f32s_from_le(&ckpt[28..]);
    let mut c = Cursor(&src, 0);
    let (d, h, kv, l) = (64, 172, 32, 5);
    let embedding = c.next(512 * d);
    let att = per_layer(&mut c, l, d);
    let wq = per_layer(&mut c, l, d * d);
    let wk = per_layer(&mut c, l, kv * d);
    let wv = per_layer(&mut c, l, kv * d);
    let wo = per_layer(&mut c, l, d * d);
    let ffn = per_layer(&mut c, l, d);
    let w1 = per_layer(&mut c, l, h * d);
    let w2 = per_layer(&mut c, l, d * h);
    let w3 = per_layer(&mut c, l, h * d);
    let final_norm = c.next(d);
    c.next(2 * 512 * 4); // freq_cis_real, freq_cis_imag
    assert_eq!(c.1, src.len(), "the whole file is accounted for");
    let layers: Layers<'_> = (0..l)
        .map(|i| {
            [
                att[i], wq[i], wk[i], wv[i], wo[i], ffn[i], w1[i], w2[i], w3[i],
            ]
        })
        .collect();
    assert_tensors_equal(&file, embedding, &layers, final_norm, None);

    // The vocabulary, read independently: i32 max_len, then (f32, i32, bytes).
    let v = file.vocab();
    assert_eq!(v.kind(), TokenizerKind::Bpe);
    assert_eq!((v.len(), v.bos(), v.eos()), (512, Some(1), Some(2)));
    let mut pos = 4;
    for id in 0..512u32 {
        let score = f32::from_le_bytes(tok[pos..pos + 4].try_into().unwrap());
        let len = i32::from_le_bytes(tok[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let piece = &tok[pos + 8..pos + 8 + len];
        assert_eq!(v.piece(id), piece, "piece {id}");
        assert_eq!(v.score(id), score, "score {id}");
        assert_eq!(v.find(piece), Some(id), "lookup of piece {id}");
        pos += 8 + len;
    }
    assert_eq!(v.find(b"<0x0A>"), Some(13));
    assert_eq!(
        file.metadata_value("source"),
        Some("llama2.c checkpoint version 0")
    );
}

#[test]
fn stories260k_header_size_mismatch_names_both_sizes() {
    let Some(ckpt) = data_file("stories260K.bin") else {
        return;
    };
    let e = format!(
        "{:#}",
        parse_checkpoint(&ckpt[..ckpt.len() - 4]).unwrap_err()
    );
    assert!(
        e.contains("1056540 bytes") && e.contains("1056536 bytes"),
        "{e}"
    );
    let mut longer = ckpt.clone();
    longer.extend_from_slice(&[0; 8]);
    let e = format!("{:#}", parse_checkpoint(&longer).unwrap_err());
    assert!(
        e.contains("1056548 bytes") && e.contains("8 trailing bytes"),
        "{e}"
    );
}

#[test]
fn truncated_tokenizer_is_an_error() {
    let Some(tok) = data_file("tok512.bin") else {
        return;
    };
    assert!(parse_tokenizer(&tok, 512).is_ok());
    let e = parse_tokenizer(&tok[..tok.len() - 3], 512)
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated at token 511 of 512"), "{e}");
    let e = parse_tokenizer(&tok[..2], 512).unwrap_err().to_string();
    assert!(e.contains("too short"), "{e}");
    let e = parse_tokenizer(&tok, 511).unwrap_err().to_string();
    assert!(e.contains("trailing bytes"), "{e}");
}

/// A small shape with grouped KV heads.
fn small() -> Config {
    Config {
        dim: 16,
        hidden_dim: 24,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 11,
        max_seq_len: 8,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: true,
    }
}

/// A llama2.c tokenizer.bin of `n` pieces.
fn tokenizer_bin(n: u32) -> Vec<u8> {
    let mut t = 8i32.to_le_bytes().to_vec();
    for id in 0..n {
        let piece = format!("p{id}");
        t.extend((-(id as f32)).to_le_bytes());
        t.extend((piece.len() as i32).to_le_bytes());
        t.extend(piece.as_bytes());
    }
    t
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v, 1.0);
    v
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Random source arrays for `c`: embedding, per-layer [9], final norm, classifier.
struct Source {
    embedding: Vec<f32>,
    layers: Vec<[Vec<f32>; 9]>,
    final_norm: Vec<f32>,
    classifier: Vec<f32>,
}

fn random_source(c: &Config, seed: u64) -> Source {
    let mut rng = Rng::new(seed);
    let (d, h, kv, v) = (
        c.dim as usize,
        c.hidden_dim as usize,
        c.kv_dim(),
        c.vocab_size as usize,
    );
    let sizes = [d, d * d, kv * d, kv * d, d * d, d, h * d, d * h, h * d];
    Source {
        embedding: random(&mut rng, v * d),
        layers: (0..c.n_layers)
            .map(|_| sizes.map(|n| random(&mut rng, n)))
            .collect(),
        final_norm: random(&mut rng, d),
        classifier: random(&mut rng, v * d),
    }
}

/// Checks a written file against the random source.
fn assert_matches_source(file: &ModelFile<Vec<u8>>, s: &Source, tied: bool) {
    let layers: Layers<'_> = s
        .layers
        .iter()
        .map(|a| core::array::from_fn(|i| a[i].as_slice()))
        .collect();
    let cls = (!tied).then_some(s.classifier.as_slice());
    assert_tensors_equal(file, &s.embedding, &layers, &s.final_norm, cls);
}

/// llama2.c `export.py` version 1 layout.
fn write_v1(c: &Config, s: &Source) -> Vec<u8> {
    let mut b = MAGIC.to_le_bytes().to_vec();
    b.extend(1i32.to_le_bytes());
    b.extend(llama2c::config_bytes(c, c.vocab_size as i32));
    b.push(c.tied_classifier as u8);
    b.resize(256, 0);
    for part in [0, 5] {
        for layer in &s.layers {
            b.extend(le_bytes(&layer[part]));
        }
    }
    b.extend(le_bytes(&s.final_norm));
    b.extend(le_bytes(&s.embedding));
    for part in [1, 2, 3, 4, 6, 7, 8] {
        for layer in &s.layers {
            b.extend(le_bytes(&layer[part]));
        }
    }
    if !c.tied_classifier {
        b.extend(le_bytes(&s.classifier));
    }
    b
}

/// llama2.c legacy version 0 layout (negative vocab = separate classifier).
fn write_v0(c: &Config, s: &Source) -> Vec<u8> {
    let vocab = if c.tied_classifier {
        c.vocab_size as i32
    } else {
        -(c.vocab_size as i32)
    };
    let mut b = llama2c::config_bytes(c, vocab);
    b.extend(le_bytes(&s.embedding));
    for part in 0..9 {
        for layer in &s.layers {
            b.extend(le_bytes(&layer[part]));
        }
    }
    b.extend(le_bytes(&s.final_norm));
    // RoPE tables: present in the file, ignored by the importer.
    b.extend(le_bytes(&vec![7.0; c.max_seq_len as usize * c.head_dim()]));
    if !c.tied_classifier {
        b.extend(le_bytes(&s.classifier));
    }
    b
}

#[test]
fn version_1_round_trip_shared_and_separate_classifier() {
    for tied in [true, false] {
        let c = Config {
            tied_classifier: tied,
            ..small()
        };
        let s = random_source(&c, 42);
        let bin = write_v1(&c, &s);
        let ckpt = parse_checkpoint(&bin).unwrap();
        assert_eq!((ckpt.version, ckpt.config), (1, c));
        let model = import(&bin, &tokenizer_bin(11)).unwrap();
        let file = to_klt(&model, Dtype::F32);
        assert_eq!(*file.config(), c);
        assert_matches_source(&file, &s, tied);
        assert_eq!(file.vocab().piece(10), b"p10");

        // One byte short, one byte long: both name the expected size.
        let e = format!("{:#}", parse_checkpoint(&bin[..bin.len() - 1]).unwrap_err());
        assert!(e.contains(&format!("{} bytes", bin.len())), "{e}");
        let mut long = bin.clone();
        long.push(0);
        let e = format!("{:#}", parse_checkpoint(&long).unwrap_err());
        assert!(e.contains("1 trailing bytes"), "{e}");
    }
}

#[test]
fn version_0_round_trip_with_separate_classifier() {
    for tied in [true, false] {
        let c = Config {
            tied_classifier: tied,
            ..small()
        };
        let s = random_source(&c, 7);
        let bin = write_v0(&c, &s);
        let ckpt = parse_checkpoint(&bin).unwrap();
        assert_eq!((ckpt.version, ckpt.config), (0, c));
        let file = to_klt(&import(&bin, &tokenizer_bin(11)).unwrap(), Dtype::F32);
        assert_matches_source(&file, &s, tied);
    }
}

#[test]
fn f16_and_bf16_exports_round_to_nearest() {
    let c = small();
    let s = random_source(&c, 3);
    let model = import(&write_v1(&c, &s), &tokenizer_bin(11)).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let file = to_klt(&model, dtype);
        let wq = file.tensors().find(|t| t.name == "layers.1.wq").unwrap();
        assert_eq!(wq.dtype, dtype);
        assert_eq!(
            file.layer(1).unwrap().attn_norm.dtype,
            Dtype::F32,
            "norms stay f32"
        );
        let got = decode_tensor(&wq);
        let tol = if dtype == Dtype::F16 { 1e-3 } else { 8e-3 };
        for (g, w) in got.iter().zip(&s.layers[1][1]) {
            assert!((g - w).abs() <= tol * w.abs().max(1e-2), "{g} vs {w}");
        }
    }
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let c = small();
    let mut s = random_source(&c, 9);
    s.layers[1][7][5] = f32::INFINITY; // layers.1.w2
    let model = import(&write_v1(&c, &s), &tokenizer_bin(11)).unwrap();
    let e = model.write_klt(Dtype::F32, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("layers.1.w2"), "{e}");
}
