//! Importer for llama2.c checkpoints (`run.c`'s legacy version 0 and
//! `export.py`'s version 1, both f32) and llama2.c `tokenizer.bin` files.
//!
//! Version 0: a 28-byte header of 7 little-endian i32 (dim, hidden_dim,
//! n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
//! means an unshared classifier), then f32 weights: token_embedding
//! [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
//! wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim],
//! w2 `[L, dim, hidden]`, w3 `[L, hidden, dim]`, rms_final `[dim]`,
//! freq_cis_real [seq, head_dim/2], freq_cis_imag [seq, head_dim/2] (unused:
//! RoPE is recomputed), then wcls [vocab, dim] when unshared.
//!
//! Version 1: a 256-byte header: u32 magic "ak42", i32 version 1, the 7 i32
//! params (vocab positive), u8 shared_classifier, zero padding. Then f32: the
//! attention norms of all layers, the ffn norms of all layers, the final norm,
//! tok_embeddings, then wq, wk, wv, wo, w1, w2, w3 each for all layers, then
//! the classifier unless shared.
//!
//! Version 2 (`export.py`'s int8 "Q8_0"): the version 1 header with an i32
//! group size after shared_classifier. Then f32: the attention norms, the ffn
//! norms, the final norm; then each matrix in the version 1 order (every
//! layer's wq, then every wk, …, the classifier unless shared), each as its
//! int8 values followed by one f32 scale per group of `group_size` values of
//! the flattened matrix: value = q · scale. Imported values are dequantized;
//! `convert --dtype` requantizes them with kinglet's own quantizer.

use anyhow::{bail, Context, Result};
use kinglet::canonical::{canonical_index, canonical_tensor};
use kinglet::format::TokenizerKind;
use kinglet::{canonical_tensors, CanonicalTensor, Config, LayerPart, TensorRole};

use crate::model::{f32s_from_le, OwnedModel, OwnedTensor, OwnedVocab};

/// `"ak42"` read as a little-endian u32: the first field of versions ≥ 1.
pub const MAGIC: u32 = 0x616b_3432;
/// Bytes of the version 0 header.
pub const V0_HEADER_BYTES: usize = 28;
/// Bytes of the version 1 (and 2) header.
pub const V1_HEADER_BYTES: usize = 256;
/// llama2.c's RoPE base frequency (hard-coded in run.c).
pub const ROPE_THETA: f32 = 10000.0;
/// llama2.c's RMSNorm epsilon (hard-coded in run.c).
pub const NORM_EPS: f32 = 1e-5;
/// llama2.c's beginning-of-sequence id.
pub const BOS: u32 = 1;
/// llama2.c's end-of-sequence id.
pub const EOS: u32 = 2;

/// The weights of a llama2.c checkpoint, in the canonical .klt order.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The llama2.c format version (0 or 1).
    pub version: u32,
    /// Hyperparameters (rope_theta and norm_eps are llama2.c's constants).
    pub config: Config,
    /// Tensors with canonical .klt names, in canonical order.
    pub tensors: Vec<OwnedTensor>,
}

/// Whether `bytes` start with the version ≥ 1 magic (a version 0 file starts
/// with `dim`, which is never this large).
pub fn has_magic(bytes: &[u8]) -> bool {
    le_u32(bytes, 0) == Some(MAGIC)
}

/// Parses a llama2.c checkpoint of version 0 or 1, checking the header
/// against the file size.
pub fn parse_checkpoint(bytes: &[u8]) -> Result<Checkpoint> {
    if has_magic(bytes) {
        parse_v1(bytes)
    } else {
        parse_v0(bytes)
    }
}

/// Imports a checkpoint and its `tokenizer.bin` as one model.
pub fn import(checkpoint: &[u8], tokenizer: &[u8]) -> Result<OwnedModel> {
    let ckpt = parse_checkpoint(checkpoint)?;
    let vocab = parse_tokenizer(tokenizer, ckpt.config.vocab_size).context("tokenizer")?;
    Ok(OwnedModel {
        config: ckpt.config,
        vocab,
        tensors: ckpt.tensors,
        metadata: vec![(
            "source".to_string(),
            format!("llama2.c checkpoint version {}", ckpt.version),
        )],
    })
}

