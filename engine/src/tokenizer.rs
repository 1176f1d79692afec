//! Text to tokens and back, with the vocabulary stored in the model file.
//!
//! Two kinds of vocabulary ([`TokenizerKind`]):
//! - **Char**: one token per Unicode scalar value.
//! - **Bpe**: llama2.c's `encode()` and `decode()` from `run.c`, reproduced
//!   token for token: a dummy-prefix space, one lookup per code point with
//!   `<0xXX>` byte fallback, then greedy merges of the best-scoring adjacent
//!   pair until none applies.
//!
//! Nothing allocates: [`encode_with_scratch`] works in the caller's token
//! slice plus a scratch slice for the merge queue (O(n log n) merging, see
//! `merge`), `encode` (with `std`) allocates that scratch itself, and the
//! streaming [`Decoder`] keeps at most three pending bytes.
#![forbid(unsafe_code)]

mod merge;

use crate::error::Error;
use crate::format::{TokenizerKind, Vocab};

pub use merge::{scratch_words, MAX_MERGED_PIECE_BYTES};

/// An upper bound on the tokens [`encode_with_scratch`] needs for `text` with any
/// vocabulary: one per byte, plus the dummy prefix and BOS. `const` so that
/// firmware can size a static token buffer for a fixed prompt length.
pub const fn max_tokens(text: &str, add_bos: bool) -> usize {
    let prefix = if text.is_empty() { 0 } else { 1 };
    text.len() + prefix + add_bos as usize
}

/// Encodes `text` into `out` and returns the number of tokens written,
/// using `scratch` to merge Bpe pieces.
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
/// vocabulary. A Bpe vocabulary also needs [`scratch_words`] of that count in
/// `scratch` (a shorter one is [`Error::BufferTooSmall`] with the exact
/// words needed, reported after `out`'s); a Char vocabulary uses none.
/// `out` and `scratch` are left with unspecified contents on error.
///
/// A character the vocabulary cannot represent (Char: no piece for it; Bpe:
/// no piece and no `<0xXX>` piece for one of its bytes) is
/// [`Error::UnknownCharacter`], reported in preference to a short buffer.
/// A Bpe text of more than 2³² − 2 unmerged tokens is
/// [`Error::InvalidInput`], before any work.
///
/// Time is O(n log n) in the text's length: a heap of merge candidates
/// instead of llama2.c's rescan of every pair after every merge.
pub fn encode_with_scratch(
    vocab: &Vocab<'_>,
    text: &str,
    add_bos: bool,
    out: &mut [u32],
    scratch: &mut [u32],
) -> Result<usize, Error> {
    let n = unmerged(vocab, text, add_bos, out)?;
    if vocab.kind() == TokenizerKind::Char {
        return Ok(n);
    }
    merge::check_scratch(n, scratch)?;
    Ok(merge::merge_pairs(vocab, &mut out[..n], scratch))
}

/// [`encode_with_scratch`] with the scratch allocated here: the same tokens,
/// the same errors about `out`.
#[cfg(feature = "std")]
pub fn encode(
    vocab: &Vocab<'_>,
    text: &str,
    add_bos: bool,
    out: &mut [u32],
) -> Result<usize, Error> {
    let n = unmerged(vocab, text, add_bos, out)?;
    if vocab.kind() == TokenizerKind::Char {
        return Ok(n);
    }
    let mut scratch = std::vec![0u32; scratch_words(n)];
    Ok(merge::merge_pairs(vocab, &mut out[..n], &mut scratch))
}

/// Writes the tokens of `text` before any merge into `out` and returns
/// their count.
fn unmerged(vocab: &Vocab<'_>, text: &str, add_bos: bool, out: &mut [u32]) -> Result<usize, Error> {
    if vocab.kind() == TokenizerKind::Bpe && max_tokens(text, add_bos) > merge::MAX_TOKENS {
        return Err(Error::InvalidInput {
            reason: "text too long to encode: more than 2^32 - 2 tokens",
        });
    }
    let mut tokens = TokenWriter { out, len: 0 };
    if add_bos {
        if let Some(bos) = vocab.bos() {
            tokens.push(bos);
        }
    }
    let mut lookup = CodePointLookup::new(vocab);
    match vocab.kind() {
        TokenizerKind::Char => {
            for ch in text.chars() {
                let id = lookup.find(ch).ok_or(Error::UnknownCharacter { ch })?;
                tokens.push(id);
            }
        }
        TokenizerKind::Bpe => {
            if !text.is_empty() {
                push_code_point(&mut lookup, ' ', &mut tokens)?;
            }
            for ch in text.chars() {
                push_code_point(&mut lookup, ch, &mut tokens)?;
            }
        }
    }
    tokens.finish()
}

/// The piece of each code point, with those of ASCII characters
/// remembered: most text is ASCII, and a lookup is a binary search.
struct CodePointLookup<'v> {
    vocab: &'v Vocab<'v>,
    /// `[128]` the id of each ASCII character's piece, `NO_PIECE`, or
    /// `NOT_LOOKED_UP`.
    ascii: [u32; 128],
}

const NO_PIECE: u32 = u32::MAX;
const NOT_LOOKED_UP: u32 = u32::MAX - 1;
const _: () = assert!(crate::config::limits::MAX_VOCAB < NOT_LOOKED_UP);

impl<'v> CodePointLookup<'v> {
    fn new(vocab: &'v Vocab<'v>) -> Self {
        CodePointLookup {
            vocab,
            ascii: [NOT_LOOKED_UP; 128],
        }
    }

    /// The id of the piece that is exactly `ch`.
    fn find(&mut self, ch: char) -> Option<u32> {
        let mut utf8 = [0u8; 4];
        let bytes = ch.encode_utf8(&mut utf8).as_bytes();
        let Some(slot) = self.ascii.get_mut(ch as usize) else {
            return self.vocab.find(bytes);
        };
        if *slot == NOT_LOOKED_UP {
            *slot = self.vocab.find(bytes).unwrap_or(NO_PIECE);
        }
        (*slot != NO_PIECE).then_some(*slot)
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
fn push_code_point(
    lookup: &mut CodePointLookup<'_>,
    ch: char,
    tokens: &mut TokenWriter<'_>,
) -> Result<(), Error> {
    if let Some(id) = lookup.find(ch) {
        tokens.push(id);
        return Ok(());
    }
    let mut utf8 = [0u8; 4];
    for &b in ch.encode_utf8(&mut utf8).as_bytes() {
        let id = lookup
            .vocab
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
