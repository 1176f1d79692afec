//! A model held in memory as f32 values: what importers and the synthesizer
//! produce, and what `convert` re-encodes into any float dtype and writes as
//! a .klt file through [`kinglet::format::write_model`].

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use kinglet::format::{
    sort_pieces, write_model, write_tokenizer, IoSink, TensorInfo, TensorSpec, TokenizerKind,
    TokenizerSpec, Vocab, WriteError,
};
use kinglet::quant;
use kinglet::tensor::BLOCK_LEN;
use kinglet::{Config, Dtype, ModelFile};

use crate::cmd::grouped;
use crate::interop::Format;

/// One tensor: canonical name, shape (`[len]` for norms, `[rows, cols]` for
/// matrices) and row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedTensor {
    /// Canonical name, e.g. `layers.0.wq`.
    pub name: String,
    /// `[len]` or `[rows, cols]`.
    pub shape: Vec<u32>,
    /// Row-major values; `shape` product long.
    pub values: Vec<f32>,
}

/// A vocabulary: one piece and score per id, and the special ids.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedVocab {
    /// How text becomes tokens.
    pub kind: TokenizerKind,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// The bytes of each piece, indexed by id.
    pub pieces: Vec<Vec<u8>>,
    /// The merge score of each piece, indexed by id.
    pub scores: Vec<f32>,
}

impl OwnedVocab {
    /// The vocabulary of an opened .klt file.
    pub fn from_klt<T: AsRef<[u8]>>(file: &ModelFile<T>) -> OwnedVocab {
        OwnedVocab::from_vocab(&file.vocab())
    }

    /// A copy of the engine's vocabulary `v`.
    pub fn from_vocab(v: &Vocab<'_>) -> OwnedVocab {
        OwnedVocab {
            kind: v.kind(),
            bos: v.bos(),
            eos: v.eos(),
            pieces: (0..v.len()).map(|id| v.piece(id).to_vec()).collect(),
            scores: (0..v.len()).map(|id| v.score(id)).collect(),
        }
    }

    /// The tokenizer section a .klt file would store for this vocabulary,
    /// written by the engine's one writer: [`Vocab::from_section`] reads it
    /// back with the pieces' count, for encoding without a model file.
    pub fn section(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.with_spec(|spec| write_tokenizer(&mut IoSink(&mut bytes), spec))
            .map_err(|e| anyhow!("cannot write the vocabulary: {e}"))?;
        Ok(bytes)
    }

    /// Calls `f` with this vocabulary as the engine's writer takes it.
    fn with_spec<R>(&self, f: impl FnOnce(&TokenizerSpec<'_>) -> R) -> R {
        let pieces: Vec<&[u8]> = self.pieces.iter().map(|p| p.as_slice()).collect();
        let mut sorted = vec![0u32; pieces.len()];
        sort_pieces(&pieces, &mut sorted);
        f(&TokenizerSpec {
            kind: self.kind,
            bos: self.bos,
            eos: self.eos,
            pieces: &pieces,
            scores: &self.scores,
            sorted: &sorted,
        })
    }
}

/// A whole model in memory, tensors in the canonical .klt order.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedModel {
    /// Hyperparameters.
    pub config: Config,
    /// Vocabulary.
    pub vocab: OwnedVocab,
    /// Tensors, in canonical order.
    pub tensors: Vec<OwnedTensor>,
    /// Key/value metadata written into the file.
    pub metadata: Vec<(String, String)>,
}

