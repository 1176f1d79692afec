//! The tokenizer against vocabularies stored in real .klt files: a
//! character vocabulary, llama2.c's tok512 (expected ids traced from
//! llama2.c's `run.c` algorithm), and a hand-made BPE vocabulary whose byte
//! pieces are not at llama2.c's `byte + 3` ids.

use kinglet::format::{sort_pieces, write_model, IoSink, TensorSpec, TokenizerKind, TokenizerSpec};
use kinglet::tokenizer::{
    encode, encode_with_scratch, max_tokens, scratch_words, token_bytes, Decoder,
};
use kinglet::{canonical_tensors, Config, Dtype, Error, ModelFile};
use kinglet_tools::rng::Rng;
use quadratic_bpe::quadratic_encode;
use std::path::PathBuf;

#[path = "common/quadratic_bpe.rs"]
mod quadratic_bpe;

/// A .klt file holding the given vocabulary and a tiny all-zero model.
fn model_with_vocab(
    kind: TokenizerKind,
    bos: Option<u32>,
    eos: Option<u32>,
    pieces: &[&[u8]],
    scores: &[f32],
) -> ModelFile<Vec<u8>> {
    let config = Config {
        dim: 2,
        hidden_dim: 2,
        n_layers: 1,
        n_heads: 1,
        n_kv_heads: 1,
        vocab_size: pieces.len() as u32,
        max_seq_len: 8,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: true,
    };
    let table: Vec<_> = canonical_tensors(&config).collect();
    let names: Vec<String> = table.iter().map(|t| t.role.to_string()).collect();
    // One zeroed f32 buffer per tensor.
    let data: Vec<Vec<u8>> = table
        .iter()
        .map(|t| vec![0u8; 4 * t.elements() as usize])
        .collect();
    let tensors: Vec<TensorSpec> = table
        .iter()
        .zip(&names)
        .zip(&data)
        .map(|((t, name), data)| TensorSpec {
            name,
            dtype: Dtype::F32,
            shape: t.dims(),
            data,
        })
        .collect();
    let mut sorted = vec![0u32; pieces.len()];
    sort_pieces(pieces, &mut sorted);
    let spec = TokenizerSpec {
        kind,
        bos,
        eos,
        pieces,
        scores,
        sorted: &sorted,
    };
    let mut bytes = Vec::new();
    write_model(&mut IoSink(&mut bytes), &config, &spec, &tensors, &[])
        .unwrap_or_else(|e| panic!("write_model: {e}"));
    ModelFile::new_checked(bytes).expect("the writer's output opens")
}

/// The reference data folder, or `None` (after saying so) when `file` is
/// missing and the environment does not require it.
fn data_file(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KINGLET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")));
    let path = dir.join(file);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("KINGLET_REQUIRE_DATA").as_deref() == Ok("1") {
        panic!("{} is missing and KINGLET_REQUIRE_DATA=1", path.display());
    }
    eprintln!("skipped: {} is missing", path.display());
    None
}

/// llama2.c's tokenizer.bin as a .klt vocabulary (BOS 1, EOS 2).
fn tok512() -> Option<ModelFile<Vec<u8>>> {
    let bytes = std::fs::read(data_file("tok512.bin")?).expect("read tok512.bin");
    let i32_at = |p: usize| i32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
    let max_len = i32_at(0) as usize;
    let (mut pieces, mut scores) = (Vec::new(), Vec::new());
    let mut p = 4;
    while p < bytes.len() {
        scores.push(f32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()));
        let len = i32_at(p + 4) as usize;
        pieces.push(&bytes[p + 8..p + 8 + len]);
        p += 8 + len;
    }
    assert_eq!(pieces.len(), 512);
    let model = model_with_vocab(TokenizerKind::Bpe, Some(1), Some(2), &pieces, &scores);
    assert_eq!(model.vocab().max_piece_len(), max_len);
    Some(model)
}