/// Parses a llama2.c `tokenizer.bin` holding `vocab_size` tokens: i32
/// max_token_length, then per token an f32 score, an i32 length and the
/// bytes. BOS is id 1 and EOS id 2, as in llama2.c.
pub fn parse_tokenizer(bytes: &[u8], vocab_size: u32) -> Result<OwnedVocab> {
    let max_len = le_i32(bytes, 0).with_context(|| {
        format!(
            "file is {} bytes, too short for the 4-byte max_token_length",
            bytes.len()
        )
    })?;
    if max_len <= 0 {
        bail!("max_token_length is {max_len}, must be positive");
    }
    if vocab_size <= EOS {
        bail!("vocab_size {vocab_size} leaves no room for BOS (1) and EOS (2)");
    }
    let mut pieces = Vec::with_capacity(vocab_size as usize);
    let mut scores = Vec::with_capacity(vocab_size as usize);
    let mut pos = 4usize;
    let truncated = |id: u32, needed: usize| {
        anyhow::anyhow!(
            "truncated at token {id} of {vocab_size}: needs at least {needed} bytes, the file has {}",
            bytes.len()
        )
    };
    for id in 0..vocab_size {
        let (Some(score), Some(len)) = (le_f32(bytes, pos), le_i32(bytes, pos + 4)) else {
            return Err(truncated(id, pos + 8));
        };
        if !score.is_finite() {
            bail!("token {id} has a non-finite score {score}");
        }
        if len < 0 || len > max_len {
            bail!("token {id} has length {len}, outside 0..={max_len} (max_token_length)");
        }
        let start = pos + 8;
        let end = start + len as usize;
        let piece = bytes.get(start..end).ok_or_else(|| truncated(id, end))?;
        pieces.push(piece.to_vec());
        scores.push(score);
        pos = end;
    }
    if pos != bytes.len() {
        bail!(
            "{} trailing bytes after {vocab_size} tokens (the checkpoint's vocab_size): \
             {pos} bytes expected, the file has {}; is it the tokenizer of this model?",
            bytes.len() - pos,
            bytes.len()
        );
    }
    Ok(OwnedVocab {
        kind: TokenizerKind::Bpe,
        bos: Some(BOS),
        eos: Some(EOS),
        pieces,
        scores,
    })
}

fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_i32(b: &[u8], off: usize) -> Option<i32> {
    le_u32(b, off).map(|v| v as i32)
}

fn le_f32(b: &[u8], off: usize) -> Option<f32> {
    le_u32(b, off).map(f32::from_bits)
}

/// The seven header parameters, in file order.
const PARAM_NAMES: [&str; 7] = [
    "dim",
    "hidden_dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "seq_len",
];

/// Builds a validated config from the seven header i32s.
fn config_from_params(params: [i32; 7], tied: bool) -> Result<Config> {
    let mut p = [0u32; 7];
    for (i, (&v, name)) in params.iter().zip(PARAM_NAMES).enumerate() {
        p[i] = u32::try_from(v).map_err(|_| anyhow::anyhow!("header {name} = {v} is negative"))?;
    }
    let config = Config {
        dim: p[0],
        hidden_dim: p[1],
        n_layers: p[2],
        n_heads: p[3],
        n_kv_heads: p[4],
        vocab_size: p[5],
        max_seq_len: p[6],
        rope_theta: ROPE_THETA,
        norm_eps: NORM_EPS,
        tied_classifier: tied,
    };
    config.validate().context("llama2.c header")?;
    Ok(config)
}

fn read_params(bytes: &[u8], start: usize) -> Option<[i32; 7]> {
    let mut p = [0i32; 7];
    for (i, v) in p.iter_mut().enumerate() {
        *v = le_i32(bytes, start + 4 * i)?;
    }
    Some(p)
}

fn describe(config: &Config) -> String {
    format!(
        "dim {}, hidden_dim {}, {} layers, {} heads, {} kv heads, vocab {} ({}), seq_len {}",
        config.dim,
        config.hidden_dim,
        config.n_layers,
        config.n_heads,
        config.n_kv_heads,
        config.vocab_size,
        if config.tied_classifier {
            "shared classifier"
        } else {
            "separate classifier"
        },
        config.max_seq_len
    )
}

