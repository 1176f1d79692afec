//! The .klt model file: a checked zero-copy reader ([`ModelFile`]) and a
//! streaming writer ([`write_model`]). `docs/FORMAT.md` is the specification;
//! the offsets below are its tables.
//!
//! Everything is validated once, in [`ModelFile::new_checked`]: every length and
//! offset with checked arithmetic, every shape against the config, alignment,
//! dtype codes, tokenizer bounds and the header checksum. Afterwards the
//! accessors cannot fail. Tensor checksums are verified by the explicit
//! [`ModelFile::verify`], since that reads every byte.
#![forbid(unsafe_code)]

use crate::canonical::{
    canonical_index, canonical_tensor, canonical_tensors, CanonicalTensor, LayerPart, TensorRole,
    TENSORS_PER_LAYER,
};
use crate::checksum::{crc32c, Crc32c};
use crate::config::Config;
use crate::error::{Error, Section};
use crate::tensor::{Dtype, Matrix};

/// The first eight bytes of every .klt file.
pub const MAGIC: [u8; 8] = *b"KINGLET\0";
/// The format version this engine reads and writes.
pub const VERSION: u32 = 1;
/// Tensor data offsets are multiples of this.
pub const TENSOR_ALIGN: usize = 64;
/// Bytes of a tensor name field (UTF-8, NUL-padded).
pub const NAME_BYTES: usize = 40;
/// Bytes of one tensor directory entry.
pub const DIR_ENTRY_BYTES: usize = 80;
/// Marks an absent BOS or EOS id.
pub const NO_TOKEN: u32 = u32::MAX;

/// A fixed-width field: its byte range within its section.
type Field = core::ops::Range<usize>;

// Fixed header fields (from the start of the file).
mod field {
    use super::Field;
    pub const MAGIC: Field = 0..8;
    pub const VERSION: Field = 8..12;
    pub const HEADER_BYTES: Field = 12..16;
    pub const FILE_BYTES: Field = 16..24;
    pub const DIM: Field = 24..28;
    pub const HIDDEN_DIM: Field = 28..32;
    pub const N_LAYERS: Field = 32..36;
    pub const N_HEADS: Field = 36..40;
    pub const N_KV_HEADS: Field = 40..44;
    pub const VOCAB_SIZE: Field = 44..48;
    pub const MAX_SEQ_LEN: Field = 48..52;
    pub const ROPE_THETA: Field = 52..56;
    pub const NORM_EPS: Field = 56..60;
    pub const FLAGS: Field = 60..64;
    pub const N_TENSORS: Field = 64..68;
    pub const N_METADATA: Field = 68..72;
    /// The tokenizer section starts here.
    pub const TOKENIZER: usize = N_METADATA.end;
}

// Tokenizer section fields (from its start).
mod tok_field {
    use super::Field;
    pub const KIND: Field = 0..4;
    pub const BOS: Field = 4..8;
    pub const EOS: Field = 8..12;
    pub const MAX_PIECE_LEN: Field = 12..16;
    pub const BLOB_BYTES: Field = 16..20;
    /// `vocab_size + 1` u32 piece offsets start here.
    pub const OFFSETS: usize = BLOB_BYTES.end;
}

// Directory entry fields (from the entry's start).
mod dir_field {
    use super::Field;
    pub const NAME: Field = 0..super::NAME_BYTES;
    pub const DTYPE: Field = 40..44;
    pub const NDIM: Field = 44..48;
    pub const ROWS: Field = 48..52;
    pub const COLS: Field = 52..56;
    pub const OFFSET: Field = 56..64;
    pub const BYTES: Field = 64..72;
    pub const CRC: Field = 72..76;
    pub const RESERVED: Field = 76..80;
}

const _: () = assert!(dir_field::RESERVED.end == DIR_ENTRY_BYTES);

const FLAG_TIED: u32 = 1;
/// Longest metadata key or value, so a reader can bound its buffers.
pub const MAX_METADATA_LEN: u32 = 1 << 16;

/// How text becomes tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// One token per Unicode scalar value; each piece is one character.
    Char = 0,
    /// llama2.c-style BPE: greedy merges by score, `<0xXX>` byte fallback.
    Bpe = 1,
}

// Readers of little-endian fields. Every caller has checked, once, that
// the bytes hold the field, so these index directly: an out-of-range read is
// a bug in this file and panics, it never yields a made-up value.

fn u32_in(bytes: &[u8], field: Field) -> u32 {
    let mut le = [0; 4];
    le.copy_from_slice(&bytes[field]);
    u32::from_le_bytes(le)
}

fn u64_in(bytes: &[u8], field: Field) -> u64 {
    let mut le = [0; 8];
    le.copy_from_slice(&bytes[field]);
    u64::from_le_bytes(le)
}

fn f32_in(bytes: &[u8], field: Field) -> f32 {
    f32::from_bits(u32_in(bytes, field))
}

/// The u32 at `at` (an element of an array section).
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32_in(bytes, at..at + 4)
}

/// Text that [`ModelFile::new_checked`] found to be UTF-8 (a tensor name, a
/// metadata key or value): all of it, as its first valid run. Without a
/// panic path: bytes that changed after the check (an `AsRef` that does not
/// return the same bytes each time) end the text at the first invalid byte.
fn validated_str(bytes: &[u8]) -> &str {
    bytes.utf8_chunks().next().map_or("", |chunk| chunk.valid())
}

/// The weights of one transformer block.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'a> {
    /// RMSNorm gain before attention, `1 × dim`, F32.
    pub attn_norm: Matrix<'a>,
    /// Query projection, `dim × dim`.
    pub wq: Matrix<'a>,
    /// Key projection, `kv_dim × dim`.
    pub wk: Matrix<'a>,
    /// Value projection, `kv_dim × dim`.
    pub wv: Matrix<'a>,
    /// Attention output projection, `dim × dim`.
    pub wo: Matrix<'a>,
    /// RMSNorm gain before the MLP, `1 × dim`, F32.
    pub ffn_norm: Matrix<'a>,
    /// SwiGLU gate projection, `hidden × dim`.
    pub w1: Matrix<'a>,
    /// SwiGLU down projection, `dim × hidden`.
    pub w2: Matrix<'a>,
    /// SwiGLU up projection, `hidden × dim`.
    pub w3: Matrix<'a>,
}

