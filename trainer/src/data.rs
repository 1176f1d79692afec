//! The corpus: a character vocabulary (ids are the sorted distinct
//! characters), the 90/10 train/validation split, and batch sampling.

use crate::bail;
use crate::error::{Result, TrainError};
use crate::rng::Rng;
use kinglet::format::{TokenizerKind, Vocab};
use kinglet::tokenizer::{encode_with_scratch, max_tokens, Decoder};
use kinglet_tools::io::sha256_hex;
use kinglet_tools::OwnedVocab;
use std::path::Path;

// A character vocabulary always fits the model: a UTF-8 text has at most
// char::MAX + 1 = 1,114,112 distinct characters (fewer, as surrogates are
// not characters), below the engine's limit of 4,194,304 ids, and every id
// fits the u32 token type. So no corpus can have "too many characters";
// the vocabulary size is still checked with the rest of the shape
// (`ModelConfig::validate`) once the corpus is read.
const _: () = assert!((char::MAX as u32) < kinglet::config::limits::MAX_VOCAB);

/// Character-level tokenizer: id `i` is the `i`-th smallest distinct
/// character. It is held as the tokenizer section the exported .klt file
/// will store, and encodes and decodes through the engine's tokenizer, so
/// the ids trained on are those `kinglet generate` and `eval` use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharTokenizer {
    /// A tokenizer section of `len` pieces, checked when built.
    section: Vec<u8>,
    len: u32,
}

impl CharTokenizer {
    /// The tokenizer of `text` (which must not be empty).
    pub fn from_text(text: &str) -> Result<Self> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        CharTokenizer::from_chars(chars)
    }

    /// A tokenizer with exactly these characters (sorted and distinct).
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() || chars.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                Corpus,
                "a character vocabulary must be non-empty, sorted and distinct"
            );
        }
        let pieces = OwnedVocab {
            kind: TokenizerKind::Char,
            bos: None,
            eos: None,
            pieces: chars.iter().map(|c| c.to_string().into_bytes()).collect(),
            scores: vec![0.0; chars.len()],
        };
        let section = pieces
            .section()
            .map_err(|e| TrainError::Corpus(format!("{e:#}")))?;
        CharTokenizer::from_section(section, chars.len() as u32)
    }

    /// A tokenizer from a tokenizer section of `len` pieces, refused unless
    /// it is a valid character vocabulary.
    pub fn from_section(section: Vec<u8>, len: u32) -> Result<Self> {
        let kind = Vocab::from_section(&section, len)
            .map_err(|e| TrainError::Corpus(format!("not a vocabulary: {e}")))?
            .kind();
        if kind != TokenizerKind::Char {
            bail!(Corpus, "not a character vocabulary");
        }
        Ok(CharTokenizer { section, len })
    }

    /// The engine's view of the vocabulary.
    pub fn vocab(&self) -> Vocab<'_> {
        Vocab::from_section(&self.section, self.len)
            .expect("the section was checked when the tokenizer was built")
    }

    /// The tokenizer section, as the exported .klt file stores it.
    pub fn section(&self) -> &[u8] {
        &self.section
    }

    /// The characters, in id order.
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        let vocab = self.vocab();
        // Each piece of a checked character vocabulary is one character.
        (0..vocab.len()).filter_map(move |id| {
            std::str::from_utf8(vocab.piece(id))
                .ok()
                .and_then(|s| s.chars().next())
        })
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are no ids (never: a vocabulary has at least one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The id of every character of `text`; a character outside the
    /// vocabulary is a `Corpus` error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = vec![0; max_tokens(text, false)];
        // A character vocabulary merges nothing: no scratch.
        let n = encode_with_scratch(&self.vocab(), text, false, &mut ids, &mut []).map_err(
            |e| match e {
                kinglet::Error::UnknownCharacter { ch } => {
                    TrainError::Corpus(format!("character {ch:?} is not in the vocabulary"))
                }
                e => TrainError::Corpus(format!("cannot tokenize: {e}")),
            },
        )?;
        ids.truncate(n);
        Ok(ids)
    }

    /// The text of `ids` (ids outside the vocabulary become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let vocab = self.vocab();
        let mut text = String::new();
        let mut decoder = Decoder::new();
        for &id in ids {
            if decoder.push(&vocab, id, |s| text.push_str(s)).is_err() {
                text.push('\u{FFFD}');
            }
        }
        decoder.finish(|s| text.push_str(s));
        text
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
            None => CharTokenizer::from_text(text)?,
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
            c.tokenizer.chars().collect::<Vec<_>>(),
            [' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w']
        );
        assert_eq!(c.train.len(), 117);
        assert_eq!(c.val.len(), 13);
        assert_eq!(c.tokenizer.decode(&c.train[..5]), "hello");
    }

    /// The ids the trainer gave before it encoded through the engine: each
    /// character's rank among the text's distinct characters.
    fn ranks(text: &str) -> Vec<u32> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        text.chars()
            .map(|c| chars.binary_search(&c).unwrap() as u32)
            .collect()
    }

    #[test]
    fn ids_are_character_ranks_and_decode_back() {
        let mut texts = vec![
            "hello world, ".repeat(10),
            "naïve café — 東京 🦀 ∑ a\u{0}b\r\n\u{10FFFF}".repeat(3),
        ];
        let shakespeare = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/tinyshakespeare.txt"
        );
        if let Ok(text) = std::fs::read_to_string(shakespeare) {
            texts.push(text);
        }
        for text in &texts {
            let tokenizer = CharTokenizer::from_text(text).expect("tokenizer");
            let ids = tokenizer.encode(text).expect("encodes");
            assert_eq!(ids, ranks(text));
            assert_eq!(tokenizer.decode(&ids), *text);
            let chars: Vec<char> = tokenizer.chars().collect();
            assert_eq!(CharTokenizer::from_chars(chars).expect("same"), tokenizer);
        }
    }

    #[test]
    fn missing_characters_and_bad_sections_are_corpus_errors() {
        let tokenizer = CharTokenizer::from_text("abc").expect("tokenizer");
        let e = tokenizer.encode("abd").unwrap_err();
        assert_eq!(
            e,
            TrainError::Corpus("character 'd' is not in the vocabulary".into())
        );
        assert_eq!(tokenizer.decode(&[0, 3, 2]), "a\u{FFFD}c");
        let section = tokenizer.section().to_vec();
        for (section, len) in [
            (section[..section.len() - 4].to_vec(), 3),
            ([&section[..], &[0; 4]].concat(), 3),
            (section.clone(), 4),
            (section.clone(), 0),
        ] {
            let e = CharTokenizer::from_section(section, len).unwrap_err();
            assert!(matches!(e, TrainError::Corpus(_)), "{e:?}");
        }
        for chars in [vec![], vec!['b', 'a'], vec!['a', 'a']] {
            let e = CharTokenizer::from_chars(chars).unwrap_err();
            assert!(matches!(e, TrainError::Corpus(_)), "{e:?}");
        }
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
