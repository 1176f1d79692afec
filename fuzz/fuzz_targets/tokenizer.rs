//! The tokenizers with the real vocabularies: the bundled model's Char
//! vocabulary and stories260K's BPE vocabulary (tok512).
//!
//! The first byte picks the vocabulary (bit 0) and the direction (bit 1):
//! - encode: the rest, read as lossy UTF-8 (at most 1,024 bytes), must
//!   encode within `max_tokens` slots, report
//!   an exact `needed` to a short buffer, and decode back to the text;
//! - decode: the rest, as u16 token ids (some outside the vocabulary, which
//!   must be a clean error that leaves the decoder unchanged), must stream
//!   to the lossy UTF-8 of the tokens' bytes.
#![no_main]

use kinglet::error::Error;
use kinglet::format::{TokenizerKind, Vocab};
use kinglet::tokenizer::{encode, max_tokens, token_bytes, Decoder};
use kinglet::ModelFile;
use kinglet_fuzz::{stories260k, SHAKESPEARE};
use libfuzzer_sys::fuzz_target;

/// Longest text encoded per input.
const MAX_TEXT: usize = 1024;

fn check_encode(vocab: &Vocab<'_>, text: &str, add_bos: bool) {
    // [max_tokens] ids: room for any vocabulary.
    let mut out = vec![0u32; max_tokens(text, add_bos)];
    let n = match encode(vocab, text, add_bos, &mut out) {
        Ok(n) => n,
        Err(Error::UnknownCharacter { ch }) => {
            assert!(text.contains(ch));
            return;
        }
        Err(e) => panic!("encode failed with room for every token: {e}"),
    };
    let tokens = &out[..n];
    assert!(tokens.iter().all(|&t| t < vocab.len()));
    if text.is_empty() {
        assert!(n <= 1);
    }
    // A short buffer reports how many slots the unmerged tokens need, and
    // that many suffice.
    if n > 0 {
        let mut short = vec![0u32; n - 1];
        match encode(vocab, text, add_bos, &mut short) {
            Err(Error::BufferTooSmall { needed, .. }) => {
                let mut exact = vec![0u32; needed];
                assert_eq!(encode(vocab, text, add_bos, &mut exact), Ok(n));
                assert_eq!(&exact[..n], tokens);
            }
            Ok(m) => panic!("{n} tokens fit in {m} slots"),
            Err(e) => panic!("short buffer: {e}"),
        }
    }
    // Decoding gives the text back.
    let mut decoder = Decoder::new();
    let mut decoded = String::new();
    for &t in tokens {
        decoder
            .push(vocab, t, |s| decoded.push_str(s))
            .expect("encoded ids are in range");
    }
    decoder.finish(|s| decoded.push_str(s));
    // BPE's dummy-prefix space is stripped only after BOS, as in llama2.c.
    let bos_strips = add_bos && vocab.bos().is_some();
    let expected = if vocab.kind() == TokenizerKind::Bpe && !text.is_empty() && !bos_strips {
        format!(" {text}")
    } else {
        text.to_string()
    };
    assert_eq!(decoded, expected, "tokens {tokens:?}");
}

fn check_decode(vocab: &Vocab<'_>, ids: &[u32]) {
    let mut decoder = Decoder::new();
    let mut streamed = String::new();
    let mut raw = Vec::new();
    let mut prev = None;
    for &id in ids {
        let before = decoder;
        match decoder.push(vocab, id, |s| {
            assert!(!s.is_empty());
            streamed.push_str(s)
        }) {
            Ok(()) => {
                raw.extend_from_slice(token_bytes(vocab, prev, id).expect("in range"));
                prev = Some(id);
            }
            Err(Error::TokenOutOfRange { token, vocab_size }) => {
                assert_eq!((token, vocab_size), (id, vocab.len()));
                assert!(id >= vocab.len());
                assert_eq!(decoder, before, "an error leaves the decoder unchanged");
            }
            Err(e) => panic!("decode: {e}"),
        }
    }
    decoder.finish(|s| streamed.push_str(s));
    assert_eq!(streamed, String::from_utf8_lossy(&raw));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 0 {
        SHAKESPEARE
    } else {
        stories260k()
    };
    let model = ModelFile::new_checked(file).expect("reference model opens");
    let vocab = model.vocab();
    if mode & 2 == 0 {
        let text = String::from_utf8_lossy(&rest[..rest.len().min(MAX_TEXT)]);
        check_encode(&vocab, &text, mode & 4 != 0);
    } else {
        // Ids spread a little past the vocabulary; the top bit makes huge ones.
        let ids: Vec<u32> = rest
            .chunks_exact(2)
            .map(|c| {
                let v = u16::from_le_bytes([c[0], c[1]]);
                if v & 0x8000 != 0 {
                    u32::MAX - (v & 0x7fff) as u32
                } else {
                    v as u32 % (vocab.len() + 16)
                }
            })
            .collect();
        check_decode(&vocab, &ids);
    }
});