impl OwnedModel {
    /// Decodes every tensor of an opened .klt file to f32 (lossless for F32,
    /// F16 and BF16; Q8_0 and Q4_0 are dequantized).
    pub fn from_klt<T: AsRef<[u8]>>(file: &ModelFile<T>) -> OwnedModel {
        let vocab = OwnedVocab::from_klt(file);
        let tensors = file
            .tensors()
            .map(|t| OwnedTensor {
                name: t.name.to_string(),
                shape: if t.ndim == 1 {
                    vec![t.shape[1]]
                } else {
                    t.shape.to_vec()
                },
                values: decode_tensor(&t),
            })
            .collect();
        OwnedModel {
            config: *file.config(),
            vocab,
            tensors,
            metadata: file
                .metadata()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Encodes every tensor in the dtype `plan` gives it. Refuses NaN or
    /// infinite weights, and values that overflow their dtype, naming the
    /// tensor.
    pub fn encode(&self, plan: impl Into<DtypePlan>) -> Result<EncodedModel> {
        let plan = plan.into();
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let dtype = plan.dtype_of(&t.name, &t.shape).0;
                Ok(EncodedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    dtype,
                    data: encode_values(&t.name, &t.values, dtype)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(EncodedModel {
            config: self.config,
            vocab: self.vocab.clone(),
            tensors,
            metadata: self.metadata.clone(),
        })
    }

    /// Writes the model as a .klt file with each tensor in the dtype `plan`
    /// gives it (see [`OwnedModel::encode`]). Returns the bytes written.
    pub fn write_klt(&self, plan: impl Into<DtypePlan>, out: &mut impl Write) -> Result<u64> {
        self.encode(plan)?.write_klt(out)
    }

    /// Number of weights (all tensor elements).
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(|t| t.values.len() as u64).sum()
    }
}

/// One tensor as a file stores it: its bytes in `dtype`. Formats that hold
/// the same dtype copy these bytes as they are (ggml's Q8_0 and Q4_0 blocks
/// included), so a conversion changes no weight unless asked to.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedTensor {
    /// Canonical name, e.g. `layers.0.wq`.
    pub name: String,
    /// `[len]` or `[rows, cols]`.
    pub shape: Vec<u32>,
    /// Element type of `data`.
    pub dtype: Dtype,
    /// Row-major encoded elements: `rows × dtype.row_bytes(cols)` bytes.
    pub data: Vec<u8>,
}

impl EncodedTensor {
    /// `(rows, cols)`: a norm gain is one row.
    pub fn rows_cols(&self) -> (usize, usize) {
        match *self.shape.as_slice() {
            [rows, cols] => (rows as usize, cols as usize),
            [len] => (1, len as usize),
            _ => (0, 0),
        }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.row_bytes(self.rows_cols().1).unwrap_or(0)
    }

    /// The values as f32 (exact for F32, F16 and BF16; Q8_0 and Q4_0 blocks
    /// are dequantized).
    pub fn values(&self) -> Result<Vec<f32>> {
        let (rows, cols) = self.rows_cols();
        let mut out = vec![0.0; rows * cols];
        quant::dequantize_row(self.dtype, &self.data, &mut out).map_err(|e| {
            anyhow!(
                "tensor {}: {} bytes of {} do not hold {rows}×{cols} values: {e}",
                self.name,
                self.data.len(),
                self.dtype.name()
            )
        })?;
        Ok(out)
    }
}

/// A whole model as a file stores it, tensors in the canonical .klt order:
/// what every importer produces and every exporter takes.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedModel {
    /// Hyperparameters.
    pub config: Config,
    /// Vocabulary.
    pub vocab: OwnedVocab,
    /// Tensors, in canonical order.
    pub tensors: Vec<EncodedTensor>,
    /// Key/value metadata.
    pub metadata: Vec<(String, String)>,
}