/// Errors unless the file is exactly `header + 4 * floats` bytes.
fn check_size(bytes: &[u8], version: u32, header: usize, floats: u64, c: &Config) -> Result<()> {
    let expected = header as u64 + 4 * floats;
    let found = bytes.len() as u64;
    if expected != found {
        let how = if found < expected {
            format!("{} bytes missing", expected - found)
        } else {
            format!("{} trailing bytes", found - expected)
        };
        bail!(
            "llama2.c version {version} header ({}) implies a file of {expected} bytes, \
             but the file has {found} bytes ({how})",
            describe(c)
        );
    }
    Ok(())
}

/// One array of a llama2.c file, or the run of one array per layer.
#[derive(Clone, Copy, Debug)]
enum Array {
    Embedding,
    EveryLayer(LayerPart),
    FinalNorm,
    Classifier,
}

use Array::{Classifier, Embedding, EveryLayer, FinalNorm};
use LayerPart::{AttnNorm, FfnNorm, Wk, Wo, Wq, Wv, W1, W2, W3};

/// Version 0's arrays before the RoPE tables (the classifier follows them).
const V0_ORDER: [Array; 11] = [
    Embedding,
    EveryLayer(AttnNorm),
    EveryLayer(Wq),
    EveryLayer(Wk),
    EveryLayer(Wv),
    EveryLayer(Wo),
    EveryLayer(FfnNorm),
    EveryLayer(W1),
    EveryLayer(W2),
    EveryLayer(W3),
    FinalNorm,
];
/// Versions 1 and 2 put the norms first, always f32...
const V1_NORMS: [Array; 3] = [EveryLayer(AttnNorm), EveryLayer(FfnNorm), FinalNorm];
/// ...then the matrices (f32 in version 1, int8 groups in version 2).
const V1_MATRICES: [Array; 9] = [
    Embedding,
    EveryLayer(Wq),
    EveryLayer(Wk),
    EveryLayer(Wv),
    EveryLayer(Wo),
    EveryLayer(W1),
    EveryLayer(W2),
    EveryLayer(W3),
    Classifier,
];

/// The values read so far, one slot per tensor of the canonical table.
struct Slots {
    config: Config,
    values: Vec<Option<Vec<f32>>>,
}

impl Slots {
    fn new(config: &Config) -> Slots {
        Slots {
            config: *config,
            values: vec![None; config.tensor_count() as usize],
        }
    }

    /// The canonical tensors `array` stands for (none for a tied classifier).
    fn tensors(&self, array: Array) -> Vec<CanonicalTensor> {
        let roles: Vec<TensorRole> = match array {
            Embedding => vec![TensorRole::TokEmbedding],
            EveryLayer(part) => (0..self.config.n_layers)
                .map(|layer| TensorRole::Layer { layer, part })
                .collect(),
            FinalNorm => vec![TensorRole::Norm],
            Classifier => vec![TensorRole::Classifier],
        };
        roles
            .into_iter()
            .filter_map(|role| canonical_index(&self.config, role))
            .filter_map(|index| canonical_tensor(&self.config, index))
            .collect()
    }

    /// Reads the arrays of `order`, in order, `take(n)` giving the next `n` values.
    fn read(
        &mut self,
        order: &[Array],
        mut take: impl FnMut(usize) -> Result<Vec<f32>>,
    ) -> Result<()> {
        for &array in order {
            for t in self.tensors(array) {
                self.values[t.index as usize] = Some(take(t.elements() as usize)?);
            }
        }
        Ok(())
    }

    /// Element counts of every tensor `order` stands for.
    fn sizes(&self, order: &[Array]) -> Vec<u64> {
        order
            .iter()
            .flat_map(|&a| self.tensors(a))
            .map(|t| t.elements())
            .collect()
    }

    /// The tensors in canonical order, with canonical names and shapes.
    fn into_tensors(self) -> Result<Vec<OwnedTensor>> {
        canonical_tensors(&self.config)
            .zip(self.values)
            .map(|(t, values)| {
                Ok(OwnedTensor {
                    name: t.role.to_string(),
                    shape: t.dims().to_vec(),
                    values: values.with_context(|| format!("{} is not in the file", t.role))?,
                })
            })
            .collect()
    }
}

