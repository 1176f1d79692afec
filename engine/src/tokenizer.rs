//! Text to tokens and back, with the vocabulary stored in the model file.
//!
//! Two kinds of vocabulary ([`TokenizerKind`]):
//! - **Char**: one token per Unicode scalar value.
//! - **Bpe**: llama2.c's `encode()` and `decode()` from `run.c`, reproduced
//!   token for token: a dummy-prefix space, one lookup per code point with
//!   `<0xXX>` byte fallback, then greedy merges of the best-scoring adjacent
//!   pair until none applies.
//!
//! Nothing allocates: [`encode`] works in place in the caller's token slice,
//! and the streaming [`Decoder`] keeps at most three pending bytes.
#![forbid(unsafe_code)]

use crate::error::Error;
use crate::format::{TokenizerKind, Vocab};

/// Longest piece a merge can produce. Merging looks a concatenation of two
/// pieces up in a stack buffer of this many bytes, so a vocabulary piece
/// longer than this is never the result of a merge (it can still be looked
/// up as a single code point, which is at most 4 bytes). Real vocabularies
/// stay far below it (llama2.c's tok512 tops out at 7 bytes).
pub const MAX_MERGED_PIECE_BYTES: usize = 256;

/// llama2.c starts its search for the best merge at this score with a strict
/// `>`, so a piece scoring at or below it is never merged.
const NO_MERGE_SCORE: f32 = -1e10;

/// An upper bound on the tokens [`encode`] needs for `text` with any
/// vocabulary: one per byte, plus the dummy prefix and BOS. `const` so that
/// firmware can size a static token buffer for a fixed prompt length.
pub const fn max_tokens(text: &str, add_bos: bool) -> usize {
    let prefix = if text.is_empty() { 0 } else { 1 };
    text.len() + prefix + add_bos as usize
}

/// Encodes `text` into `out` and returns the number of tokens written.
///
/// BOS is prepended when `add_bos` is true and the vocabulary has one; EOS is
/// never added. With a Bpe vocabulary the result is llama2.c's `encode()`
/// exactly: a dummy-prefix `" "` token when `text` is not empty, each code
/// point looked up (or one `<0xXX>` piece per byte of it when absent), then
/// repeated merging of the adjacent pair whose concatenation is the
/// highest-scoring piece (the leftmost on ties; the BOS token takes part, as
/// in llama2.c). A Char vocabulary maps each character to its piece, with no
/// dummy prefix and no merges.
///
/// Merging runs in `out`, so `out` must hold the tokens *before* merging. If
/// it cannot, the error is [`Error::BufferTooSmall`] whose `needed` is exactly
/// that count: retrying with `needed` slots succeeds, although the final
/// token count is usually smaller. [`max_tokens`] bounds `needed` without a
/// vocabulary. `out` is left with unspecified contents on error.
///
/// A character the vocabulary cannot represent (Char: no piece for it; Bpe:
/// no piece and no `<0xXX>` piece for one of its bytes) is
/// [`Error::UnknownCharacter`], reported in preference to a short buffer.
///
/// Like llama2.c, each merge rescans the pairs, so time grows quadratically
/// with the text (pairs known never to merge are skipped without a lookup,
/// which makes it several times faster than llama2.c's rescans). With tok512
/// 1 KB of English takes about 30 ms, 16 KB about 9 s: encode long texts in
/// pieces.
pub fn encode(
    vocab: &Vocab<'_>,
    text: &str,
    add_bos: bool,
    out: &mut [u32],
) -> Result<usize, Error> {
    let mut tokens = TokenWriter { out, len: 0 };
    if add_bos {
        if let Some(bos) = vocab.bos() {
            tokens.push(bos);
        }
    }
    match vocab.kind() {
        TokenizerKind::Char => {
            for ch in text.chars() {
                let mut utf8 = [0u8; 4];
                let id = vocab
                    .find(ch.encode_utf8(&mut utf8).as_bytes())
                    .ok_or(Error::UnknownCharacter { ch })?;
                tokens.push(id);
            }
            tokens.finish()
        }
        TokenizerKind::Bpe => {
            if !text.is_empty() {
                push_code_point(vocab, ' ', &mut tokens)?;
            }
            for ch in text.chars() {
                push_code_point(vocab, ch, &mut tokens)?;
            }
            let n = tokens.finish()?;
            Ok(merge_pairs(vocab, &mut tokens.out[..n]))
        }
    }
}

