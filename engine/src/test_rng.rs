//! A seeded xorshift64* generator for the engine's unit tests.

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
