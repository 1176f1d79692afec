//! A branch-free `exp` that the compiler vectorizes (libm's `expf` is a call
//! per element and was ~6% of a training step). Within 2 ulp of `expf` over
//! the range that matters; inputs are clamped to [-87.3, 88.7].

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 · 2²³: adding it rounds to the nearest integer in the low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;

/// e^x for finite x (NaN stays NaN through the arithmetic).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let shifted = x * LOG2E + ROUNDER;
    let k = shifted - ROUNDER;
    let r = x - k * LN2_HI - k * LN2_LO;
    // Taylor series to r⁷/7!, |r| ≤ ln2/2: truncation error below 1e-8.
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^k from the integer sitting in the low bits of `shifted`.
    let k_int = (shifted.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    let scale = f32::from_bits(((k_int + 127) << 23) as u32);
    p * scale
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_libm_closely() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, reference) = (super::exp(x), x.exp());
            worst = worst.max(((ours - reference) / reference).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(super::exp(0.0), 1.0);
        assert!(super::exp(-1000.0) < 1e-37);
    }
}