/// Writes tokens into a slice while room lasts and counts all of them, so a
/// short buffer can report exactly how much room it lacked.
struct TokenWriter<'o> {
    /// `[out.len()]` token ids; the first `min(len, out.len())` are written.
    out: &'o mut [u32],
    /// Tokens pushed, including those that did not fit.
    len: usize,
}

impl TokenWriter<'_> {
    fn push(&mut self, id: u32) {
        if let Some(slot) = self.out.get_mut(self.len) {
            *slot = id;
        }
        self.len += 1;
    }

    fn finish(&self) -> Result<usize, Error> {
        if self.len > self.out.len() {
            return Err(Error::BufferTooSmall {
                needed: self.len,
                available: self.out.len(),
            });
        }
        Ok(self.len)
    }
}

/// Pushes the piece for `ch`, or its bytes as `<0xXX>` pieces when the
/// vocabulary has no piece for it (llama2.c's byte fallback; llama2.c writes
/// `byte + 3`, which is the same id in its vocabularies, but looking the
/// piece up also works for vocabularies laid out differently).
fn push_code_point(vocab: &Vocab<'_>, ch: char, tokens: &mut TokenWriter<'_>) -> Result<(), Error> {
    let mut utf8 = [0u8; 4];
    let bytes = ch.encode_utf8(&mut utf8).as_bytes();
    if let Some(id) = vocab.find(bytes) {
        tokens.push(id);
        return Ok(());
    }
    for &b in bytes {
        let id = vocab
            .find(&byte_piece_name(b))
            .ok_or(Error::UnknownCharacter { ch })?;
        tokens.push(id);
    }
    Ok(())
}

/// The name of the byte-fallback piece for `b`: `<0xXX>`, uppercase hex.
fn byte_piece_name(b: u8) -> [u8; 6] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [
        b'<',
        b'0',
        b'x',
        HEX[(b >> 4) as usize],
        HEX[(b & 15) as usize],
        b'>',
    ]
}

/// Marks, in the spare top bit of `tokens[i]`, that the pair
/// `(tokens[i], tokens[i + 1])` can never merge. A pair's fate depends only on
/// its two ids, so the mark stays true until one of them changes; it spares
/// the lookups that make llama2.c's rescans slow on long texts.
const NO_MERGE: u32 = 1 << 31;
const _: () = assert!(
    crate::config::limits::MAX_VOCAB <= NO_MERGE,
    "ids need the top bit free"
);

/// Merges adjacent pairs in `tokens` in place, llama2.c style, and returns
/// the new length.
fn merge_pairs(vocab: &Vocab<'_>, tokens: &mut [u32]) -> usize {
    // Concatenation of two adjacent pieces: [merge_limit] bytes used.
    let mut concat = [0u8; MAX_MERGED_PIECE_BYTES];
    let merge_limit = vocab.max_piece_len().min(MAX_MERGED_PIECE_BYTES);
    let mut n = tokens.len();
    loop {
        let mut best: Option<(usize, u32)> = None;
        let mut best_score = NO_MERGE_SCORE;
        for i in 0..n.saturating_sub(1) {
            if tokens[i] & NO_MERGE != 0 {
                continue;
            }
            let left = vocab.piece(tokens[i]);
            let right = vocab.piece(tokens[i + 1] & !NO_MERGE);
            let len = left.len() + right.len();
            let merged = if len <= merge_limit {
                concat[..left.len()].copy_from_slice(left);
                concat[left.len()..len].copy_from_slice(right);
                vocab.find(&concat[..len])
            } else {
                None // longer than any piece: cannot be one
            };
            match merged.map(|id| (id, vocab.score(id))) {
                Some((id, score)) if score > best_score => {
                    best_score = score;
                    best = Some((i, id));
                }
                Some((_, score)) if score > NO_MERGE_SCORE => {}
                _ => tokens[i] |= NO_MERGE,
            }
        }
        let Some((i, id)) = best else {
            for t in &mut tokens[..n] {
                *t &= !NO_MERGE;
            }
            return n;
        };
        // The pairs on either side of the merged token are new.
        if i > 0 {
            tokens[i - 1] &= !NO_MERGE;
        }
        tokens[i] = id;
        tokens.copy_within(i + 2..n, i + 1);
        n -= 1;
    }
}

