//! Reading a GGUF file, every byte treated as untrusted: lengths and counts
//! are checked against the bytes left before anything is allocated, all
//! arithmetic is checked, and errors name the key or tensor at fault.
//! [`parse`] reads the container; [`import`] maps a `llama` model onto
//! kinglet's tensors, copying F32/F16/BF16/Q8_0/Q4_0 data as it is.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use kinglet::{canonical_tensors, Config, Dtype};

use super::{keys, tensor_name, value_type as vt, GgmlType, DEFAULT_ALIGNMENT, MAGIC};
use crate::model::{encode_values, EncodedModel, EncodedTensor};
use crate::spm::{from_spm, token_type, SpmVocab};

/// Deepest nesting of arrays accepted (llama models use none).
const MAX_ARRAY_DEPTH: u32 = 4;
/// Longest key accepted (the GGUF specification's limit).
const MAX_KEY_BYTES: u64 = 65535;
/// Most dimensions of a ggml tensor.
const MAX_DIMS: u32 = 4;

/// A metadata value, borrowing strings and array data from the file.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// `F32` or `F64`.
    Float(f64),
    Bool(bool),
    /// String bytes (GGUF strings are meant to be UTF-8; not checked here).
    Str(&'a [u8]),
    Array(Array<'a>),
}

/// An array value.
#[derive(Clone, Debug, PartialEq)]
pub enum Array<'a> {
    /// `len` values of the fixed-size type `elem`, as stored.
    Scalars {
        elem: u32,
        len: usize,
        bytes: &'a [u8],
    },
    /// Strings.
    Strings(Vec<&'a [u8]>),
    /// Arrays of arrays, checked but not kept.
    Nested { len: u64 },
}

impl Value<'_> {
    /// The GGUF type name, for errors.
    fn type_name(&self) -> &'static str {
        match self {
            Value::Uint(_) => "an unsigned integer",
            Value::Int(_) => "a signed integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
        }
    }
}

impl<'a> Array<'a> {
    /// The values as f32 when the elements are `F32`.
    fn f32s(&self) -> Option<Vec<f32>> {
        match self {
            Array::Scalars {
                elem: vt::F32,
                bytes,
                ..
            } => Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The values as i32 when the elements are `I32` (or `U32` below 2³¹).
    fn i32s(&self) -> Option<Vec<i32>> {
        match self {
            Array::Scalars {
                elem: vt::I32 | vt::U32,
                bytes,
                ..
            } => bytes
                .chunks_exact(4)
                .map(|c| i32::try_from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).ok())
                .collect(),
            _ => None,
        }
    }
}

/// One tensor's directory entry, with its data.
#[derive(Clone, Debug)]
pub struct TensorEntry<'a> {
    pub name: &'a str,
    /// `ne`: `ne[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// The tensor's bytes.
    pub data: &'a [u8],
}

/// A parsed GGUF file.
#[derive(Clone, Debug)]
pub struct GgufFile<'a> {
    pub version: u32,
    /// Key/value pairs in file order (keys are unique).
    pub metadata: Vec<(&'a str, Value<'a>)>,
    pub tensors: Vec<TensorEntry<'a>>,
}

