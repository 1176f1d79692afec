//! Synthetic models for benchmarks and tests: the shapes of the llama2.c
//! "stories" models, random weights from a seeded generator, and a
//! byte-level BPE vocabulary whose merges are well-formed.

use anyhow::{bail, Result};
use kinglet::config::stories;
use kinglet::format::TokenizerKind;
use kinglet::Config;

use crate::model::{OwnedModel, OwnedTensor, OwnedVocab};
use crate::rng::Rng;

/// Standard deviation of the random weights (GPT-2's initialization).
pub const WEIGHT_STD: f32 = 0.02;

/// The named shapes: `260k` (stories260K), `15m` (stories15M), `110m`
/// (stories110M). All tie the classifier to the embedding.
pub fn preset(name: &str) -> Option<Config> {
    match name.to_ascii_lowercase().as_str() {
        "260k" => Some(stories::STORIES260K),
        "15m" => Some(stories::STORIES15M),
        "110m" => Some(stories::STORIES110M),
        _ => None,
    }
}

/// A llama2.c-style vocabulary of `size` pieces: `<unk>`, BOS `\n<s>\n`,
/// EOS `\n</s>\n`, the 256 byte-fallback pieces `<0x00>`..`<0xFF>`, the 95
/// printable ASCII characters, then merges of growing length — lower-case
/// words and space-prefixed words — each the concatenation of an earlier
/// piece and one character, scored so that shorter merges win. Truncated to
/// `size` (at least 3).
pub fn synth_vocab(size: u32) -> Result<OwnedVocab> {
    if size < 3 {
        bail!("vocab_size {size} is too small: needs at least 3 (unk, BOS, EOS)");
    }
    let size = size as usize;
    let mut pieces: Vec<Vec<u8>> =
        vec![b"<unk>".to_vec(), b"\n<s>\n".to_vec(), b"\n</s>\n".to_vec()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
    pieces.extend((b' '..=b'~').map(|c| vec![c]));
    let mut scores = vec![0.0f32; pieces.len()];
    // Merges of length `len` = 2, 3, ...: a space followed by every
    // lower-case word of length `len - 1`, then every word of length `len`.
    // `words`: every lower-case word of length `len - 1`.
    let mut words: Vec<Vec<u8>> = (b'a'..=b'z').map(|c| vec![c]).collect();
    let mut rank = 0u32;
    'lengths: while pieces.len() < size {
        let spaced = words.iter().map(|w| {
            let mut x = vec![b' '];
            x.extend_from_slice(w);
            x
        });
        let longer: Vec<Vec<u8>> = words
            .iter()
            .flat_map(|w| {
                (b'a'..=b'z').map(move |c| {
                    let mut x = w.clone();
                    x.push(c);
                    x
                })
            })
            .collect();
        for piece in spaced.chain(longer.iter().cloned()) {
            if pieces.len() >= size {
                break 'lengths;
            }
            rank += 1;
            pieces.push(piece);
            scores.push(-(rank as f32));
        }
        words = longer;
    }
    pieces.truncate(size);
    scores.truncate(size);
    Ok(OwnedVocab {
        kind: TokenizerKind::Bpe,
        bos: Some(1),
        eos: Some(2),
        pieces,
        scores,
    })
}

/// A model of shape `config` with N(0, 0.02²) weights from `seed`, norm gains
/// of 1, and [`synth_vocab`]. The same seed always gives the same model.
pub fn synth_model(config: &Config, seed: u64) -> Result<OwnedModel> {
    config.validate()?;
    let vocab = synth_vocab(config.vocab_size)?;
    let mut rng = Rng::new(seed);
    let tensors = kinglet::canonical_tensors(config)
        .map(|t| {
            let mut values = vec![1.0f32; t.elements() as usize];
            if !t.role.is_norm() {
                rng.fill_normal(&mut values, WEIGHT_STD);
            }
            OwnedTensor {
                name: t.role.to_string(),
                shape: t.dims().to_vec(),
                values,
            }
        })
        .collect();
    Ok(OwnedModel {
        config: *config,
        vocab,
        tensors,
        metadata: vec![
            (
                "source".to_string(),
                "synthetic (kinglet synth)".to_string(),
            ),
            ("synth.seed".to_string(), seed.to_string()),
        ],
    })
}

/// A small model shape whose rows are whole quantization blocks, for the
/// importers' and exporters' unit tests.
#[cfg(test)]
pub(crate) fn tiny_config(tied_classifier: bool) -> Config {
    Config {
        dim: 32,
        hidden_dim: 64,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: 8,
        max_seq_len: 16,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for name in ["260k", "15m", "110m"] {
            let c = preset(name).unwrap();
            assert_eq!(c.validate(), Ok(()), "{name}");
        }
        assert!(preset("7b").is_none());
    }

    #[test]
    fn vocab_merges_are_built_from_earlier_pieces() {
        let v = synth_vocab(32000).unwrap();
        assert_eq!(v.pieces.len(), 32000);
        let set: std::collections::HashSet<&[u8]> = v.pieces.iter().map(|p| p.as_slice()).collect();
        assert_eq!(set.len(), 32000, "pieces are distinct");
        for p in &v.pieces[3 + 256 + 95..] {
            assert!(p.len() >= 2);
            assert!(set.contains(&p[..p.len() - 1]), "{p:?}");
        }
        assert_eq!(synth_vocab(512).unwrap().pieces.len(), 512);
        assert!(synth_vocab(2).is_err());
    }

    #[test]
    fn same_seed_same_model() {
        let c = preset("260k").unwrap();
        let a = synth_model(&c, 5).unwrap();
        assert_eq!(a, synth_model(&c, 5).unwrap());
        assert_ne!(a.tensors[1..], synth_model(&c, 6).unwrap().tensors[1..]);
        assert!(a.tensors[1].values.iter().all(|&g| g == 1.0), "attn_norm");
    }
}
