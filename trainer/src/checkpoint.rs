//! Checkpoints: the whole training state in one file of our own format.
//!
//! Layout (little-endian): magic `KLTCKPT\0`, version u32, the model config,
//! the training config, step, data-sampler RNG state, last val loss, corpus
//! sha256, the tokenizer's characters (UTF-8), [version 2: the QAT settings —
//! dtype code u32 (0 none, else the engine's dtype code), start step u64,
//! activations u32], [version 3: the corpus file's path — length u32, then
//! UTF-8, empty when unknown], the parameter count, then params, AdamW m and
//! v (f32 each), and last a CRC32C of every byte before it. Version 1 files
//! (before QAT) read as "no QAT", versions 1 and 2 as "corpus path unknown".
//! Written to `<path>.tmp`, fsynced, renamed over `<path>`, then the
//! directory fsynced.

use crate::bail;
use crate::config::{Decay, ModelConfig, TrainConfig};
use crate::data::CharTokenizer;
use crate::error::{Result, TrainError};
use crate::params::ParamLayout;
use crate::pause::{self, Point};
use crate::qat::Qat;
use kinglet::checksum::crc32c;
use kinglet::Dtype;
use kinglet_tools::io::{describe_io, sha256_hex, write_atomic_via, Temp};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"KLTCKPT\0";
const VERSION: u32 = 3;
/// The first version, without QAT settings; still read.
const VERSION_BEFORE_QAT: u32 = 1;
/// The version before the corpus path; still read.
const VERSION_BEFORE_CORPUS_PATH: u32 = 2;
/// QAT dtype code meaning "no QAT".
const NO_QAT: u32 = 0;