/// Takes consecutive f32 arrays from the weight bytes.
struct Floats<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Floats<'_> {
    fn take(&mut self, n: usize) -> Result<Vec<f32>> {
        let end = self.pos + 4 * n;
        let s = self.bytes.get(self.pos..end).context("weights end early")?;
        self.pos = end;
        Ok(f32s_from_le(s))
    }

    fn skip(&mut self, n: usize) {
        self.pos += 4 * n;
    }
}

/// Takes consecutive int8 matrices with per-group f32 scales (version 2).
struct Int8Groups<'a> {
    bytes: &'a [u8],
    pos: usize,
    group: usize,
}

impl Int8Groups<'_> {
    /// Bytes one matrix of `n` values takes: the values and their scales.
    fn bytes_for(n: u64, group: u64) -> u64 {
        n + 4 * (n / group)
    }

    /// The dequantized values of the next matrix of `n` values.
    fn take(&mut self, n: usize) -> Result<Vec<f32>> {
        let q = self
            .bytes
            .get(self.pos..self.pos + n)
            .context("weights end early")?;
        let scales_at = self.pos + n;
        let scales = self
            .bytes
            .get(scales_at..scales_at + 4 * (n / self.group))
            .context("weights end early")?;
        self.pos = scales_at + scales.len();
        let scales = f32s_from_le(scales);
        Ok(q.iter()
            .enumerate()
            .map(|(i, &v)| v as i8 as f32 * scales[i / self.group])
            .collect())
    }
}

fn parse_v0(bytes: &[u8]) -> Result<Checkpoint> {
    let params = read_params(bytes, 0).with_context(|| {
        format!(
            "file is {} bytes, too short for a llama2.c header ({V0_HEADER_BYTES} bytes)",
            bytes.len()
        )
    })?;
    let mut params = params;
    // A negative vocab size marks an unshared classifier.
    let tied = params[5] > 0;
    params[5] = params[5].checked_abs().unwrap_or(-1);
    let c = config_from_params(params, tied)
        .context("not a .klt file, and not a valid llama2.c version 0 checkpoint")?;
    let mut slots = Slots::new(&c);
    // freq_cis_real and freq_cis_imag, [seq, head_dim/2] each: unused, RoPE
    // is recomputed.
    let rope_floats = c.max_seq_len as u64 * c.head_dim() as u64;
    let weights: u64 = slots
        .sizes(&V0_ORDER)
        .iter()
        .chain(&slots.sizes(&[Classifier]))
        .sum();
    check_size(bytes, 0, V0_HEADER_BYTES, weights + rope_floats, &c)?;

    let mut r = Floats {
        bytes: &bytes[V0_HEADER_BYTES..],
        pos: 0,
    };
    slots.read(&V0_ORDER, |n| r.take(n))?;
    r.skip(rope_floats as usize);
    slots.read(&[Classifier], |n| r.take(n))?;
    Ok(Checkpoint {
        version: 0,
        tensors: slots.into_tensors()?,
        config: c,
    })
}

fn parse_v1(bytes: &[u8]) -> Result<Checkpoint> {
    let version = le_i32(bytes, 4).context("file ends inside the llama2.c header")?;
    match version {
        1 => {}
        2 => return parse_v2(bytes),
        v => bail!("unknown llama2.c checkpoint version {v} (supported: 0, 1 and 2)"),
    }
    let (params, tied) = read_ak42_header(bytes, 1)?;
    if params[5] < 0 {
        bail!(
            "llama2.c version 1 header: vocab_size {} is negative",
            params[5]
        );
    }
    let c = config_from_params(params, tied)?;
    let mut slots = Slots::new(&c);
    let weights: u64 = canonical_tensors(&c).map(|t| t.elements()).sum();
    check_size(bytes, 1, V1_HEADER_BYTES, weights, &c)?;

    let mut r = Floats {
        bytes: &bytes[V1_HEADER_BYTES..],
        pos: 0,
    };
    slots.read(&V1_NORMS, |n| r.take(n))?;
    slots.read(&V1_MATRICES, |n| r.take(n))?;
    Ok(Checkpoint {
        version: 1,
        tensors: slots.into_tensors()?,
        config: c,
    })
}