/// A position in the file, reading forward with bounds checks.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.left());
        let Some(n) = n else {
            bail!("the file ends at byte {}", self.bytes.len());
        };
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<&'a [u8]> {
        let len = self.u64()?;
        self.take(len)
            .with_context(|| format!("a string of {len} bytes"))
    }

    /// A count of items of at least `min_bytes` each, refused when that
    /// many could not fit in the bytes left (so no count allocates blindly).
    fn count(&mut self, min_bytes: u64, what: &str) -> Result<usize> {
        let n = self.u64()?;
        match n.checked_mul(min_bytes) {
            Some(need) if need <= self.left() as u64 => Ok(n as usize),
            _ => bail!(
                "{n} {what} cannot fit in the {} bytes left after byte {}",
                self.left(),
                self.pos
            ),
        }
    }

    fn value(&mut self, kind: u32, depth: u32) -> Result<Value<'a>> {
        Ok(match kind {
            vt::U8 => Value::Uint(self.array::<1>()?[0] as u64),
            vt::I8 => Value::Int(self.array::<1>()?[0] as i8 as i64),
            vt::U16 => Value::Uint(u16::from_le_bytes(self.array()?) as u64),
            vt::I16 => Value::Int(i16::from_le_bytes(self.array()?) as i64),
            vt::U32 => Value::Uint(self.u32()? as u64),
            vt::I32 => Value::Int(i32::from_le_bytes(self.array()?) as i64),
            vt::F32 => Value::Float(f32::from_le_bytes(self.array()?) as f64),
            vt::BOOL => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("a bool is {b}, not 0 or 1"),
            },
            vt::STRING => Value::Str(self.string()?),
            vt::U64 => Value::Uint(self.u64()?),
            vt::I64 => Value::Int(i64::from_le_bytes(self.array()?)),
            vt::F64 => Value::Float(f64::from_le_bytes(self.array()?)),
            vt::ARRAY => Value::Array(self.array_value(depth + 1)?),
            t => bail!("unknown value type {t}"),
        })
    }

    fn array_value(&mut self, depth: u32) -> Result<Array<'a>> {
        if depth > MAX_ARRAY_DEPTH {
            bail!("arrays nested deeper than {MAX_ARRAY_DEPTH}");
        }
        let elem = self.u32()?;
        if let Some(size) = vt::scalar_bytes(elem) {
            let len = self.count(size as u64, "array elements")?;
            let bytes = self.take((len * size) as u64)?;
            if elem == vt::BOOL {
                if let Some(b) = bytes.iter().find(|&&b| b > 1) {
                    bail!("a bool array holds {b}, not 0 or 1");
                }
            }
            return Ok(Array::Scalars { elem, len, bytes });
        }
        match elem {
            vt::STRING => {
                let len = self.count(8, "strings")?;
                let mut strings = Vec::with_capacity(len);
                for i in 0..len {
                    strings.push(self.string().with_context(|| format!("string {i}"))?);
                }
                Ok(Array::Strings(strings))
            }
            vt::ARRAY => {
                let len = self.count(12, "arrays")?;
                for i in 0..len {
                    self.array_value(depth + 1)
                        .with_context(|| format!("array {i}"))?;
                }
                Ok(Array::Nested { len: len as u64 })
            }
            t => bail!("array of unknown value type {t}"),
        }
    }
}