/// A small BPE vocabulary with merges chosen to exercise the merge order,
/// and byte pieces `<0x00>`..`<0xFF>` at ids `14 + byte`.
fn hand_bpe_pieces() -> (Vec<Vec<u8>>, Vec<f32>) {
    let named: [(&str, f32); 14] = [
        ("<unk>", 0.0),
        ("<s>", 0.0),
        ("</s>", 0.0),
        (" ", 0.0),
        ("a", 0.0),
        ("b", 0.0),
        ("c", 0.0),
        ("ab", -1.0),
        ("bc", -0.5),
        ("abc", -3.0),
        (" a", -5.0),
        ("aa", -2.0),
        ("cc", -2e10), // below llama2.c's starting score: never merged
        ("é", 0.0),
    ];
    let mut pieces: Vec<Vec<u8>> = named.iter().map(|(p, _)| p.as_bytes().to_vec()).collect();
    let mut scores: Vec<f32> = named.iter().map(|&(_, s)| s).collect();
    for b in 0..=255u8 {
        pieces.push(format!("<0x{b:02X}>").into_bytes());
        scores.push(0.0);
    }
    (pieces, scores)
}

fn hand_bpe() -> ModelFile<Vec<u8>> {
    let (pieces, scores) = hand_bpe_pieces();
    let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
    model_with_vocab(TokenizerKind::Bpe, Some(1), Some(2), &refs, &scores)
}

const CHAR_VOCAB: &str = "\nabcdefghijklmnopqrstuvwxyzT ,.!?é日本🦀";

fn char_model(bos: Option<u32>) -> ModelFile<Vec<u8>> {
    let chars: Vec<String> = CHAR_VOCAB.chars().map(String::from).collect();
    let pieces: Vec<&[u8]> = chars.iter().map(|c| c.as_bytes()).collect();
    let scores = vec![0.0; pieces.len()];
    model_with_vocab(TokenizerKind::Char, bos, None, &pieces, &scores)
}

