//! kinglet's vocabularies as SentencePiece-style `llama` vocabularies, the
//! form both GGUF (`tokenizer.ggml.*`) and Hugging Face's `tokenizer.json`
//! hold: a space is `▁` (U+2581), every token has a type, and the special
//! tokens are typed CONTROL rather than made unreachable by their text.
//!
//! kinglet follows llama2.c: a space is a plain space, and the BOS and EOS
//! pieces are `"\n<s>\n"` and `"\n</s>\n"`, text no merge can produce. So a
//! CONTROL token's text is wrapped in newlines on import and unwrapped on
//! export, and `▁` becomes a space and back. Both directions are exact for
//! every vocabulary the exporter accepts.
//!
//! A character-level vocabulary has no BOS, EOS or byte tokens, but
//! llama.cpp's `llama` tokenizer needs an unknown, a BOS and an EOS token
//! (by default it takes ids 0, 1 and 2, which would be characters). The
//! export appends `<unk>`, `<s>` and `</s>` after the characters and says
//! how many tokens the kinglet vocabulary has, so the import drops them.

use anyhow::{bail, Result};
use kinglet::format::TokenizerKind;

use crate::model::OwnedVocab;

/// SentencePiece's visible space.
pub const SPACE_MARK: &str = "\u{2581}";

/// llama.cpp's token types (`llama_token_type`), as GGUF stores them.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The control tokens appended to a character vocabulary, in order, with
/// their types: unknown, BOS, EOS.
pub const CHAR_EXTRA_TOKENS: [(&str, i32); 3] = [
    ("<unk>", token_type::UNKNOWN),
    ("<s>", token_type::CONTROL),
    ("</s>", token_type::CONTROL),
];

/// A vocabulary in SentencePiece form.
#[derive(Clone, Debug, PartialEq)]
pub struct SpmVocab {
    /// Token texts (UTF-8 for every vocabulary kinglet exports).
    pub tokens: Vec<Vec<u8>>,
    /// Merge scores.
    pub scores: Vec<f32>,
    /// [`token_type`] of each token.
    pub types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    /// Whether BOS starts every encoded text.
    pub add_bos: bool,
    /// Whether a space is put before the text (SentencePiece's dummy prefix).
    pub add_space_prefix: bool,
    /// For a character vocabulary: how many of `tokens` are its characters
    /// (the rest are [`CHAR_EXTRA_TOKENS`]). `None` for BPE.
    pub char_vocab_size: Option<u32>,
}