/// Parses a GGUF container (versions 2 and 3, little-endian), checking the
/// layout: every key unique, every tensor's size from its type and shape,
/// every tensor inside the file at an aligned offset.
pub fn parse(bytes: &[u8]) -> Result<GgufFile<'_>> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(4).ok() != Some(&MAGIC[..]) {
        bail!("not a GGUF file (it does not start with \"GGUF\")");
    }
    let version = c.u32().context("the file ends inside the GGUF header")?;
    match version {
        2 | 3 => {}
        1 => bail!(
            "GGUF version 1 (32-bit counts) is not supported: re-save it with a newer llama.cpp"
        ),
        v if v.swap_bytes() <= 3 => {
            bail!("a big-endian GGUF file: kinglet reads little-endian GGUF only")
        }
        v => bail!("unknown GGUF version {v} (supported: 2 and 3)"),
    }
    // The smallest tensor info: an empty name, one dimension, type, offset.
    let n_tensors = c.count(8 + 4 + 8 + 4 + 8, "tensors")?;
    // The smallest key/value: a one-byte key, its type, a one-byte value.
    let n_kv = c.count(8 + 1 + 4 + 1, "metadata entries")?;

    let mut metadata: Vec<(&str, Value<'_>)> = Vec::with_capacity(n_kv);
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let at = c.pos;
        let key = c
            .string()
            .with_context(|| format!("metadata entry {i} at byte {at}: key"))?;
        let key = std::str::from_utf8(key)
            .ok()
            .filter(|k| !k.is_empty() && k.len() as u64 <= MAX_KEY_BYTES)
            .ok_or_else(|| {
                anyhow!("metadata entry {i} at byte {at}: the key is not 1 to 65535 bytes of UTF-8")
            })?;
        if seen.insert(key, i).is_some() {
            bail!("metadata key {key} appears twice");
        }
        let kind = c.u32().with_context(|| format!("metadata {key}"))?;
        let value = c
            .value(kind, 0)
            .with_context(|| format!("metadata {key}"))?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| *k == keys::ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::Uint(a))) if a.is_power_of_two() && *a <= 1 << 20 => *a,
        Some((_, v)) => bail!(
            "{}: {v:?} is not a power of two up to 2^20",
            keys::ALIGNMENT
        ),
    };

    struct Info<'a> {
        name: &'a str,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        offset: u64,
        bytes: u64,
    }
    let mut infos: Vec<Info<'_>> = Vec::with_capacity(n_tensors);
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let at = c.pos;
        let name = c
            .string()
            .with_context(|| format!("tensor {i} at byte {at}: name"))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| anyhow!("tensor {i} at byte {at}: the name is not UTF-8"))?;
        let what = || format!("tensor {name}");
        if names.insert(name, i).is_some() {
            bail!("tensor {name} appears twice");
        }
        let n_dims = c.u32().with_context(what)?;
        if !(1..=MAX_DIMS).contains(&n_dims) {
            bail!("tensor {name}: {n_dims} dimensions (1 to {MAX_DIMS} allowed)");
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64().with_context(what)?);
        }
        let code = c.u32().with_context(what)?;
        let ggml_type = GgmlType::from_code(code)
            .ok_or_else(|| anyhow!("tensor {name}: unknown ggml type {code}"))?;
        let offset = c.u64().with_context(what)?;
        let elements = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| anyhow!("tensor {name}: the shape {dims:?} overflows"))?;
        if dims[0] % ggml_type.block_len != 0 {
            bail!(
                "tensor {name}: rows of {} are not whole {} blocks of {}",
                dims[0],
                ggml_type.name,
                ggml_type.block_len
            );
        }
        let bytes = (elements / ggml_type.block_len)
            .checked_mul(ggml_type.block_bytes)
            .ok_or_else(|| anyhow!("tensor {name}: the size overflows"))?;
        if offset % alignment != 0 {
            bail!("tensor {name}: offset {offset} is not a multiple of the alignment {alignment}");
        }
        infos.push(Info {
            name,
            dims,
            ggml_type,
            offset,
            bytes,
        });
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(infos.len());
    for t in infos {
        let range = data_start
            .checked_add(t.offset)
            .and_then(|start| Some(start..start.checked_add(t.bytes)?))
            .filter(|r| r.end <= bytes.len() as u64);
        let Some(range) = range else {
            bail!(
                "tensor {}: {} bytes at offset {} run past the end of the file ({} bytes)",
                t.name,
                t.bytes,
                t.offset,
                bytes.len()
            );
        };
        tensors.push(TensorEntry {
            name: t.name,
            dims: t.dims,
            ggml_type: t.ggml_type,
            data: &bytes[range.start as usize..range.end as usize],
        });
    }
    Ok(GgufFile {
        version,
        metadata,
        tensors,
    })
}

