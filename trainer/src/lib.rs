//! kinglet-trainer: trains LLaMA models on a CPU with hand-written backward
//! passes and AdamW, and exports .klt files the kinglet engine runs.
//!
//! Layout: flat f32 arenas with named views ([`params`]), one file per
//! operation with its forward and backward ([`layers`]), the model as a loop
//! over blocks ([`model`]), the optimizer ([`adamw`], [`schedule`]), data
//! ([`data`]), checkpoints ([`checkpoint`]), and the CLI's commands.

pub mod activations;
pub mod adamw;
pub mod config;
pub mod error;
pub mod gemm;
pub mod layers;
pub mod model;
pub mod params;
pub mod reference;
pub mod rng;
pub mod schedule;

pub use config::{ModelConfig, TrainConfig};
pub use error::{Result, TrainError};
