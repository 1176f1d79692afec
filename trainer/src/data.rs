//! The corpus: a character tokenizer (ids are the sorted distinct
//! characters), the 90/10 train/validation split, and batch sampling.

use crate::bail;
use crate::error::{Result, TrainError};
use crate::rng::Rng;
use kinglet_tools::io::sha256_hex;
use std::path::Path;

// A character vocabulary always fits the model: a UTF-8 text has at most
// char::MAX + 1 = 1,114,112 distinct characters (fewer, as surrogates are
// not characters), below the engine's limit of 4,194,304 ids, and every id
// fits the u32 token type. So no corpus can have "too many characters";
// the vocabulary size is still checked with the rest of the shape
// (`ModelConfig::validate`) once the corpus is read.
const _: () = assert!((char::MAX as u32) < kinglet::config::limits::MAX_VOCAB);

/// Character-level tokenizer: id `i` is the `i`-th smallest distinct character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharTokenizer {
    chars: Vec<char>,
}

impl CharTokenizer {
    /// The tokenizer of `text`.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        CharTokenizer { chars }
    }

    /// A tokenizer with exactly these characters (sorted and distinct).
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() || chars.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                Corpus,
                "a character vocabulary must be non-empty, sorted and distinct"
            );
        }
        Ok(CharTokenizer { chars })
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether there are no ids (never, once built from a non-empty text).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The id of every character of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                self.chars.binary_search(&c).map(|i| i as u32).map_err(|_| {
                    TrainError::Corpus(format!("character {c:?} is not in the vocabulary"))
                })
            })
            .collect()
    }

    /// The text of `ids` (ids outside the vocabulary become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| self.chars.get(i as usize).copied().unwrap_or('\u{FFFD}'))
            .collect()
    }
}

/// A tokenized corpus split 90/10.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Built from the whole text.
    pub tokenizer: CharTokenizer,
    /// The first 90% of tokens.
    pub train: Vec<u32>,
    /// The last 10% of tokens.
    pub val: Vec<u32>,
    /// sha256 of the file's bytes, lowercase hex.
    pub sha256: String,
    /// The file's absolute path (empty for text that came from no file, or
    /// a path that is not UTF-8), recorded in checkpoints.
    pub path: String,
}

impl Corpus {
    /// Reads and checks `path` (UTF-8, long enough for `context`).
    pub fn load(path: &Path, context: usize) -> Result<Corpus> {
        let bytes = std::fs::read(path)
            .map_err(|e| TrainError::Io(format!("cannot read corpus {}: {e}", path.display())))?;
        let mut corpus = Corpus::from_bytes(&bytes, None, context)
            .map_err(|e| e.context(format_args!("corpus {}", path.display())))?;
        corpus.path = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.to_str().map(String::from))
            .unwrap_or_default();
        Ok(corpus)
    }

    /// Tokenizes `bytes` with `tokenizer`, or with the text's own characters
    /// when `None`, and splits 90/10. Both halves must hold at least one
    /// window of `context` tokens plus its next-token target.
    pub fn from_bytes(
        bytes: &[u8],
        tokenizer: Option<&CharTokenizer>,
        context: usize,
    ) -> Result<Corpus> {
        if bytes.is_empty() {
            bail!(Corpus, "the file is empty");
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            TrainError::Corpus(format!(
                "not UTF-8 text (invalid byte at offset {}); --data takes UTF-8 text",
                e.valid_up_to()
            ))
        })?;
        let tokenizer = match tokenizer {
            Some(t) => t.clone(),
            None => CharTokenizer::from_text(text),
        };
        let tokens = tokenizer.encode(text)?;
        let n_train = tokens.len() / 10 * 9 + tokens.len() % 10 * 9 / 10;
        let need = context + 1;
        if n_train < need || tokens.len() - n_train < need {
            bail!(
                Corpus,
                "{} characters is too short: with context {context}, the 90/10 split needs \
                 at least {} characters in each part (about {} in all)",
                tokens.len(),
                need,
                need * 10
            );
        }
        let val = tokens[n_train..].to_vec();
        let mut train = tokens;
        train.truncate(n_train);
        Ok(Corpus {
            tokenizer,
            train,
            val,
            sha256: sha256_hex(bytes),
            path: String::new(),
        })
    }
}

/// Fills `inputs` and `targets` ([batch · context] each) with `batch` random
/// windows of `tokens`; targets are the inputs shifted by one.
pub fn sample_batch(
    tokens: &[u32],
    batch: usize,
    context: usize,
    rng: &mut Rng,
    inputs: &mut Vec<u32>,
    targets: &mut Vec<u32>,
) {
    inputs.clear();
    targets.clear();
    for _ in 0..batch {
        let start = rng.below(tokens.len() - context);
        inputs.extend_from_slice(&tokens[start..start + context]);
        targets.extend_from_slice(&tokens[start + 1..start + context + 1]);
    }
}

/// Starts of `count` windows spread evenly over `tokens`: the fixed
/// validation set used during training.
pub fn fixed_window_starts(tokens_len: usize, context: usize, count: usize) -> Vec<usize> {
    let last = tokens_len - context - 1;
    (0..count)
        .map(|i| if count > 1 { i * last / (count - 1) } else { 0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_90_10_and_tokenizer_is_sorted() {
        let text = "hello world, ".repeat(10);
        let c = Corpus::from_bytes(text.as_bytes(), None, 4).expect("corpus");
        assert_eq!(
            c.tokenizer.chars(),
            &[' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w']
        );
        assert_eq!(c.train.len(), 117);
        assert_eq!(c.val.len(), 13);
        assert_eq!(c.tokenizer.decode(&c.train[..5]), "hello");
    }

    #[test]
    fn bad_corpora_are_rejected_clearly() {
        for bad in [&b""[..], b"abcdefghij", &[b'a', 0xff, 0xfe, b'b']] {
            let e = Corpus::from_bytes(bad, None, 4).unwrap_err();
            assert!(matches!(e, TrainError::Corpus(_)), "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn tinyshakespeare_sized_split_matches_the_custom() {
        // 1,115,394 characters: the customary validation part is 111,540.
        let n: usize = 1_115_394;
        let n_train = n / 10 * 9 + n % 10 * 9 / 10;
        assert_eq!(n - n_train, 111_540);
    }
}
