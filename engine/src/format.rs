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

use crate::canonical::{canonical_tensors, TENSORS_PER_LAYER};
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

// Fixed header fields (byte offsets from the start of the file).
mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_BYTES: usize = 12;
    pub const FILE_BYTES: usize = 16;
    pub const DIM: usize = 24;
    pub const HIDDEN_DIM: usize = 28;
    pub const N_LAYERS: usize = 32;
    pub const N_HEADS: usize = 36;
    pub const N_KV_HEADS: usize = 40;
    pub const VOCAB_SIZE: usize = 44;
    pub const MAX_SEQ_LEN: usize = 48;
    pub const ROPE_THETA: usize = 52;
    pub const NORM_EPS: usize = 56;
    pub const FLAGS: usize = 60;
    pub const N_TENSORS: usize = 64;
    pub const N_METADATA: usize = 68;
    /// The tokenizer section starts here.
    pub const TOKENIZER: usize = 72;
}

// Tokenizer section fields (offsets from its start).
mod tok_field {
    pub const KIND: usize = 0;
    pub const BOS: usize = 4;
    pub const EOS: usize = 8;
    pub const MAX_PIECE_LEN: usize = 12;
    pub const BLOB_BYTES: usize = 16;
    /// `vocab_size + 1` u32 piece offsets start here.
    pub const OFFSETS: usize = 20;
}

// Directory entry fields (offsets from the entry's start).
mod dir_field {
    pub const NAME: usize = 0;
    pub const DTYPE: usize = 40;
    pub const NDIM: usize = 44;
    pub const ROWS: usize = 48;
    pub const COLS: usize = 52;
    pub const OFFSET: usize = 56;
    pub const BYTES: usize = 64;
    pub const CRC: usize = 72;
    pub const RESERVED: usize = 76;
}

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

fn le_u32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off.saturating_add(4)) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    le_u32(b, off) as u64 | (le_u32(b, off + 4) as u64) << 32
}

fn le_f32(b: &[u8], off: usize) -> f32 {
    f32::from_bits(le_u32(b, off))
}

