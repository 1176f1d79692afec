//! The model that ships inside the `kinglet` binary: a character-level
//! TinyShakespeare model trained with `kinglet-train` (quantization-aware,
//! exported as q8_0), so `kinglet generate` works with no file and no download.
//! How it was trained, its sha256 and its validation loss are in the README.

/// Where the bundled model lives in the repository.
pub const PATH: &str = "models/shakespeare.klt";

/// The bundled model's bytes.
pub static BYTES: &[u8] = include_bytes!("../../models/shakespeare.klt");
