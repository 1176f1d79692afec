//! The one error type of the engine. Variants say what was wrong and where,
//! and carry no heap data so that firmware can match on them.
#![forbid(unsafe_code)]

use core::fmt;

use crate::tensor::Dtype;

/// Where in a model file a problem was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The fixed header (magic, version, sizes, config).
    Header,
    /// The tokenizer section.
    Tokenizer,
    /// The tensor directory.
    Directory,
    /// The key/value metadata.
    Metadata,
    /// Tensor data.
    TensorData,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Tokenizer => "tokenizer",
            Section::Directory => "tensor directory",
            Section::Metadata => "metadata",
            Section::TensorData => "tensor data",
        })
    }
}

/// Everything that can go wrong in the engine.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Error {
    /// The bytes end before a section does.
    Truncated {
        /// The section being read.
        section: Section,
        /// Bytes the section needs (from the start of the file).
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The file does not start with the .klt magic.
    BadMagic,
    /// The format version is not one this engine reads.
    UnsupportedVersion {
        /// Version found in the file.
        found: u32,
    },
    /// The file length disagrees with the length recorded in the header.
    FileSize {
        /// Length the header records.
        expected: u64,
        /// Actual length.
        found: u64,
    },
    /// A config field is zero, absurd or inconsistent with another.
    BadConfig {
        /// The field, e.g. `"n_heads"`.
        field: &'static str,
        /// Why, e.g. `"must divide dim"`.
        reason: &'static str,
    },
    /// The tokenizer section is malformed.
    BadTokenizer {
        /// What is wrong.
        reason: &'static str,
        /// The piece index it concerns (or 0).
        index: u32,
    },
    /// The tensor directory holds the wrong number of tensors for the config.
    TensorCount {
        /// Tensors the config implies.
        expected: u32,
        /// Tensors in the directory.
        found: u32,
    },
    /// A tensor has an unexpected name (the order is fixed by the format).
    TensorName {
        /// Directory index.
        index: u32,
    },
    /// A tensor has an unknown dtype code, or a dtype not allowed for it.
    TensorDtype {
        /// Directory index.
        index: u32,
        /// The dtype code found.
        code: u32,
    },
    /// A tensor's shape disagrees with the config.
    TensorShape {
        /// Directory index.
        index: u32,
        /// Shape the config implies (rows, cols; 1-D tensors have rows = 1).
        expected: [u32; 2],
        /// Shape in the directory.
        found: [u32; 2],
    },
    /// A tensor's offset or length is out of place: misaligned, overlapping
    /// the previous tensor or the header, past the end, or not the size its
    /// dtype and shape imply.
    TensorPlacement {
        /// Directory index.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A metadata entry is malformed (length past the section, not UTF-8).
    BadMetadata {
        /// Entry index.
        index: u32,
    },
    /// The header checksum does not match.
    HeaderChecksum {
        /// Checksum stored in the file.
        stored: u32,
        /// Checksum computed over the bytes.
        computed: u32,
    },
    /// A tensor's data checksum does not match.
    TensorChecksum {
        /// Directory index.
        index: u32,
        /// Checksum stored in the directory.
        stored: u32,
        /// Checksum computed over the bytes.
        computed: u32,
    },
    /// Padding between sections or tensors is not zero.
    NonZeroPadding {
        /// File offset of the first non-zero padding byte.
        offset: u64,
    },
    /// A caller-provided buffer is too small.
    BufferTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        available: usize,
    },
    /// The session has no room for another position.
    SequenceFull {
        /// The session's maximum sequence length.
        max_seq_len: u32,
    },
    /// A token id is outside the vocabulary.
    TokenOutOfRange {
        /// The token.
        token: u32,
        /// Vocabulary size.
        vocab_size: u32,
    },
    /// The prompt encodes to no tokens.
    EmptyPrompt,
    /// Text contains a character the character-level vocabulary lacks.
    UnknownCharacter {
        /// The character.
        ch: char,
    },
    /// The engine has no compute kernel for this dtype yet.
    UnsupportedDtype {
        /// Directory index of the tensor.
        index: u32,
    },
    /// The writer was given inconsistent input.
    InvalidInput {
        /// What is wrong.
        reason: &'static str,
    },
    /// A row to block-quantize is not a whole number of 32-element blocks.
    PartialBlock {
        /// Elements in the row.
        len: usize,
    },
    /// A value cannot be stored in the requested dtype.
    Unrepresentable {
        /// Index of the offending element in the row.
        index: usize,
        /// The element.
        value: f32,
        /// The dtype it was being stored as.
        dtype: Dtype,
        /// Why, e.g. `"not finite"`.
        reason: &'static str,
    },
    /// The model's activations or logits overflowed to infinity or NaN: the
    /// weights are damaged or unusable (their checksums may still be valid).
    ActivationsOverflowed,
    /// A tensor holds a NaN or infinite value (its checksum may be valid).
    NonFiniteWeight {
        /// Directory index.
        index: u32,
        /// Index of the first such element (of its block, for Q8_0/Q4_0).
        element: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated {
                section,
                needed,
                available,
            } => write!(
                f,
                "file truncated in the {section}: needs {needed} bytes, has {available}"
            ),
            Error::BadMagic => f.write_str("not a .klt model file (bad magic)"),
            Error::UnsupportedVersion { found } => {
                write!(f, "unsupported .klt format version {found}")
            }
            Error::FileSize { expected, found } => write!(
                f,
                "file size {found} bytes disagrees with the header's {expected} bytes"
            ),
            Error::BadConfig { field, reason } => write!(f, "bad config: {field} {reason}"),
            Error::BadTokenizer { reason, index } => {
                write!(f, "bad tokenizer: {reason} (piece {index})")
            }
            Error::TensorCount { expected, found } => write!(
                f,
                "tensor directory holds {found} tensors, the config implies {expected}"
            ),
            Error::TensorName { index } => write!(f, "tensor {index} has an unexpected name"),
            Error::TensorDtype { index, code } => {
                write!(
                    f,
                    "tensor {index} has dtype code {code}, which is not allowed there"
                )
            }
            Error::TensorShape {
                index,
                expected,
                found,
            } => write!(
                f,
                "tensor {index} has shape {}x{}, the config implies {}x{}",
                found[0], found[1], expected[0], expected[1]
            ),
            Error::TensorPlacement { index, reason } => write!(f, "tensor {index}: {reason}"),
            Error::BadMetadata { index } => write!(f, "metadata entry {index} is malformed"),
            Error::HeaderChecksum { stored, computed } => write!(
                f,
                "header checksum mismatch: stored {stored:08x}, computed {computed:08x}"
            ),
            Error::TensorChecksum {
                index,
                stored,
                computed,
            } => write!(
                f,
                "tensor {index} checksum mismatch: stored {stored:08x}, computed {computed:08x}"
            ),
            Error::NonZeroPadding { offset } => {
                write!(f, "non-zero padding byte at offset {offset}")
            }
            Error::BufferTooSmall { needed, available } => write!(
                f,
                "buffer too small: needs {needed} elements, has {available}"
            ),
            Error::SequenceFull { max_seq_len } => {
                write!(
                    f,
                    "sequence full: the session holds {max_seq_len} positions"
                )
            }
            Error::TokenOutOfRange { token, vocab_size } => write!(
                f,
                "token {token} out of range for a vocabulary of {vocab_size}"
            ),
            Error::EmptyPrompt => f.write_str("empty prompt: it encodes to no tokens"),
            Error::UnknownCharacter { ch } => {
                write!(f, "character {ch:?} is not in the model's vocabulary")
            }
            Error::UnsupportedDtype { index } => {
                write!(f, "tensor {index}: no compute kernel for its dtype yet")
            }
            Error::InvalidInput { reason } => write!(f, "invalid input: {reason}"),
            Error::PartialBlock { len } => write!(
                f,
                "a row of {len} elements is not a whole number of 32-element blocks"
            ),
            Error::Unrepresentable {
                index,
                value,
                dtype,
                reason,
            } => write!(
                f,
                "element {index} ({value}) cannot be stored as {}: {reason}",
                dtype.name()
            ),
            Error::NonFiniteWeight { index, element } => write!(
                f,
                "tensor {index} holds a NaN or infinite value (element {element})"
            ),
            Error::ActivationsOverflowed => f.write_str(
                "the model's activations overflowed to infinity or NaN (its weights are damaged or unusable)",
            ),
        }
    }
}

// `core::error::Error` (Rust 1.81+) rather than `std`'s: `?` converts an
// `Error` into `Box<dyn Error>` without the `std` feature too.
impl core::error::Error for Error {}