/// Rounds `n` up to a multiple of `align` (a power of two), or `None` on overflow.
fn align_up(n: usize, align: usize) -> Option<usize> {
    Some(n.checked_add(align - 1)? & !(align - 1))
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
        let need = |section, needed: usize| -> Result<(), Error> {
            if needed > len {
                Err(Error::Truncated {
                    section,
                    needed: needed as u64,
                    available: len as u64,
                })
            } else {
                Ok(())
            }
        };
        need(Section::Header, field::TOKENIZER)?;
        if b[field::MAGIC..field::MAGIC + 8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = le_u32(b, field::VERSION);
        if version != VERSION {
            return Err(Error::UnsupportedVersion { found: version });
        }
        let header_bytes = le_u32(b, field::HEADER_BYTES) as usize;
        let file_bytes = le_u64(b, field::FILE_BYTES);
        if file_bytes != len as u64 {
            return Err(Error::FileSize {
                expected: file_bytes,
                found: len as u64,
            });
        }
        let flags = le_u32(b, field::FLAGS);
        if flags & !FLAG_TIED != 0 {
            return Err(Error::BadConfig {
                field: "flags",
                reason: "has unknown bits set",
            });
        }
        let config = Config {
            dim: le_u32(b, field::DIM),
            hidden_dim: le_u32(b, field::HIDDEN_DIM),
            n_layers: le_u32(b, field::N_LAYERS),
            n_heads: le_u32(b, field::N_HEADS),
            n_kv_heads: le_u32(b, field::N_KV_HEADS),
            vocab_size: le_u32(b, field::VOCAB_SIZE),
            max_seq_len: le_u32(b, field::MAX_SEQ_LEN),
            rope_theta: le_f32(b, field::ROPE_THETA),
            norm_eps: le_f32(b, field::NORM_EPS),
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
        let stored = le_u32(b, header_bytes - 4);
        let computed = crc32c(&b[..header_bytes - 4]);
        if stored != computed {
            return Err(Error::HeaderChecksum { stored, computed });
        }
        // From here on the header is bounded by `header_bytes - 4`.
        let header = &b[..header_bytes - 4];
        let tokenizer = read_tokenizer_layout(header, &config)?;
        validate_tokenizer(header, &tokenizer, config.vocab_size)?;

        let n_tensors = le_u32(b, field::N_TENSORS);
        if n_tensors != config.tensor_count() {
            return Err(Error::TensorCount {
                expected: config.tensor_count(),
                found: n_tensors,
            });
        }
        let directory = tokenizer.end;
        let dir_end = (n_tensors as usize)
            .checked_mul(DIR_ENTRY_BYTES)
            .and_then(|n| n.checked_add(directory))
            .ok_or(Error::Truncated {
                section: Section::Directory,
                needed: u64::MAX,
                available: len as u64,
            })?;
        need(Section::Directory, dir_end)?;
        if dir_end > header.len() {
            return Err(Error::Truncated {
                section: Section::Directory,
                needed: dir_end as u64,
                available: header.len() as u64,
            });
        }
        let n_metadata = le_u32(b, field::N_METADATA);
        let metadata = dir_end;
        let meta_end = validate_metadata(header, metadata, n_metadata)?;
        let padded_end = align_up(meta_end, 4).unwrap_or(usize::MAX);
        if padded_end != header.len() {
            return Err(Error::BadMetadata { index: n_metadata });
        }
        if let Some(i) = header[meta_end..].iter().position(|&x| x != 0) {
            return Err(Error::NonZeroPadding {
                offset: (meta_end + i) as u64,
            });
        }

        let file = ModelFile {
            bytes,
            config,
            tokenizer,
            directory,
            metadata,
            n_metadata,
            header_bytes,
        };
        file.validate_tensors()?;
        Ok(file)
    }

    /// Checks every directory entry: name, dtype, shape, size and placement.
    fn validate_tensors(&self) -> Result<(), Error> {
        let b = self.bytes.as_ref();
        let mut expected_offset = align_up(self.header_bytes, TENSOR_ALIGN).unwrap_or(usize::MAX);
        for want in canonical_tensors(&self.config) {
            let index = want.index;
            let e = self.directory + index as usize * DIR_ENTRY_BYTES;
            let raw_name = &b[e + dir_field::NAME..e + dir_field::NAME + NAME_BYTES];
            let name_len = raw_name.iter().position(|&c| c == 0).unwrap_or(NAME_BYTES);
            if !want.role.name_is(&raw_name[..name_len])
                || raw_name[name_len..].iter().any(|&c| c != 0)
            {
                return Err(Error::TensorName { index });
            }
            let code = le_u32(b, e + dir_field::DTYPE);
            let dtype = Dtype::from_code(code).ok_or(Error::TensorDtype { index, code })?;
            if want.role.is_norm() && dtype != Dtype::F32 {
                return Err(Error::TensorDtype { index, code });
            }
            let ndim = le_u32(b, e + dir_field::NDIM);
            let shape = [
                le_u32(b, e + dir_field::ROWS),
                le_u32(b, e + dir_field::COLS),
            ];
            if ndim != want.ndim() || shape != want.shape {
                return Err(Error::TensorShape {
                    index,
                    expected: want.shape,
                    found: shape,
                });
            }
            if le_u32(b, e + dir_field::RESERVED) != 0 {
                return Err(Error::TensorPlacement {
                    index,
                    reason: "reserved field is not zero",
                });
            }
            let placement = |reason| Error::TensorPlacement { index, reason };
            let bytes = dtype
                .row_bytes(shape[1] as usize)
                .and_then(|r| r.checked_mul(shape[0] as usize))
                .ok_or(placement("rows are not whole quantization blocks"))?;
            let offset = le_u64(b, e + dir_field::OFFSET);
            if !offset.is_multiple_of(TENSOR_ALIGN as u64) {
                return Err(placement("offset is not a multiple of 64"));
            }
            if offset != expected_offset as u64 {
                return Err(placement("offset is not right after the previous tensor"));
            }
            if le_u64(b, e + dir_field::BYTES) != bytes as u64 {
                return Err(placement("byte length disagrees with dtype and shape"));
            }
            let end = expected_offset
                .checked_add(bytes)
                .ok_or(placement("size overflows"))?;
            if end > b.len() {
                return Err(Error::Truncated {
                    section: Section::TensorData,
                    needed: end as u64,
                    available: b.len() as u64,
                });
            }
            expected_offset = if index + 1 == self.config.tensor_count() {
                end
            } else {
                align_up(end, TENSOR_ALIGN).ok_or(placement("size overflows"))?
            };
        }
        if expected_offset != b.len() {
            return Err(Error::FileSize {
                expected: expected_offset as u64,
                found: b.len() as u64,
            });
        }
        Ok(())
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
        let b = self.bytes.as_ref();
        let t = &self.tokenizer;
        Vocab {
            kind: t.kind,
            bos: t.bos,
            eos: t.eos,
            max_piece_len: t.max_piece_len,
            size: self.config.vocab_size,
            offsets: &b[t.offsets..t.scores],
            scores: &b[t.scores..t.sorted],
            sorted: &b[t.sorted..t.blob],
            blob: &b[t.blob..t.blob + t.blob_bytes],
        }
    }

    /// Number of tensors in the directory.
    pub fn tensor_count(&self) -> u32 {
        self.config.tensor_count()
    }

    /// Directory entry `index`, or `None` past the end.
    pub fn tensor(&self, index: u32) -> Option<TensorInfo<'_>> {
        if index >= self.tensor_count() {
            return None;
        }
        let b = self.bytes.as_ref();
        let e = self.directory + index as usize * DIR_ENTRY_BYTES;
        let raw_name = &b[e + dir_field::NAME..e + dir_field::NAME + NAME_BYTES];
        let name_len = raw_name.iter().position(|&c| c == 0).unwrap_or(NAME_BYTES);
        let offset = le_u64(b, e + dir_field::OFFSET);
        let bytes = le_u64(b, e + dir_field::BYTES) as usize;
        Some(TensorInfo {
            index,
            // Names were compared with the ASCII canonical ones at open.
            name: core::str::from_utf8(&raw_name[..name_len]).unwrap_or(""),
            dtype: Dtype::from_code(le_u32(b, e + dir_field::DTYPE)).unwrap_or(Dtype::F32),
            ndim: le_u32(b, e + dir_field::NDIM),
            shape: [
                le_u32(b, e + dir_field::ROWS),
                le_u32(b, e + dir_field::COLS),
            ],
            offset,
            crc32c: le_u32(b, e + dir_field::CRC),
            data: &b[offset as usize..offset as usize + bytes],
        })
    }

    /// Every directory entry, in order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo<'_>> {
        (0..self.tensor_count()).filter_map(move |i| self.tensor(i))
    }

    fn matrix(&self, index: u32) -> Matrix<'_> {
        match self.tensor(index) {
            Some(t) => t.matrix(),
            None => Matrix {
                dtype: Dtype::F32,
                rows: 0,
                cols: 0,
                data: &[],
            },
        }
    }

    /// The token embedding, `vocab_size × dim`.
    pub fn token_embedding(&self) -> Matrix<'_> {
        self.matrix(0)
    }

    /// The weights of block `layer` (`layer < n_layers`; larger values give
    /// the last block).
    pub fn layer(&self, layer: usize) -> LayerWeights<'_> {
        let l = layer.min(self.config.n_layers as usize - 1) as u32;
        let m = |part: u32| self.matrix(1 + TENSORS_PER_LAYER * l + part);
        LayerWeights {
            attn_norm: m(0),
            wq: m(1),
            wk: m(2),
            wv: m(3),
            wo: m(4),
            ffn_norm: m(5),
            w1: m(6),
            w2: m(7),
            w3: m(8),
        }
    }

    /// The final RMSNorm gain, `1 × dim`, F32.
    pub fn final_norm(&self) -> Matrix<'_> {
        self.matrix(1 + TENSORS_PER_LAYER * self.config.n_layers)
    }

    /// The classifier, `vocab_size × dim` (the token embedding when tied).
    pub fn classifier(&self) -> Matrix<'_> {
        if self.config.tied_classifier {
            self.token_embedding()
        } else {
            self.matrix(2 + TENSORS_PER_LAYER * self.config.n_layers)
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

    /// Reads every byte: checks each tensor's CRC32C and that all padding is
    /// zero. Calls `report` with each problem found and returns how many there
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

fn read_tokenizer_layout(header: &[u8], config: &Config) -> Result<TokenizerLayout, Error> {
    let base = field::TOKENIZER;
    let trunc = |needed: usize| Error::Truncated {
        section: Section::Tokenizer,
        needed: needed as u64,
        available: header.len() as u64,
    };
    if base + tok_field::OFFSETS > header.len() {
        return Err(trunc(base + tok_field::OFFSETS));
    }
    let kind = match le_u32(header, base + tok_field::KIND) {
        0 => TokenizerKind::Char,
        1 => TokenizerKind::Bpe,
        _ => {
            return Err(Error::BadTokenizer {
                reason: "unknown tokenizer kind",
                index: 0,
            })
        }
    };
    let v = config.vocab_size as usize; // at most 2^22, so these cannot overflow
    let offsets = base + tok_field::OFFSETS;
    let scores = offsets + 4 * (v + 1);
    let sorted = scores + 4 * v;
    let blob = sorted + 4 * v;
    let blob_bytes = le_u32(header, base + tok_field::BLOB_BYTES) as usize;
    let end = align_up(blob + blob_bytes, 4).unwrap_or(usize::MAX);
    if end > header.len() {
        return Err(trunc(end));
    }
    Ok(TokenizerLayout {
        kind,
        bos: le_u32(header, base + tok_field::BOS),
        eos: le_u32(header, base + tok_field::EOS),
        max_piece_len: le_u32(header, base + tok_field::MAX_PIECE_LEN),
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
    let offset = |i: usize| le_u32(header, t.offsets + 4 * i) as usize;
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
        if !le_f32(header, t.scores + 4 * i).is_finite() {
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
        let id = le_u32(header, t.sorted + 4 * i) as usize;
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
            let len = le_u32(header, pos);
            let end = pos
                .checked_add(4)
                .and_then(|p| p.checked_add(len as usize))
                .filter(|&e| {
                    pos + 4 <= header.len() && e <= header.len() && len <= MAX_METADATA_LEN
                })
                .ok_or(Error::BadMetadata { index })?;
            if core::str::from_utf8(&header[pos + 4..end]).is_err() {
                return Err(Error::BadMetadata { index });
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
            let len = le_u32(self.bytes, self.pos) as usize;
            let s = self
                .bytes
                .get(self.pos + 4..self.pos + 4 + len)
                .unwrap_or(&[]);
            self.pos += 4 + len;
            core::str::from_utf8(s).unwrap_or("")
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
        let start = le_u32(self.offsets, 4 * id as usize) as usize;
        let end = le_u32(self.offsets, 4 * id as usize + 4) as usize;
        self.blob.get(start..end).unwrap_or(&[])
    }

    /// The merge score of piece `id` (0 for ids outside the vocabulary).
    pub fn score(&self, id: u32) -> f32 {
        if id >= self.size {
            return 0.0;
        }
        le_f32(self.scores, 4 * id as usize)
    }

    /// The smallest id whose piece is exactly `bytes`, by binary search.
    pub fn find(&self, bytes: &[u8]) -> Option<u32> {
        let sorted_id = |i: usize| le_u32(self.sorted, 4 * i);
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
    let v = config.vocab_size as usize;
    if tokenizer.pieces.len() != v || tokenizer.scores.len() != v || tokenizer.sorted.len() != v {
        return Err(invalid(
            "tokenizer pieces, scores and sorted index must each have vocab_size entries",
        ));
    }
    if tensors.len() != config.tensor_count() as usize {
        return Err(Error::TensorCount {
            expected: config.tensor_count(),
            found: tensors.len() as u32,
        }
        .into());
    }
    let blob_bytes: usize = tokenizer.pieces.iter().map(|p| p.len()).sum();
    if blob_bytes > u32::MAX as usize / 2 {
        return Err(invalid("tokenizer pieces are too large"));
    }
    let max_piece_len = tokenizer.pieces.iter().map(|p| p.len()).max().unwrap_or(0);
    let tokenizer_bytes =
        align_up(tok_field::OFFSETS + 4 * (v + 1) + 8 * v + blob_bytes, 4).unwrap_or(0);
    let mut meta_bytes = 0usize;
    for (k, val) in metadata {
        if k.len() > MAX_METADATA_LEN as usize || val.len() > MAX_METADATA_LEN as usize {
            return Err(invalid("metadata key or value longer than 65536 bytes"));
        }
        meta_bytes += 8 + k.len() + val.len();
    }
    let dir_bytes = DIR_ENTRY_BYTES * tensors.len();
    let header_bytes =
        field::TOKENIZER + tokenizer_bytes + dir_bytes + align_up(meta_bytes, 4).unwrap_or(0) + 4;
    if header_bytes > u32::MAX as usize {
        return Err(invalid("header larger than 4 GiB"));
    }

    // Place the tensors, checking each against the config.
    let mut offset = align_up(header_bytes, TENSOR_ALIGN).unwrap_or(0);
    let mut file_bytes = 0u64;
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
        file_bytes = (offset + t.data.len()) as u64;
        offset = align_up(offset + t.data.len(), TENSOR_ALIGN).unwrap_or(0);
    }

    let mut w = Checksummed {
        sink,
        crc: Crc32c::new(),
        written: 0,
    };
    w.put(&MAGIC)?;
    w.u32(VERSION)?;
    w.u32(header_bytes as u32)?;
    w.u64(file_bytes)?;
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

    // Tokenizer.
    w.u32(tokenizer.kind as u32)?;
    w.u32(tokenizer.bos.unwrap_or(NO_TOKEN))?;
    w.u32(tokenizer.eos.unwrap_or(NO_TOKEN))?;
    w.u32(max_piece_len as u32)?;
    w.u32(blob_bytes as u32)?;
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
    w.zeros(align_up(blob_bytes, 4).unwrap_or(0) - blob_bytes)?;

    // Directory.
    let mut offset = align_up(header_bytes, TENSOR_ALIGN).unwrap_or(0);
    for t in tensors {
        let mut name = [0u8; NAME_BYTES];
        name[..t.name.len()].copy_from_slice(t.name.as_bytes());
        w.put(&name)?;
        w.u32(t.dtype as u32)?;
        w.u32(t.shape.len() as u32)?;
        let (rows, cols) = match *t.shape {
            [n] => (1, n),
            [r, c] => (r, c),
            _ => (0, 0),
        };
        w.u32(rows)?;
        w.u32(cols)?;
        w.u64(offset as u64)?;
        w.u64(t.data.len() as u64)?;
        w.u32(crc32c(t.data))?;
        w.u32(0)?;
        offset = align_up(offset + t.data.len(), TENSOR_ALIGN).unwrap_or(0);
    }

    // Metadata.
    for (k, val) in metadata {
        w.u32(k.len() as u32)?;
        w.put(k.as_bytes())?;
        w.u32(val.len() as u32)?;
        w.put(val.as_bytes())?;
    }
    w.zeros(align_up(meta_bytes, 4).unwrap_or(0) - meta_bytes)?;
    let header_crc = w.crc.finish();
    w.u32(header_crc)?;
    debug_assert_eq!(w.written, header_bytes);

    // Tensor data, each on a 64-byte boundary.
    for t in tensors {
        w.zeros(align_up(w.written, TENSOR_ALIGN).unwrap_or(0) - w.written)?;
        w.put(t.data)?;
    }
    Ok(w.written as u64)
}
