//! The model that ships inside the `kinglet` binary: a character-level
//! TinyShakespeare model trained with `kinglet-train` (quantization-aware,
//! exported as q8_0), so `kinglet generate` works with no file and no download.
//! How it was trained, its sha256 and its validation loss are in the README.

/// Where the bundled model lives in the repository.
pub const PATH: &str = "models/shakespeare.klt";

/// The bundled model's bytes. The file lives inside this package so that the
/// published crate (and `cargo install kinglet-tools`) carries it; the
/// repository's `models/shakespeare.klt` is a symbolic link to it.
pub static BYTES: &[u8] = include_bytes!("../models/shakespeare.klt");
