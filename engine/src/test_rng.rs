//! Test support for the engine's unit tests: a seeded xorshift64* generator
//! and tensor encoding through the one quantizer.
#![forbid(unsafe_code)]

extern crate std;
use std::vec::Vec;

/// Uniform values in [-1, 1) from a seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next value, uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u32 << 24) as f32;
        2.0 * u - 1.0
    }

    /// `n` values.
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// `values` (whole rows) as bytes of `dtype`, through [`crate::quant::quantize_row`].
pub fn encode(dtype: crate::Dtype, values: &[f32], cols: usize) -> Vec<u8> {
    let rows = values.len() / cols.max(1);
    let mut out = std::vec![0u8; dtype.row_bytes(cols).unwrap_or(0) * rows];
    crate::quant::quantize_row(dtype, values, &mut out).expect("test values encode");
    out
}
