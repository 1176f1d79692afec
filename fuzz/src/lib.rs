//! What the fuzz targets share: checksum repair (so mutated files get past
//! the CRCs to the checks behind them), the work a firmware does with a
//! model file it was handed, and the reference vocabularies.

use std::path::PathBuf;
use std::sync::OnceLock;

use kinglet::checksum::crc32c;
use kinglet::error::Error;
use kinglet::format::DIR_ENTRY_BYTES;
use kinglet::generate::Generator;
use kinglet::{session_floats, ModelFile, Sampler, SamplerConfig, Session};

/// Largest session buffer a target allocates, in `f32`s (64 MiB): a file
/// whose session would need more is refused, as firmware with a fixed
/// arena would refuse it.
pub const MAX_SESSION_FLOATS: usize = 16 << 20;

/// Positions of the sessions the targets run.
pub const MAX_SEQ: u32 = 8;

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(le_u32(b, at)? as u64 | (le_u32(b, at + 4)? as u64) << 32)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = at.checked_add(4).and_then(|end| b.get_mut(at..end)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Rewrites every tensor CRC and then the header CRC of a (possibly
/// mutated) .klt file so they match its bytes, wherever the fields it reads
/// (`docs/FORMAT.md`) point inside the file. Mutations then reach the layout
/// checks and the forward pass instead of dying at a checksum.
pub fn repair_checksums(file: &mut [u8]) {
    let header_bytes = le_u32(file, 12).unwrap_or(0) as usize;
    // The directory follows the tokenizer section: 72 + 20 fixed bytes,
    // vocab + 1 offsets, vocab scores, vocab sorted ids, the padded blob.
    let vocab = le_u32(file, 44).unwrap_or(0) as u64;
    let blob = le_u32(file, 72 + 16).unwrap_or(0) as u64;
    let directory = 92 + 4 * (vocab + 1) + 8 * vocab + blob.div_ceil(4) * 4;
    let n_tensors = le_u32(file, 64).unwrap_or(0) as u64;
    for i in 0..n_tensors {
        let entry = directory + i * DIR_ENTRY_BYTES as u64;
        if entry + DIR_ENTRY_BYTES as u64 > header_bytes.min(file.len()) as u64 {
            break;
        }
        let entry = entry as usize;
        let (Some(offset), Some(len)) = (le_u64(file, entry + 56), le_u64(file, entry + 64)) else {
            break;
        };
        let Some(end) = offset.checked_add(len) else {
            continue;
        };
        if end <= file.len() as u64 {
            let crc = crc32c(&file[offset as usize..end as usize]);
            put_u32(file, entry + 72, crc);
        }
    }
    if (8..=file.len()).contains(&header_bytes) {
        let crc = crc32c(&file[..header_bytes - 4]);
        put_u32(file, header_bytes - 4, crc);
    }
}

/// Opens `bytes` as firmware would and, when every check passes, uses it:
/// every accessor, a session in a buffer of exactly `session_floats`, a few
/// forward steps, a prefill, and the generator. Panics (a finding) on any
/// broken promise; errors are fine.
pub fn exercise_model(bytes: &[u8], seed: u64) {
    let Ok(model) = ModelFile::new_checked(bytes) else {
        return;
    };
    let config = *model.config();
    let vocab = model.vocab();
    assert_eq!(vocab.len(), config.vocab_size);
    for id in 0..vocab.len().min(4096) {
        let piece = vocab.piece(id);
        let _ = vocab.score(id);
        let found = vocab.find(piece).expect("every piece is found");
        assert_eq!(vocab.piece(found), piece);
        assert!(found <= id, "find gives the smallest id");
        assert!(piece.len() <= vocab.max_piece_len());
    }
    assert!(vocab.piece(vocab.len()).is_empty());
    for special in [vocab.bos(), vocab.eos()].into_iter().flatten() {
        assert!(special < vocab.len());
    }
    for t in model.tensors() {
        let m = t.matrix();
        assert_eq!(
            t.dtype.row_bytes(m.cols).map(|r| r * m.rows),
            Some(t.data.len())
        );
        assert_eq!(t.offset % 64, 0);
    }
    assert!(model.tensor(model.tensor_count()).is_none());
    for layer in model.layers() {
        assert_eq!(layer.wq.rows, config.dim as usize);
    }
    assert_eq!(model.layers().count(), config.n_layers as usize);
    assert!(model.layer(config.n_layers as usize).is_none());
    assert_eq!(model.final_norm().cols, config.dim as usize);
    assert_eq!(model.classifier().rows, config.vocab_size as usize);
    assert_eq!(model.token_embedding().cols, config.dim as usize);
    let n_meta = model.metadata().count();
    if let Some((key, value)) = model.metadata().next() {
        assert_eq!(model.metadata_value(key), Some(value));
    }
    let _ = n_meta;

    let mut reported = 0;
    let problems = model.verify_each(|_| reported += 1);
    assert_eq!(problems, reported);
    assert_eq!(model.verify().is_ok(), problems == 0);
    if problems != 0 {
        return;
    }
    run_session(&model, seed);
}

fn run_session(model: &ModelFile<&[u8]>, seed: u64) {
    let config = *model.config();
    let max_seq = config.max_seq_len.min(MAX_SEQ);
    let floats = session_floats(&config, max_seq);
    if floats > MAX_SESSION_FLOATS {
        return;
    }
    // [session_floats] f32: the engine's whole working memory.
    let mut buffer = vec![0.0f32; floats];
    assert!(matches!(
        Session::new(model, &mut buffer[..floats - 1], max_seq),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(Session::new(model, &mut buffer, config.max_seq_len.saturating_add(1)).is_err());
    let Ok(mut session) = Session::new(model, &mut buffer, max_seq) else {
        return;
    };
    let vocab = config.vocab_size;
    assert!(matches!(
        session.forward(vocab),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert_eq!(session.pos(), 0);
    let first = model.vocab().bos().unwrap_or(0);
    for token in [first, (seed % vocab as u64) as u32, vocab - 1] {
        if session.pos() == session.max_seq() {
            assert!(session.forward(first).is_err());
            break;
        }
        match session.forward(token) {
            Ok(logits) => assert_eq!(logits.len(), vocab as usize),
            Err(_) => return,
        }
    }
    session.reset();
    let prompt = [first, (seed >> 8) as u32 % vocab, vocab - 1];
    let prompt = &prompt[..prompt.len().min(max_seq as usize)];
    if session.prefill(prompt).is_err() {
        return;
    }
    session.reset();
    let sampling = SamplerConfig {
        temperature: (seed % 3) as f32 * 0.5,
        top_k: (seed >> 16) as u32 % 4,
        top_p: if seed & 1 == 0 { 1.0 } else { 0.9 },
        seed,
    };
    let Ok(mut sampler) = Sampler::new(vocab, sampling) else {
        return;
    };
    let Ok(mut generator) = Generator::new(&mut session, &mut sampler, &prompt[..1], 4) else {
        return;
    };
    let mut text = String::new();
    for _ in 0..16 {
        match generator.step(|s| text.push_str(s)) {
            Ok(Some(token)) => assert!(token.id < vocab),
            Ok(None) => {
                assert!(generator.stop().is_some());
                break;
            }
            Err(_) => break,
        }
    }
}

/// The reference data folder: `KINGLET_DATA`, or `../shared/data` beside
/// the repository.
pub fn data_dir() -> PathBuf {
    std::env::var_os("KINGLET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")))
}

/// The bundled character-level model (Char vocabulary).
pub const SHAKESPEARE: &[u8] = include_bytes!("../../tools/models/shakespeare.klt");

/// stories260K converted to .klt (BPE vocabulary, tok512), built once from
/// the llama2.c files in [`data_dir`].
pub fn stories260k() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = data_dir();
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("{}: {e} (set KINGLET_DATA)", dir.join(name).display()))
        };
        let model =
            kinglet_tools::import::llama2c::import(&read("stories260K.bin"), &read("tok512.bin"))
                .expect("stories260K imports");
        let mut file = Vec::new();
        model
            .write_klt(kinglet::Dtype::F32, &mut file)
            .expect("stories260K converts");
        file
    })
}

/// Writes an imported model as a .klt file, which must open and verify.
/// `false` when the writer refuses the model (weights that are not finite,
/// a vocabulary a .klt file cannot hold), which is a clean error.
pub fn check_imported(model: &kinglet_tools::EncodedModel) -> bool {
    let mut klt = Vec::new();
    if model.write_klt(&mut klt).is_err() {
        return false;
    }
    let opened = ModelFile::new_checked(&klt[..]).expect("an imported model opens");
    opened.verify().expect("an imported model verifies");
    true
}