/// One entry of the tensor directory, with its data.
#[derive(Clone, Copy, Debug)]
pub struct TensorInfo<'a> {
    /// Directory index.
    pub index: u32,
    /// What the tensor is.
    pub role: TensorRole,
    /// Canonical name, e.g. `layers.3.wq`.
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// 1 for norm gains, 2 for matrices.
    pub ndim: u32,
    /// `(rows, cols)`; 1-D tensors are `(1, len)`.
    pub shape: [u32; 2],
    /// File offset of the data.
    pub offset: u64,
    /// CRC32C of the data, as stored.
    pub crc32c: u32,
    /// The data.
    pub data: &'a [u8],
}

impl<'a> TensorInfo<'a> {
    /// The tensor as a matrix (1-D tensors are one row).
    pub fn matrix(&self) -> Matrix<'a> {
        Matrix {
            dtype: self.dtype,
            rows: self.shape[0] as usize,
            cols: self.shape[1] as usize,
            data: self.data,
        }
    }

    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.shape[0] as u64 * self.shape[1] as u64
    }
}

/// The fields of one directory entry as stored, before any check.
struct RawEntry<'a> {
    /// NUL-padded.
    name: &'a [u8],
    dtype: u32,
    ndim: u32,
    shape: [u32; 2],
    offset: u64,
    bytes: u64,
    crc32c: u32,
    reserved: u32,
}

impl<'a> RawEntry<'a> {
    /// Entry `index` of the directory starting at `directory` (the caller
    /// checked that `b` holds the whole directory).
    fn read(b: &'a [u8], directory: usize, index: u32) -> Self {
        let start = directory + index as usize * DIR_ENTRY_BYTES;
        let e = &b[start..start + DIR_ENTRY_BYTES];
        RawEntry {
            name: &e[dir_field::NAME],
            dtype: u32_in(e, dir_field::DTYPE),
            ndim: u32_in(e, dir_field::NDIM),
            shape: [u32_in(e, dir_field::ROWS), u32_in(e, dir_field::COLS)],
            offset: u64_in(e, dir_field::OFFSET),
            bytes: u64_in(e, dir_field::BYTES),
            crc32c: u32_in(e, dir_field::CRC),
            reserved: u32_in(e, dir_field::RESERVED),
        }
    }

    /// The entry's data as a matrix, for an entry that [`RawEntry::check`]
    /// accepted.
    fn validated_matrix(&self, b: &'a [u8]) -> Matrix<'a> {
        let start = self.offset as usize;
        Matrix {
            // Codes were checked to be those of `Dtype::ALL`, in order.
            dtype: Dtype::ALL[self.dtype as usize],
            rows: self.shape[0] as usize,
            cols: self.shape[1] as usize,
            data: &b[start..start + self.bytes as usize],
        }
    }

    /// The name without its NUL padding.
    fn trimmed_name(&self) -> &'a [u8] {
        let len = self.name.iter().position(|&c| c == 0);
        &self.name[..len.unwrap_or(NAME_BYTES)]
    }

    /// Checks the entry against the canonical tensor `want` and the offset
    /// the previous tensor leaves (`at`); returns its dtype and where its
    /// data ends.
    fn check(
        &self,
        want: &CanonicalTensor,
        at: usize,
        file_len: usize,
    ) -> Result<(Dtype, usize), Error> {
        let index = want.index;
        let name = self.trimmed_name();
        if !want.role.name_is(name) || self.name[name.len()..].iter().any(|&c| c != 0) {
            return Err(Error::TensorName { index });
        }
        let code = self.dtype;
        let dtype = Dtype::from_code(code).ok_or(Error::TensorDtype { index, code })?;
        if want.role.is_norm() && dtype != Dtype::F32 {
            return Err(Error::TensorDtype { index, code });
        }
        if self.ndim != want.ndim() || self.shape != want.shape {
            return Err(Error::TensorShape {
                index,
                expected: want.shape,
                found: self.shape,
            });
        }
        let placement = |reason| Error::TensorPlacement { index, reason };
        if self.reserved != 0 {
            return Err(placement("reserved field is not zero"));
        }
        let bytes = dtype
            .row_bytes(self.shape[1] as usize)
            .and_then(|r| r.checked_mul(self.shape[0] as usize))
            .ok_or(placement("rows are not whole quantization blocks"))?;
        if !self.offset.is_multiple_of(TENSOR_ALIGN as u64) {
            return Err(placement("offset is not a multiple of 64"));
        }
        if self.offset != at as u64 {
            return Err(placement("offset is not right after the previous tensor"));
        }
        if self.bytes != bytes as u64 {
            return Err(placement("byte length disagrees with dtype and shape"));
        }
        let end = at.checked_add(bytes).ok_or(placement("size overflows"))?;
        if end > file_len {
            return Err(Error::Truncated {
                section: Section::TensorData,
                needed: end as u64,
                available: file_len as u64,
            });
        }
        Ok((dtype, end))
    }
}

/// Byte ranges of the tokenizer section, found at open.
#[derive(Clone, Copy, Debug)]
struct TokenizerLayout {
    kind: TokenizerKind,
    bos: u32,
    eos: u32,
    max_piece_len: u32,
    offsets: usize,
    scores: usize,
    sorted: usize,
    blob: usize,
    blob_bytes: usize,
    end: usize,
}