/// Raw bytes for byte-fallback pieces to point into (llama2.c's
/// `byte_pieces`).
static BYTE_VALUES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = i as u8;
        i += 1;
    }
    table
};

/// The value of a byte-fallback piece `<0xXX>` (hex digits of either case),
/// or `None` for any other piece.
fn byte_piece_value(piece: &[u8]) -> Option<u8> {
    let [b'<', b'0', b'x', hi, lo, b'>'] = *piece else {
        return None;
    };
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(hi)? * 16 + digit(lo)?) as u8)
}

/// The bytes token `token` stands for when it follows `prev`: llama2.c's
/// `decode(prev, token)`. A Bpe piece `<0xXX>` is the one raw byte; after
/// BOS a leading space is stripped (SentencePiece's dummy prefix); the
/// special BOS and EOS tokens of a Bpe vocabulary stand for no bytes. A Char
/// piece is its character. The bytes need not be valid UTF-8 on their own.
pub fn token_bytes<'a>(
    vocab: &Vocab<'a>,
    prev: Option<u32>,
    token: u32,
) -> Result<&'a [u8], Error> {
    if token >= vocab.len() {
        return Err(Error::TokenOutOfRange {
            token,
            vocab_size: vocab.len(),
        });
    }
    let piece = vocab.piece(token);
    if vocab.kind() == TokenizerKind::Char {
        return Ok(piece);
    }
    if Some(token) == vocab.bos() || Some(token) == vocab.eos() {
        return Ok(&[]);
    }
    if let Some(b) = byte_piece_value(piece) {
        let b = b as usize;
        return Ok(&BYTE_VALUES[b..b + 1]);
    }
    match piece {
        [b' ', rest @ ..] if prev.is_some() && prev == vocab.bos() => Ok(rest),
        _ => Ok(piece),
    }
}

/// The replacement character emitted for each invalid or unfinished UTF-8
/// sequence.
const REPLACEMENT: &str = "\u{FFFD}";

