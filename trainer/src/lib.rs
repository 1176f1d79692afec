//! kinglet-trainer: trains LLaMA models on a CPU and exports .klt files.

pub mod download;
pub mod plot;
