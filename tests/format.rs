//! The .klt reader against its writer and against crafted bad bytes.

mod common;

use common::{random_model, tiny_config, Rng};
use kinglet::checksum::crc32c;
use kinglet::error::Section;
use kinglet::format::{
    sort_pieces, write_model, write_tokenizer, IoSink, SliceSink, TensorSpec, TokenizerKind, Vocab,
    DIR_ENTRY_BYTES,
};
use kinglet::{Config, Dtype, Error, ModelFile};

fn header_bytes(file: &[u8]) -> usize {
    u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize
}

/// Recomputes the header checksum, so a test reaches the check behind it.
fn fix_header_crc(file: &mut [u8]) {
    let h = header_bytes(file);
    let crc = crc32c(&file[..h - 4]);
    file[h - 4..h].copy_from_slice(&crc.to_le_bytes());
}

fn put_u32(file: &mut [u8], at: usize, v: u32) {
    file[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(file: &mut [u8], at: usize, v: u64) {
    file[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offset of directory entry `index`.
fn entry(file: &[u8], index: usize) -> usize {
    let dir = file
        .windows(13)
        .position(|w| w == b"tok_embedding")
        .unwrap();
    dir + index * DIR_ENTRY_BYTES
}

/// Patches a u32 header field, fixes the checksum, and opens the result.
fn open_patched(file: &[u8], at: usize, v: u32) -> Result<(), Error> {
    let mut f = file.to_vec();
    put_u32(&mut f, at, v);
    fix_header_crc(&mut f);
    ModelFile::new_checked(&f[..]).map(|_| ())
}

#[test]
fn round_trip_preserves_everything() {
    let config = tiny_config();
    let meta = [("training.steps", "1000"), ("corpus.sha256", "86c4e6aa")];
    let file = random_model(&config, 7, &meta);
    let model = ModelFile::new_checked(&file[..]).expect("opens");
    assert_eq!(*model.config(), config);
    assert_eq!(model.verify(), Ok(()));
    assert_eq!(model.tensor_count(), 21);
    assert_eq!(model.metadata().collect::<Vec<_>>(), meta.to_vec());
    assert_eq!(model.metadata_value("training.steps"), Some("1000"));
    assert_eq!(model.metadata_value("missing"), None);
    for (t, want) in model.tensors().zip(kinglet::canonical_tensors(&config)) {
        assert_eq!(t.offset % 64, 0, "{} is 64-byte aligned", t.name);
        assert_eq!(crc32c(t.data), t.crc32c);
        assert_eq!(
            (t.index, t.role, t.shape),
            (want.index, want.role, want.shape)
        );
        assert_eq!(t.name, want.role.to_string());
    }
    assert_eq!(model.layers().count(), 2);
    assert!(model.layer(2).is_none());
    let l1 = model.layer(1).unwrap();
    assert_eq!((l1.wk.rows, l1.wk.cols), (12, 24));
    assert_eq!((l1.w2.rows, l1.w2.cols), (24, 40));
    assert_eq!(model.tensor(21).map(|t| t.index), None);
    let vocab = model.vocab();
    assert_eq!(vocab.kind(), TokenizerKind::Char);
    assert_eq!(vocab.len(), 6);
    assert_eq!(vocab.piece(2), b"c");
    assert_eq!(vocab.find(b"e"), Some(4));
    assert_eq!(vocab.find(b"z"), None);
    assert_eq!(vocab.piece(99), b"");
    assert_eq!((vocab.bos(), vocab.eos()), (None, None));
}

#[test]
fn tied_classifier_is_the_embedding() {
    let config = Config {
        tied_classifier: true,
        ..tiny_config()
    };
    let file = random_model(&config, 3, &[]);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    assert_eq!(model.tensor_count(), 20);
    assert_eq!(
        model.classifier().data.as_ptr(),
        model.token_embedding().data.as_ptr()
    );
}

#[test]
fn every_truncation_is_an_error() {
    let file = random_model(&tiny_config(), 1, &[("k", "v")]);
    for len in 0..file.len() {
        let err = ModelFile::new_checked(&file[..len]).err();
        assert!(err.is_some(), "truncated to {len} bytes opened");
    }
    assert!(matches!(
        ModelFile::new_checked(&file[..40]),
        Err(Error::Truncated {
            section: Section::Header,
            ..
        })
    ));
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut file = random_model(&tiny_config(), 1, &[]);
    file.push(0);
    assert!(matches!(
        ModelFile::new_checked(&file[..]),
        Err(Error::FileSize { .. })
    ));
}

#[test]
fn wrong_magic_and_version() {
    let file = random_model(&tiny_config(), 1, &[]);
    let mut f = file.clone();
    f[0] = b'X';
    assert_eq!(ModelFile::new_checked(&f[..]).err(), Some(Error::BadMagic));
    assert_eq!(
        open_patched(&file, 8, 2),
        Err(Error::UnsupportedVersion { found: 2 })
    );
}

#[test]
fn header_checksum_mismatch() {
    let mut file = random_model(&tiny_config(), 1, &[]);
    let e = entry(&file, 3);
    file[e + 1] ^= 0x20; // a name byte
    assert!(matches!(
        ModelFile::new_checked(&file[..]),
        Err(Error::HeaderChecksum { .. })
    ));
}

#[test]
fn inconsistent_configs() {
    let file = random_model(&tiny_config(), 1, &[]);
    let field = |r: Result<(), Error>| match r {
        Err(Error::BadConfig { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(field(open_patched(&file, 36, 5)), "n_heads"); // 3 does not divide 24
    assert_eq!(field(open_patched(&file, 40, 3)), "n_kv_heads"); // 3 does not divide 4
    assert_eq!(field(open_patched(&file, 24, 0)), "dim");
    assert_eq!(field(open_patched(&file, 28, 0)), "hidden_dim");
    assert_eq!(field(open_patched(&file, 32, 1 << 30)), "n_layers");
    assert_eq!(field(open_patched(&file, 44, u32::MAX)), "vocab_size");
    assert_eq!(field(open_patched(&file, 48, 0)), "max_seq_len");
    assert_eq!(
        field(open_patched(&file, 52, f32::NAN.to_bits())),
        "rope_theta"
    );
    assert_eq!(field(open_patched(&file, 60, 6)), "flags");
}

#[test]
fn shapes_must_match_the_config() {
    let file = random_model(&tiny_config(), 1, &[]);
    // Growing the vocabulary moves the tokenizer layout: some error, no panic.
    assert!(open_patched(&file, 44, 7).is_err());
    let e = entry(&file, 2); // layers.0.wq
    assert!(matches!(
        open_patched(&file, e + 48, 17),
        Err(Error::TensorShape { index: 2, .. })
    ));
    assert!(matches!(
        open_patched(&file, e + 44, 1),
        Err(Error::TensorShape { index: 2, .. })
    ));
    let e = entry(&file, 1); // layers.0.attn_norm must stay F32
    assert!(matches!(
        open_patched(&file, e + 40, 1),
        Err(Error::TensorDtype { index: 1, code: 1 })
    ));
}

#[test]
fn unknown_dtype_and_names() {
    let file = random_model(&tiny_config(), 1, &[]);
    let e = entry(&file, 4);
    assert_eq!(
        open_patched(&file, e + 40, 9),
        Err(Error::TensorDtype { index: 4, code: 9 })
    );
    // F16 halves the byte length the entry must record.
    assert!(matches!(
        open_patched(&file, e + 40, 1),
        Err(Error::TensorPlacement { index: 4, .. })
    ));
    assert_eq!(
        open_patched(&file, e, u32::from_le_bytes(*b"wxyz")),
        Err(Error::TensorName { index: 4 })
    );
    assert!(matches!(
        open_patched(&file, e + 76, 1),
        Err(Error::TensorPlacement { index: 4, .. })
    ));
}

#[test]
fn offsets_past_the_end_and_overlaps() {
    let file = random_model(&tiny_config(), 1, &[]);
    let last = entry(&file, 20);
    let mut f = file.clone();
    put_u64(&mut f, last + 56, 1 << 40);
    fix_header_crc(&mut f);
    assert!(matches!(
        ModelFile::new_checked(&f[..]),
        Err(Error::TensorPlacement { index: 20, .. })
    ));
    // Tensor 3 claims tensor 2's bytes.
    let mut f = file.clone();
    let two = u64::from_le_bytes(f[entry(&file, 2) + 56..][..8].try_into().unwrap());
    put_u64(&mut f, entry(&file, 3) + 56, two);
    fix_header_crc(&mut f);
    assert!(matches!(
        ModelFile::new_checked(&f[..]),
        Err(Error::TensorPlacement { index: 3, .. })
    ));
    // Misaligned.
    let mut f = file.clone();
    put_u64(&mut f, entry(&file, 3) + 56, two + 4);
    fix_header_crc(&mut f);
    assert!(matches!(
        ModelFile::new_checked(&f[..]),
        Err(Error::TensorPlacement { index: 3, .. })
    ));
    // A length that disagrees with the shape.
    let mut f = file.clone();
    put_u64(&mut f, entry(&file, 3) + 64, 12);
    fix_header_crc(&mut f);
    assert!(matches!(
        ModelFile::new_checked(&f[..]),
        Err(Error::TensorPlacement { index: 3, .. })
    ));
}

#[test]
fn tokenizer_bounds() {
    let file = random_model(&tiny_config(), 1, &[]);
    let tok = 72;
    let offsets = tok + 20;
    let bad = |r: Result<(), Error>| assert!(matches!(r, Err(Error::BadTokenizer { .. })), "{r:?}");
    bad(open_patched(&file, tok, 7)); // unknown kind
    bad(open_patched(&file, tok + 4, 6)); // BOS == vocab_size
    bad(open_patched(&file, tok + 12, 2)); // wrong max_piece_len
    bad(open_patched(&file, offsets + 4 * 2, 1000)); // piece offset past the blob
    bad(open_patched(&file, offsets + 4 * 3, 1)); // offsets out of order
    let sorted = offsets + 4 * 7 + 4 * 6;
    bad(open_patched(&file, sorted, 6)); // id outside the vocabulary
    bad(open_patched(&file, sorted, 1)); // duplicate id: not in order
                                         // blob_bytes past the header.
    assert!(open_patched(&file, tok + 16, 1 << 30).is_err());
}

#[test]
fn a_standalone_tokenizer_section_is_the_one_in_the_file() {
    let file = random_model(&tiny_config(), 1, &[]);
    let model = ModelFile::new_checked(&file[..]).expect("opens");
    let vocab = model.vocab();
    let pieces: Vec<&[u8]> = (0..vocab.len()).map(|id| vocab.piece(id)).collect();
    let scores: Vec<f32> = (0..vocab.len()).map(|id| vocab.score(id)).collect();
    let mut sorted = vec![0; pieces.len()];
    sort_pieces(&pieces, &mut sorted);
    let spec = common::char_tokenizer(&pieces, &scores, &sorted);
    let mut section = IoSink(Vec::new());
    let n = write_tokenizer(&mut section, &spec).expect("writes");
    let section = section.0;
    assert_eq!(n as usize, section.len());
    assert_eq!(section, model.tokenizer_section());
    let alone = Vocab::from_section(&section, vocab.len()).expect("reads");
    assert_eq!(alone.kind(), TokenizerKind::Char);
    for id in 0..vocab.len() {
        assert_eq!(alone.piece(id), vocab.piece(id));
        assert_eq!(alone.find(vocab.piece(id)), Some(id));
    }
    // A vocabulary of no pieces has no section.
    let none = common::char_tokenizer(&[], &[], &[]);
    assert!(matches!(
        write_tokenizer(&mut IoSink(Vec::new()), &none),
        Err(kinglet::format::WriteError::Invalid(
            Error::BadConfig { .. }
        ))
    ));
}

#[test]
fn bad_standalone_tokenizer_sections_are_refused() {
    let file = random_model(&tiny_config(), 1, &[]);
    let model = ModelFile::new_checked(&file[..]).expect("opens");
    let (section, v) = (model.tokenizer_section(), model.vocab().len());
    let patched = |at: usize, x: u32| {
        let mut s = section.to_vec();
        put_u32(&mut s, at, x);
        s
    };
    let from = |s: &[u8], v: u32| Vocab::from_section(s, v).map(|_| ());
    let bad_tokenizer = |r: Result<(), Error>| {
        assert!(matches!(r, Err(Error::BadTokenizer { .. })), "{r:?}");
    };
    bad_tokenizer(from(&patched(0, 7), v)); // unknown kind
    bad_tokenizer(from(&patched(12, 2), v)); // wrong max_piece_len
    bad_tokenizer(from(&patched(20 + 4 * 3, 1), v)); // offsets out of order
    bad_tokenizer(from(
        &patched(20 + 4 * (v as usize + 1), f32::NAN.to_bits()),
        v,
    ));
    let mut longer = section.to_vec();
    longer.extend_from_slice(&[0; 4]);
    bad_tokenizer(from(&longer, v)); // bytes after the section
    for len in [0, 19, 20, section.len() - 4] {
        let r = from(&section[..len], v);
        assert!(
            matches!(
                r,
                Err(Error::Truncated {
                    section: Section::Tokenizer,
                    ..
                })
            ),
            "{len}: {r:?}"
        );
    }
    // The size must be the file's: another reads other fields as pieces.
    assert!(from(section, v - 1).is_err());
    assert!(from(section, v + 1).is_err());
    for v in [0, (1 << 22) + 1] {
        let r = from(section, v);
        assert!(matches!(r, Err(Error::BadConfig { .. })), "{v}: {r:?}");
    }
    assert!(from(section, v).is_ok());
}

#[test]
fn tensor_checksum_and_padding_found_by_verify() {
    let file = random_model(&tiny_config(), 1, &[]);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let t1 = model.tensor(1).unwrap();
    let (at, end) = (t1.offset as usize, t1.offset as usize + t1.data.len());
    let mut f = file.clone();
    f[at + 3] ^= 1;
    let m = ModelFile::new_checked(&f[..]).expect("tensor data is not read at open");
    assert!(matches!(
        m.verify(),
        Err(Error::TensorChecksum { index: 1, .. })
    ));
    let mut f = file.clone();
    assert_ne!(end % 64, 0, "tensor 1 is followed by padding");
    f[end] = 1;
    let m = ModelFile::new_checked(&f[..]).unwrap();
    assert_eq!(
        m.verify(),
        Err(Error::NonZeroPadding { offset: end as u64 })
    );
    let mut problems = 0;
    let mut f = file.clone();
    f[at] ^= 1;
    f[end] = 1;
    ModelFile::new_checked(&f[..])
        .unwrap()
        .verify_each(|_| problems += 1);
    assert_eq!(problems, 2);
}

/// Every byte is covered by a checksum, a validated field, or the zero-padding
/// rule: no single bit flip survives `new_checked` + `verify`.
#[test]
fn every_single_bit_flip_is_detected() {
    let micro = Config {
        dim: 8,
        hidden_dim: 6,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: 3,
        ..tiny_config()
    };
    let file = random_model(&micro, 5, &[("source", "test")]);
    let mut f = file.clone();
    for byte in 0..file.len() {
        for bit in 0..8 {
            f[byte] ^= 1 << bit;
            let detected = ModelFile::new_checked(&f[..]).map_or(true, |m| m.verify().is_err());
            assert!(detected, "flip of bit {bit} in byte {byte} went unnoticed");
            f[byte] ^= 1 << bit;
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let file = random_model(&tiny_config(), 9, &[("a", "b")]);
    let mut rng = Rng::new(0x5eed);
    let mut opened = 0;
    for round in 0..4000 {
        let mut f = file.clone();
        for _ in 0..1 + rng.next_u64() % 4 {
            let at = (rng.next_u64() % f.len() as u64) as usize;
            f[at] = rng.next_u64() as u8;
        }
        // Half the time repair the header checksum to reach deeper checks.
        if round % 2 == 0 && header_bytes(&f) <= f.len() && header_bytes(&f) >= 8 {
            fix_header_crc(&mut f);
        }
        if let Ok(m) = ModelFile::new_checked(&f[..]) {
            opened += 1;
            let _ = m.verify();
            let v = m.vocab();
            for id in 0..v.len() {
                let _ = v.find(v.piece(id));
            }
            let _ = m.metadata().count();
            let _ = (
                m.layer(usize::MAX).is_none(),
                m.classifier().rows,
                m.final_norm().cols,
            );
        }
    }
    assert!(
        opened > 0,
        "some mutations land in tensor data and still open"
    );
}

#[test]
fn writer_rejects_inconsistent_input() {
    let config = tiny_config();
    let file = random_model(&config, 1, &[]);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let shapes: Vec<Vec<u32>> = model
        .tensors()
        .map(|t| {
            if t.ndim == 1 {
                vec![t.shape[1]]
            } else {
                t.shape.to_vec()
            }
        })
        .collect();
    let mut specs: Vec<TensorSpec> = model
        .tensors()
        .zip(&shapes)
        .map(|(t, s)| TensorSpec {
            name: t.name,
            dtype: t.dtype,
            shape: s,
            data: t.data,
        })
        .collect();
    let v = model.vocab();
    let pieces: Vec<&[u8]> = (0..v.len()).map(|i| v.piece(i)).collect();
    let scores = vec![0.0; pieces.len()];
    let sorted: Vec<u32> = (0..v.len()).collect();
    let tok = common::char_tokenizer(&pieces, &scores, &sorted);

    // Exactly the same bytes again, into a caller buffer.
    let mut buf = vec![0u8; file.len()];
    let mut sink = SliceSink::new(&mut buf);
    assert_eq!(
        write_model(&mut sink, &config, &tok, &specs, &[]).ok(),
        Some(file.len() as u64)
    );
    assert_eq!(buf, file);
    // Too small a buffer.
    let mut small = vec![0u8; file.len() - 1];
    let err = write_model(&mut SliceSink::new(&mut small), &config, &tok, &specs, &[]);
    assert!(matches!(
        err,
        Err(kinglet::format::WriteError::Sink(
            Error::BufferTooSmall { .. }
        ))
    ));

    let mut buf = vec![0u8; file.len() * 2];
    let mut write = |specs: &[TensorSpec]| {
        write_model(&mut SliceSink::new(&mut buf), &config, &tok, specs, &[])
    };
    specs.swap(2, 3);
    assert!(write(&specs).is_err(), "wrong order");
    specs.swap(2, 3);
    let short = &specs[0].data[..8];
    let saved = specs[0].data;
    specs[0].data = short;
    assert!(write(&specs).is_err(), "wrong data length");
    specs[0].data = saved;
    specs[1].dtype = Dtype::F16;
    assert!(write(&specs).is_err(), "norms are F32");
    specs[1].dtype = Dtype::F32;
    assert!(write(&specs[..5]).is_err(), "too few tensors");
    assert!(write(&specs).is_ok());
}