impl<'a> GgufFile<'a> {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.metadata
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// An integer value as u32.
    fn u32(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(&Value::Uint(v)) if v <= u32::MAX as u64 => Ok(Some(v as u32)),
            Some(&Value::Int(v)) if (0..=u32::MAX as i64).contains(&v) => Ok(Some(v as u32)),
            Some(v) => bail!("{key} is {} out of range ({v:?})", v.type_name()),
        }
    }

    fn required_u32(&self, key: &str) -> Result<u32> {
        self.u32(key)?
            .ok_or_else(|| anyhow!("the model has no {key}"))
    }

    /// A float value as f32.
    fn f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(&Value::Float(v)) => Ok(Some(v as f32)),
            Some(v) => bail!("{key} is {}, not a float", v.type_name()),
        }
    }

    /// A string value (UTF-8).
    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => std::str::from_utf8(s)
                .map(Some)
                .map_err(|_| anyhow!("{key} is not UTF-8")),
            Some(v) => bail!("{key} is {}, not a string", v.type_name()),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(&Value::Bool(b)) => Ok(Some(b)),
            Some(v) => bail!("{key} is {}, not a bool", v.type_name()),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&Array<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => bail!("{key} is {}, not an array", v.type_name()),
        }
    }

    /// The model's hyperparameters (the vocabulary size is the tokenizer's).
    fn config(&self, vocab_size: u32, tied: bool) -> Result<Config> {
        let dim = self.required_u32(keys::EMBEDDING_LENGTH)?;
        let n_heads = self.required_u32(keys::HEAD_COUNT)?;
        let config = Config {
            dim,
            hidden_dim: self.required_u32(keys::FEED_FORWARD_LENGTH)?,
            n_layers: self.required_u32(keys::BLOCK_COUNT)?,
            n_heads,
            n_kv_heads: self.u32(keys::HEAD_COUNT_KV)?.unwrap_or(n_heads),
            vocab_size,
            max_seq_len: self.required_u32(keys::CONTEXT_LENGTH)?,
            rope_theta: self.f32(keys::ROPE_FREQ_BASE)?.unwrap_or(10000.0),
            norm_eps: self
                .f32(keys::RMS_EPS)?
                .ok_or_else(|| anyhow!("the model has no {}", keys::RMS_EPS))?,
            tied_classifier: tied,
        };
        config
            .validate()
            .with_context(|| format!("the model's hyperparameters ({config:?})"))?;
        if let Some(rope_dims) = self.u32(keys::ROPE_DIMENSION_COUNT)? {
            if rope_dims as usize != config.head_dim() {
                bail!(
                    "{} is {rope_dims} but heads are {} wide: kinglet rotates whole heads",
                    keys::ROPE_DIMENSION_COUNT,
                    config.head_dim()
                );
            }
        }
        match self.str(keys::ROPE_SCALING_TYPE)? {
            None | Some("none") => {}
            Some(s) => bail!(
                "{} is {s:?}: kinglet has no RoPE scaling",
                keys::ROPE_SCALING_TYPE
            ),
        }
        if self.u32(keys::EXPERT_COUNT)?.unwrap_or(0) > 0 {
            bail!(
                "a mixture-of-experts model ({} > 0) is not supported",
                keys::EXPERT_COUNT
            );
        }
        Ok(config)
    }

    /// The `llama` vocabulary from `tokenizer.ggml.*`.
    fn vocab(&self) -> Result<SpmVocab> {
        match self.str(keys::TOKENIZER_MODEL)? {
            Some("llama") => {}
            Some(m) => bail!(
                "{} is {m:?}: kinglet reads SentencePiece (\"llama\") vocabularies only",
                keys::TOKENIZER_MODEL
            ),
            None => bail!(
                "the file has no vocabulary ({} is missing)",
                keys::TOKENIZER_MODEL
            ),
        }
        let tokens = match self.array(keys::TOKENS)? {
            Some(Array::Strings(s)) => s,
            Some(_) => bail!("{} is not an array of strings", keys::TOKENS),
            None => bail!("the file has no {}", keys::TOKENS),
        };
        let n = tokens.len();
        let scores = match self.array(keys::SCORES)? {
            None => vec![0.0; n],
            Some(a) => a
                .f32s()
                .ok_or_else(|| anyhow!("{} is not an array of f32", keys::SCORES))?,
        };
        let types = match self.array(keys::TOKEN_TYPE)? {
            None => vec![token_type::NORMAL; n],
            Some(a) => a
                .i32s()
                .ok_or_else(|| anyhow!("{} is not an array of i32", keys::TOKEN_TYPE))?,
        };
        if scores.len() != n || types.len() != n {
            bail!(
                "{n} tokens but {} scores and {} token types",
                scores.len(),
                types.len()
            );
        }
        let kinglet_char = match self.str(keys::KINGLET_TOKENIZER_KIND)? {
            None | Some("bpe") => None,
            Some("char") => Some(self.required_u32(keys::KINGLET_VOCAB_SIZE)?),
            Some(k) => bail!(
                "{} is {k:?} (expected char or bpe)",
                keys::KINGLET_TOKENIZER_KIND
            ),
        };
        // llama.cpp's defaults for a llama vocabulary: unknown 0, BOS 1, EOS 2.
        let special = |key, default: u32| -> Result<Option<u32>> {
            let id = self.u32(key)?.unwrap_or(default);
            Ok(((id as usize) < n).then_some(id))
        };
        Ok(SpmVocab {
            tokens: tokens.iter().map(|t| t.to_vec()).collect(),
            scores,
            types,
            bos: special(keys::BOS_ID, 1)?,
            eos: special(keys::EOS_ID, 2)?,
            unk: special(keys::UNK_ID, 0)?,
            add_bos: self.bool(keys::ADD_BOS)?.unwrap_or(true),
            add_space_prefix: self.bool(keys::ADD_SPACE_PREFIX)?.unwrap_or(true),
            char_vocab_size: kinglet_char,
        })
    }
}