/// A validated, zero-copy view of a .klt file.
#[derive(Clone, Debug)]
pub struct ModelFile<T: AsRef<[u8]>> {
    bytes: T,
    config: Config,
    tokenizer: TokenizerLayout,
    directory: usize,
    metadata: usize,
    n_metadata: u32,
    header_bytes: usize,
}

impl<T: AsRef<[u8]>> ModelFile<T> {
    /// Validates the whole layout and the header checksum. On success every
    /// accessor of the returned view is infallible.
    pub fn new_checked(bytes: T) -> Result<Self, Error> {
        let b = bytes.as_ref();
        let len = b.len();
        if len < field::TOKENIZER {
            return Err(Error::Truncated {
                section: Section::Header,
                needed: field::TOKENIZER as u64,
                available: len as u64,
            });
        }
        if b[field::MAGIC] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = u32_in(b, field::VERSION);
        if version != VERSION {
            return Err(Error::UnsupportedVersion { found: version });
        }
        let header_bytes = u32_in(b, field::HEADER_BYTES) as usize;
        let file_bytes = u64_in(b, field::FILE_BYTES);
        if file_bytes != len as u64 {
            return Err(Error::FileSize {
                expected: file_bytes,
                found: len as u64,
            });
        }
        let flags = u32_in(b, field::FLAGS);
        if flags & !FLAG_TIED != 0 {
            return Err(Error::BadConfig {
                field: "flags",
                reason: "has unknown bits set",
            });
        }
        let config = Config {
            dim: u32_in(b, field::DIM),
            hidden_dim: u32_in(b, field::HIDDEN_DIM),
            n_layers: u32_in(b, field::N_LAYERS),
            n_heads: u32_in(b, field::N_HEADS),
            n_kv_heads: u32_in(b, field::N_KV_HEADS),
            vocab_size: u32_in(b, field::VOCAB_SIZE),
            max_seq_len: u32_in(b, field::MAX_SEQ_LEN),
            rope_theta: f32_in(b, field::ROPE_THETA),
            norm_eps: f32_in(b, field::NORM_EPS),
            tied_classifier: flags & FLAG_TIED != 0,
        };
        config.validate()?;
        if header_bytes < field::TOKENIZER + 4
            || !header_bytes.is_multiple_of(4)
            || header_bytes > len
        {
            return Err(Error::Truncated {
                section: Section::Header,
                needed: header_bytes.max(field::TOKENIZER + 4) as u64,
                available: len as u64,
            });
        }
        // The header checksum first: a flipped bit anywhere in the header is
        // then reported as what it is, not as whatever field it landed in.
        let stored = u32_at(b, header_bytes - 4);
        let computed = crc32c(&b[..header_bytes - 4]);
        if stored != computed {
            return Err(Error::HeaderChecksum { stored, computed });
        }
        // From here on the header is bounded by `header_bytes - 4`.
        let header = &b[..header_bytes - 4];
        let tokenizer = read_tokenizer_layout(header, field::TOKENIZER, config.vocab_size)?;
        validate_tokenizer(header, &tokenizer, config.vocab_size)?;

        let n_tensors = u32_in(b, field::N_TENSORS);
        if n_tensors != config.tensor_count() {
            return Err(Error::TensorCount {
                expected: config.tensor_count(),
                found: n_tensors,
            });
        }
        // At most 2 + 9 * 1024 entries of 80 bytes: no overflow.
        let directory = tokenizer.end;
        let dir_end = directory + n_tensors as usize * DIR_ENTRY_BYTES;
        if dir_end > header.len() {
            return Err(Error::Truncated {
                section: Section::Directory,
                needed: dir_end as u64,
                available: header.len() as u64,
            });
        }
        let n_metadata = u32_in(b, field::N_METADATA);
        let metadata = dir_end;
        let meta_end = validate_metadata(header, metadata, n_metadata)?;
        if meta_end.next_multiple_of(4) != header.len() {
            return Err(Error::BadMetadata { index: n_metadata });
        }
        if let Some(i) = header[meta_end..].iter().position(|&x| x != 0) {
            return Err(Error::NonZeroPadding {
                offset: (meta_end + i) as u64,
            });
        }
        validate_tensors(b, directory, &config, header_bytes)?;
        Ok(ModelFile {
            bytes,
            config,
            tokenizer,
            directory,
            metadata,
            n_metadata,
            header_bytes,
        })
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// Bytes of the header, including its checksum (tensor data starts at
    /// the next multiple of 64).
    pub fn header_bytes(&self) -> usize {
        self.header_bytes
    }

    /// The vocabulary.
    pub fn vocab(&self) -> Vocab<'_> {
        Vocab::over(self.bytes.as_ref(), &self.tokenizer, self.config.vocab_size)
    }

    /// The bytes of the tokenizer section, as [`write_tokenizer`] writes them
    /// and [`Vocab::from_section`] reads them.
    pub fn tokenizer_section(&self) -> &[u8] {
        &self.bytes.as_ref()[field::TOKENIZER..self.tokenizer.end]
    }

    /// Number of tensors in the directory.
    pub fn tensor_count(&self) -> u32 {
        self.config.tensor_count()
    }

