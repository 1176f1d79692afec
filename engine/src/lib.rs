//! kinglet: a `no_std`, allocation-free LLaMA inference engine.
//!
//! The caller owns every byte: a [`ModelFile`] borrows the file bytes (flash,
//! `include_bytes!`, mmap, a `Vec`), and a session works inside a caller-provided
//! `f32` buffer whose exact size [`session_floats`] computes up front.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod canonical;
pub mod checksum;
pub mod config;
pub mod error;
pub mod format;
pub mod generate;
pub mod kernels;
pub mod ops;
pub mod packed_weights;
pub mod parallel;
pub mod printable;
pub mod quant;
pub mod sampler;
pub mod session;
pub mod tensor;
pub mod tokenizer;

#[cfg(test)]
mod test_rng;

pub use canonical::{canonical_tensors, CanonicalTensor, LayerPart, TensorRole};
pub use config::Config;
pub use error::Error;
pub use format::ModelFile;
pub use packed_weights::{packed_weights_bytes, PackedWeights};
pub use parallel::{Parallel, Sequential};
pub use sampler::{Sampler, SamplerConfig};
pub use session::{
    session_bytes, session_bytes_for_chunk, session_floats, session_floats_for_chunk, Session,
};
pub use tensor::{Dtype, Matrix};
