//! Picks the next token from logits: greedy, or temperature sampling with
//! optional top-k and top-p (nucleus) filtering, with no memory beyond the
//! logits slice itself.
//!
//! Without filtering the arithmetic is llama2.c's `sample()`: divide by the
//! temperature, softmax, draw a coin with the same xorshift64* generator
//! (`random_u32`/`random_f32`), and walk the cumulative distribution in
//! index order — so for the same seed the same token comes out.
//!
//! Filtering works on probability thresholds instead of llama2.c's sorted
//! copy. The top-k threshold is the k-th largest probability; top-p keeps the
//! most probable tokens until their mass exceeds `top_p` of what top-k kept.
//! Both thresholds are bit patterns of the (non-negative) probabilities,
//! found eight bits at a time from histograms: four passes over the slice
//! each (top-p's masses added in `f64`).
//! **Ties:** every token whose probability equals the threshold is kept, so
//! top-k may keep more than k tokens when probabilities tie at the boundary,
//! and top-p keeps the whole tied group that crosses `top_p`.
#![forbid(unsafe_code)]

use crate::error::Error;
use crate::ops;

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 for greedy (argmax); otherwise logits are divided by it. Finite, ≥ 0.
    pub temperature: f32,
    /// Keep only the `top_k` most probable tokens; 0 keeps all.
    pub top_k: u32,
    /// Keep the most probable tokens whose mass exceeds `top_p`; in (0, 1],
    /// 1 keeps all.
    pub top_p: f32,
    /// Seed of the random generator. 0 (which would make xorshift emit zeros
    /// forever) is replaced by a fixed non-zero constant.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// Greedy decoding.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 1,
        }
    }
}

/// Replaces a zero seed (a fixed point of xorshift).
const ZERO_SEED_REPLACEMENT: u64 = 0x9e37_79b9_7f4a_7c15;

/// A seeded token sampler. Deterministic: the same seed and the same logits
/// give the same tokens.
#[derive(Clone, Debug)]
pub struct Sampler {
    vocab_size: usize,
    config: SamplerConfig,
    rng_state: u64,
}

impl Sampler {
    /// A sampler for logits of `vocab_size` entries. Rejects (with
    /// [`Error::InvalidInput`]) a NaN, infinite or negative temperature and a
    /// `top_p` outside (0, 1].
    pub fn new(vocab_size: u32, config: SamplerConfig) -> Result<Sampler, Error> {
        if !(config.temperature.is_finite() && config.temperature >= 0.0) {
            return Err(Error::InvalidInput {
                reason: "temperature must be finite and non-negative",
            });
        }
        if !(config.top_p > 0.0 && config.top_p <= 1.0) {
            return Err(Error::InvalidInput {
                reason: "top_p must be in (0, 1]",
            });
        }
        let rng_state = if config.seed == 0 {
            ZERO_SEED_REPLACEMENT
        } else {
            config.seed
        };
        Ok(Sampler {
            vocab_size: vocab_size as usize,
            config,
            rng_state,
        })
    }

    /// The configuration.
    pub fn config(&self) -> SamplerConfig {
        self.config
    }

    /// llama2.c's `random_u32`: xorshift64*, top 32 bits.
    fn random_u32(&mut self) -> u32 {
        let s = &mut self.rng_state;
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// llama2.c's `random_f32`: uniform in [0, 1), 24 bits.
    fn random_f32(&mut self) -> f32 {
        (self.random_u32() >> 8) as f32 / 16_777_216.0
    }

    /// Picks a token from `logits` (its first `vocab_size` entries), which it
    /// overwrites with probabilities unless the temperature is 0. Returns 0
    /// for an empty slice. NaN logits do not panic; the token is then
    /// unspecified.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let n = self.vocab_size.min(logits.len());
        let logits = &mut logits[..n];
        if self.config.temperature == 0.0 {
            return argmax(logits);
        }
        for v in logits.iter_mut() {
            *v /= self.config.temperature;
        }
        ops::softmax(logits);
        let coin = self.random_f32();
        let top_k = self.config.top_k as usize;
        let keeps_all_k = top_k == 0 || top_k >= n;
        if keeps_all_k && self.config.top_p >= 1.0 {
            return sample_from(logits, 0, coin, 1.0);
        }
        let mut threshold = 0u32; // bit pattern of the smallest kept probability
        if !keeps_all_k {
            // More than k − ½ tokens: at least k.
            threshold = largest_threshold(logits, false, Needed::Weight(top_k as f64 - 0.5));
        }
        if self.config.top_p < 1.0 {
            let needed = if threshold == 0 {
                Needed::ShareOfAll(self.config.top_p)
            } else {
                let kept = mass_at_least(logits, threshold);
                Needed::Weight(f64::from(self.config.top_p * kept))
            };
            threshold = threshold.max(largest_threshold(logits, true, needed));
        }
        let kept_mass = mass_at_least(logits, threshold);
        sample_from(logits, threshold, coin, kept_mass)
    }
}

