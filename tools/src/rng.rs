//! The project's one general-purpose random number generator (SplitMix64):
//! the trainer's weight init, data windows and samples, `kinglet synth`'s
//! weights, and the tests' and benches' inputs all draw from it. Its whole
//! state is one `u64`, so a checkpoint holds it exactly and a resumed run
//! draws the same numbers.
//!
//! Not here: the engine's sampler keeps llama2.c's xorshift64* (its coins
//! must match llama2.c's token for token), and the engine's own unit tests
//! have a copy in `engine/src/test_rng.rs` (the engine cannot depend on
//! this crate).

/// SplitMix64: good statistical quality for sampling windows, initializing
/// weights and making test data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The whole state, for checkpoints.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// Restores a state saved with [`Rng::state`].
    pub fn from_state(state: u64) -> Self {
        Rng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    fn unit_nonzero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1), 24 random bits: exact in f32.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values uniform in [-1, 1).
    pub fn uniform_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    /// Uniform integer in `0..n` (n > 0), without modulo bias worth noticing
    /// for the sizes used here (128-bit multiply-shift).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A standard normal sample (Box-Muller; one of the pair is dropped so
    /// that every sample costs the same two draws).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln stays finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fills `out` with N(0, std²) samples (Box-Muller, both of each pair
    /// kept: half the draws of [`Rng::normal`], for large weight tensors).
    pub fn fill_normal(&mut self, out: &mut [f32], std: f32) {
        for pair in out.chunks_mut(2) {
            let r = (-2.0 * self.unit_nonzero().ln()).sqrt();
            let theta = std::f64::consts::TAU * self.unit_nonzero();
            pair[0] = (r * theta.cos()) as f32 * std;
            if let Some(second) = pair.get_mut(1) {
                *second = (r * theta.sin()) as f32 * std;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_normals_look_normal() {
        let mut a = Rng::new(7);
        a.next_u64();
        let mut b = Rng::from_state(a.state());
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| a.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        assert!((0..1000).all(|_| a.below(10) < 10));
        assert!((0..1000)
            .map(|_| a.uniform())
            .all(|x| (-1.0..1.0).contains(&x)));
    }

    #[test]
    fn filled_normal_samples_have_the_right_spread() {
        let mut v = vec![0f32; 100_001];
        Rng::new(1).fill_normal(&mut v, 0.02);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 3e-4, "{mean}");
        assert!((var.sqrt() - 0.02).abs() < 3e-4, "{}", var.sqrt());
    }
}