/// Streams tokens back to text, one token at a time, in fixed-size state.
///
/// Every chunk handed to `emit` is a whole `&str`: a character split across
/// byte-fallback tokens is held (up to 3 bytes) until it is complete, and
/// bytes that cannot form a character become U+FFFD, one per maximal invalid
/// subsequence, as `String::from_utf8_lossy` does. The concatenation of all
/// chunks is therefore the lossy UTF-8 reading of the concatenated
/// [`token_bytes`] of the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decoder {
    /// The previous token, for the strip-after-BOS rule.
    prev: Option<u32>,
    /// `[pending_len]` bytes of an unfinished character.
    pending: [u8; 3],
    pending_len: u8,
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub const fn new() -> Self {
        Decoder {
            prev: None,
            pending: [0; 3],
            pending_len: 0,
        }
    }

    /// Decodes `token`, passing the text it completes to `emit` (zero or more
    /// calls). An out-of-range token is [`Error::TokenOutOfRange`] and leaves
    /// the decoder unchanged.
    pub fn push(
        &mut self,
        vocab: &Vocab<'_>,
        token: u32,
        mut emit: impl FnMut(&str),
    ) -> Result<(), Error> {
        let bytes = token_bytes(vocab, self.prev, token)?;
        self.prev = Some(token);
        self.feed(bytes, &mut emit);
        Ok(())
    }

    /// Ends the stream: an unfinished character becomes U+FFFD. The decoder
    /// is then back at the start of a stream.
    pub fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if self.pending_len > 0 {
            emit(REPLACEMENT);
        }
        *self = Decoder::new();
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        self.pending_len > 0
    }

    fn feed(&mut self, bytes: &[u8], emit: &mut impl FnMut(&str)) {
        let mut rest = bytes;
        // First finish the held-back character, one byte at a time.
        while self.pending_len > 0 {
            let Some((&b, tail)) = rest.split_first() else {
                return;
            };
            let held = self.pending_len as usize;
            // Held bytes plus `b`: [held + 1] bytes used.
            let mut seq = [0u8; 4];
            seq[..held].copy_from_slice(&self.pending[..held]);
            seq[held] = b;
            match core::str::from_utf8(&seq[..=held]) {
                Ok(s) => {
                    emit(s);
                    self.pending_len = 0;
                    rest = tail;
                }
                Err(e) if e.error_len().is_none() && held < 3 => {
                    // Still a valid prefix of a character: keep holding.
                    self.pending[held] = b;
                    self.pending_len += 1;
                    rest = tail;
                }
                Err(_) => {
                    // `b` cannot continue it: the held bytes are invalid, and
                    // `b` starts afresh below.
                    emit(REPLACEMENT);
                    self.pending_len = 0;
                }
            }
        }
        loop {
            match core::str::from_utf8(rest) {
                Ok(s) => {
                    if !s.is_empty() {
                        emit(s);
                    }
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    if let Ok(s) = core::str::from_utf8(valid) {
                        if !s.is_empty() {
                            emit(s);
                        }
                    }
                    match e.error_len() {
                        Some(bad) => {
                            emit(REPLACEMENT);
                            rest = after.get(bad..).unwrap_or(&[]);
                        }
                        None => {
                            // An unfinished character at the end: 1 to 3 bytes.
                            let held = after.len().min(3);
                            self.pending[..held].copy_from_slice(&after[..held]);
                            self.pending_len = held as u8;
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn byte_piece_names_round_trip() {
        for b in 0..=255u8 {
            let name = byte_piece_name(b);
            assert_eq!(byte_piece_value(&name), Some(b));
            assert_eq!(BYTE_VALUES[b as usize], b);
        }
        assert_eq!(&byte_piece_name(0xAB), b"<0xAB>");
        assert_eq!(byte_piece_value(b"<0xab>"), Some(0xAB));
        for not_byte in [
            &b"<0xG0>"[..],
            b"<0x0>",
            b"<0x000>",
            b"<0X41>",
            b"0x41",
            b"<s>",
        ] {
            assert_eq!(byte_piece_value(not_byte), None);
        }
    }

    #[test]
    fn max_tokens_counts_bytes_prefix_and_bos() {
        const N: usize = max_tokens("日本", true);
        assert_eq!(N, 6 + 1 + 1);
        assert_eq!(max_tokens("", true), 1);
        assert_eq!(max_tokens("", false), 0);
    }

    /// Feeds `bytes` to a decoder in pieces cut at `cuts` and returns the
    /// emitted chunks.
    fn feed_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut chunks = Vec::new();
        let mut decoder = Decoder::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([bytes.len()].iter()) {
            let cut = cut.clamp(start, bytes.len());
            decoder.feed(&bytes[start..cut], &mut |s: &str| chunks.push(s.into()));
            start = cut;
        }
        decoder.finish(|s| chunks.push(s.into()));
        chunks
    }

    #[test]
    fn streaming_matches_lossy_utf8_however_the_bytes_are_cut() {
        let cases: [&[u8]; 8] = [
            "héllo 日本 🦀".as_bytes(),
            b"\xF0\x9F\xA6",         // unfinished at the end
            b"\xE6\x97a\xE6",        // broken in the middle, unfinished at the end
            b"\xFF\xFE\x80abc",      // never valid
            b"\xED\xA0\x80",         // a surrogate: invalid in UTF-8
            b"\xF4\x90\x80\x80",     // above U+10FFFF
            b"\xC3\xC3\xA9\xE2\x82", // a lead byte cut short by another
            b"",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for bytes in cases {
            let whole = String::from_utf8_lossy(bytes);
            // Every single cut point, then random multi-cuts.
            for cut in 0..=bytes.len() {
                assert_eq!(
                    feed_in_pieces(bytes, &[cut]).concat(),
                    whole,
                    "{bytes:?} at {cut}"
                );
            }
            for _ in 0..50 {
                let mut cuts: Vec<usize> = (0..4)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state % (bytes.len() as u64 + 1)) as usize
                    })
                    .collect();
                cuts.sort_unstable();
                let chunks = feed_in_pieces(bytes, &cuts);
                assert_eq!(chunks.concat(), whole, "{bytes:?} cut at {cuts:?}");
                assert!(chunks.iter().all(|c| !c.is_empty()));
            }
        }
    }

    #[test]
    fn finish_resets_the_stream() {
        let mut decoder = Decoder::new();
        let mut out = String::new();
        decoder.feed(b"\xE6\x97", &mut |s: &str| out.push_str(s));
        assert!(decoder.has_pending());
        decoder.prev = Some(5);
        decoder.finish(|s| out.push_str(s));
        assert_eq!(out, "\u{FFFD}");
        assert_eq!(decoder, Decoder::new());
    }
}