/// Index of the first largest value (llama2.c's `sample_argmax`); 0 for an
/// empty slice. NaNs are never chosen unless the first value is one.
///
/// Two passes: the largest value, sixteen lanes at a time, each lane
/// keeping a value only for a larger one (so a NaN never replaces one),
/// which vectorizes where one pass keeping the index did not (a greedy draw
/// over 32,000 logits 14.2 µs instead of 28.4 on AMD Zen 4, `cargo bench
/// --bench kernels`); then the first index holding it (`==`, which also
/// finds a `-0.0` maximum as `0.0`, as the scan did).
pub fn argmax(values: &[f32]) -> u32 {
    const LANES: usize = 16;
    let Some(&first) = values.first() else {
        return 0;
    };
    let mut lanes = [first; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            if v > *l {
                *l = v;
            }
        }
    }
    let mut best = first;
    for &v in lanes.iter().chain(tail) {
        if v > best {
            best = v;
        }
    }
    values.iter().position(|&v| v == best).unwrap_or(0) as u32
}

/// Total of the probabilities whose bit pattern is ≥ `bits` (for
/// non-negative floats the bit order is the value order), added in index
/// order.
fn mass_at_least(probs: &[f32], bits: u32) -> f32 {
    let mut mass = 0.0f32;
    for (_, run) in kept_runs(probs, bits) {
        for &p in run {
            if p.to_bits() >= bits {
                mass += p;
            }
        }
    }
    mass
}

/// The runs of [`RUN`] probabilities (and the index of each one's first)
/// holding a bit pattern that passes `test`: a sum over such patterns skips
/// the others, sixteen with one vectorized test instead of sixteen
/// branches (most runs of a trained model's distribution hold no kept
/// token, and once a threshold search has fixed a few digits, none in its
/// range).
fn runs_where(probs: &[f32], test: impl Fn(u32) -> bool) -> impl Iterator<Item = (usize, &[f32])> {
    probs
        .chunks(RUN)
        .enumerate()
        .filter(move |(_, run)| run.iter().fold(false, |hit, p| hit | test(p.to_bits())))
        .map(|(r, run)| (r * RUN, run))
}

/// [`runs_where`] a pattern is ≥ `threshold`.
fn kept_runs(probs: &[f32], threshold: u32) -> impl Iterator<Item = (usize, &[f32])> {
    runs_where(probs, move |bits| bits >= threshold)
}

/// Probabilities [`runs_where`] tests together.
const RUN: usize = 16;
/// Bits of a pattern [`largest_threshold`] fixes per pass.
const DIGIT_BITS: u32 = 8;
/// Histograms a pass fills in turn: with one, the adds of a run of
/// probabilities sharing their digit (most of a flat distribution) were a
/// chain through memory (a top-p draw over 32,000 near-equal logits 203–205
/// µs, with two 183; `cargo bench --bench kernels`).
const HISTOGRAMS: usize = 2;

/// What the probabilities a threshold keeps must total more than.
#[derive(Clone, Copy, Debug)]
enum Needed {
    /// This count or mass.
    Weight(f64),
    /// This share of all the mass, as [`mass_at_least`]`(probs, 0)` adds
    /// it (in f32, in index order): the first pass adds it up on its way,
    /// its chain of dependent adds hidden behind the histogram's, where a
    /// pass of its own was that chain alone.
    ShareOfAll(f32),
}

