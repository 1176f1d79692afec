//! The C error codes, their messages, and the mapping from [`kinglet::Error`].
//! The same table is in `include/kinglet.h`; a test keeps the two in step.

use core::ffi::{c_char, c_int, CStr};

use kinglet::Error;

/// Success.
pub const KINGLET_OK: c_int = 0;
/// A required pointer argument is NULL.
pub const KINGLET_E_NULL: c_int = -1;
/// The arena is smaller than `kinglet_session_bytes` says.
pub const KINGLET_E_ARENA_TOO_SMALL: c_int = -2;
/// `max_seq` is 0 or larger than the model's `max_seq_len`.
pub const KINGLET_E_MAX_SEQ: c_int = -3;
/// The prompt is not valid UTF-8.
pub const KINGLET_E_PROMPT_UTF8: c_int = -4;
/// The prompt has more than `4 × max_seq` bytes.
pub const KINGLET_E_PROMPT_TOO_LONG: c_int = -5;
/// The prompt encodes to no tokens (an empty prompt and no BOS token).
pub const KINGLET_E_EMPTY_PROMPT: c_int = -6;
/// The prompt has a character the model's vocabulary cannot encode.
pub const KINGLET_E_UNKNOWN_CHAR: c_int = -7;
/// The prompt's tokens do not fit in the session's `max_seq` positions.
pub const KINGLET_E_CONTEXT_FULL: c_int = -8;
/// The temperature is NaN, infinite or negative.
pub const KINGLET_E_TEMPERATURE: c_int = -9;
/// The session pointer does not point at an initialized session.
pub const KINGLET_E_BAD_SESSION: c_int = -10;
/// `prefill_chunk` is 0 or larger than `KINGLET_MAX_PREFILL_CHUNK` (16).
pub const KINGLET_E_PREFILL_CHUNK: c_int = -11;
/// The model bytes are truncated, or longer than their header says.
pub const KINGLET_E_TRUNCATED: c_int = -20;
/// The bytes are not a .klt model file (bad magic).
pub const KINGLET_E_BAD_MAGIC: c_int = -21;
/// The .klt format version is not one this library reads.
pub const KINGLET_E_VERSION: c_int = -22;
/// The model config is invalid.
pub const KINGLET_E_BAD_CONFIG: c_int = -23;
/// The tokenizer section is malformed.
pub const KINGLET_E_BAD_TOKENIZER: c_int = -24;
/// The tensor directory disagrees with the config or the file.
pub const KINGLET_E_BAD_TENSORS: c_int = -25;
/// A metadata entry is malformed.
pub const KINGLET_E_BAD_METADATA: c_int = -26;
/// A header or tensor checksum does not match: the bytes are damaged.
pub const KINGLET_E_CHECKSUM: c_int = -27;
/// A tensor has a dtype this library has no compute kernel for.
pub const KINGLET_E_UNSUPPORTED_DTYPE: c_int = -28;
/// Another problem with the model file: non-zero padding, or weights that
/// drive a quantized model's activations to infinity or NaN.
pub const KINGLET_E_BAD_MODEL: c_int = -29;
/// A bug in kinglet (an internal invariant failed); please report it.
pub const KINGLET_E_INTERNAL: c_int = -99;

/// Every code with its message, in the header's order.
pub const MESSAGES: &[(&str, c_int, &CStr)] = &[
    ("KINGLET_OK", KINGLET_OK, c"success"),
    (
        "KINGLET_E_NULL",
        KINGLET_E_NULL,
        c"a required pointer argument is NULL",
    ),
    (
        "KINGLET_E_ARENA_TOO_SMALL",
        KINGLET_E_ARENA_TOO_SMALL,
        c"the arena is smaller than kinglet_session_bytes() says",
    ),
    (
        "KINGLET_E_MAX_SEQ",
        KINGLET_E_MAX_SEQ,
        c"max_seq must be between 1 and the model's max_seq_len",
    ),
    (
        "KINGLET_E_PROMPT_UTF8",
        KINGLET_E_PROMPT_UTF8,
        c"the prompt is not valid UTF-8",
    ),
    (
        "KINGLET_E_PROMPT_TOO_LONG",
        KINGLET_E_PROMPT_TOO_LONG,
        c"the prompt is longer than 4 * max_seq bytes",
    ),
    (
        "KINGLET_E_EMPTY_PROMPT",
        KINGLET_E_EMPTY_PROMPT,
        c"the prompt encodes to no tokens and the model has no BOS token",
    ),
    (
        "KINGLET_E_UNKNOWN_CHAR",
        KINGLET_E_UNKNOWN_CHAR,
        c"the prompt has a character the model's vocabulary cannot encode",
    ),
    (
        "KINGLET_E_CONTEXT_FULL",
        KINGLET_E_CONTEXT_FULL,
        c"the prompt does not fit in the session's max_seq positions",
    ),
    (
        "KINGLET_E_TEMPERATURE",
        KINGLET_E_TEMPERATURE,
        c"temperature must be finite and non-negative",
    ),
    (
        "KINGLET_E_BAD_SESSION",
        KINGLET_E_BAD_SESSION,
        c"the session pointer does not point at an initialized session",
    ),
    (
        "KINGLET_E_PREFILL_CHUNK",
        KINGLET_E_PREFILL_CHUNK,
        c"prefill_chunk must be between 1 and 16",
    ),
    (
        "KINGLET_E_TRUNCATED",
        KINGLET_E_TRUNCATED,
        c"the model bytes are truncated or their length disagrees with the header",
    ),
    (
        "KINGLET_E_BAD_MAGIC",
        KINGLET_E_BAD_MAGIC,
        c"not a .klt model file (bad magic)",
    ),
    (
        "KINGLET_E_VERSION",
        KINGLET_E_VERSION,
        c"unsupported .klt format version",
    ),
    (
        "KINGLET_E_BAD_CONFIG",
        KINGLET_E_BAD_CONFIG,
        c"the model config is invalid",
    ),
    (
        "KINGLET_E_BAD_TOKENIZER",
        KINGLET_E_BAD_TOKENIZER,
        c"the model's tokenizer section is malformed",
    ),
    (
        "KINGLET_E_BAD_TENSORS",
        KINGLET_E_BAD_TENSORS,
        c"the model's tensor directory disagrees with its config or its bytes",
    ),
    (
        "KINGLET_E_BAD_METADATA",
        KINGLET_E_BAD_METADATA,
        c"a model metadata entry is malformed",
    ),
    (
        "KINGLET_E_CHECKSUM",
        KINGLET_E_CHECKSUM,
        c"a model checksum does not match: the bytes are damaged",
    ),
    (
        "KINGLET_E_UNSUPPORTED_DTYPE",
        KINGLET_E_UNSUPPORTED_DTYPE,
        c"a tensor has a dtype this library cannot compute with",
    ),
    (
        "KINGLET_E_BAD_MODEL",
        KINGLET_E_BAD_MODEL,
        c"the model file is malformed",
    ),
    (
        "KINGLET_E_INTERNAL",
        KINGLET_E_INTERNAL,
        c"internal error in kinglet (a bug; please report it)",
    ),
];