/// Everything needed to continue training exactly where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Model shape.
    pub model: ModelConfig,
    /// Optimization settings of the run.
    pub train: TrainConfig,
    /// Optimizer steps taken.
    pub step: u64,
    /// State of the batch-sampling RNG (the data position).
    pub data_rng: u64,
    /// Validation loss at the last evaluation, if any.
    pub val_loss: Option<f32>,
    /// sha256 of the corpus file, lowercase hex.
    pub corpus_sha256: String,
    /// The corpus file's absolute path when training started, empty if
    /// unknown; `kinglet-train eval` reads it when its sha256 still matches.
    pub corpus_path: String,
    /// The character vocabulary.
    pub tokenizer: CharTokenizer,
    /// Parameter arena. [layout.total]
    pub params: Vec<f32>,
    /// AdamW first moments. [layout.total]
    pub m: Vec<f32>,
    /// AdamW second moments. [layout.total]
    pub v: Vec<f32>,
    /// Quantization-aware training settings, if the run used them.
    pub qat: Option<Qat>,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_f32(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Reads fields in order; running out of bytes is a "truncated" error.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            bail!(CheckpointDamaged, "checkpoint is truncated");
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(self.u32()? as u64 | (self.u32()? as u64) << 32)
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }
    fn usize(&mut self) -> Result<usize> {
        Ok(self.u32()? as usize)
    }
    fn floats(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = self
            .take(n.checked_mul(4).ok_or_else(|| {
                TrainError::CheckpointDamaged("checkpoint is corrupted".into())
            })?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// Refuses parameters or AdamW moments that are not finite, and negative
/// second moments, naming the tensor: such a checkpoint passes its checksum
/// but would evaluate, export or resume into NaN.
fn check_values(layout: &ParamLayout, params: &[f32], m: &[f32], v: &[f32]) -> Result<()> {
    // Each array, what a bad value is called, and the least value allowed.
    let arrays: [(&[f32], &str, f32); 3] = [
        (params, "a non-finite parameter", f32::MIN),
        (m, "a non-finite AdamW first moment", f32::MIN),
        (v, "a non-finite or negative AdamW second moment", 0.0),
    ];
    for (values, what, least) in arrays {
        let bad = values.iter().position(|x| !(x.is_finite() && *x >= least));
        if let Some(i) = bad {
            let tensor = layout
                .slots
                .iter()
                .find(|s| s.range().contains(&i))
                .map_or("?", |s| s.name.as_str());
            bail!(
                BadCheckpoint,
                "checkpoint holds {what} ({}) in {tensor}",
                values[i]
            );
        }
    }
    Ok(())
}

impl Checkpoint {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 12 * self.params.len());
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, VERSION);
        let m = &self.model;
        for v in [
            m.vocab_size,
            m.context,
            m.dim,
            m.n_layers,
            m.n_heads,
            m.n_kv_heads,
            m.hidden_dim,
        ] {
            put_u32(&mut out, v as u32);
        }
        put_u32(&mut out, m.tied_classifier as u32);
        put_f32(&mut out, m.rope_theta);
        put_f32(&mut out, m.norm_eps);
        let t = &self.train;
        put_u32(&mut out, t.batch as u32);
        put_u32(&mut out, t.accum_steps as u32);
        put_u64(&mut out, t.steps);
        put_f32(&mut out, t.lr);
        put_f32(&mut out, t.min_lr);
        put_u64(&mut out, t.warmup_steps);
        put_u32(&mut out, matches!(t.decay, Decay::Cosine) as u32);
        for v in [t.beta1, t.beta2, t.eps, t.weight_decay] {
            put_f32(&mut out, v);
        }
        put_u32(&mut out, t.decay_norms as u32);
        put_f32(&mut out, t.grad_clip);
        put_f32(&mut out, t.init_std);
        put_u64(&mut out, t.seed);
        put_u64(&mut out, self.step);
        put_u64(&mut out, self.data_rng);
        put_f32(&mut out, self.val_loss.unwrap_or(f32::NAN));
        let mut sha = [0u8; 64];
        for (s, b) in sha.iter_mut().zip(self.corpus_sha256.bytes()) {
            *s = b;
        }
        out.extend_from_slice(&sha);
        let chars: String = self.tokenizer.chars().collect();
        put_u32(&mut out, chars.len() as u32);
        out.extend_from_slice(chars.as_bytes());
        match &self.qat {
            Some(q) => {
                put_u32(&mut out, q.dtype as u32);
                put_u64(&mut out, q.start);
                put_u32(&mut out, q.activations as u32);
            }
            None => {
                put_u32(&mut out, NO_QAT);
                put_u64(&mut out, 0);
                put_u32(&mut out, 0);
            }
        }
        put_u32(&mut out, self.corpus_path.len() as u32);
        out.extend_from_slice(self.corpus_path.as_bytes());
        put_u64(&mut out, self.params.len() as u64);
        for arena in [&self.params, &self.m, &self.v] {
            for x in arena.iter() {
                put_f32(&mut out, *x);
            }
        }
        let crc = crc32c(&out);
        put_u32(&mut out, crc);
        out
    }

    /// Parses and checks a checkpoint file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        if bytes.len() < MAGIC.len() + 8 {
            bail!(
                CheckpointDamaged,
                "checkpoint is truncated ({} bytes)",
                bytes.len()
            );
        }
        if &bytes[..8] != MAGIC {
            bail!(NotACheckpoint, "not a kinglet-train checkpoint (bad magic)");
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if !(VERSION_BEFORE_QAT..=VERSION).contains(&version) {
            bail!(
                CheckpointVersion,
                "checkpoint version {version} is not supported \
                 (this kinglet-train reads versions {VERSION_BEFORE_QAT} to {VERSION})"
            );
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c(body).to_le_bytes() != crc {
            bail!(
                CheckpointDamaged,
                "checkpoint is truncated or corrupted (checksum mismatch)"
            );
        }
        let mut r = Reader { bytes: &body[12..] };
        let model = ModelConfig {
            vocab_size: r.usize()?,
            context: r.usize()?,
            dim: r.usize()?,
            n_layers: r.usize()?,
            n_heads: r.usize()?,
            n_kv_heads: r.usize()?,
            hidden_dim: r.usize()?,
            tied_classifier: r.u32()? != 0,
            rope_theta: r.f32()?,
            norm_eps: r.f32()?,
        };
        model.validate().map_err(|e| {
            TrainError::BadCheckpoint(format!("checkpoint holds a bad model config: {e}"))
        })?;
        let train = TrainConfig {
            batch: r.usize()?,
            accum_steps: r.usize()?,
            steps: r.u64()?,
            lr: r.f32()?,
            min_lr: r.f32()?,
            warmup_steps: r.u64()?,
            decay: if r.u32()? != 0 {
                Decay::Cosine
            } else {
                Decay::Constant
            },
            beta1: r.f32()?,
            beta2: r.f32()?,
            eps: r.f32()?,
            weight_decay: r.f32()?,
            decay_norms: r.u32()? != 0,
            grad_clip: r.f32()?,
            init_std: r.f32()?,
            seed: r.u64()?,
        };
        let step = r.u64()?;
        let data_rng = r.u64()?;
        let val_loss = Some(r.f32()?).filter(|v| !v.is_nan());
        let sha = r.take(64)?;
        let corpus_sha256 = String::from_utf8_lossy(sha)
            .trim_end_matches('\0')
            .to_string();
        let chars_len = r.usize()?;
        let chars = std::str::from_utf8(r.take(chars_len)?)
            .map_err(|_| TrainError::BadCheckpoint("checkpoint vocabulary is not UTF-8".into()))?;
        let tokenizer = CharTokenizer::from_chars(chars.chars().collect())?;
        if tokenizer.len() != model.vocab_size {
            bail!(
                BadCheckpoint,
                "checkpoint vocabulary has {} characters but the model {}",
                tokenizer.len(),
                model.vocab_size
            );
        }
        let qat = if version == VERSION_BEFORE_QAT {
            None
        } else {
            read_qat(&mut r)?
        };
        if let Some(q) = &qat {
            q.check_model(&model).map_err(|e| {
                TrainError::BadCheckpoint(format!("checkpoint holds bad QAT settings: {e}"))
            })?;
        }
        let corpus_path = if version <= VERSION_BEFORE_CORPUS_PATH {
            String::new()
        } else {
            let len = r.usize()?;
            std::str::from_utf8(r.take(len)?)
                .map_err(|_| {
                    TrainError::BadCheckpoint("checkpoint corpus path is not UTF-8".into())
                })?
                .to_string()
        };
        let n = r.u64()? as usize;
        let expected = ParamLayout::new(&model).total;
        if n != expected {
            bail!(
                BadCheckpoint,
                "checkpoint holds {n} parameters, its config needs {expected}"
            );
        }
        let params = r.floats(n)?;
        let m = r.floats(n)?;
        let v = r.floats(n)?;
        if !r.bytes.is_empty() {
            bail!(
                BadCheckpoint,
                "checkpoint has {} unexpected trailing bytes",
                r.bytes.len()
            );
        }
        check_values(&ParamLayout::new(&model), &params, &m, &v)?;
        Ok(Checkpoint {
            model,
            train,
            step,
            data_rng,
            val_loss,
            corpus_sha256,
            corpus_path,
            tokenizer,
            params,
            m,
            v,
            qat,
        })
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| {
            TrainError::Io(format!("cannot read checkpoint {}: {e}", path.display()))
        })?;
        Checkpoint::from_bytes(&bytes).map_err(|e| e.context(path.display()))
    }

    /// The corpus this checkpoint was trained on, when the file it recorded
    /// is still there with the same sha256; otherwise an error that says
    /// what to pass instead.
    pub fn recorded_corpus(&self) -> Result<PathBuf> {
        let short = |sha: &str| sha.get(..16).unwrap_or(sha).to_string();
        if self.corpus_path.is_empty() {
            bail!(
                Corpus,
                "the checkpoint does not record where its corpus is (sha256 {}…): \
                 pass --data FILE, the text it was trained on",
                short(&self.corpus_sha256)
            );
        }
        let path = PathBuf::from(&self.corpus_path);
        let bytes = std::fs::read(&path).map_err(|e| {
            TrainError::Io(format!(
                "the checkpoint was trained on {}, which cannot be read ({e}): \
                 pass --data FILE with that text",
                path.display()
            ))
        })?;
        let sha = sha256_hex(&bytes);
        if sha != self.corpus_sha256 {
            bail!(
                Corpus,
                "{} has changed since the checkpoint was trained on it (sha256 {}…, was {}…): \
                 pass --data FILE with the text it was trained on",
                path.display(),
                short(&sha),
                short(&self.corpus_sha256)
            );
        }
        Ok(path)
    }

    /// Writes atomically through [`temp_path`] (kinglet-tools' one atomic
    /// writer): a crash leaves the old file or the new one, never a torn
    /// one. The crash tests' [`pause`] points are its stages.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes();
        let temp = temp_path(path);
        write_atomic_via(
            path,
            Temp::At(&temp),
            |out| out.write_all(&bytes).map_err(|e| describe_io(&temp, &e)),
            |stage| pause::at(Point::from(stage)),
        )
        .map_err(|e| TrainError::Io(format!("cannot write {e:#}")))
    }
}

/// The version-2 QAT fields.
fn read_qat(r: &mut Reader<'_>) -> Result<Option<Qat>> {
    let code = r.u32()?;
    let start = r.u64()?;
    let activations = match r.u32()? {
        0 => false,
        1 => true,
        other => bail!(
            BadCheckpoint,
            "checkpoint has a bad QAT activations flag {other}"
        ),
    };
    if code == NO_QAT {
        return Ok(None);
    }
    let Some(dtype) = Dtype::ALL.into_iter().find(|d| *d as u32 == code) else {
        bail!(
            BadCheckpoint,
            "checkpoint has an unknown QAT dtype code {code}"
        );
    };
    Ok(Some(Qat {
        dtype,
        start,
        activations,
    }))
}

/// The temporary file [`Checkpoint::save`] fills before renaming it over
/// `path`: `<path>.tmp`, beside it. Only a killed write leaves it behind,
/// and no reader takes it for the real file.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}