/// The largest bit pattern `b` in `[0, +inf]` such that the probabilities
/// whose bit pattern is ≥ `b` total more than `needed`, counting each as 1
/// or, `by_mass`, as its value; 0 when none does.
///
/// Four passes over the slice, each fixing the next eight bits of `b`: the
/// weights of the probabilities that share the bits fixed so far go into a
/// histogram of their next eight, which is then walked from the top down to
/// the first digit where the total (with everything above) exceeds it. A
/// bisection over the 31 bits took 31 passes: a draw with top-p 0.9 over
/// 32,000 logits took 668–674 µs on AMD Zen 4, with four passes 157, and
/// with [`runs_where`] and [`Needed::ShareOfAll`] 100 (`cargo bench
/// --bench kernels`).
fn largest_threshold(probs: &[f32], by_mass: bool, needed: Needed) -> u32 {
    let mut prefix = 0u32;
    // The weight of the patterns above the range still searched.
    let mut above = 0.0f64;
    // All the mass in f32, index order: the first pass's, which sees all.
    let mut mass = 0.0f32;
    for shift in [24, 16, 8, 0] {
        let mut histograms = [[0.0f64; 1 << DIGIT_BITS]; HISTOGRAMS];
        let mut add = |i: usize, p: f32| {
            let weight = if by_mass { f64::from(p) } else { 1.0 };
            let digit = (p.to_bits() >> shift) & 0xff;
            histograms[i % HISTOGRAMS][digit as usize] += weight;
        };
        if shift == 24 {
            // Every pattern is in range (nothing is fixed yet).
            for (i, &p) in probs.iter().enumerate() {
                mass += p;
                add(i, p);
            }
        } else {
            let fixed = shift + DIGIT_BITS;
            let in_range = |bits: u32| bits >> fixed == prefix >> fixed;
            for (first, run) in runs_where(probs, in_range) {
                for (i, &p) in (first..).zip(run) {
                    if in_range(p.to_bits()) {
                        add(i, p);
                    }
                }
            }
        }
        let needed = match needed {
            Needed::Weight(w) => w,
            Needed::ShareOfAll(share) => f64::from(share * mass),
        };
        let mut total = above;
        let mut found = None;
        for digit in (0..1usize << DIGIT_BITS).rev() {
            let w: f64 = histograms.iter().map(|h| h[digit]).sum();
            let with = total + w;
            if with > needed {
                found = Some(digit as u32);
                break;
            }
            total = with;
        }
        match found {
            Some(digit) => {
                prefix |= digit << shift;
                above = total;
            }
            // At the top: nowhere. Below it, only when the sums regrouped
            // round below the pass above's: its digit's lowest pattern.
            None => break,
        }
    }
    prefix.min(f32::INFINITY.to_bits())
}