impl EncodedModel {
    /// Copies the tensors of an opened .klt file as they are stored.
    pub fn from_klt<T: AsRef<[u8]>>(file: &ModelFile<T>) -> EncodedModel {
        EncodedModel {
            config: *file.config(),
            vocab: OwnedVocab::from_klt(file),
            tensors: file
                .tensors()
                .map(|t| EncodedTensor {
                    name: t.name.to_string(),
                    shape: if t.ndim == 1 {
                        vec![t.shape[1]]
                    } else {
                        t.shape.to_vec()
                    },
                    dtype: t.dtype,
                    data: t.data.to_vec(),
                })
                .collect(),
            metadata: file
                .metadata()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The model with every tensor decoded to f32.
    pub fn decode(&self) -> Result<OwnedModel> {
        Ok(OwnedModel {
            config: self.config,
            vocab: self.vocab.clone(),
            tensors: self
                .tensors
                .iter()
                .map(|t| {
                    Ok(OwnedTensor {
                        name: t.name.clone(),
                        shape: t.shape.clone(),
                        values: t.values()?,
                    })
                })
                .collect::<Result<_>>()?,
            metadata: self.metadata.clone(),
        })
    }

    /// Re-encodes the tensors whose dtype differs from the one `plan` gives
    /// them; the others keep their bytes.
    pub fn recode(mut self, plan: DtypePlan) -> Result<EncodedModel> {
        for t in &mut self.tensors {
            let dtype = plan.dtype_of(&t.name, &t.shape).0;
            if dtype != t.dtype {
                t.data = encode_values(&t.name, &t.values()?, dtype)?;
                t.dtype = dtype;
            }
        }
        Ok(self)
    }

    /// Writes the model as a .klt file. Returns the bytes written.
    pub fn write_klt(&self, out: &mut impl Write) -> Result<u64> {
        let specs: Vec<TensorSpec<'_>> = self
            .tensors
            .iter()
            .map(|t| TensorSpec {
                name: &t.name,
                dtype: t.dtype,
                shape: &t.shape,
                data: &t.data,
            })
            .collect();
        let metadata: Vec<(&str, &str)> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut sink = IoSink(out);
        let written = self.vocab.with_spec(|tokenizer| {
            write_model(&mut sink, &self.config, tokenizer, &specs, &metadata)
        });
        match written {
            Ok(n) => Ok(n),
            Err(WriteError::Invalid(e)) => {
                let name = match e {
                    kinglet::Error::TensorName { index }
                    | kinglet::Error::TensorDtype { index, .. }
                    | kinglet::Error::TensorShape { index, .. }
                    | kinglet::Error::TensorPlacement { index, .. } => self
                        .tensors
                        .get(index as usize)
                        .map(|t| format!(" ({})", t.name)),
                    _ => None,
                };
                bail!("cannot write the model: {e}{}", name.unwrap_or_default())
            }
            Err(WriteError::Sink(e)) => Err(e).context("write failed"),
        }
    }

    /// Number of weights (all tensor elements).
    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.shape.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }

    /// The line every command that writes a model prints (`kinglet convert`,
    /// `quantize`, `synth`, `kinglet-train export`): `wrote PATH: 39 tensors,
    /// 820,608 parameters, 879,624 bytes, q8_0, embedding f16 (norms f32)`,
    /// the dtypes being those of the matrices written; a GGUF file or a
    /// Hugging Face directory names its format after its bytes.
    pub fn written(&self, path: &Path, format: Format, bytes: u64) -> String {
        let mut matrices: Vec<&str> = Vec::new();
        let mut embedding: Vec<&str> = Vec::new();
        for t in self.tensors.iter().filter(|t| t.shape.len() == 2) {
            let list = match t.name.as_str() {
                "tok_embedding" | "classifier" => &mut embedding,
                _ => &mut matrices,
            };
            if !list.contains(&t.dtype.name()) {
                list.push(t.dtype.name());
            }
        }
        embedding.retain(|d| !matrices.contains(d));
        let embedding = match embedding.is_empty() {
            true => String::new(),
            false => format!(", embedding {}", embedding.join(", ")),
        };
        let of = match format {
            Format::Klt => "",
            Format::Gguf => " of GGUF",
            Format::Hf => " in a Hugging Face directory",
        };
        format!(
            "wrote {}: {} tensors, {} parameters, {} bytes{of}, {}{embedding} (norms f32)",
            path.display(),
            self.tensors.len(),
            grouped(self.parameter_count()),
            grouped(bytes),
            matrices.join(", ")
        )
    }
}

/// Which dtype each tensor is written in: norm gains always F32; the token
/// embedding and the classifier in `embedding` when given (they matter most
/// for small models), everything else in `matrices`. A matrix whose rows are
/// not whole 32-element blocks cannot be Q8_0/Q4_0; it is kept in F16, which
/// is more precise than either, and [`DtypePlan::dtype_of`] says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtypePlan {
    /// Dtype of the weight matrices.
    pub matrices: Dtype,
    /// Dtype of `tok_embedding` and `classifier`, if not `matrices`.
    pub embedding: Option<Dtype>,
}

impl From<Dtype> for DtypePlan {
    fn from(matrices: Dtype) -> Self {
        DtypePlan {
            matrices,
            embedding: None,
        }
    }
}

impl DtypePlan {
    /// The dtype of tensor `name` of `shape`, and a note when it is not the
    /// one asked for.
    pub fn dtype_of(&self, name: &str, shape: &[u32]) -> (Dtype, Option<String>) {
        let &[_, cols] = shape else {
            return (Dtype::F32, None);
        };
        let asked = match name {
            "tok_embedding" | "classifier" => self.embedding.unwrap_or(self.matrices),
            _ => self.matrices,
        };
        if asked.is_quantized() && !(cols as usize).is_multiple_of(BLOCK_LEN) {
            let note = format!(
                "{name}: rows of {cols} are not whole blocks of {BLOCK_LEN}, so it stays f16 instead of {}",
                asked.name()
            );
            return (Dtype::F16, Some(note));
        }
        (asked, None)
    }