/// Imports a GGUF `llama` model. F32, F16, BF16, Q8_0 and Q4_0 tensors are
/// copied as they are (norm gains become F32, exactly); a tensor of any other
/// type is refused with an error naming the tensor and its type. A
/// vocabulary exported from a character-level model loses the control
/// tokens the export added, and their embedding and classifier rows.
pub fn import(bytes: &[u8]) -> Result<EncodedModel> {
    let file = parse(bytes)?;
    match file.str(keys::ARCHITECTURE)? {
        Some("llama") => {}
        Some(a) => bail!("architecture {a:?} is not supported (kinglet runs \"llama\" models)"),
        None => bail!(
            "the file names no architecture ({} is missing)",
            keys::ARCHITECTURE
        ),
    }
    let spm = file.vocab().context("tokenizer")?;
    let vocab = from_spm(&spm).context("tokenizer")?;
    let stored_vocab = spm.tokens.len() as u64;
    if let Some(v) = file.u32(keys::VOCAB_SIZE)? {
        if v as u64 != stored_vocab {
            bail!(
                "{} is {v} but the vocabulary has {stored_vocab} tokens",
                keys::VOCAB_SIZE
            );
        }
    }

    let by_name: HashMap<&str, &TensorEntry<'_>> =
        file.tensors.iter().map(|t| (t.name, t)).collect();
    let tied = !by_name.contains_key("output.weight");
    let config = file.config(vocab.pieces.len() as u32, tied)?;
    let canonical: Vec<_> = canonical_tensors(&config).collect();
    let wanted: Vec<String> = canonical.iter().map(|t| tensor_name(t.role)).collect();
    if let Some(extra) = file
        .tensors
        .iter()
        .find(|t| !wanted.iter().any(|w| w == t.name))
    {
        bail!(
            "tensor {} is not part of a llama model with {} layers",
            extra.name,
            config.n_layers
        );
    }

    let mut tensors = Vec::with_capacity(canonical.len());
    for (t, gguf_name) in canonical.iter().zip(&wanted) {
        let entry = by_name
            .get(gguf_name.as_str())
            .ok_or_else(|| anyhow!("tensor {gguf_name} is missing"))?;
        // Rows stored for the embedding and classifier: the vocabulary as stored.
        let rows = match t.role {
            kinglet::TensorRole::TokEmbedding | kinglet::TensorRole::Classifier => stored_vocab,
            _ => t.shape[0] as u64,
        };
        let expected: Vec<u64> = if t.role.is_norm() {
            vec![t.shape[1] as u64]
        } else {
            vec![t.shape[1] as u64, rows]
        };
        if entry.dims != expected {
            bail!(
                "tensor {gguf_name} has the shape {:?}, expected {expected:?} (ggml order: row length first)",
                entry.dims
            );
        }
        let Some(dtype) = entry.ggml_type.dtype() else {
            bail!(
                "tensor {gguf_name} is {}: kinglet copies F32, F16, BF16, Q8_0 and Q4_0 tensors \
                 (re-quantize the model with llama.cpp's llama-quantize, e.g. to Q8_0)",
                entry.ggml_type.name
            );
        };
        // Drop the rows of tokens the export added to a character vocabulary.
        let row_bytes = dtype.row_bytes(t.shape[1] as usize).unwrap_or(0);
        let data = &entry.data[..t.shape[0] as usize * row_bytes];
        let mut tensor = EncodedTensor {
            name: t.role.to_string(),
            shape: t.dims().to_vec(),
            dtype,
            data: data.to_vec(),
        };
        if t.role.is_norm() && dtype != Dtype::F32 {
            let values = tensor.values()?;
            tensor.data = encode_values(&tensor.name, &values, Dtype::F32)?;
            tensor.dtype = Dtype::F32;
        }
        tensors.push(tensor);
    }

    let mut metadata = Vec::new();
    for (key, value) in &file.metadata {
        if let (Some(k), Value::Str(v)) = (key.strip_prefix(keys::KINGLET_METADATA_PREFIX), value) {
            let v = std::str::from_utf8(v).map_err(|_| anyhow!("metadata {key} is not UTF-8"))?;
            metadata.push((k.to_string(), v.to_string()));
        }
    }
    Ok(EncodedModel {
        config,
        vocab,
        tensors,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::write::export;

    /// A GGUF header with `n_tensors` and the raw key/value bytes `kv`
    /// (holding `n_kv` entries).
    fn header(version: u32, n_tensors: u64, n_kv: u64, kv: &[u8]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(version.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend_from_slice(kv);
        b
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut b = (s.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(s);
        b
    }

    fn kv_u32(key: &str, v: u32) -> Vec<u8> {
        let mut b = string(key.as_bytes());
        b.extend(vt::U32.to_le_bytes());
        b.extend(v.to_le_bytes());
        b
    }

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", parse(bytes).unwrap_err())
    }

    #[test]
    fn refuses_other_files_and_versions() {
        assert!(err(b"GGU").contains("not a GGUF file"));
        assert!(err(b"KINGLET\0").contains("not a GGUF file"));
        assert!(err(b"GGUF\x01").contains("ends inside the GGUF header"));
        assert!(err(&header(1, 0, 0, &[])).contains("version 1"));
        assert!(err(&header(3u32.swap_bytes(), 0, 0, &[])).contains("big-endian"));
        assert!(err(&header(9, 0, 0, &[])).contains("unknown GGUF version 9"));
        let bytes = header(3, 0, 0, &[]);
        let empty = parse(&bytes).unwrap();
        assert!(empty.tensors.is_empty() && empty.metadata.is_empty());
    }

    #[test]
    fn hostile_counts_and_lengths_allocate_nothing() {
        // Counts far beyond what the bytes left could hold.
        let e = err(&header(3, u64::MAX, 0, &[]));
        assert!(e.contains("tensors cannot fit"), "{e}");
        let e = err(&header(3, 0, 1 << 40, &[0; 64]));
        assert!(e.contains("metadata entries cannot fit"), "{e}");
        // A key whose length runs past the end.
        let mut kv = u64::MAX.to_le_bytes().to_vec();
        kv.extend([0u8; 32]);
        let e = err(&header(3, 0, 1, &kv));
        assert!(
            e.contains("metadata entry 0") && e.contains("file ends"),
            "{e}"
        );
        // An array of 2^61 strings, and one of 2^62 u32.
        for (elem, what) in [(vt::STRING, "strings"), (vt::U32, "array elements")] {
            let mut kv = string(b"tokenizer.ggml.tokens");
            kv.extend(vt::ARRAY.to_le_bytes());
            kv.extend(elem.to_le_bytes());
            kv.extend((1u64 << 61).to_le_bytes());
            kv.extend([0u8; 16]);
            let e = err(&header(3, 0, 1, &kv));
            assert!(
                e.contains("tokenizer.ggml.tokens") && e.contains(what),
                "{e}"
            );
        }
        // Arrays nested without end.
        let mut kv = string(b"deep");
        kv.extend(vt::ARRAY.to_le_bytes());
        for _ in 0..64 {
            kv.extend(vt::ARRAY.to_le_bytes());
            kv.extend(1u64.to_le_bytes());
        }
        let e = err(&header(3, 0, 1, &kv));
        assert!(e.contains("deep") && e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn bad_metadata_is_named() {
        let mut kv = kv_u32("a", 1);
        kv.extend(kv_u32("a", 2));
        assert!(err(&header(3, 0, 2, &kv)).contains("metadata key a appears twice"));
        let mut kv = string(b"flag");
        kv.extend(vt::BOOL.to_le_bytes());
        kv.push(7);
        assert!(err(&header(3, 0, 1, &kv)).contains("a bool is 7"));
        let mut kv = string(b"odd");
        kv.extend(99u32.to_le_bytes());
        kv.extend([0u8; 8]);
        assert!(err(&header(3, 0, 1, &kv)).contains("unknown value type 99"));
        let kv = kv_u32(keys::ALIGNMENT, 48);
        assert!(err(&header(3, 0, 1, &kv)).contains("power of two"));
    }

    /// One tensor info: name, dims, ggml type code, offset.
    fn tensor(name: &str, dims: &[u64], code: u32, offset: u64) -> Vec<u8> {
        let mut b = string(name.as_bytes());
        b.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(code.to_le_bytes());
        b.extend(offset.to_le_bytes());
        b
    }

    #[test]
    fn bad_tensor_infos_are_named() {
        let file = |info: Vec<u8>, data: usize| {
            let mut b = header(3, 1, 0, &info);
            b.resize(b.len().next_multiple_of(32) + data, 0);
            b
        };
        assert!(parse(&file(tensor("w", &[32, 2], 8, 0), 68)).is_ok());
        let e = err(&file(tensor("w", &[32, 2], 8, 0), 67));
        assert!(
            e.contains("tensor w: 68 bytes at offset 0 run past the end"),
            "{e}"
        );
        let e = err(&file(tensor("w", &[32, 2], 8, 16), 200));
        assert!(e.contains("not a multiple of the alignment"), "{e}");
        let e = err(&file(tensor("w", &[32, 2], 77, 0), 68));
        assert!(e.contains("tensor w: unknown ggml type 77"), "{e}");
        let e = err(&file(tensor("w", &[1; 5], 0, 0), 68));
        assert!(e.contains("5 dimensions"), "{e}");
        let e = err(&file(tensor("w", &[u64::MAX, 4], 0, 0), 68));
        assert!(e.contains("overflows"), "{e}");
        let e = err(&file(tensor("w", &[33], 8, 0), 68));
        assert!(e.contains("not whole Q8_0 blocks"), "{e}");
        let e = err(&file(tensor("w", &[4], 0, u64::MAX - 31), 68));
        assert!(e.contains("run past the end"), "{e}");
    }

    fn tiny_export() -> Vec<u8> {
        let config = crate::synth::tiny_config(true);
        let model = crate::synth::synth_model(&config, 3)
            .unwrap()
            .encode(Dtype::Q8_0)
            .unwrap();
        let mut out = Vec::new();
        export(&model, "tiny", &mut out).unwrap();
        out
    }

    /// `bytes` with the first occurrence of `from` replaced by `to` (same length).
    fn patched(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
        let mut b = bytes.to_vec();
        b[at..at + to.len()].copy_from_slice(to);
        b
    }

    #[test]
    fn refuses_what_is_not_a_llama_model_kinglet_runs() {
        let good = tiny_export();
        let model = import(&good).unwrap();
        assert_eq!(model.config.dim, 32);
        let e = |b: Vec<u8>| format!("{:#}", import(&b).unwrap_err());
        let arch = |name: &[u8]| [&vt::STRING.to_le_bytes()[..], &string(name)].concat();
        let msg = e(patched(&good, &arch(b"llama"), &arch(b"gemma")));
        assert!(msg.contains("architecture \"gemma\""), "{msg}");
        let tok_model = [
            &string(keys::TOKENIZER_MODEL.as_bytes())[..],
            &vt::STRING.to_le_bytes(),
            &string(b"llama"),
        ]
        .concat();
        let gpt2 = [
            &string(keys::TOKENIZER_MODEL.as_bytes())[..],
            &vt::STRING.to_le_bytes(),
            &string(b"gpt_2"),
        ]
        .concat();
        let msg = e(patched(&good, &tok_model, &gpt2));
        assert!(
            msg.contains("\"gpt_2\"") && msg.contains("SentencePiece"),
            "{msg}"
        );
        let msg = e(patched(
            &good,
            b"blk.0.ffn_up.weight",
            b"blk.0.ffn_UP.weight",
        ));
        assert!(
            msg.contains("tensor blk.0.ffn_UP.weight is not part of a llama model"),
            "{msg}"
        );
        let msg = e(patched(
            &good,
            b"llama.rope.dimension_count\x04\x00\x00\x00\x10",
            b"llama.rope.dimension_count\x04\x00\x00\x00\x08",
        ));
        assert!(msg.contains("kinglet rotates whole heads"), "{msg}");
        let msg = e(patched(
            &good,
            b"llama.embedding_length",
            b"llama.embedding_lengtX",
        ));
        assert!(msg.contains("no llama.embedding_length"), "{msg}");
        // The Q8_0 wq's shape [32, 32] written as [32, 64].
        let wq = [
            &string(b"blk.0.attn_q.weight")[..],
            &2u32.to_le_bytes(),
            &32u64.to_le_bytes(),
            &32u64.to_le_bytes(),
        ]
        .concat();
        let wq64 = [
            &string(b"blk.0.attn_q.weight")[..],
            &2u32.to_le_bytes(),
            &32u64.to_le_bytes(),
            &64u64.to_le_bytes(),
        ]
        .concat();
        let msg = e(patched(&good, &wq, &wq64));
        assert!(msg.contains("blk.0.attn_q.weight"), "{msg}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let good = tiny_export();
        for len in (0..good.len()).step_by(7) {
            assert!(import(&good[..len]).is_err(), "{len}");
        }
    }
}
