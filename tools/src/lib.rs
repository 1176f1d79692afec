//! kinglet-tools: the library behind the `kinglet` command — converting
//! between .klt, GGUF, Hugging Face and llama2.c models, re-encoding,
//! synthesizing and inspecting .klt files.

pub mod bundled;
pub mod chunk_workers;
pub mod cmd;
pub mod gguf;
pub mod hf;
pub mod import;
pub mod interop;
pub mod io;
pub mod memory;
pub mod model;
pub mod model_bytes;
pub mod packing;
pub mod rng;
pub mod spm;
pub mod synth;
pub mod threads;

pub use model::{DtypePlan, EncodedModel, EncodedTensor, OwnedModel, OwnedTensor, OwnedVocab};