/// Walks the kept probabilities (bit pattern ≥ `threshold`) in index order
/// and returns the first index where the cumulative sum exceeds
/// `coin × kept_mass`; if rounding leaves it short, the last kept token with
/// a non-zero probability (or the last token, as llama2.c does).
fn sample_from(probs: &[f32], threshold: u32, coin: f32, kept_mass: f32) -> u32 {
    let target = coin * kept_mass;
    let mut cdf = 0.0f32;
    let mut fallback = probs.len().saturating_sub(1);
    for (first, run) in kept_runs(probs, threshold) {
        for (i, &p) in (first..).zip(run) {
            if p.to_bits() >= threshold && p > 0.0 {
                cdf += p;
                if target < cdf {
                    return i as u32;
                }
                fallback = i;
            }
        }
    }
    fallback as u32
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn config(temperature: f32, top_k: u32, top_p: f32, seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    fn logits() -> Vec<f32> {
        // Index 5 is the unique maximum; 2 and 7 tie for second.
        std::vec![0.1, -1.0, 2.0, 0.5, -0.3, 3.0, 1.0, 2.0, -2.0, 0.0]
    }

    #[test]
    fn rejects_bad_configs() {
        for c in [
            config(f32::NAN, 0, 1.0, 1),
            config(-0.5, 0, 1.0, 1),
            config(f32::INFINITY, 0, 1.0, 1),
            config(1.0, 0, 0.0, 1),
            config(1.0, 0, 1.5, 1),
            config(1.0, 0, f32::NAN, 1),
        ] {
            assert!(
                matches!(Sampler::new(10, c), Err(Error::InvalidInput { .. })),
                "{c:?}"
            );
        }
        assert!(Sampler::new(10, config(0.7, 40, 0.9, 0)).is_ok());
    }

    #[test]
    fn greedy_is_first_argmax() {
        let mut s = Sampler::new(10, SamplerConfig::default()).unwrap();
        assert_eq!(s.sample(&mut logits()), 5);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 0);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_argmax() {
        for seed in 1..50 {
            let mut k1 = Sampler::new(10, config(1.5, 1, 1.0, seed)).unwrap();
            assert_eq!(k1.sample(&mut logits()), 5);
            let mut p = Sampler::new(10, config(1.5, 0, 1e-6, seed)).unwrap();
            assert_eq!(p.sample(&mut logits()), 5);
        }
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let run = |seed| {
            let mut s = Sampler::new(10, config(1.0, 0, 1.0, seed)).unwrap();
            (0..64).map(|_| s.sample(&mut logits())).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let mut zero = Sampler::new(10, config(1.0, 0, 1.0, 0)).unwrap();
        let draws: Vec<u32> = (0..64).map(|_| zero.sample(&mut logits())).collect();
        assert!(draws.iter().any(|&t| t != draws[0]), "seed 0 still random");
    }

    #[test]
    fn rng_matches_llama2c_random_u32() {
        // llama2.c: state = 42; random_u32(&state), computed by hand from the C code.
        let mut s = Sampler::new(1, config(1.0, 0, 1.0, 42)).unwrap();
        let mut state: u64 = 42;
        for _ in 0..5 {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let want = (state.wrapping_mul(0x2545F4914F6CDD1D) >> 32) as u32;
            assert_eq!(s.random_u32(), want);
        }
    }

    /// Frequencies of 20,000 draws.
    fn histogram(c: SamplerConfig) -> [usize; 10] {
        let mut s = Sampler::new(10, c).unwrap();
        let mut counts = [0; 10];
        for _ in 0..20_000 {
            counts[s.sample(&mut logits()) as usize] += 1;
        }
        counts
    }

    fn probabilities(temperature: f64) -> Vec<f64> {
        let l = logits();
        let z: f64 = l.iter().map(|&v| (v as f64 / temperature).exp()).sum();
        l.iter()
            .map(|&v| (v as f64 / temperature).exp() / z)
            .collect()
    }

    #[test]
    fn unfiltered_frequencies_follow_the_softmax() {
        let counts = histogram(config(0.8, 0, 1.0, 7));
        let p = probabilities(0.8);
        for i in 0..10 {
            let expected = p[i] * 20_000.0;
            let sd = (expected * (1.0 - p[i])).sqrt().max(1.0);
            assert!(
                (counts[i] as f64 - expected).abs() < 5.0 * sd,
                "token {i}: {} draws, expected {expected:.0}",
                counts[i]
            );
        }
    }

    #[test]
    fn top_k_keeps_the_k_best_and_ties() {
        // k = 2: the maximum (5) and both tokens tied for second (2, 7).
        let counts = histogram(config(1.0, 2, 1.0, 11));
        for (i, &c) in counts.iter().enumerate() {
            assert_eq!(c > 0, [2, 5, 7].contains(&i), "token {i}: {c}");
        }
        let p = probabilities(1.0);
        let kept = p[2] + p[5] + p[7];
        let expected = p[5] / kept * 20_000.0;
        assert!((counts[5] as f64 - expected).abs() < 400.0, "{counts:?}");
        // k = 4 keeps 5, 2, 7 and 6.
        let counts = histogram(config(1.0, 4, 1.0, 12));
        for (i, &c) in counts.iter().enumerate() {
            assert_eq!(c > 0, [2, 5, 6, 7].contains(&i), "token {i}: {c}");
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_exceeding_p() {
        let p = probabilities(1.0);
        // Mass of the best token alone, and with the two tied seconds.
        let best = p[5];
        let with_ties = best + p[2] + p[7];
        // Just above the best token's mass: the next group (the tie) joins.
        let counts = histogram(config(1.0, 0, (best + 0.01) as f32, 13));
        for (i, &c) in counts.iter().enumerate() {
            assert_eq!(c > 0, [2, 5, 7].contains(&i), "token {i}: {c}");
        }
        // Just above that: token 6 joins too.
        let counts = histogram(config(1.0, 0, (with_ties + 0.01) as f32, 14));
        for (i, &c) in counts.iter().enumerate() {
            assert_eq!(c > 0, [2, 5, 6, 7].contains(&i), "token {i}: {c}");
        }
        // Top-p applies to what top-k kept: k = 4 then p = 0.99 keeps all four.
        let counts = histogram(config(1.0, 4, 0.99, 15));
        for (i, &c) in counts.iter().enumerate() {
            assert_eq!(c > 0, [2, 5, 6, 7].contains(&i), "token {i}: {c}");
        }
    }

    /// Probabilities with ties, zeros and a spread of exponents, from a
    /// small xorshift.
    fn random_probs(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let raw: Vec<f32> = (0..n)
            .map(|_| match next() % 8 {
                0 => 0.0,
                1 => 0.25, // a tie
                _ => (next() % 1_000_000) as f32 * 1e-6 / (1 + next() % 1000) as f32,
            })
            .collect();
        let sum: f32 = raw.iter().sum();
        raw.iter().map(|v| v / sum).collect()
    }

    /// The bisection over the 31 bits the histograms replaced: the largest
    /// pattern in `[0, +inf]` where `holds`, 0 where nowhere.
    fn bisected(holds: impl Fn(u32) -> bool) -> u32 {
        let (mut lo, mut hi) = (0u32, f32::INFINITY.to_bits());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if holds(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// llama2.c's `sample_argmax`, the one pass [`argmax`] replaced.
    fn scanned_argmax(values: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &v) in values.iter().enumerate() {
            if v > values[best] {
                best = i;
            }
        }
        best as u32
    }

    #[test]
    fn kept_sums_and_draws_are_the_plain_scans() {
        for seed in 1..40u64 {
            // Lengths around the runs of 16, thresholds that keep none to all.
            let probs = random_probs(1 + (seed as usize * 29) % 300, seed);
            let mut thresholds: Vec<u32> = probs.iter().map(|p| p.to_bits()).collect();
            thresholds.extend([0, 1, f32::INFINITY.to_bits()]);
            for &t in thresholds.iter().step_by(7) {
                let kept = probs.iter().filter(|p| p.to_bits() >= t);
                let scanned = kept.fold(0.0f32, |m, &p| m + p);
                assert_eq!(mass_at_least(&probs, t).to_bits(), scanned.to_bits());
                for coin in [0.0, 0.3, 0.999, 1.0] {
                    let want = scanned_draw(&probs, t, coin, scanned);
                    assert_eq!(sample_from(&probs, t, coin, scanned), want, "seed {seed}");
                }
            }
        }
    }

    /// The draw as one scan of the kept probabilities: the first whose
    /// cumulative sum passes the target, else the last kept one.
    fn scanned_draw(probs: &[f32], threshold: u32, coin: f32, kept_mass: f32) -> u32 {
        let target = coin * kept_mass;
        let kept =
            || (0..probs.len()).filter(|&i| probs[i].to_bits() >= threshold && probs[i] > 0.0);
        let mut cdf = 0.0f32;
        let passing = kept().find(|&i| {
            cdf += probs[i];
            target < cdf
        });
        let chosen = passing.or_else(|| kept().next_back());
        chosen.unwrap_or(probs.len().saturating_sub(1)) as u32
    }

    #[test]
    fn argmax_is_the_one_pass_scan() {
        let specials = [f32::NAN, 0.0, -0.0, 0.25, f32::INFINITY, f32::NEG_INFINITY];
        for seed in 1..200u64 {
            let n = (seed as usize * 13) % 90;
            let mut v = random_probs(n.max(1), seed);
            v.truncate(n);
            // Sprinkle ties, zeros of both signs, infinities and NaNs.
            for (i, x) in v.iter_mut().enumerate() {
                if (i as u64 * 7 + seed).is_multiple_of(11) {
                    *x = specials[(i + seed as usize) % specials.len()];
                } else if seed.is_multiple_of(3) {
                    *x = -*x;
                }
            }
            assert_eq!(argmax(&v), scanned_argmax(&v), "{v:?}");
        }
    }

    #[test]
    fn thresholds_are_the_bisections() {
        for seed in 1..40u64 {
            let probs = random_probs(1 + (seed as usize * 37) % 700, seed);
            let at_least = |b: u32| probs.iter().filter(move |p| p.to_bits() >= b);
            for k in [1, 2, 3, 10, probs.len(), probs.len() + 1] {
                let want = bisected(|b| at_least(b).count() >= k);
                let got = largest_threshold(&probs, false, Needed::Weight(k as f64 - 0.5));
                assert_eq!(got, want, "seed {seed} k {k}");
            }
            for top_p in [1e-6, 0.1, 0.5, 0.9, 0.999] {
                let want = bisected(|b| at_least(b).map(|&p| f64::from(p)).sum::<f64>() > top_p);
                let got = largest_threshold(&probs, true, Needed::Weight(top_p));
                assert_eq!(got, want, "seed {seed} top_p {top_p}");
                // A share of all the mass: that share of the f32 total.
                let share = top_p as f32;
                let of_total = f64::from(share * mass_at_least(&probs, 0));
                assert_eq!(
                    largest_threshold(&probs, true, Needed::ShareOfAll(share)),
                    largest_threshold(&probs, true, Needed::Weight(of_total)),
                    "seed {seed} share {share}"
                );
            }
        }
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let mut s = Sampler::new(4, config(1.0, 2, 0.5, 3)).unwrap();
        assert_eq!(s.sample(&mut []), 0);
        let mut nan = [f32::NAN; 4];
        assert!(s.sample(&mut nan) < 4);
        let mut inf = [f32::INFINITY, 0.0, f32::NEG_INFINITY, 1.0];
        assert!(s.sample(&mut inf) < 4);
        // A longer slice than the vocabulary: only the first entries count.
        let mut long = [0.0, 0.0, 0.0, 0.0, 100.0];
        let mut greedy = Sampler::new(4, SamplerConfig::default()).unwrap();
        assert!(greedy.sample(&mut long) < 4);
    }
}