    /// Directory entry `index`, or `None` past the end.
    pub fn tensor(&self, index: u32) -> Option<TensorInfo<'_>> {
        canonical_tensor(&self.config, index).map(|t| self.entry(&t))
    }

    /// Every directory entry, in order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo<'_>> {
        canonical_tensors(&self.config).map(move |t| self.entry(&t))
    }

    /// The directory entry of canonical tensor `t`, which `new_checked`
    /// validated.
    fn entry(&self, t: &CanonicalTensor) -> TensorInfo<'_> {
        let b = self.bytes.as_ref();
        let raw = RawEntry::read(b, self.directory, t.index);
        let matrix = raw.validated_matrix(b);
        TensorInfo {
            index: t.index,
            role: t.role,
            name: validated_str(raw.trimmed_name()),
            dtype: matrix.dtype,
            ndim: t.ndim(),
            shape: t.shape,
            offset: raw.offset,
            crc32c: raw.crc32c,
            data: matrix.data,
        }
    }

    /// The matrix of directory entry `index` (below `tensor_count`, as
    /// every caller computes it from the config).
    fn matrix(&self, index: u32) -> Matrix<'_> {
        let b = self.bytes.as_ref();
        RawEntry::read(b, self.directory, index).validated_matrix(b)
    }

    /// The token embedding, `vocab_size × dim`.
    pub fn token_embedding(&self) -> Matrix<'_> {
        self.matrix(0)
    }

    /// The weights of block `layer`, or `None` for `layer >= n_layers`.
    pub fn layer(&self, layer: usize) -> Option<LayerWeights<'_>> {
        let layer = u32::try_from(layer).ok()?;
        let m = |part| {
            canonical_index(&self.config, TensorRole::Layer { layer, part }).map(|i| self.matrix(i))
        };
        Some(LayerWeights {
            attn_norm: m(LayerPart::AttnNorm)?,
            wq: m(LayerPart::Wq)?,
            wk: m(LayerPart::Wk)?,
            wv: m(LayerPart::Wv)?,
            wo: m(LayerPart::Wo)?,
            ffn_norm: m(LayerPart::FfnNorm)?,
            w1: m(LayerPart::W1)?,
            w2: m(LayerPart::W2)?,
            w3: m(LayerPart::W3)?,
        })
    }

    /// The weights of every block, in order.
    pub fn layers(&self) -> impl Iterator<Item = LayerWeights<'_>> {
        (0..self.config.n_layers as usize).filter_map(move |l| self.layer(l))
    }

    /// The final RMSNorm gain, `1 × dim`, F32.
    pub fn final_norm(&self) -> Matrix<'_> {
        self.matrix(1 + TENSORS_PER_LAYER * self.config.n_layers)
    }

    /// The classifier, `vocab_size × dim` (the token embedding when tied).
    pub fn classifier(&self) -> Matrix<'_> {
        match canonical_index(&self.config, TensorRole::Classifier) {
            Some(index) => self.matrix(index),
            None => self.token_embedding(),
        }
    }

    /// The key/value metadata, in file order.
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata {
            bytes: self.bytes.as_ref(),
            pos: self.metadata,
            left: self.n_metadata,
        }
    }

    /// The value of metadata `key`, if present.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata().find(|&(k, _)| k == key).map(|(_, v)| v)
    }

    /// Reads every byte: checks each tensor's CRC32C, that an intact tensor
    /// holds no NaN or infinity, and that all padding is zero. Calls
    /// `report` with each problem found and returns how many there
    /// were, so a tool can list them all.
    pub fn verify_each(&self, mut report: impl FnMut(Error)) -> usize {
        let b = self.bytes.as_ref();
        let mut problems = 0;
        let mut padding_start = self.header_bytes;
        for t in self.tensors() {
            let pad = &b[padding_start..t.offset as usize];
            if let Some(i) = pad.iter().position(|&x| x != 0) {
                report(Error::NonZeroPadding {
                    offset: (padding_start + i) as u64,
                });
                problems += 1;
            }
            let computed = crc32c(t.data);
            if computed != t.crc32c {
                report(Error::TensorChecksum {
                    index: t.index,
                    stored: t.crc32c,
                    computed,
                });
                problems += 1;
            } else if let Some(element) = t.dtype.first_non_finite(t.data) {
                // Intact bytes that still cannot compute: NaN or inf weights.
                report(Error::NonFiniteWeight {
                    index: t.index,
                    element: element as u64,
                });
                problems += 1;
            }
            padding_start = t.offset as usize + t.data.len();
        }
        problems
    }

    /// Reads every byte and returns the first problem, if any.
    pub fn verify(&self) -> Result<(), Error> {
        let mut first = None;
        self.verify_each(|e| {
            first.get_or_insert(e);
        });
        first.map_or(Ok(()), Err)
    }
}

/// Checks every directory entry against the canonical table, each tensor's
/// data right after the previous one's (at the next multiple of 64), and that
/// the last one ends the file.
fn validate_tensors(
    b: &[u8],
    directory: usize,
    config: &Config,
    header_bytes: usize,
) -> Result<(), Error> {
    let overflow = Error::FileSize {
        expected: u64::MAX,
        found: b.len() as u64,
    };
    let mut end = header_bytes;
    for want in canonical_tensors(config) {
        let at = next_tensor_offset(end).ok_or(overflow)?;
        (_, end) = RawEntry::read(b, directory, want.index).check(&want, at, b.len())?;
    }
    if end != b.len() {
        return Err(Error::FileSize {
            expected: end as u64,
            found: b.len() as u64,
        });
    }
    Ok(())
}

/// The layout of the tokenizer section at `base` in `header`, which must hold
/// all of it; `vocab_size` is at most `MAX_VOCAB`.
fn read_tokenizer_layout(
    header: &[u8],
    base: usize,
    vocab_size: u32,
) -> Result<TokenizerLayout, Error> {
    let trunc = |needed: usize| Error::Truncated {
        section: Section::Tokenizer,
        needed: needed as u64,
        available: header.len() as u64,
    };
    if base + tok_field::OFFSETS > header.len() {
        return Err(trunc(base + tok_field::OFFSETS));
    }
    let fixed = &header[base..base + tok_field::OFFSETS];
    let kind = match u32_in(fixed, tok_field::KIND) {
        0 => TokenizerKind::Char,
        1 => TokenizerKind::Bpe,
        _ => {
            return Err(Error::BadTokenizer {
                reason: "unknown tokenizer kind",
                index: 0,
            })
        }
    };
    let v = vocab_size as usize; // at most 2^22, so these cannot overflow
    let offsets = base + tok_field::OFFSETS;
    let scores = offsets + 4 * (v + 1);
    let sorted = scores + 4 * v;
    let blob = sorted + 4 * v;
    let blob_bytes = u32_in(fixed, tok_field::BLOB_BYTES) as usize;
    let end = blob
        .checked_add(blob_bytes)
        .and_then(|n| n.checked_next_multiple_of(4))
        .ok_or(trunc(usize::MAX))?;
    if end > header.len() {
        return Err(trunc(end));
    }
    Ok(TokenizerLayout {
        kind,
        bos: u32_in(fixed, tok_field::BOS),
        eos: u32_in(fixed, tok_field::EOS),
        max_piece_len: u32_in(fixed, tok_field::MAX_PIECE_LEN),
        offsets,
        scores,
        sorted,
        blob,
        blob_bytes,
        end,
    })
}