/// The message of `code`, or a fixed text for codes not in the table.
pub fn message(code: c_int) -> &'static CStr {
    MESSAGES
        .iter()
        .find(|(_, c, _)| *c == code)
        .map_or(c"unknown kinglet error code", |(_, _, m)| m)
}

/// The C code of an engine error.
pub fn code_of(error: &Error) -> c_int {
    match error {
        Error::Truncated { .. } | Error::FileSize { .. } => KINGLET_E_TRUNCATED,
        Error::BadMagic => KINGLET_E_BAD_MAGIC,
        Error::UnsupportedVersion { .. } => KINGLET_E_VERSION,
        Error::BadConfig { .. } => KINGLET_E_BAD_CONFIG,
        Error::BadTokenizer { .. } => KINGLET_E_BAD_TOKENIZER,
        Error::TensorCount { .. }
        | Error::TensorName { .. }
        | Error::TensorDtype { .. }
        | Error::TensorShape { .. }
        | Error::TensorPlacement { .. } => KINGLET_E_BAD_TENSORS,
        Error::BadMetadata { .. } => KINGLET_E_BAD_METADATA,
        Error::HeaderChecksum { .. } | Error::TensorChecksum { .. } => KINGLET_E_CHECKSUM,
        // NaN or inf weights (kinglet_check finds them), and activations or
        // logits that overflow (absurd finite weights): the weights are
        // damaged or unusable.
        Error::NonZeroPadding { .. }
        | Error::ActivationsOverflowed
        | Error::NonFiniteWeight { .. } => KINGLET_E_BAD_MODEL,
        Error::UnsupportedDtype { .. } => KINGLET_E_UNSUPPORTED_DTYPE,
        Error::SequenceFull { .. } => KINGLET_E_CONTEXT_FULL,
        Error::EmptyPrompt => KINGLET_E_EMPTY_PROMPT,
        Error::UnknownCharacter { .. } => KINGLET_E_UNKNOWN_CHAR,
        // The arena sizes are checked before the engine sees them, and the
        // engine validates token ids it produced itself: reaching these
        // means kinglet has a bug.
        Error::BufferTooSmall { .. }
        | Error::TokenOutOfRange { .. }
        | Error::InvalidInput { .. }
        | Error::PartialBlock { .. } => KINGLET_E_INTERNAL,
        _ => KINGLET_E_INTERNAL,
    }
}

/// `kinglet_strerror` as a C string pointer.
pub fn message_ptr(code: c_int) -> *const c_char {
    message(code).as_ptr()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn every_code_has_one_message_and_the_header_lists_it() {
        let header = include_str!("../include/kinglet.h");
        for (i, (name, code, text)) in MESSAGES.iter().enumerate() {
            assert!(
                MESSAGES[i + 1..].iter().all(|(_, c, _)| c != code),
                "duplicate code {code}"
            );
            assert_eq!(message(*code), *text);
            let text = text.to_str().unwrap();
            assert!(
                header.contains(&format!("#define {name} ({code})")),
                "{name} ({code}) missing from the header"
            );
            assert!(
                header.contains(text),
                "message of {code} missing from the header"
            );
        }
        assert_eq!(message(12345), c"unknown kinglet error code");
    }

    #[test]
    fn engine_errors_map_to_their_codes() {
        use kinglet::error::Section;
        let truncated = Error::Truncated {
            section: Section::Header,
            needed: 10,
            available: 2,
        };
        assert_eq!(code_of(&truncated), KINGLET_E_TRUNCATED);
        assert_eq!(code_of(&Error::BadMagic), KINGLET_E_BAD_MAGIC);
        assert_eq!(
            code_of(&Error::TensorChecksum {
                index: 1,
                stored: 0,
                computed: 1
            }),
            KINGLET_E_CHECKSUM
        );
        assert_eq!(
            code_of(&Error::SequenceFull { max_seq_len: 4 }),
            KINGLET_E_CONTEXT_FULL
        );
        assert_eq!(code_of(&Error::EmptyPrompt), KINGLET_E_EMPTY_PROMPT);
        for bad_weights in [
            Error::ActivationsOverflowed,
            Error::NonFiniteWeight {
                index: 3,
                element: 7,
            },
        ] {
            assert_eq!(code_of(&bad_weights), KINGLET_E_BAD_MODEL);
        }
    }
}