    /// The notes of every tensor of `model` that could not take the dtype asked for.
    pub fn notes(&self, model: &EncodedModel) -> Vec<String> {
        model
            .tensors
            .iter()
            .filter_map(|t| self.dtype_of(&t.name, &t.shape).1)
            .collect()
    }
}

/// The bytes of `values` in `dtype`, through the engine's one quantizer
/// (round to nearest even for F16/BF16, ggml's rounding for Q8_0/Q4_0).
/// Errors name the tensor and say why: a NaN or infinite weight, a value too
/// large for `dtype`, or a row that is not whole 32-element blocks.
pub fn encode_values(name: &str, values: &[f32], dtype: Dtype) -> Result<Vec<u8>> {
    let len = dtype.row_bytes(values.len()).with_context(|| {
        format!(
            "tensor {name}: {} values are not whole {} blocks",
            values.len(),
            dtype.name()
        )
    })?;
    let mut out = vec![0u8; len];
    quant::quantize_row(dtype, values, &mut out).map_err(|e| anyhow!("tensor {name}: {e}"))?;
    Ok(out)
}

/// The values of a validated tensor as f32.
pub fn decode_tensor(t: &TensorInfo<'_>) -> Vec<f32> {
    let mut out = vec![0.0; t.elements() as usize];
    // A validated tensor's length always matches its shape.
    if quant::dequantize_row(t.dtype, t.data, &mut out).is_err() {
        out.fill(f32::NAN);
    }
    out
}

/// f32 values from little-endian bytes (`bytes.len()` a multiple of 4).
pub fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn f16_and_bf16_round_to_nearest_even() {
        // 1 + 2^-11 lies exactly between two f16 values: ties go to even (1.0).
        let tie = 1.0 + f32::powi(2.0, -11);
        let b = encode_values("t", &[tie], Dtype::F16).unwrap();
        assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), 1.0);
        // 1 + 3·2^-11 ties between 1+2^-10 (odd) and 1+2^-9 (even).
        let tie = 1.0 + 3.0 * f32::powi(2.0, -11);
        let b = encode_values("t", &[tie], Dtype::F16).unwrap();
        assert_eq!(
            f16::from_le_bytes([b[0], b[1]]).to_f32(),
            1.0 + f32::powi(2.0, -9)
        );
        let tie = f32::from_bits(0x3F80_8000); // halfway between two bf16
        let b = encode_values("t", &[tie], Dtype::BF16).unwrap();
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3F80);
    }

    #[test]
    fn refuses_non_finite_and_overflow_naming_the_tensor() {
        let e = encode_values("layers.2.wq", &[0.0, f32::NAN], Dtype::F32).unwrap_err();
        assert!(e.to_string().contains("layers.2.wq"), "{e}");
        assert!(e.to_string().contains("element 1"), "{e}");
        let e = encode_values("w", &[1e6], Dtype::F16).unwrap_err();
        assert!(e.to_string().contains("overflows f16"), "{e}");
        assert!(encode_values("w", &[1e6], Dtype::BF16).is_ok());
    }

    #[test]
    fn decodes_ggml_blocks() {
        // Q8_0: scale 0.5, q = -16..16.
        let mut q8 = f16::from_f32(0.5).to_le_bytes().to_vec();
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let t = TensorInfo {
            index: 0,
            role: kinglet::TensorRole::TokEmbedding,
            name: "w",
            dtype: Dtype::Q8_0,
            ndim: 2,
            shape: [1, 32],
            offset: 0,
            crc32c: 0,
            data: &q8,
        };
        let v = decode_tensor(&t);
        assert_eq!(v[0], -8.0);
        assert_eq!(v[31], 7.5);
        // Q4_0: scale 2, byte j = (j+16 element in high nibble) | (j element).
        let mut q4 = f16::from_f32(2.0).to_le_bytes().to_vec();
        q4.extend((0..16u8).map(|j| (15 - j) << 4 | j));
        let t = TensorInfo {
            dtype: Dtype::Q4_0,
            data: &q4,
            ..t
        };
        let v = decode_tensor(&t);
        assert_eq!(v[0], -16.0); // (0 - 8) * 2
        assert_eq!(v[15], 14.0); // (15 - 8) * 2
        assert_eq!(v[16], 14.0); // element 16: high nibble of byte 0 = 15
        assert_eq!(v[31], -16.0);
    }
}
