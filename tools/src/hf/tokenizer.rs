//! `tokenizer.json` (the `tokenizers` library's format) and
//! `tokenizer_config.json`, for the two kinds of kinglet vocabulary:
//!
//! - BPE (llama2.c / SentencePiece style) becomes what Hugging Face's own
//!   Llama conversion writes: a BPE model with byte fallback, `▁` for the
//!   space, a `▁` put before the text, BOS added by the post-processor, and
//!   the merges derived from the vocabulary the way that conversion derives
//!   them: every split of a piece into two pieces, ordered by the merged
//!   piece's score. Reading one back gives each piece a score that keeps
//!   the merge order: minus the rank of its first merge.
//! - A character vocabulary becomes a BPE model with no merges (so every
//!   character is one token) and a decoder that joins the tokens.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use kinglet::format::TokenizerKind;
use serde_json::{json, Map, Value};

use crate::model::OwnedVocab;
use crate::spm::{from_spm, to_spm, token_type, SpmVocab, SPACE_MARK};

/// The merges of a SentencePiece vocabulary, best first.
fn merges(spm: &SpmVocab) -> Vec<(String, String)> {
    let text = |id: usize| String::from_utf8_lossy(&spm.tokens[id]).into_owned();
    let ids: HashMap<String, usize> = (0..spm.tokens.len()).map(|id| (text(id), id)).collect();
    let mut found: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in (0..spm.tokens.len()).map(|id| (id, text(id))) {
        if spm.types[id] != token_type::NORMAL {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&piece[..at]), ids.get(&piece[at..])) {
                found.push((spm.scores[id], id, l, r));
            }
        }
    }
    // Best score first; for one piece, its splits by the ids of their parts.
    found.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)))
    });
    found
        .into_iter()
        .map(|(_, _, l, r)| (text(l), text(r)))
        .collect()
}

/// `tokenizer.json` and `tokenizer_config.json` for `vocab`, for a model
/// whose context is `max_seq_len` tokens.
pub fn write(vocab: &OwnedVocab, max_seq_len: u32) -> Result<(Value, Value)> {
    let spm = to_spm(vocab)?;
    let text = |id: usize| String::from_utf8_lossy(&spm.tokens[id]).into_owned();
    let name = |id: Option<u32>| id.map(|id| text(id as usize));
    if vocab.kind == TokenizerKind::Char {
        // Only the characters: the control tokens llama.cpp needs are not
        // part of the model.
        let chars: Map<String, Value> = vocab
            .pieces
            .iter()
            .enumerate()
            .map(|(id, p)| (String::from_utf8_lossy(p).into_owned(), json!(id)))
            .collect();
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": chars, "merges": [],
            },
        });
        let config = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": max_seq_len,
            "clean_up_tokenization_spaces": false,
        });
        return Ok((tokenizer, config));
    }
    let vocab_map: Map<String, Value> = (0..spm.tokens.len())
        .map(|id| (text(id), json!(id)))
        .collect();
    let added: Vec<Value> = (0..spm.tokens.len())
        .filter(|&id| matches!(spm.types[id], token_type::CONTROL | token_type::UNKNOWN))
        .map(|id| {
            json!({"id": id, "content": text(id), "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let merges: Vec<Value> = merges(&spm)
        .into_iter()
        .map(|(l, r)| json!([l, r]))
        .collect();
    let post_processor = match name(spm.bos) {
        Some(bos) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos.clone(): {"id": bos, "ids": [spm.bos], "tokens": [bos]}},
        }),
        None => Value::Null,
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE_MARK},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARK},
        ]},
        "pre_tokenizer": null,
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE_MARK}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": name(spm.unk),
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab_map, "merges": merges,
        },
    });
    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_seq_len,
        "clean_up_tokenization_spaces": false,
        "add_bos_token": spm.bos.is_some(),
        "add_eos_token": false,
    });
    for (key, id) in [
        ("bos_token", spm.bos),
        ("eos_token", spm.eos),
        ("unk_token", spm.unk),
    ] {
        if let Some(t) = name(id) {
            config[key] = json!(t);
        }
    }
    Ok((tokenizer, config))
}

/// A special token of `tokenizer_config.json`: a string or `{"content": …}`.
fn special_name(config: &Value, key: &str) -> Option<String> {
    match &config[key] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The merges of a `tokenizer.json` BPE model: `["a", "b"]` pairs or
/// `"a b"` strings.
fn read_merges(model: &Value) -> Result<Vec<(String, String)>> {
    let Some(list) = model["merges"].as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(l), Value::String(r)] => Ok((l.clone(), r.clone())),
                _ => bail!("merge {i} is not a pair of strings"),
            },
            Value::String(s) => s
                .split_once(' ')
                .map(|(l, r)| (l.to_string(), r.to_string()))
                .ok_or_else(|| anyhow!("merge {i} ({s:?}) is not two pieces")),
            _ => bail!("merge {i} is neither a pair nor a string"),
        })
        .collect()
}

