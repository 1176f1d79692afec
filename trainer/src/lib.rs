//! kinglet-trainer: trains LLaMA models on a CPU with hand-written backward
//! passes and AdamW, and exports .klt files the kinglet engine runs.
//!
//! Layout: flat f32 arenas with named views ([`params`]), one file per
//! operation with its forward and backward ([`layers`]), the model as a loop
//! over blocks ([`model`]), the optimizer ([`adamw`], [`schedule`]), data
//! ([`data`], [`download`]), the training state ([`trainer`]), checkpoints
//! ([`checkpoint`], with [`pause`] points for crash tests), the loss curve ([`plot`]), and the CLI's commands
//! ([`run`], [`eval`], [`export`], [`reference`](mod@reference)). [`ranks`] spreads
//! the shards of a step over the processes of an MPI job (`mpi` feature).
//!
//! The only `unsafe` is in [`gemm`] (the AVX2 matrix kernel and the
//! `matrixmultiply` call), behind bounds checks.
#![deny(unsafe_code)]

pub mod activations;
pub mod adamw;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod download;
pub mod error;
pub mod eval;
pub mod export;
pub mod gemm;
pub mod layers;
pub mod model;
#[cfg(feature = "mpi")]
pub mod mpi_ranks;
pub mod params;
pub mod pause;
pub mod plot;
pub mod qat;
pub mod ranks;
pub mod reference;
/// The random number generator, shared with `kinglet synth` and the tests.
pub use kinglet_tools::rng;
pub mod run;
pub mod schedule;
pub mod shards;
pub mod trainer;
pub mod weight_copies;

pub use config::{ModelConfig, TrainConfig};
pub use error::{Result, TrainError};
