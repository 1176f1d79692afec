//! The BPE encoder the engine had before its merge heap, kept as the oracle
//! for `kinglet::tokenizer::encode` (tests/tokenizer.rs) and as the "before"
//! of the tokenizer bench (benches/tokenizer.rs).

use kinglet::format::Vocab;
use kinglet::tokenizer::MAX_MERGED_PIECE_BYTES;
use kinglet::Error;

/// The encoder `encode` replaced, kept as its oracle: the same unmerged
/// tokens, then llama2.c's merge loop as it was written in the engine (every
/// merge rescans the pairs, quadratic; pairs known never to merge are
/// marked in the top bit and skipped). Works on any vocabulary.
pub fn quadratic_encode(vocab: &Vocab<'_>, text: &str, add_bos: bool) -> Result<Vec<u32>, Error> {
    const NO_MERGE: u32 = 1 << 31;
    const NO_MERGE_SCORE: f32 = -1e10;
    let mut tokens = Vec::new();
    if add_bos {
        tokens.extend(vocab.bos());
    }
    let code_points = (!text.is_empty()).then_some(' ').into_iter();
    for ch in code_points.chain(text.chars()) {
        let mut utf8 = [0u8; 4];
        let bytes = ch.encode_utf8(&mut utf8).as_bytes();
        if let Some(id) = vocab.find(bytes) {
            tokens.push(id);
            continue;
        }
        for &b in bytes {
            let name = format!("<0x{b:02X}>");
            tokens.push(
                vocab
                    .find(name.as_bytes())
                    .ok_or(Error::UnknownCharacter { ch })?,
            );
        }
    }
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
                None
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
            tokens.truncate(n);
            for t in &mut tokens {
                *t &= !NO_MERGE;
            }
            return Ok(tokens);
        };
        if i > 0 {
            tokens[i - 1] &= !NO_MERGE;
        }
        tokens[i] = id;
        tokens.copy_within(i + 2..n, i + 1);
        n -= 1;
    }
}
