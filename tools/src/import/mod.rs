//! Importers from other model formats.

pub mod llama2c;