fn validate_tokenizer(header: &[u8], t: &TokenizerLayout, vocab_size: u32) -> Result<(), Error> {
    let bad = |reason, index| Err(Error::BadTokenizer { reason, index });
    for (id, name) in [
        (t.bos, "BOS id is outside the vocabulary"),
        (t.eos, "EOS id is outside the vocabulary"),
    ] {
        if id != NO_TOKEN && id >= vocab_size {
            return bad(name, id);
        }
    }
    let v = vocab_size as usize;
    let offset = |i: usize| u32_at(header, t.offsets + 4 * i) as usize;
    if offset(0) != 0 || offset(v) != t.blob_bytes {
        return bad("piece offsets do not span the piece bytes", 0);
    }
    let mut longest = 0;
    for i in 0..v {
        let (start, end) = (offset(i), offset(i + 1));
        if end < start || end > t.blob_bytes {
            return bad("piece offsets are out of order or out of range", i as u32);
        }
        longest = longest.max(end - start);
        if !f32::from_bits(u32_at(header, t.scores + 4 * i)).is_finite() {
            return bad("score is not finite", i as u32);
        }
        if t.kind == TokenizerKind::Char {
            let piece = &header[t.blob + start..t.blob + end];
            let mut chars = core::str::from_utf8(piece).map(|s| s.chars()).ok();
            let one_char = chars
                .as_mut()
                .is_some_and(|c| c.next().is_some() && c.next().is_none());
            if !one_char {
                return bad(
                    "character-level piece is not exactly one character",
                    i as u32,
                );
            }
        }
    }
    if longest != t.max_piece_len as usize {
        return bad("max_piece_len is not the longest piece", 0);
    }
    if let Some(i) = header[t.blob + t.blob_bytes..t.end]
        .iter()
        .position(|&x| x != 0)
    {
        return Err(Error::NonZeroPadding {
            offset: (t.blob + t.blob_bytes + i) as u64,
        });
    }
    // The sorted index must list ids in (piece, id) order, so lookups can
    // binary-search it.
    let piece = |id: usize| &header[t.blob + offset(id)..t.blob + offset(id + 1)];
    let mut prev: Option<usize> = None;
    for i in 0..v {
        let id = u32_at(header, t.sorted + 4 * i) as usize;
        if id >= v {
            return bad("sorted index holds an id outside the vocabulary", i as u32);
        }
        if let Some(p) = prev {
            if (piece(p), p) >= (piece(id), id) {
                return bad("sorted index is not in (piece, id) order", i as u32);
            }
        }
        prev = Some(id);
    }
    Ok(())
}

/// Validates `n` metadata entries from `start` and returns where they end.
fn validate_metadata(header: &[u8], start: usize, n: u32) -> Result<usize, Error> {
    let mut pos = start;
    for index in 0..n {
        for _ in 0..2 {
            let bad = Error::BadMetadata { index };
            let body = pos + 4; // `pos` is within the header: no overflow
            if body > header.len() {
                return Err(bad);
            }
            let len = u32_at(header, pos);
            if len > MAX_METADATA_LEN {
                return Err(bad);
            }
            let end = body + len as usize; // a slice is below isize::MAX bytes
            if end > header.len() {
                return Err(bad);
            }
            if core::str::from_utf8(&header[body..end]).is_err() {
                return Err(bad);
            }
            pos = end;
        }
    }
    Ok(pos)
}

/// Iterator over metadata `(key, value)` pairs.
#[derive(Clone, Debug)]
pub struct Metadata<'a> {
    bytes: &'a [u8],
    pos: usize,
    left: u32,
}

impl<'a> Iterator for Metadata<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut take = || {
            let body = self.pos + 4;
            let end = body + u32_at(self.bytes, self.pos) as usize;
            self.pos = end;
            validated_str(&self.bytes[body..end])
        };
        let key = take();
        Some((key, take()))
    }
}

/// The vocabulary of a model file: pieces, scores, special ids and a sorted
/// index for lookups, all borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct Vocab<'a> {
    kind: TokenizerKind,
    bos: u32,
    eos: u32,
    max_piece_len: u32,
    size: u32,
    offsets: &'a [u8],
    scores: &'a [u8],
    sorted: &'a [u8],
    blob: &'a [u8],
}

