//! Quantization-aware training: the step runs the fake-quantized model,
//! `--qat-start` keeps the first steps in float, resuming a QAT run is
//! bit-identical, checkpoints record QAT (and old ones read as "no QAT"),
//! and the CLI's export picks the QAT dtype.

mod common;

use kinglet::Dtype;
use kinglet_trainer::activations::Activations;
use kinglet_trainer::checkpoint::Checkpoint;
use kinglet_trainer::data::{sample_batch, Corpus};
use kinglet_trainer::model;
use kinglet_trainer::qat::{quantized_weights, Qat};
use kinglet_trainer::rng::Rng;
use kinglet_trainer::trainer::Trainer;
use kinglet_trainer::TrainError;
use std::process::Command;

fn fresh(qat: Option<Qat>) -> (Trainer, Corpus) {
    let (model, train, corpus) = common::tiny_setup(32, 64);
    let mut t = Trainer::for_corpus(model, train, &corpus).expect("trainer");
    t.set_qat(qat).expect("qat");
    (t, corpus)
}

fn q4(start: u64, activations: bool) -> Option<Qat> {
    Some(Qat {
        dtype: Dtype::Q4_0,
        start,
        activations,
    })
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The loss of the next micro-batch the trainer will draw, computed
/// independently on the fake-quantized weights.
fn next_loss_of_quantized_model(t: &Trainer, train: &[u32], activations: bool) -> f64 {
    let mut rng = Rng::from_state(t.data_rng.state());
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let context = t.model().context;
    sample_batch(train, t.train.batch, context, &mut rng, &mut x, &mut y);
    let weights = quantized_weights(&t.layout, &t.params, Dtype::Q4_0).expect("quantize");
    let mut acts = Activations::new(t.model(), t.train.batch, context);
    model::forward_with(&t.layout, &weights, &mut acts, &x, Some(&y), activations)
}

#[test]
fn a_qat_step_runs_the_fake_quantized_model() {
    for activations in [true, false] {
        let (model, mut train, corpus) = common::tiny_setup(32, 64);
        train.accum_steps = 1;
        let mut t =
            Trainer::new(model, train, corpus.tokenizer.clone(), String::new()).expect("trainer");
        t.set_qat(q4(0, activations)).expect("qat");
        for _ in 0..3 {
            let expected = next_loss_of_quantized_model(&t, &corpus.train, activations);
            let other = next_loss_of_quantized_model(&t, &corpus.train, !activations);
            let got = t.step(&corpus.train).expect("step").loss;
            assert_eq!(
                got.to_bits(),
                expected.to_bits(),
                "activations {activations}"
            );
            assert_ne!(got, other, "activation rounding must change the loss");
        }
    }
}

#[test]
fn qat_start_keeps_the_first_steps_in_float() {
    let (mut float, corpus) = fresh(None);
    let (mut late, _) = fresh(q4(3, true));
    for step in 1..=5 {
        float.step(&corpus.train).expect("step");
        late.step(&corpus.train).expect("step");
        assert_eq!(
            same_bits(&float.params, &late.params),
            step <= 3,
            "after step {step}"
        );
    }
}

#[test]
fn resuming_a_qat_run_continues_bit_identically() {
    // QAT from the start, and QAT switching on after the resume point.
    for qat in [q4(0, true), q4(6, true), q4(2, false)] {
        let (mut straight, corpus) = fresh(qat);
        for _ in 0..8 {
            straight.step(&corpus.train).expect("step");
        }
        let (mut first_half, _) = fresh(qat);
        for _ in 0..4 {
            first_half.step(&corpus.train).expect("step");
        }
        let bytes = first_half.checkpoint().to_bytes();
        drop(first_half);
        let loaded = Checkpoint::from_bytes(&bytes).expect("checkpoint reads back");
        assert_eq!(loaded.qat, qat);
        let train = loaded.train;
        let mut resumed = Trainer::from_checkpoint(loaded, train).expect("resume");
        for _ in 0..4 {
            resumed.step(&corpus.train).expect("step");
        }
        assert!(same_bits(&straight.params, &resumed.params), "{qat:?}");
        assert!(same_bits(&straight.adamw.m, &resumed.adamw.m), "{qat:?}");
        assert!(same_bits(&straight.adamw.v, &resumed.adamw.v), "{qat:?}");
        assert_eq!(
            straight.checkpoint().to_bytes(),
            resumed.checkpoint().to_bytes()
        );
    }
}

/// Rewrites a current checkpoint without QAT and without a corpus path as
/// `version` 1 (neither field) or 2 (no corpus path).
fn as_version(bytes: &[u8], params: usize, version: u32) -> Vec<u8> {
    let count_at = bytes.len() - 4 - 12 * params - 8;
    let empty_path = 4;
    let dropped = if version == 1 {
        16 + empty_path
    } else {
        empty_path
    };
    let mut old = bytes[..count_at - dropped].to_vec();
    old.extend_from_slice(&bytes[count_at..bytes.len() - 4]);
    old[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = kinglet::checksum::crc32c(&old);
    old.extend_from_slice(&crc.to_le_bytes());
    old
}

#[test]
fn checkpoint_versions() {
    let (t, _) = fresh(None);
    assert_eq!(t.corpus_path, "");
    let current = t.checkpoint().to_bytes();
    for version in [1, 2] {
        let old = as_version(&current, t.params.len(), version);
        let read = Checkpoint::from_bytes(&old)
            .unwrap_or_else(|e| panic!("version {version} still reads: {e}"));
        assert_eq!(read, t.checkpoint());
        assert_eq!(read.qat, None);
        assert_eq!(read.corpus_path, "");
    }

    let mut future = current.clone();
    future[8..12].copy_from_slice(&4u32.to_le_bytes());
    let e = Checkpoint::from_bytes(&future).unwrap_err();
    assert!(matches!(e, TrainError::CheckpointVersion(_)), "{e:?}");
    assert!(e.message().contains("version 4"), "{e}");

    let (mut q, _) = fresh(q4(5, false));
    q.set_qat(Some(Qat {
        dtype: Dtype::Q8_0,
        start: 5,
        activations: false,
    }))
    .expect("qat");
    let back = Checkpoint::from_bytes(&q.checkpoint().to_bytes()).expect("reads");
    assert_eq!(back.qat, q.qat);
}

#[test]
fn shapes_that_are_not_whole_blocks_are_refused() {
    let (mut model, train, corpus) = common::tiny_setup(32, 64);
    model.hidden_dim = 48;
    let mut t =
        Trainer::new(model, train, corpus.tokenizer.clone(), String::new()).expect("trainer");
    let e = t.set_qat(q4(0, true)).unwrap_err();
    assert!(matches!(e, TrainError::Settings(_)), "{e:?}");
    assert!(Qat::parse_dtype("q5_1").is_err());
    assert!(Qat::parse_dtype("f16").is_err());
}

#[test]
fn the_cli_trains_evaluates_and_exports_with_qat() {
    let dir = std::env::temp_dir().join(format!("kinglet-train-qat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let data = dir.join("corpus.txt");
    std::fs::write(&data, common::tiny_text()).expect("write corpus");
    let bin = || Command::new(env!("CARGO_BIN_EXE_kinglet-train"));
    let out = dir.join("run");
    let trained = bin()
        .args([
            "--context",
            "8",
            "--dim",
            "32",
            "--layers",
            "1",
            "--heads",
            "2",
        ])
        .args([
            "--hidden",
            "64",
            "--batch",
            "4",
            "--steps",
            "4",
            "--threads",
            "2",
        ])
        .args(["--eval-windows", "4", "--sample-len", "0", "--quiet"])
        .args([
            "--qat",
            "q8_0",
            "--qat-start",
            "2",
            "--qat-activations",
            "off",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run kinglet-train");
    assert!(trained.status.success(), "{trained:?}");
    let ckpt = out.join("last.ckpt");
    let c = Checkpoint::load(&ckpt).expect("checkpoint");
    assert_eq!(
        c.qat,
        Some(Qat {
            dtype: Dtype::Q8_0,
            start: 2,
            activations: false
        })
    );

    let export = |extra: &[&str], name: &str| {
        let o = bin()
            .arg("export")
            .arg(&ckpt)
            .arg("-o")
            .arg(dir.join(name))
            .args(extra)
            .output()
            .expect("export");
        assert!(o.status.success(), "{o:?}");
        let file = std::fs::read(dir.join(name)).expect("exported file");
        let model = kinglet::ModelFile::new_checked(&file[..]).expect("valid file");
        let dtype = model.layer(0).unwrap().wq.dtype;
        (String::from_utf8_lossy(&o.stderr).into_owned(), dtype)
    };
    let (said, dtype) = export(&[], "default.klt");
    assert_eq!(dtype, Dtype::Q8_0);
    assert!(said.contains("exporting as q8_0"), "{said}");
    let (said, dtype) = export(&["--dtype", "q4_0"], "other.klt");
    assert_eq!(dtype, Dtype::Q4_0);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.starts_with("warning:"), "{said}");
    let (said, _) = export(&["--dtype", "q8_0"], "same.klt");
    assert!(said.is_empty(), "{said}");

    let bad = bin()
        .args(["--qat", "q5_1", "--data"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("q8_0 or q4_0"));
    let _ = std::fs::remove_dir_all(&dir);
}