/// The vocabulary of a `tokenizer.json` (SentencePiece-style BPE with byte
/// fallback, or a character vocabulary as [`write`](fn@write) writes it) for a model
/// of `vocab_size` tokens. BOS and EOS come from `tokenizer_config.json`, or
/// else from the ids in `config.json`.
pub fn read(
    tokenizer: &[u8],
    tokenizer_config: Option<&[u8]>,
    model_config: &Value,
    vocab_size: u32,
) -> Result<OwnedVocab> {
    let tokenizer: Value = serde_json::from_slice(tokenizer).context("tokenizer.json")?;
    let tok_config: Value = match tokenizer_config {
        Some(b) => serde_json::from_slice(b).context("tokenizer_config.json")?,
        None => Value::Null,
    };
    let model = &tokenizer["model"];
    match model["type"].as_str() {
        Some("BPE") => {}
        Some(t) => bail!("tokenizer.json: a {t} model is not supported (kinglet reads BPE)"),
        None => bail!("tokenizer.json has no model type"),
    }
    let n = vocab_size as usize;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut special = vec![false; n];
    let mut assign = |id: &Value, text: &str, is_special: bool| -> Result<()> {
        let id = id.as_u64().filter(|&id| id < n as u64).ok_or_else(|| {
            anyhow!("token {text:?} has the id {id}, not below the vocabulary size {n}")
        })? as usize;
        match &tokens[id] {
            Some(t) if t != text => bail!("id {id} is both {t:?} and {text:?}"),
            _ => tokens[id] = Some(text.to_string()),
        }
        special[id] |= is_special;
        Ok(())
    };
    let vocab = model["vocab"]
        .as_object()
        .context("tokenizer.json: model.vocab is not a map")?;
    for (text, id) in vocab {
        assign(id, text, false)?;
    }
    for t in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        let text = t["content"]
            .as_str()
            .context("an added token has no content")?;
        assign(&t["id"], text, t["special"].as_bool().unwrap_or(false))?;
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.ok_or_else(|| anyhow!("tokenizer.json has no token with id {id}")))
        .collect::<Result<_>>()?;
    let merges = read_merges(model)?;
    let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);
    let id_of = |name: Option<String>| name.and_then(|s| tokens.iter().position(|t| *t == s));
    let config_id = |key: &str| model_config[key].as_u64().map(|id| id as u32);

    if merges.is_empty() && !byte_fallback && tokenizer["normalizer"].is_null() {
        // A character vocabulary.
        let spm = SpmVocab {
            tokens: tokens
                .iter()
                .map(|t| t.replace(' ', SPACE_MARK).into_bytes())
                .collect(),
            scores: vec![0.0; n],
            types: vec![token_type::NORMAL; n],
            bos: None,
            eos: None,
            unk: None,
            add_bos: false,
            add_space_prefix: false,
            char_vocab_size: Some(vocab_size),
        };
        return from_spm(&spm);
    }
    if !byte_fallback {
        bail!(
            "tokenizer.json: a BPE model without byte fallback (GPT-2 style byte-level BPE) \
             is not supported: kinglet reads SentencePiece-style vocabularies"
        );
    }
    let unk = id_of(model["unk_token"].as_str().map(str::to_string));
    let mut scores = vec![0.0f32; n];
    let mut scored = vec![false; n];
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    for (rank, (l, r)) in merges.iter().enumerate() {
        if let Some(&id) = ids.get(format!("{l}{r}").as_str()) {
            if !scored[id] {
                scored[id] = true;
                scores[id] = -(rank as f32);
            }
        }
    }
    let types = (0..n)
        .map(|id| {
            if Some(id) == unk {
                token_type::UNKNOWN
            } else if special[id] {
                token_type::CONTROL
            } else if crate::spm::is_byte_piece(tokens[id].as_bytes()) {
                token_type::BYTE
            } else {
                token_type::NORMAL
            }
        })
        .collect();
    let spm = SpmVocab {
        tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
        scores,
        types,
        bos: id_of(special_name(&tok_config, "bos_token"))
            .map(|id| id as u32)
            .or_else(|| config_id("bos_token_id")),
        eos: id_of(special_name(&tok_config, "eos_token"))
            .map(|id| id as u32)
            .or_else(|| config_id("eos_token_id")),
        unk: unk.map(|id| id as u32),
        add_bos: true,
        add_space_prefix: true,
        char_vocab_size: None,
    };
    from_spm(&spm)
}