impl<'a> Vocab<'a> {
    /// A vocabulary from a standalone tokenizer section: the bytes
    /// [`write_tokenizer`] writes and a .klt file stores at offset 72, with
    /// the `vocab_size` a file keeps in its header. It is checked by the same
    /// rules as in a file, and must end exactly where `section` ends. So a
    /// program with a vocabulary but no model yet (the trainer) encodes and
    /// decodes with the code that will read its model file.
    ///
    /// A bad section is [`Error::BadTokenizer`], [`Error::Truncated`] (whose
    /// `needed` then counts from the section's start) or
    /// [`Error::NonZeroPadding`]; a `vocab_size` of 0 or above the limit is
    /// [`Error::BadConfig`].
    pub fn from_section(section: &'a [u8], vocab_size: u32) -> Result<Vocab<'a>, Error> {
        check_vocab_size(vocab_size as usize)?;
        let t = read_tokenizer_layout(section, 0, vocab_size)?;
        validate_tokenizer(section, &t, vocab_size)?;
        if t.end != section.len() {
            return Err(Error::BadTokenizer {
                reason: "bytes follow the tokenizer section",
                index: 0,
            });
        }
        Ok(Vocab::over(section, &t, vocab_size))
    }

    /// The vocabulary laid out as `t` in `bytes`, checked beforehand.
    fn over(bytes: &'a [u8], t: &TokenizerLayout, size: u32) -> Vocab<'a> {
        Vocab {
            kind: t.kind,
            bos: t.bos,
            eos: t.eos,
            max_piece_len: t.max_piece_len,
            size,
            offsets: &bytes[t.offsets..t.scores],
            scores: &bytes[t.scores..t.sorted],
            sorted: &bytes[t.sorted..t.blob],
            blob: &bytes[t.blob..t.blob + t.blob_bytes],
        }
    }

    /// How text becomes tokens.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Number of pieces.
    pub fn len(&self) -> u32 {
        self.size
    }

    /// Whether the vocabulary is empty (never, for a validated file).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The beginning-of-sequence id, if the vocabulary has one.
    pub fn bos(&self) -> Option<u32> {
        (self.bos != NO_TOKEN).then_some(self.bos)
    }

    /// The end-of-sequence id, if the vocabulary has one.
    pub fn eos(&self) -> Option<u32> {
        (self.eos != NO_TOKEN).then_some(self.eos)
    }

    /// Length in bytes of the longest piece.
    pub fn max_piece_len(&self) -> usize {
        self.max_piece_len as usize
    }

    /// The bytes of piece `id` (empty for ids outside the vocabulary).
    pub fn piece(&self, id: u32) -> &'a [u8] {
        if id >= self.size {
            return &[];
        }
        let start = u32_at(self.offsets, 4 * id as usize) as usize;
        let end = u32_at(self.offsets, 4 * id as usize + 4) as usize;
        &self.blob[start..end]
    }

    /// The merge score of piece `id` (0 for ids outside the vocabulary).
    pub fn score(&self, id: u32) -> f32 {
        if id >= self.size {
            return 0.0;
        }
        f32::from_bits(u32_at(self.scores, 4 * id as usize))
    }

    /// The smallest id whose piece is exactly `bytes`, by binary search.
    pub fn find(&self, bytes: &[u8]) -> Option<u32> {
        let sorted_id = |i: usize| u32_at(self.sorted, 4 * i);
        let (mut lo, mut hi) = (0usize, self.size as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.piece(sorted_id(mid)) < bytes {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo < self.size as usize && self.piece(sorted_id(lo)) == bytes).then(|| sorted_id(lo))
    }
}

/// Where the writer puts bytes: a file, a socket, a caller's buffer, a hasher.
pub trait Sink {
    /// What a failed write reports.
    type Error;
    /// Writes all of `bytes` or fails.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// A [`Sink`] into a caller-provided byte buffer.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceSink<'a> {
    /// Writes will fill `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceSink { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Sink for SliceSink<'_> {
    type Error = Error;
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.len + bytes.len();
        let available = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or(Error::BufferTooSmall {
                needed: end,
                available,
            })?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// A [`Sink`] over any `std::io::Write`.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct IoSink<W: std::io::Write>(pub W);

#[cfg(feature = "std")]
impl<W: std::io::Write> Sink for IoSink<W> {
    type Error = std::io::Error;
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), std::io::Error> {
        self.0.write_all(bytes)
    }
}

/// The vocabulary to write.
#[derive(Clone, Copy, Debug)]
pub struct TokenizerSpec<'a> {
    /// How text becomes tokens.
    pub kind: TokenizerKind,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// One byte string per id.
    pub pieces: &'a [&'a [u8]],
    /// One merge score per id (zeros for character-level).
    pub scores: &'a [f32],
    /// The ids in `(piece, id)` order; [`sort_pieces`] fills it.
    pub sorted: &'a [u32],
}

/// Fills `out` (one slot per piece) with the ids in `(piece, id)` order, the
/// sorted index a [`TokenizerSpec`] needs.
pub fn sort_pieces(pieces: &[&[u8]], out: &mut [u32]) {
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = i as u32;
    }
    out.sort_unstable_by(|&a, &b| {
        let piece = |id: u32| pieces.get(id as usize).copied().unwrap_or(&[]);
        (piece(a), a).cmp(&(piece(b), b))
    });
}

/// One tensor to write, in the canonical order (see `docs/FORMAT.md`).
#[derive(Clone, Copy, Debug)]
pub struct TensorSpec<'a> {
    /// Canonical name, e.g. `layers.0.wq`.
    pub name: &'a str,
    /// Element type of `data`.
    pub dtype: Dtype,
    /// `[len]` for norm gains, `[rows, cols]` for matrices.
    pub shape: &'a [u32],
    /// Little-endian element bytes.
    pub data: &'a [u8],
}

/// A write failed: the input was inconsistent, or the sink failed.
#[derive(Debug)]
pub enum WriteError<E> {
    /// The model described is not one the format can hold.
    Invalid(Error),
    /// The sink reported an error.
    Sink(E),
}

impl<E> From<Error> for WriteError<E> {
    fn from(e: Error) -> Self {
        WriteError::Invalid(e)
    }
}

impl<E: core::fmt::Display> core::fmt::Display for WriteError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WriteError::Invalid(e) => write!(f, "{e}"),
            WriteError::Sink(e) => write!(f, "write failed: {e}"),
        }
    }
}

/// Forwards writes to a sink and feeds them to a checksum.
struct Checksummed<'s, S: Sink> {
    sink: &'s mut S,
    crc: Crc32c,
    written: usize,
}

