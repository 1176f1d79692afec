//! Exported .klt files open in the engine's reader with the trainer's weights,
//! vocabulary and metadata.

mod common;

use kinglet::format::TokenizerKind;
use kinglet::{Dtype, ModelFile};
use kinglet_trainer::config::{preset, ModelConfig};
use kinglet_trainer::data::Corpus;
use kinglet_trainer::export::{self, model_file_bytes};
use kinglet_trainer::trainer::Trainer;

fn trained() -> Trainer {
    let corpus = Corpus::from_bytes(common::tiny_text().as_bytes(), None, 8).expect("corpus");
    let p = preset("seed").expect("preset");
    let model = ModelConfig {
        vocab_size: corpus.tokenizer.len(),
        context: 8,
        dim: 16,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        hidden_dim: 24,
        ..p.model
    };
    let train = kinglet_trainer::TrainConfig {
        batch: 2,
        ..p.train
    };
    let mut t = Trainer::for_corpus(model, train, &corpus).expect("trainer");
    t.step(&corpus.train).expect("step");
    t.val_loss = Some(2.5);
    t
}

#[test]
fn f32_export_round_trips_exactly() {
    let t = trained();
    let c = t.checkpoint();
    let bytes = model_file_bytes(&c, Dtype::F32).expect("export");
    let file = ModelFile::new_checked(&bytes[..]).expect("engine opens it");
    file.verify().expect("checksums");
    assert_eq!(*file.config(), c.model.to_engine());
    let vocab = file.vocab();
    assert_eq!(vocab.kind(), TokenizerKind::Char);
    assert_eq!(vocab.len() as usize, c.tokenizer.len());
    assert_eq!(vocab.bos(), None);
    for (id, ch) in c.tokenizer.chars().enumerate() {
        assert_eq!(vocab.piece(id as u32), ch.to_string().as_bytes());
        assert_eq!(vocab.find(ch.to_string().as_bytes()), Some(id as u32));
    }
    // The file stores the very section the trainer encoded with.
    assert_eq!(file.tokenizer_section(), c.tokenizer.section());
    let layout = &t.layout;
    for (info, slot) in file.tensors().zip(&layout.slots) {
        assert_eq!(info.name, slot.name);
        let values: Vec<f32> = info
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(values, &c.params[slot.range()], "{}", slot.name);
    }
    assert_eq!(file.metadata_value("training.steps"), Some("1"));
    assert_eq!(file.metadata_value("training.val_loss"), Some("2.500000"));
    assert_eq!(
        file.metadata_value("corpus.sha256"),
        Some(c.corpus_sha256.as_str())
    );
    assert_eq!(file.metadata_value("source"), Some("kinglet-train"));
}

#[test]
fn the_engine_encodes_the_corpus_to_the_ids_trained_on() {
    let corpus = Corpus::from_bytes(common::tiny_text().as_bytes(), None, 8).expect("corpus");
    let t = trained();
    let bytes = model_file_bytes(&t.checkpoint(), Dtype::F32).expect("export");
    let file = ModelFile::new_checked(&bytes[..]).expect("engine opens it");
    let text = common::tiny_text();
    // What `kinglet generate` and `eval` do with a prompt.
    let mut ids = vec![0; kinglet::tokenizer::max_tokens(&text, false)];
    let n = kinglet::tokenizer::encode(&file.vocab(), &text, false, &mut ids).expect("encodes");
    ids.truncate(n);
    assert_eq!(ids, [&corpus.train[..], &corpus.val[..]].concat());
}

#[test]
fn half_precision_exports_keep_norms_in_f32() {
    let c = trained().checkpoint();
    for (dtype, expected) in [(Dtype::F16, Dtype::F16), (Dtype::BF16, Dtype::BF16)] {
        let bytes = model_file_bytes(&c, dtype).expect("export");
        let file = ModelFile::new_checked(&bytes[..]).expect("engine opens it");
        file.verify().expect("checksums");
        for info in file.tensors() {
            let want = if info.ndim == 1 { Dtype::F32 } else { expected };
            assert_eq!(info.dtype, want, "{}", info.name);
        }
    }
}

#[test]
fn gguf_and_hf_exports_import_back_to_the_same_model() {
    use kinglet_tools::interop::{load, Format};
    let c = trained().checkpoint();
    let dir = std::env::temp_dir().join(format!("kinglet-export-formats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for dtype in [Dtype::F32, Dtype::BF16] {
        let expected = export::encoded_model(&c, dtype).expect("encodes");
        for (format, name) in [(Format::Gguf, "m.gguf"), (Format::Hf, "m-hf")] {
            let out = dir.join(name);
            let said = export::export(&c, &out, dtype, format).expect("exports");
            assert!(
                said.starts_with(&format!("wrote {}: ", out.display())),
                "{said}"
            );
            let back = load(&out, None).expect("imports");
            assert_eq!(back, expected, "{format:?} {dtype:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
