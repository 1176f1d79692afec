//! Writing a model as a GGUF file (version 3) that llama.cpp loads as
//! architecture `llama`. Tensors keep their bytes: kinglet's dtypes are ggml
//! types, and kinglet rotates adjacent pairs as llama.cpp's `llama` models
//! do (the "normal" RoPE; GGUF holds Meta's layout), so `wq` and `wk` are
//! written as they are.

use std::io::Write;

use anyhow::{Context, Result};
use kinglet::{session_floats, Dtype, ModelFile, Session, TensorRole};

use super::{keys, tensor_name, value_type as vt, GgmlType, DEFAULT_ALIGNMENT, MAGIC, VERSION};
use crate::model::EncodedModel;
use crate::spm::{to_spm, SpmVocab};

/// A metadata value to write.
enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(Vec<u8>),
    Strs(Vec<Vec<u8>>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

impl Meta {
    fn put(&self, out: &mut Vec<u8>) {
        let array = |out: &mut Vec<u8>, elem: u32, len: usize| {
            out.extend(vt::ARRAY.to_le_bytes());
            out.extend(elem.to_le_bytes());
            out.extend((len as u64).to_le_bytes());
        };
        match self {
            Meta::U32(v) => {
                out.extend(vt::U32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                out.extend(vt::F32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Bool(v) => {
                out.extend(vt::BOOL.to_le_bytes());
                out.push(*v as u8);
            }
            Meta::Str(s) => {
                out.extend(vt::STRING.to_le_bytes());
                put_string(out, s);
            }
            Meta::Strs(v) => {
                array(out, vt::STRING, v.len());
                v.iter().for_each(|s| put_string(out, s));
            }
            Meta::F32s(v) => {
                array(out, vt::F32, v.len());
                v.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
            Meta::I32s(v) => {
                array(out, vt::I32, v.len());
                v.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
        }
    }
}

/// llama.cpp's `llama_ftype` for a model whose matrices are mostly `dtype`.
fn file_type(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => 0,
        Dtype::F16 => 1,
        Dtype::Q4_0 => 2,
        Dtype::Q8_0 => 7,
        Dtype::BF16 => 32,
    }
}

/// The metadata of `model` with vocabulary `spm`, named `name`.
fn metadata(model: &EncodedModel, spm: &SpmVocab, name: &str) -> Vec<(String, Meta)> {
    let c = &model.config;
    let matrices = model
        .tensors
        .iter()
        .find(|t| t.name == "layers.0.wq")
        .map_or(Dtype::F32, |t| t.dtype);
    let mut kv: Vec<(&str, Meta)> = vec![
        (keys::ARCHITECTURE, Meta::Str(b"llama".to_vec())),
        (keys::NAME, Meta::Str(name.as_bytes().to_vec())),
        (keys::FILE_TYPE, Meta::U32(file_type(matrices))),
        (keys::QUANTIZATION_VERSION, Meta::U32(2)),
        (keys::CONTEXT_LENGTH, Meta::U32(c.max_seq_len)),
        (keys::EMBEDDING_LENGTH, Meta::U32(c.dim)),
        (keys::BLOCK_COUNT, Meta::U32(c.n_layers)),
        (keys::FEED_FORWARD_LENGTH, Meta::U32(c.hidden_dim)),
        (keys::ROPE_DIMENSION_COUNT, Meta::U32(c.head_dim() as u32)),
        (keys::HEAD_COUNT, Meta::U32(c.n_heads)),
        (keys::HEAD_COUNT_KV, Meta::U32(c.n_kv_heads)),
        (keys::ROPE_FREQ_BASE, Meta::F32(c.rope_theta)),
        (keys::RMS_EPS, Meta::F32(c.norm_eps)),
        (keys::VOCAB_SIZE, Meta::U32(spm.tokens.len() as u32)),
        (keys::TOKENIZER_MODEL, Meta::Str(b"llama".to_vec())),
        (keys::TOKENS, Meta::Strs(spm.tokens.clone())),
        (keys::SCORES, Meta::F32s(spm.scores.clone())),
        (keys::TOKEN_TYPE, Meta::I32s(spm.types.clone())),
    ];
    for (key, id) in [
        (keys::BOS_ID, spm.bos),
        (keys::EOS_ID, spm.eos),
        (keys::UNK_ID, spm.unk),
    ] {
        if let Some(id) = id {
            kv.push((key, Meta::U32(id)));
        }
    }
    kv.push((keys::ADD_BOS, Meta::Bool(spm.add_bos)));
    kv.push((keys::ADD_EOS, Meta::Bool(false)));
    kv.push((keys::ADD_SPACE_PREFIX, Meta::Bool(spm.add_space_prefix)));
    if let Some(n) = spm.char_vocab_size {
        kv.push((keys::KINGLET_TOKENIZER_KIND, Meta::Str(b"char".to_vec())));
        kv.push((keys::KINGLET_VOCAB_SIZE, Meta::U32(n)));
    }
    let mut kv: Vec<(String, Meta)> = kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for (k, v) in &model.metadata {
        kv.push((
            format!("{}{k}", keys::KINGLET_METADATA_PREFIX),
            Meta::Str(v.as_bytes().to_vec()),
        ));
    }
    kv
}

/// The token the model finds least likely after a newline (or after token
/// 0): the control tokens added to a character vocabulary copy its
/// embedding and classifier rows. Their logits then equal its logit, so
/// greedy decoding (ties go to the lower id) never picks them, and sampling
/// picks them about as rarely as that token.
fn least_likely_token(model: &EncodedModel) -> Result<usize> {
    let mut bytes = Vec::new();
    model.write_klt(&mut bytes)?;
    let file = ModelFile::new_checked(bytes.as_slice())?;
    let mut buffer = vec![0.0f32; session_floats(file.config(), 1)];
    let mut session = Session::new(&file, &mut buffer, 1)?;
    let start = model
        .vocab
        .pieces
        .iter()
        .position(|p| p == b"\n")
        .unwrap_or(0);
    let logits = session.forward(start as u32)?;
    Ok(logits
        .iter()
        .enumerate()
        .fold(
            (0, f32::INFINITY),
            |best, (i, &l)| if l < best.1 { (i, l) } else { best },
        )
        .0)
}

/// Writes `model` as a GGUF file named `name` (its `general.name`). Returns
/// the bytes written. Fails when the vocabulary cannot be a `llama` one
/// (see [`to_spm`]).
pub fn export(model: &EncodedModel, name: &str, out: &mut impl Write) -> Result<u64> {
    let spm = to_spm(&model.vocab).context("the vocabulary")?;
    let added_rows = spm.tokens.len() - model.vocab.pieces.len();
    let copied_row = if added_rows > 0 {
        least_likely_token(model)?
    } else {
        0
    };

    // Tensor infos, with the data of each (extra rows appended where needed).
    let mut header = Vec::new();
    header.extend(MAGIC);
    header.extend(VERSION.to_le_bytes());
    let roles: Vec<TensorRole> = kinglet::canonical_tensors(&model.config)
        .map(|t| t.role)
        .collect();
    header.extend((model.tensors.len() as u64).to_le_bytes());
    let kv = metadata(model, &spm, name);
    header.extend((kv.len() as u64).to_le_bytes());
    for (key, value) in &kv {
        put_string(&mut header, key.as_bytes());
        value.put(&mut header);
    }
    let mut datas: Vec<Vec<u8>> = Vec::with_capacity(model.tensors.len());
    let mut offset = 0u64;
    for (t, role) in model.tensors.iter().zip(&roles) {
        let mut data = t.data.clone();
        let (mut rows, cols) = t.rows_cols();
        if matches!(role, TensorRole::TokEmbedding | TensorRole::Classifier) {
            let row_bytes = t.row_bytes();
            let copy = t.data[copied_row * row_bytes..(copied_row + 1) * row_bytes].to_vec();
            for _ in 0..added_rows {
                data.extend_from_slice(&copy);
            }
            rows += added_rows;
        }
        put_string(&mut header, tensor_name(*role).as_bytes());
        let dims: Vec<u64> = if t.shape.len() == 1 {
            vec![cols as u64]
        } else {
            vec![cols as u64, rows as u64]
        };
        header.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| header.extend(d.to_le_bytes()));
        header.extend(GgmlType::of(t.dtype).code.to_le_bytes());
        header.extend(offset.to_le_bytes());
        offset = (offset + data.len() as u64).next_multiple_of(DEFAULT_ALIGNMENT);
        datas.push(data);
    }
    let pad = |n: usize| vec![0u8; (n as u64).next_multiple_of(DEFAULT_ALIGNMENT) as usize - n];
    header.extend(pad(header.len()));
    out.write_all(&header).context("write failed")?;
    let mut written = header.len() as u64;
    for data in &datas {
        out.write_all(data).context("write failed")?;
        let padding = pad(data.len());
        out.write_all(&padding).context("write failed")?;
        written += (data.len() + padding.len()) as u64;
    }
    Ok(written)
}