impl<S: Sink> Checksummed<'_, S> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError<S::Error>> {
        self.crc.update(bytes);
        self.written += bytes.len();
        self.sink.write_all(bytes).map_err(WriteError::Sink)
    }
    fn u32(&mut self, v: u32) -> Result<(), WriteError<S::Error>> {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), WriteError<S::Error>> {
        self.put(&v.to_le_bytes())
    }
    /// Padding: never more than 63 bytes.
    fn zeros(&mut self, n: usize) -> Result<(), WriteError<S::Error>> {
        self.put(&[0; TENSOR_ALIGN][..n])
    }
}

/// Writes a complete .klt file to `sink` and returns its length in bytes.
/// Checks the input against the same rules the reader enforces, so whatever
/// it writes opens with [`ModelFile::new_checked`].
pub fn write_model<S: Sink>(
    sink: &mut S,
    config: &Config,
    tokenizer: &TokenizerSpec<'_>,
    tensors: &[TensorSpec<'_>],
    metadata: &[(&str, &str)],
) -> Result<u64, WriteError<S::Error>> {
    config.validate()?;
    let invalid = |reason| WriteError::Invalid(Error::InvalidInput { reason });
    let too_large = || invalid("the file would be larger than this machine can address");
    let v = config.vocab_size as usize;
    let sizes = tokenizer_sizes(tokenizer, v)?;
    if tensors.len() != config.tensor_count() as usize {
        return Err(Error::TensorCount {
            expected: config.tensor_count(),
            found: tensors.len() as u32,
        }
        .into());
    }
    let mut meta_bytes = 0usize;
    for (k, val) in metadata {
        if k.len() > MAX_METADATA_LEN as usize || val.len() > MAX_METADATA_LEN as usize {
            return Err(invalid("metadata key or value longer than 65536 bytes"));
        }
        meta_bytes = meta_bytes
            .checked_add(8 + k.len() + val.len())
            .ok_or_else(|| invalid("header larger than 4 GiB"))?;
    }
    // The tokenizer section is below 2^32 bytes (see `tokenizer_sizes`):
    // only the metadata can make the header too large.
    let header_bytes = [
        DIR_ENTRY_BYTES * tensors.len(),
        meta_bytes.next_multiple_of(4),
        4,
    ]
    .iter()
    .try_fold(field::TOKENIZER + sizes.section_bytes, |sum, &n| {
        sum.checked_add(n)
    })
    .filter(|&n| n <= u32::MAX as usize)
    .ok_or_else(|| invalid("header larger than 4 GiB"))?;

    // Check every tensor against the canonical table, and place it: this
    // pass does the checked arithmetic; the passes below repeat it with
    // `next_tensor_offset`, which then cannot fail.
    let mut file_bytes = header_bytes;
    for (want, t) in canonical_tensors(config).zip(tensors) {
        let index = want.index;
        if !want.role.name_is(t.name.as_bytes()) {
            return Err(Error::TensorName { index }.into());
        }
        if want.role.is_norm() && t.dtype != Dtype::F32 {
            return Err(Error::TensorDtype {
                index,
                code: t.dtype as u32,
            }
            .into());
        }
        let found = match *t.shape {
            [n] if want.role.is_norm() => [1, n],
            [r, c] if !want.role.is_norm() => [r, c],
            _ => [0, 0],
        };
        if found != want.shape {
            return Err(Error::TensorShape {
                index,
                expected: want.shape,
                found,
            }
            .into());
        }
        if Matrix::new(t.dtype, found[0] as usize, found[1] as usize, t.data).is_none() {
            return Err(Error::TensorPlacement {
                index,
                reason: "data length disagrees with dtype and shape",
            }
            .into());
        }
        file_bytes = next_tensor_offset(file_bytes)
            .and_then(|at| at.checked_add(t.data.len()))
            .ok_or_else(too_large)?;
    }

    let mut w = Checksummed {
        sink,
        crc: Crc32c::new(),
        written: 0,
    };
    w.put(&MAGIC)?;
    w.u32(VERSION)?;
    w.u32(header_bytes as u32)?;
    w.u64(file_bytes as u64)?;
    for x in [
        config.dim,
        config.hidden_dim,
        config.n_layers,
        config.n_heads,
        config.n_kv_heads,
    ] {
        w.u32(x)?;
    }
    w.u32(config.vocab_size)?;
    w.u32(config.max_seq_len)?;
    w.u32(config.rope_theta.to_bits())?;
    w.u32(config.norm_eps.to_bits())?;
    w.u32(if config.tied_classifier { FLAG_TIED } else { 0 })?;
    w.u32(tensors.len() as u32)?;
    w.u32(metadata.len() as u32)?;

    put_tokenizer(&mut w, tokenizer, &sizes)?;

    // Directory.
    let mut end = header_bytes;
    for (want, t) in canonical_tensors(config).zip(tensors) {
        let offset = next_tensor_offset(end).ok_or_else(too_large)?;
        end = offset + t.data.len();
        let mut name = [0u8; NAME_BYTES];
        name[..t.name.len()].copy_from_slice(t.name.as_bytes());
        w.put(&name)?;
        w.u32(t.dtype as u32)?;
        w.u32(want.ndim())?;
        w.u32(want.shape[0])?;
        w.u32(want.shape[1])?;
        w.u64(offset as u64)?;
        w.u64(t.data.len() as u64)?;
        w.u32(crc32c(t.data))?;
        w.u32(0)?;
    }

    // Metadata.
    for (k, val) in metadata {
        w.u32(k.len() as u32)?;
        w.put(k.as_bytes())?;
        w.u32(val.len() as u32)?;
        w.put(val.as_bytes())?;
    }
    w.zeros(meta_bytes.next_multiple_of(4) - meta_bytes)?;
    let header_crc = w.crc.finish();
    w.u32(header_crc)?;
    debug_assert_eq!(w.written, header_bytes);

    // Tensor data, each on a 64-byte boundary.
    for t in tensors {
        let offset = next_tensor_offset(w.written).ok_or_else(too_large)?;
        w.zeros(offset - w.written)?;
        w.put(t.data)?;
    }
    debug_assert_eq!(w.written, file_bytes);
    Ok(w.written as u64)
}

/// Writes `tokenizer` alone as a tokenizer section: the bytes a .klt file
/// stores at offset 72 (`docs/FORMAT.md`), by the code [`write_model`]
/// writes them with, for [`Vocab::from_section`] to read. Returns the bytes
/// written. The vocabulary size is the number of pieces, which must be
/// between 1 and `MAX_VOCAB` ([`Error::BadConfig`] otherwise).
pub fn write_tokenizer<S: Sink>(
    sink: &mut S,
    tokenizer: &TokenizerSpec<'_>,
) -> Result<u64, WriteError<S::Error>> {
    let v = tokenizer.pieces.len();
    check_vocab_size(v)?;
    let sizes = tokenizer_sizes(tokenizer, v)?;
    let mut w = Checksummed {
        sink,
        crc: Crc32c::new(),
        written: 0,
    };
    put_tokenizer(&mut w, tokenizer, &sizes)?;
    debug_assert_eq!(w.written, sizes.section_bytes);
    Ok(w.written as u64)
}

/// The same bound on `vocab_size` as `Config::validate`, for a tokenizer
/// section without a config.
fn check_vocab_size(v: usize) -> Result<(), Error> {
    if v == 0 || v > crate::config::limits::MAX_VOCAB as usize {
        return Err(Error::BadConfig {
            field: "vocab_size",
            reason: "must be between 1 and 4194304",
        });
    }
    Ok(())
}

/// What the fixed fields of a tokenizer section say about its pieces, and
/// the section's length.
struct TokenizerSizes {
    blob_bytes: usize,
    max_piece_len: usize,
    section_bytes: usize,
}

/// Checks `tokenizer` has `v` entries everywhere and pieces the format can
/// hold, and sizes its section.
fn tokenizer_sizes(tokenizer: &TokenizerSpec<'_>, v: usize) -> Result<TokenizerSizes, Error> {
    let invalid = |reason| Error::InvalidInput { reason };
    if tokenizer.pieces.len() != v || tokenizer.scores.len() != v || tokenizer.sorted.len() != v {
        return Err(invalid(
            "tokenizer pieces, scores and sorted index must each have vocab_size entries",
        ));
    }
    let blob_bytes = tokenizer
        .pieces
        .iter()
        .try_fold(0usize, |sum, p| sum.checked_add(p.len()))
        .filter(|&n| n <= u32::MAX as usize / 2)
        .ok_or_else(|| invalid("tokenizer pieces are too large"))?;
    // v is at most 2^22 (checked by the caller) and the blob below 2^31:
    // no overflow, and the section is below 2^32 bytes.
    let section_bytes = (tok_field::OFFSETS + 4 * (v + 1) + 8 * v + blob_bytes).next_multiple_of(4);
    Ok(TokenizerSizes {
        blob_bytes,
        max_piece_len: tokenizer.pieces.iter().fold(0, |m, p| m.max(p.len())),
        section_bytes,
    })
}

/// Writes the tokenizer section of `tokenizer`, sized by `tokenizer_sizes`.
fn put_tokenizer<S: Sink>(
    w: &mut Checksummed<'_, S>,
    tokenizer: &TokenizerSpec<'_>,
    sizes: &TokenizerSizes,
) -> Result<(), WriteError<S::Error>> {
    w.u32(tokenizer.kind as u32)?;
    w.u32(tokenizer.bos.unwrap_or(NO_TOKEN))?;
    w.u32(tokenizer.eos.unwrap_or(NO_TOKEN))?;
    w.u32(sizes.max_piece_len as u32)?;
    w.u32(sizes.blob_bytes as u32)?;
    let mut at = 0u32;
    w.u32(0)?;
    for p in tokenizer.pieces {
        at += p.len() as u32;
        w.u32(at)?;
    }
    for s in tokenizer.scores {
        w.u32(s.to_bits())?;
    }
    for &id in tokenizer.sorted {
        w.u32(id)?;
    }
    for p in tokenizer.pieces {
        w.put(p)?;
    }
    w.zeros(sizes.blob_bytes.next_multiple_of(4) - sizes.blob_bytes)
}

/// Where the data of the tensor after one ending at `end` starts.
fn next_tensor_offset(end: usize) -> Option<usize> {
    end.checked_next_multiple_of(TENSOR_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each section's fields follow each other without gap or overlap, so
    /// their widths are the ones `docs/FORMAT.md` gives.
    fn tile(fields: &[Field], from: usize, to: usize) {
        let mut at = from;
        for f in fields {
            assert_eq!(
                f.start, at,
                "{f:?} does not start where the previous field ends"
            );
            at = f.end;
        }
        assert_eq!(at, to);
    }

    #[test]
    fn fields_tile_their_sections() {
        use field::*;
        tile(
            &[
                MAGIC,
                VERSION,
                HEADER_BYTES,
                FILE_BYTES,
                DIM,
                HIDDEN_DIM,
                N_LAYERS,
                N_HEADS,
                N_KV_HEADS,
                VOCAB_SIZE,
                MAX_SEQ_LEN,
                ROPE_THETA,
                NORM_EPS,
                FLAGS,
                N_TENSORS,
                N_METADATA,
            ],
            0,
            TOKENIZER,
        );
        use tok_field::*;
        tile(&[KIND, BOS, EOS, MAX_PIECE_LEN, BLOB_BYTES], 0, OFFSETS);
        use dir_field::*;
        tile(
            &[NAME, DTYPE, NDIM, ROWS, COLS, OFFSET, BYTES, CRC, RESERVED],
            0,
            DIR_ENTRY_BYTES,
        );
    }
}