/// Replaces every occurrence of `from` in `bytes` with `to`.
fn replace_bytes(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if let Some(tail) = rest.strip_prefix(from) {
            out.extend_from_slice(to);
            rest = tail;
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// Whether `piece` is a byte-fallback piece `<0xXX>`.
pub fn is_byte_piece(piece: &[u8]) -> bool {
    matches!(piece, [b'<', b'0', b'x', hi, lo, b'>'] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit())
}

/// `"\nX\n"` → `"X"`: a llama2.c special piece's text.
fn unwrap_special(piece: &[u8]) -> Option<&[u8]> {
    piece
        .strip_prefix(b"\n")?
        .strip_suffix(b"\n")
        .filter(|p| p.starts_with(b"<") && p.ends_with(b">"))
}

/// The SentencePiece form of `vocab`: a piece `"\n<…>\n"` is a CONTROL
/// token, `<0xXX>` a BYTE token, `<unk>` the UNKNOWN one, any other a
/// NORMAL one (BOS and EOS are named by id, whatever their type). Refuses
/// what llama.cpp cannot hold:
/// an empty piece, a piece that is not UTF-8, a piece with `▁` in it
/// (it would read back as a space), two pieces with the same text.
pub fn to_spm(vocab: &OwnedVocab) -> Result<SpmVocab> {
    let n = vocab.pieces.len();
    let mut spm = SpmVocab {
        tokens: Vec::with_capacity(n + 3),
        scores: vocab.scores.clone(),
        types: Vec::with_capacity(n + 3),
        bos: vocab.bos,
        eos: vocab.eos,
        unk: None,
        add_bos: vocab.bos.is_some(),
        add_space_prefix: vocab.kind == TokenizerKind::Bpe,
        char_vocab_size: None,
    };
    for (id, piece) in vocab.pieces.iter().enumerate() {
        let (text, kind) = if let Some(inner) = unwrap_special(piece) {
            (inner.to_vec(), token_type::CONTROL)
        } else if vocab.kind == TokenizerKind::Bpe && is_byte_piece(piece) {
            (piece.clone(), token_type::BYTE)
        } else if piece == b"<unk>" {
            spm.unk = Some(id as u32);
            (piece.clone(), token_type::UNKNOWN)
        } else {
            if piece.is_empty() {
                bail!("token {id} is empty; a llama vocabulary has no empty tokens");
            }
            if std::str::from_utf8(piece).is_err() {
                bail!("token {id} ({piece:?}) is not UTF-8; a llama vocabulary holds text");
            }
            if piece.windows(3).any(|w| w == SPACE_MARK.as_bytes()) {
                bail!(
                    "token {id} ({:?}) contains U+2581, which a llama vocabulary reads as a space",
                    String::from_utf8_lossy(piece)
                );
            }
            (
                replace_bytes(piece, b" ", SPACE_MARK.as_bytes()),
                token_type::NORMAL,
            )
        };
        spm.tokens.push(text);
        spm.types.push(kind);
    }
    if vocab.kind == TokenizerKind::Char {
        if vocab.bos.is_some() || vocab.eos.is_some() {
            bail!("a character vocabulary with BOS or EOS tokens cannot be expressed as a llama vocabulary");
        }
        spm.char_vocab_size = Some(n as u32);
        for (i, (text, kind)) in CHAR_EXTRA_TOKENS.iter().enumerate() {
            spm.tokens.push(text.as_bytes().to_vec());
            spm.types.push(*kind);
            spm.scores.push(0.0);
            let id = Some((n + i) as u32);
            match i {
                0 => spm.unk = id,
                1 => spm.bos = id,
                _ => spm.eos = id,
            }
        }
    }
    let mut sorted: Vec<usize> = (0..spm.tokens.len()).collect();
    sorted.sort_by(|&a, &b| spm.tokens[a].cmp(&spm.tokens[b]));
    if let Some(w) = sorted
        .windows(2)
        .find(|w| spm.tokens[w[0]] == spm.tokens[w[1]])
    {
        bail!(
            "tokens {} and {} are both {:?}; a llama vocabulary needs distinct tokens",
            w[0].min(w[1]),
            w[0].max(w[1]),
            String::from_utf8_lossy(&spm.tokens[w[0]])
        );
    }
    Ok(spm)
}

/// The kinglet vocabulary of a SentencePiece vocabulary: the inverse of
/// [`to_spm`], and the reading of any `llama` vocabulary (USER_DEFINED and
/// UNUSED tokens are read as NORMAL ones).
pub fn from_spm(spm: &SpmVocab) -> Result<OwnedVocab> {
    let n = spm.tokens.len();
    if spm.scores.len() != n || spm.types.len() != n {
        bail!(
            "{n} tokens but {} scores and {} token types",
            spm.scores.len(),
            spm.types.len()
        );
    }
    if let Some(id) = spm.scores.iter().position(|s| !s.is_finite()) {
        bail!("token {id} has the score {}", spm.scores[id]);
    }
    for (what, id) in [("BOS", spm.bos), ("EOS", spm.eos), ("unknown", spm.unk)] {
        if let Some(id) = id.filter(|&id| id as usize >= n) {
            bail!("the {what} token id {id} is not below the vocabulary size {n}");
        }
    }
    if let Some(size) = spm.char_vocab_size {
        let size = size as usize;
        if size > n {
            bail!("the character vocabulary has {size} tokens but only {n} are stored");
        }
        let mut pieces = Vec::with_capacity(size);
        for (id, text) in spm.tokens[..size].iter().enumerate() {
            let piece = replace_bytes(text, SPACE_MARK.as_bytes(), b" ");
            match std::str::from_utf8(&piece) {
                Ok(s) if s.chars().count() == 1 => pieces.push(piece),
                _ => bail!(
                    "token {id} ({:?}) of a character vocabulary is not one character",
                    String::from_utf8_lossy(text)
                ),
            }
        }
        return Ok(OwnedVocab {
            kind: TokenizerKind::Char,
            bos: None,
            eos: None,
            pieces,
            scores: spm.scores[..size].to_vec(),
        });
    }
    let pieces = spm
        .tokens
        .iter()
        .zip(&spm.types)
        .map(|(text, &kind)| match kind {
            token_type::CONTROL => [&b"\n"[..], text, b"\n"].concat(),
            token_type::BYTE | token_type::UNKNOWN => text.clone(),
            _ => replace_bytes(text, SPACE_MARK.as_bytes(), b" "),
        })
        .collect();
    Ok(OwnedVocab {
        kind: TokenizerKind::Bpe,
        bos: spm.bos,
        eos: spm.eos,
        pieces,
        scores: spm.scores.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpe() -> OwnedVocab {
        let pieces: Vec<&[u8]> = vec![
            b"<unk>",
            b"\n<s>\n",
            b"\n</s>\n",
            b"<0x0A>",
            b" the",
            b"e",
            b" ",
        ];
        OwnedVocab {
            kind: TokenizerKind::Bpe,
            bos: Some(1),
            eos: Some(2),
            pieces: pieces.iter().map(|p| p.to_vec()).collect(),
            scores: vec![0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -0.0],
        }
    }

    #[test]
    fn bpe_round_trip_with_types() {
        let v = bpe();
        let spm = to_spm(&v).unwrap();
        assert_eq!(spm.tokens[1], b"<s>");
        assert_eq!(spm.tokens[4], "▁the".as_bytes());
        assert_eq!(spm.types, [2, 3, 3, 6, 1, 1, 1]);
        assert_eq!((spm.unk, spm.bos, spm.eos), (Some(0), Some(1), Some(2)));
        assert!(spm.add_bos && spm.add_space_prefix);
        let back = from_spm(&spm).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.scores[6].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn char_vocab_gets_control_tokens_and_loses_them_again() {
        let v = OwnedVocab {
            kind: TokenizerKind::Char,
            bos: None,
            eos: None,
            pieces: ["\n", " ", "a", "é"]
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            scores: vec![0.0; 4],
        };
        let spm = to_spm(&v).unwrap();
        assert_eq!(spm.tokens.len(), 7);
        assert_eq!(spm.tokens[1], "▁".as_bytes());
        assert_eq!((spm.unk, spm.bos, spm.eos), (Some(4), Some(5), Some(6)));
        assert!(!spm.add_bos && !spm.add_space_prefix);
        assert_eq!(from_spm(&spm).unwrap(), v);
    }

    #[test]
    fn refuses_what_llama_cannot_hold() {
        let mut v = bpe();
        v.pieces[5] = "a▁b".as_bytes().to_vec();
        assert!(to_spm(&v).unwrap_err().to_string().contains("U+2581"));
        let mut v = bpe();
        v.pieces[5] = b" the".to_vec();
        let e = to_spm(&v).unwrap_err().to_string();
        assert!(e.contains("tokens 4 and 5"), "{e}");
        let mut v = bpe();
        v.pieces[5] = vec![0xff];
        assert!(to_spm(&v).unwrap_err().to_string().contains("not UTF-8"));
        let mut spm = to_spm(&bpe()).unwrap();
        spm.bos = Some(70);
        assert!(from_spm(&spm)
            .unwrap_err()
            .to_string()
            .contains("BOS token id 70"));
        spm.bos = Some(1);
        spm.char_vocab_size = Some(5);
        let e = from_spm(&spm).unwrap_err().to_string();
        assert!(
            e.contains("token 0") && e.contains("not one character"),
            "{e}"
        );
    }
}