fn encode_vec(model: &ModelFile<Vec<u8>>, text: &str, add_bos: bool) -> Result<Vec<u32>, Error> {
    let mut out = vec![0u32; max_tokens(text, add_bos)];
    let n = encode(&model.vocab(), text, add_bos, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Streams `tokens` through a [`Decoder`] and returns the emitted chunks.
fn decode_chunks(model: &ModelFile<Vec<u8>>, tokens: &[u32]) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut decoder = Decoder::new();
    for &t in tokens {
        decoder
            .push(&model.vocab(), t, |s| chunks.push(s.to_owned()))
            .expect("tokens from encode are in range");
    }
    decoder.finish(|s| chunks.push(s.to_owned()));
    chunks
}

fn decode(model: &ModelFile<Vec<u8>>, tokens: &[u32]) -> String {
    decode_chunks(model, tokens).concat()
}

/// Every length below the room `encode` needs fails with the exact need,
/// and the needed length succeeds.
fn assert_short_buffers_fail(model: &ModelFile<Vec<u8>>, text: &str, add_bos: bool) {
    let needed = max_tokens(text, add_bos);
    let mut out = vec![0u32; needed];
    let mut first_ok = None;
    for len in 0..=needed {
        match encode(&model.vocab(), text, add_bos, &mut out[..len]) {
            Ok(n) => {
                first_ok = Some(len);
                assert!(n <= len);
                break;
            }
            Err(Error::BufferTooSmall {
                needed: reported,
                available,
            }) => {
                assert_eq!(available, len);
                assert!(reported > len && reported <= needed, "{text:?}: {reported}");
            }
            Err(e) => panic!("{text:?} at {len}: {e}"),
        }
    }
    let first_ok = first_ok.expect("max_tokens is enough room");
    if first_ok > 0 {
        let err = encode(&model.vocab(), text, add_bos, &mut out[..first_ok - 1]);
        assert_eq!(
            err,
            Err(Error::BufferTooSmall {
                needed: first_ok,
                available: first_ok - 1
            }),
            "needed is exact"
        );
    }
}

#[test]
fn tok512_once_upon_a_time_matches_llama2c() {
    let Some(model) = tok512() else { return };
    let tokens = encode_vec(&model, "Once upon a time", true).unwrap();
    assert_eq!(tokens, [1, 403, 407, 261, 378]);
    assert_eq!(decode(&model, &tokens), "Once upon a time");
    // Without BOS the dummy-prefix space stays, as in llama2.c.
    let tokens = encode_vec(&model, "Once upon a time", false).unwrap();
    assert_eq!(tokens, [403, 407, 261, 378]);
    assert_eq!(decode(&model, &tokens), " Once upon a time");
    let long = "Once upon a time, there was a little girl named Lily.";
    assert_eq!(
        encode_vec(&model, long, true).unwrap(),
        [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]
    );
}

#[test]
fn tok512_byte_fallback_matches_llama2c() {
    let Some(model) = tok512() else { return };
    // "é" is a piece of tok512; 日, 本, 🦀, ï, ü, ß are not and fall back
    // to bytes (id = byte + 3 in this vocabulary).
    let text = "Héllo, 日本 🦀 café!";
    let tokens = encode_vec(&model, text, true).unwrap();
    assert_eq!(
        tokens,
        [
            1, 320, 485, 306, 414, 432, 410, 233, 154, 168, 233, 159, 175, 410, 243, 162, 169, 131,
            280, 412, 431, 485, 443
        ]
    );
    assert_eq!(decode(&model, &tokens), text);
    let tokens = encode_vec(&model, "\n\nHello\tworld\n", true).unwrap();
    assert_eq!(
        tokens,
        [1, 410, 13, 13, 440, 411, 306, 414, 12, 424, 304, 341, 13]
    );
    let tokens = encode_vec(&model, "a\0b", true).unwrap();
    assert_eq!(tokens, [1, 261, 3, 430]);
    // A literal "<0x41>" in the text is not a byte token.
    let tokens = encode_vec(&model, "<0x41>", true).unwrap();
    assert_eq!(tokens, [1, 410, 504, 477, 444, 484, 475, 505]);
    assert_eq!(decode(&model, &tokens), "<0x41>");
}

#[test]
fn tok512_empty_text() {
    let Some(model) = tok512() else { return };
    assert_eq!(encode_vec(&model, "", true).unwrap(), [1]);
    assert_eq!(encode_vec(&model, "", false).unwrap(), [] as [u32; 0]);
    assert_eq!(encode(&model.vocab(), "", false, &mut []), Ok(0));
}

#[test]
fn tok512_round_trips_and_streams_whole_characters() {
    let Some(model) = tok512() else { return };
    for text in [
        "Once upon a time, there was a little girl named Lily.",
        "naïve café über straße",
        "日本語のテキスト",
        "🦀🦀 crabs 🦀",
        "Ünïcödé ☃ and 𝄞",
        "tabs\tand\nnewlines\r\n",
        " leading space",
        "x",
    ] {
        let tokens = encode_vec(&model, text, true).unwrap();
        let chunks = decode_chunks(&model, &tokens);
        assert_eq!(chunks.concat(), text, "{tokens:?}");
        for chunk in &chunks {
            assert!(!chunk.is_empty());
            assert!(!chunk.contains('\u{FFFD}'), "{text:?}: {chunks:?}");
        }
        assert_short_buffers_fail(&model, text, true);
        assert_short_buffers_fail(&model, text, false);
    }
}

#[test]
fn decoder_holds_partial_characters_until_complete() {
    let Some(model) = tok512() else { return };
    let vocab = model.vocab();
    // 🦀 = F0 9F A6 80, byte tokens at byte + 3.
    let mut decoder = Decoder::new();
    let mut chunks: Vec<String> = Vec::new();
    for (i, b) in [0xF0u32, 0x9F, 0xA6].into_iter().enumerate() {
        decoder
            .push(&vocab, b + 3, |s| chunks.push(s.into()))
            .unwrap();
        assert!(chunks.is_empty(), "nothing before the character is whole");
        assert!(decoder.has_pending(), "byte {i}");
    }
    decoder
        .push(&vocab, 0x80 + 3, |s| chunks.push(s.into()))
        .unwrap();
    assert_eq!(chunks, ["🦀"]);
    assert!(!decoder.has_pending());

    // An unfinished character is flushed as U+FFFD by finish, and a byte
    // that cannot continue one turns the held bytes into U+FFFD.
    chunks.clear();
    decoder
        .push(&vocab, 0xE6 + 3, |s| chunks.push(s.into()))
        .unwrap();
    decoder.finish(|s| chunks.push(s.into()));
    assert_eq!(chunks, ["\u{FFFD}"]);
    chunks.clear();
    for t in [0xE6 + 3, 0x97 + 3, 412 /* "a" */] {
        decoder.push(&vocab, t, |s| chunks.push(s.into())).unwrap();
    }
    decoder.finish(|s| chunks.push(s.into()));
    assert_eq!(chunks, ["\u{FFFD}", "a"]);
}

#[test]
fn decoder_special_tokens_and_range() {
    let Some(model) = tok512() else { return };
    let vocab = model.vocab();
    let mut decoder = Decoder::new();
    let mut out = String::new();
    // BOS and EOS stand for no text; the space after BOS is stripped.
    for t in [1, 261, 2] {
        decoder.push(&vocab, t, |s| out.push_str(s)).unwrap();
    }
    assert_eq!(out, "a");
    let before = decoder;
    assert_eq!(
        decoder.push(&vocab, 512, |s| out.push_str(s)),
        Err(Error::TokenOutOfRange {
            token: 512,
            vocab_size: 512
        })
    );
    assert_eq!(decoder, before, "a rejected token changes nothing");
    assert_eq!(token_bytes(&vocab, Some(1), 261), Ok(&b"a"[..]));
    assert_eq!(token_bytes(&vocab, Some(7), 261), Ok(&b" a"[..]));
    assert_eq!(token_bytes(&vocab, None, 0x41 + 3), Ok(&b"A"[..]));
    // A byte piece right after BOS is not stripped.
    assert_eq!(token_bytes(&vocab, Some(1), 0x20 + 3), Ok(&b" "[..]));
    assert!(token_bytes(&vocab, None, u32::MAX).is_err());
}

#[test]
fn hand_bpe_merge_order() {
    let model = hand_bpe();
    // "bc" (-0.5) beats "ab" (-1) and " a" (-5); then "abc" (-3) beats " a".
    assert_eq!(encode_vec(&model, "abc", true).unwrap(), [1, 3, 9]);
    // "aa" (-2) beats " a" (-5); of the two equal "aa" pairs the first merges.
    assert_eq!(encode_vec(&model, "aaa", true).unwrap(), [1, 3, 11, 4]);
    // "cc" scores below llama2.c's starting score, so it never merges.
    assert_eq!(encode_vec(&model, "cc", true).unwrap(), [1, 3, 6, 6]);
    // Byte fallback finds <0xXX> by name: here at id 14 + byte.
    assert_eq!(
        encode_vec(&model, "a日", true).unwrap(),
        [1, 10, 14 + 0xE6, 14 + 0x97, 14 + 0xA5]
    );
    assert_eq!(encode_vec(&model, "é", false).unwrap(), [3, 13]);
    for text in ["abc", "aaa", "cc", "a日", "é", "🦀 xyz\n", "abcabc cab"] {
        let tokens = encode_vec(&model, text, true).unwrap();
        assert_eq!(decode(&model, &tokens), text);
        assert_short_buffers_fail(&model, text, true);
    }
}

#[test]
fn bpe_without_byte_pieces_reports_the_character() {
    let pieces: [&[u8]; 4] = [b"<unk>", b"<s>", b" ", b"a"];
    let model = model_with_vocab(TokenizerKind::Bpe, Some(1), None, &pieces, &[0.0; 4]);
    assert_eq!(encode_vec(&model, "a", true).unwrap(), [1, 2, 3]);
    assert_eq!(
        encode_vec(&model, "ax", true),
        Err(Error::UnknownCharacter { ch: 'x' })
    );
    // Reported even when the buffer is also too short.
    let mut out = [0u32; 1];
    assert_eq!(
        encode(&model.vocab(), "aaaax", true, &mut out),
        Err(Error::UnknownCharacter { ch: 'x' })
    );
    // No " " piece and no <0x20>: the dummy prefix cannot be encoded.
    let pieces: [&[u8]; 2] = [b"<s>", b"a"];
    let model = model_with_vocab(TokenizerKind::Bpe, Some(0), None, &pieces, &[0.0; 2]);
    assert_eq!(
        encode_vec(&model, "a", true),
        Err(Error::UnknownCharacter { ch: ' ' })
    );
}

#[test]
fn char_vocab_round_trip_and_unknown_character() {
    let model = char_model(None);
    let text = "hello, world! café 日本 🦀\nThe end.";
    let tokens = encode_vec(&model, text, true).unwrap();
    assert_eq!(
        tokens.len(),
        text.chars().count(),
        "one per char, no BOS, no prefix"
    );
    assert_eq!(tokens, encode_vec(&model, text, false).unwrap());
    assert_eq!(
        tokens[0],
        CHAR_VOCAB.chars().position(|c| c == 'h').unwrap() as u32
    );
    assert_eq!(decode(&model, &tokens), text);
    assert_eq!(encode_vec(&model, "", true).unwrap(), [] as [u32; 0]);
    assert_eq!(
        encode_vec(&model, "hello World", false),
        Err(Error::UnknownCharacter { ch: 'W' })
    );
    assert_short_buffers_fail(&model, text, false);

    // A character vocabulary with a BOS gets it when asked for, and BOS
    // decodes to its character.
    let model = char_model(Some(0));
    let tokens = encode_vec(&model, "ab", true).unwrap();
    assert_eq!(tokens, [0, 1, 2]);
    assert_eq!(decode(&model, &tokens), "\nab");
}

/// llama2.c's `encode()` transcribed directly (hash-map lookups, a full
/// rescan per merge, `byte + 3` fallback): the oracle for [`encode`] on
/// vocabularies laid out like llama2.c's.
fn llama2c_encode(model: &ModelFile<Vec<u8>>, text: &str, bos: bool) -> Vec<u32> {
    let vocab = model.vocab();
    let mut lookup = std::collections::HashMap::new();
    for id in (0..vocab.len()).rev() {
        lookup.insert(vocab.piece(id).to_vec(), id);
    }
    let mut tokens = Vec::new();
    if bos {
        tokens.push(1);
    }
    if !text.is_empty() {
        tokens.push(lookup[&b" "[..]]);
    }
    for ch in text.chars() {
        let mut utf8 = [0u8; 4];
        let bytes = ch.encode_utf8(&mut utf8).as_bytes();
        match lookup.get(bytes) {
            Some(&id) => tokens.push(id),
            None => tokens.extend(bytes.iter().map(|&b| b as u32 + 3)),
        }
    }
    loop {
        let (mut best_score, mut best) = (-1e10f32, None);
        for i in 0..tokens.len().saturating_sub(1) {
            let pair = [vocab.piece(tokens[i]), vocab.piece(tokens[i + 1])].concat();
            if let Some(&id) = lookup.get(&pair) {
                if vocab.score(id) > best_score {
                    best_score = vocab.score(id);
                    best = Some((i, id));
                }
            }
        }
        let Some((i, id)) = best else { return tokens };
        tokens[i] = id;
        tokens.remove(i + 1);
    }
}

#[test]
fn tok512_agrees_with_llama2c_on_shakespeare() {
    let Some(model) = tok512() else { return };
    let Some(path) = data_file("tinyshakespeare.txt") else {
        return;
    };
    let text = std::fs::read_to_string(path).expect("read tinyshakespeare.txt");
    // A few kilobytes from different places, cut at character boundaries.
    for start in [0, 100_000, 500_000, 1_000_000] {
        let chunk: String = text[start..].chars().take(1500).collect();
        let tokens = encode_vec(&model, &chunk, true).unwrap();
        assert_eq!(tokens, llama2c_encode(&model, &chunk, true), "at {start}");
        assert_eq!(decode(&model, &tokens), chunk);
    }
}

#[test]
fn random_text_never_panics_and_round_trips() {
    let bpe = [tok512(), Some(hand_bpe())];
    let chars = char_model(None);
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    for round in 0..300 {
        let len = (rng.next_u64() % 40) as usize;
        let raw: Vec<u8> = (0..len)
            .map(|_| match rng.next_u64() % 4 {
                0 => b"abc e.\n"[(rng.next_u64() % 7) as usize],
                _ => rng.next_u64() as u8,
            })
            .collect();
        let text = String::from_utf8_lossy(&raw);
        if let Some(model) = &bpe[0] {
            assert_eq!(
                encode_vec(model, &text, true).unwrap(),
                llama2c_encode(model, &text, true),
                "round {round}: {raw:?}"
            );
        }
        for model in bpe.iter().flatten() {
            let tokens = encode_vec(model, &text, true).unwrap();
            assert_eq!(decode(model, &tokens), text, "round {round}: {raw:?}");
            // Streaming the tokens' raw bytes (not just encode's output)
            // always gives the lossy reading of those bytes.
            let random: Vec<u32> = (0..len)
                .map(|_| (rng.next_u64() % model.vocab().len() as u64) as u32)
                .collect();
            let mut bytes = Vec::new();
            let mut prev = None;
            for &t in &random {
                bytes.extend_from_slice(token_bytes(&model.vocab(), prev, t).unwrap());
                prev = Some(t);
            }
            assert_eq!(decode(model, &random), String::from_utf8_lossy(&bytes));
            let mut short = vec![0u32; (rng.next_u64() % (len as u64 + 3)) as usize];
            match encode(&model.vocab(), &text, true, &mut short) {
                Ok(n) => assert_eq!(&short[..n], &tokens[..]),
                Err(Error::BufferTooSmall { needed, available }) => {
                    assert_eq!(available, short.len());
                    assert!(needed > available);
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        match encode_vec(&chars, &text, false) {
            Ok(tokens) => assert_eq!(decode(&chars, &tokens), text),
            Err(Error::UnknownCharacter { ch }) => assert!(!CHAR_VOCAB.contains(ch)),
            Err(e) => panic!("round {round}: {e}"),
        }
    }
}

/// `encode_with_scratch` with exactly the scratch it asks for; a scratch one
/// word short must report that need.
fn encode_with_exact_scratch(
    model: &ModelFile<Vec<u8>>,
    text: &str,
    add_bos: bool,
) -> Result<Vec<u32>, Error> {
    let vocab = model.vocab();
    let mut out = vec![0u32; max_tokens(text, add_bos)];
    let mut scratch = vec![0u32; scratch_words(max_tokens(text, add_bos))];
    let n = encode_with_scratch(&vocab, text, add_bos, &mut out, &mut scratch)?;
    // The scratch needed is that of the unmerged count, which encode
    // reports to an `out` one slot short of it.
    let unmerged = match encode(&vocab, text, add_bos, &mut out[..0]) {
        Err(Error::BufferTooSmall { needed, .. }) => needed,
        Ok(_) => 0,
        Err(e) => panic!("{e}"),
    };
    if vocab.kind() == TokenizerKind::Bpe && unmerged > 0 {
        let words = scratch_words(unmerged);
        let mut short = vec![0u32; words - 1];
        assert_eq!(
            encode_with_scratch(&vocab, text, add_bos, &mut out, &mut short),
            Err(Error::BufferTooSmall {
                needed: words,
                available: words - 1
            })
        );
        let mut exact = vec![0u32; words];
        assert_eq!(
            encode_with_scratch(&vocab, text, add_bos, &mut out, &mut exact),
            Ok(n)
        );
    }
    out.truncate(n);
    Ok(out)
}

#[test]
fn heap_merging_matches_the_quadratic_encoder_on_shakespeare() {
    let Some(model) = tok512() else { return };
    let Some(path) = data_file("tinyshakespeare.txt") else {
        return;
    };
    let text = std::fs::read_to_string(path).expect("read tinyshakespeare.txt");
    let vocab = model.vocab();
    // Chunks of 3,000 characters from across the file (the oracle is
    // quadratic), with and without BOS.
    for (k, start) in (0..text.len()).step_by(text.len() / 10).enumerate() {
        let start = (start..).find(|&i| text.is_char_boundary(i)).unwrap();
        let chunk: String = text[start..].chars().take(3000).collect();
        let bos = k % 2 == 0;
        assert_eq!(
            encode_with_exact_scratch(&model, &chunk, bos).unwrap(),
            quadratic_encode(&vocab, &chunk, bos).unwrap(),
            "at {start}"
        );
    }
    // The whole file in one call: it decodes back to the text.
    let tokens = encode_vec(&model, &text, false).unwrap();
    assert!(tokens.len() < text.len() * 2 / 3, "{} tokens", tokens.len());
    assert_eq!(decode(&model, &tokens), format!(" {text}"));
}

/// A random BPE vocabulary built to be awkward: pieces over a small
/// alphabet (so many pairs merge), scores drawn from a few values (so ties
/// are everywhere, some at or below llama2.c's no-merge score), duplicate
/// pieces at other ids, an empty BOS piece, some `<0xXX>` pieces missing.
fn hostile_bpe(rng: &mut Rng) -> ModelFile<Vec<u8>> {
    const SYMBOLS: [&str; 6] = ["a", "b", " ", "é", "\n", "日"];
    const SCORES: [f32; 8] = [0.0, -0.0, -1.0, -1.0, -2.5, -1e10, -2e10, 3.0];
    let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), Vec::new()]; // BOS: empty
    let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n as u64) as usize;
    for s in SYMBOLS {
        if pick(rng, 4) != 0 {
            pieces.push(s.as_bytes().to_vec());
        }
    }
    for _ in 0..pick(rng, 40) {
        let len = 2 + pick(rng, 5);
        let piece: String = (0..len).map(|_| SYMBOLS[pick(rng, 6)]).collect();
        pieces.push(piece.into_bytes());
    }
    for _ in 0..pick(rng, 4).min(pieces.len() - 2) {
        let dup = pieces[2 + pick(rng, pieces.len() - 2)].clone();
        pieces.push(dup);
    }
    for b in 0..=255u8 {
        if pick(rng, 8) != 0 {
            pieces.push(format!("<0x{b:02X}>").into_bytes());
        }
    }
    let scores: Vec<f32> = (0..pieces.len()).map(|_| SCORES[pick(rng, 8)]).collect();
    let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
    model_with_vocab(TokenizerKind::Bpe, Some(1), None, &refs, &scores)
}

#[test]
fn heap_merging_matches_the_quadratic_encoder_on_hostile_text() {
    let mut rng = Rng::new(0xD1B5_4A32_D192_ED03);
    let tok512 = tok512();
    for round in 0..400 {
        let hostile = hostile_bpe(&mut rng);
        let len = (rng.next_u64() % 300) as usize;
        // Long runs of one symbol, mixed symbols, raw bytes (byte fallback).
        let text: String = match rng.next_u64() % 3 {
            0 => "a".repeat(len),
            1 => (0..len)
                .map(|_| {
                    ["a", "b", " ", "é", "\n", "日", "ab", "ba"][(rng.next_u64() % 8) as usize]
                })
                .collect(),
            _ => {
                let raw: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                String::from_utf8_lossy(&raw).into_owned()
            }
        };
        let bos = round % 3 != 0;
        for model in [Some(&hostile), tok512.as_ref()].into_iter().flatten() {
            let want = quadratic_encode(&model.vocab(), &text, bos);
            let got = encode_with_exact_scratch(model, &text, bos);
            assert_eq!(got, want, "round {round}: {text:?}");
        }
    }
}

#[test]
fn char_vocabularies_need_no_scratch() {
    let model = char_model(None);
    let mut out = [0u32; 8];
    assert_eq!(
        encode_with_scratch(&model.vocab(), "abc", false, &mut out, &mut []),
        Ok(3)
    );
    assert_eq!(&out[..3], encode_vec(&model, "abc", false).unwrap());
}

#[test]
fn tokens_that_never_merge_split_the_text_without_changing_the_result() {
    // "\n" and "x" begin and end no longer piece, so merging runs on the
    // segments between them; " " does not (" a"), nor does BOS, whose empty
    // piece merges with whatever follows it into that token's own piece.
    let mut pieces: Vec<Vec<u8>> = [&b"<unk>"[..], b"", b" ", b"\n", b"a", b"b", b"x"]
        .iter()
        .map(|p| p.to_vec())
        .collect();
    pieces.extend([&b"ab"[..], b" a", b"ba", b"aba", b" ab"].map(|p| p.to_vec()));
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
    let scores = |n: usize| (0..n).map(|i| -(i as f32 % 5.0)).collect::<Vec<f32>>();
    let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
    let model = model_with_vocab(
        TokenizerKind::Bpe,
        Some(1),
        None,
        &refs,
        &scores(refs.len()),
    );
    // Without a "\n" piece the newline falls back to <0x0A>, which here
    // ends a longer piece, or begins one: not a barrier.
    let fallback = |extra: &[u8]| {
        let mut pieces = pieces.clone();
        pieces.retain(|p| p != b"\n");
        pieces.push(extra.to_vec());
        let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
        model_with_vocab(
            TokenizerKind::Bpe,
            Some(1),
            None,
            &refs,
            &scores(refs.len()),
        )
    };
    let (ends, begins) = (fallback(b"b<0x0A>"), fallback(b"<0x0A>a"));
    for text in [
        "x\nab aba\n\nbabab x ab\n",
        "\nx\n日\nab ab\nxx",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        "b\nab\nb\n\na",
    ] {
        for repeat in [1, 4, 40] {
            let text = text.repeat(repeat);
            for (model, bos) in [
                (&model, true),
                (&model, false),
                (&ends, true),
                (&begins, true),
            ] {
                assert_eq!(
                    encode_with_exact_scratch(model, &text, bos),
                    quadratic_encode(&model.vocab(), &text, bos),
                    "{text:?}"
                );
            }
        }
    }
}