/// The parameters and the shared-classifier flag of a version 1 or 2 header.
fn read_ak42_header(bytes: &[u8], version: u32) -> Result<([i32; 7], bool)> {
    if bytes.len() < V1_HEADER_BYTES {
        bail!(
            "file is {} bytes, too short for a llama2.c version {version} header ({V1_HEADER_BYTES} bytes)",
            bytes.len()
        );
    }
    let params = read_params(bytes, 8).context("file ends inside the llama2.c header")?;
    let tied = match bytes[36] {
        0 => false,
        1 => true,
        b => bail!("llama2.c header: shared_classifier is {b}, must be 0 or 1"),
    };
    Ok((params, tied))
}

fn parse_v2(bytes: &[u8]) -> Result<Checkpoint> {
    let (params, tied) = read_ak42_header(bytes, 2)?;
    let group = le_i32(bytes, 37).context("file ends inside the llama2.c header")?;
    let c = config_from_params(params, tied)?;
    let mut slots = Slots::new(&c);
    let matrices = slots.sizes(&V1_MATRICES);
    let group = match u64::try_from(group) {
        Ok(g) if g > 0 && matrices.iter().all(|n| n % g == 0) => g,
        _ => bail!("llama2.c version 2 header: group size {group} does not divide every matrix"),
    };
    let norms: u64 = slots.sizes(&V1_NORMS).iter().sum();
    let expected = V1_HEADER_BYTES as u64
        + 4 * norms
        + matrices
            .iter()
            .map(|&n| Int8Groups::bytes_for(n, group))
            .sum::<u64>();
    if expected != bytes.len() as u64 {
        bail!(
            "llama2.c version 2 header ({}, group size {group}) implies a file of {expected} bytes, \
             but the file has {} bytes",
            describe(&c),
            bytes.len()
        );
    }

    let mut r = Floats {
        bytes: &bytes[V1_HEADER_BYTES..],
        pos: 0,
    };
    slots.read(&V1_NORMS, |n| r.take(n))?;
    let mut q = Int8Groups {
        bytes: &bytes[V1_HEADER_BYTES + r.pos..],
        pos: 0,
        group: group as usize,
    };
    slots.read(&V1_MATRICES, |n| q.take(n))?;
    Ok(Checkpoint {
        version: 2,
        tensors: slots.into_tensors()?,
        config: c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v0_header(params: [i32; 7]) -> Vec<u8> {
        params.iter().flat_map(|p| p.to_le_bytes()).collect()
    }

    #[test]
    fn rejects_short_and_mis_sized_files() {
        let e = parse_checkpoint(&[1, 2, 3]).unwrap_err();
        assert!(format!("{e:#}").contains("too short"), "{e:#}");
        // A valid header with no weights: names both sizes.
        let bytes = v0_header([8, 16, 1, 2, 2, 4, 4]);
        let e = format!("{:#}", parse_checkpoint(&bytes).unwrap_err());
        assert!(
            e.contains("implies a file of") && e.contains("has 28 bytes"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_dims() {
        for (params, word) in [
            ([0, 16, 1, 2, 2, 4, 4], "dim"),
            ([8, -16, 1, 2, 2, 4, 4], "hidden_dim = -16 is negative"),
            ([8, 16, 1, 3, 3, 4, 4], "n_heads"),
            ([8, 16, 100000, 2, 2, 4, 4], "n_layers"),
        ] {
            let e = format!("{:#}", parse_checkpoint(&v0_header(params)).unwrap_err());
            assert!(e.contains(word), "{params:?}: {e}");
        }
    }

    /// A version 2 file as export.py writes it, from `weights` in v1 order
    /// (norms first, then the matrices), quantized per group of `group`.
    fn v2_file(
        params: [i32; 7],
        tied: bool,
        group: i32,
        norms: &[f32],
        matrices: &[Vec<f32>],
    ) -> Vec<u8> {
        let mut b = vec![0u8; 256];
        b[..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&2i32.to_le_bytes());
        for (i, p) in params.iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&p.to_le_bytes());
        }
        b[36] = tied as u8;
        b[37..41].copy_from_slice(&group.to_le_bytes());
        b.extend(norms.iter().flat_map(|v| v.to_le_bytes()));
        for m in matrices {
            let mut scales = Vec::new();
            for g in m.chunks(group as usize) {
                let scale = g.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
                scales.push(scale);
                b.extend(g.iter().map(|v| {
                    if scale == 0.0 {
                        0
                    } else {
                        (v / scale).round() as i8 as u8
                    }
                }));
            }
            b.extend(scales.iter().flat_map(|v| v.to_le_bytes()));
        }
        b
    }

    #[test]
    fn imports_version_2_int8_by_dequantizing() {
        // dim 8, hidden 16, 1 layer, 2 heads, 1 kv head, vocab 4, seq 4; untied.
        let (d, h, kv, v) = (8usize, 16usize, 4usize, 4usize);
        let norms: Vec<f32> = (0..2 * d + d).map(|i| 1.0 + i as f32 / 64.0).collect();
        let sizes = [
            v * d,
            d * d,
            kv * d,
            kv * d,
            d * d,
            h * d,
            d * h,
            h * d,
            v * d,
        ];
        let matrices: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(m, &n)| {
                (0..n)
                    .map(|i| ((i * 7 + m * 13) % 23) as f32 / 23.0 - 0.5)
                    .collect()
            })
            .collect();
        let file = v2_file([8, 16, 1, 2, 1, 4, 4], false, 8, &norms, &matrices);
        let ckpt = parse_checkpoint(&file).expect("version 2 imports");
        assert_eq!(ckpt.version, 2);
        let by_name = |name: &str| &ckpt.tensors.iter().find(|t| t.name == name).unwrap().values;
        assert_eq!(by_name("layers.0.attn_norm"), &norms[..d].to_vec());
        assert_eq!(by_name("norm"), &norms[2 * d..].to_vec());
        // Every matrix within half a quantization step of its source values.
        for (name, m) in [
            "tok_embedding",
            "layers.0.wq",
            "layers.0.wk",
            "layers.0.wv",
            "layers.0.wo",
            "layers.0.w1",
            "layers.0.w2",
            "layers.0.w3",
            "classifier",
        ]
        .iter()
        .zip(&matrices)
        {
            let got = by_name(name);
            assert_eq!(got.len(), m.len(), "{name}");
            for (g, w) in got.iter().zip(m) {
                assert!(
                    (g - w).abs() <= 0.5 / 127.0 * 0.5 + 1e-6,
                    "{name}: {g} vs {w}"
                );
            }
        }
        // A group size that does not divide the matrices, and a short file.
        let e = format!(
            "{:#}",
            parse_checkpoint(&v2_file(
                [8, 16, 1, 2, 1, 4, 4],
                false,
                5,
                &norms,
                &matrices
            ))
            .unwrap_err()
        );
        assert!(e.contains("group size 5"), "{e}");
        let e = format!(
            "{:#}",
            parse_checkpoint(&file[..file.len() - 1]).unwrap_err()
        );
        assert!(e.contains("implies a file of"), "{e}");
    }

    #[test]
    fn rejects_unknown_versions() {
        let mut b = vec![0u8; 256];
        b[..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&7i32.to_le_bytes());
        let e = parse_checkpoint(&b).unwrap_err().to_string();
        assert!(e.contains("unknown llama2.c checkpoint version 7"), "{e}");
    }

    #[test]
    fn tokenizer_round_trip_and_errors() {
        let mut t = 5i32.to_le_bytes().to_vec();
        for (i, piece) in [&b"<unk>"[..], b"<s>", b"</s>", b" a"].iter().enumerate() {
            t.extend((-(i as f32)).to_le_bytes());
            t.extend((piece.len() as i32).to_le_bytes());
            t.extend_from_slice(piece);
        }
        let v = parse_tokenizer(&t, 4).unwrap();
        assert_eq!(v.pieces[3], b" a");
        assert_eq!(v.scores[2], -2.0);
        assert_eq!((v.bos, v.eos), (Some(1), Some(2)));
        let e = parse_tokenizer(&t[..t.len() - 1], 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated at token 3 of 4"), "{e}");
        let e = parse_tokenizer(&t, 3).unwrap_err().to_string();
        assert!(e.contains("trailing bytes"), "{e}");
        let mut long = t.clone();
        long[..4].copy_from_slice(&2i32.to_le_bytes());
        let e = parse_tokenizer(&long, 4).unwrap_err().to_string();
        assert!(e.contains("token 0 has length 5"), "{e}");
    }
}
