//! One file per operation; each holds its `forward` and, next to it, its
//! `backward`, which accumulates into parameter gradients.
//!
//! Rows are `n = batch · context` positions; work is split into fixed-size
//! row chunks (never "one chunk per thread"), so every number is computed in
//! the same order whatever the thread count.

pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod fast_exp;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

/// Rows per parallel task for row-wise operations.
pub const ROW_CHUNK: usize = 32;
