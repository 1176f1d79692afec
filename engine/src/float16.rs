//! Conversions between f32 and the 16-bit float formats F16 (IEEE binary16)
//! and BF16. Written here rather than taken from a crate so the engine's
//! dependency tree stays `libm` alone; tested against the `half` crate.
#![forbid(unsafe_code)]

/// IEEE binary16 bits to f32 (exact: every f16 is an f32). Selects rather
/// than branches on the data so that loops over it vectorize; subnormals go
/// through `mantissa · 2⁻²⁴`, whose operands and result are normal f32, so the
/// FPU's denormal mode cannot change them. NaNs come out quiet.
pub const fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exponent = ((h >> 10) & 0x1f) as u32;
    let mantissa = (h & 0x03ff) as u32;
    let normal = ((exponent + 112) << 23) | (mantissa << 13);
    let subnormal = (mantissa as f32 * (1.0 / 16_777_216.0)).to_bits();
    let quiet = if mantissa != 0 { 0x0040_0000 } else { 0 };
    let inf_or_nan = 0x7f80_0000 | quiet | (mantissa << 13);
    let magnitude = if exponent == 0 {
        subnormal
    } else if exponent == 0x1f {
        inf_or_nan
    } else {
        normal
    };
    f32::from_bits(sign | magnitude)
}

/// f32 to IEEE binary16 bits, rounding to nearest, ties to even; overflow
/// gives infinity, NaN stays NaN.
pub const fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xFF) as i32;
    let man = bits & 0x007F_FFFF;
    if exp == 0xFF {
        let nan = if man != 0 {
            0x0200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7C00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1F {
        return sign | 0x7C00;
    }
    if e <= 0 {
        // Subnormal or zero in f16.
        if e < -10 {
            return sign;
        }
        let man = man | 0x0080_0000; // implicit one
        let shift = (14 - e) as u32; // 13 + (1 - e)
        let half = 1u32 << (shift - 1);
        let rest = man & ((1u32 << shift) - 1);
        let mut out = man >> shift;
        if rest > half || (rest == half && out & 1 == 1) {
            out += 1;
        }
        return sign | out as u16;
    }
    let rest = man & 0x1FFF;
    let mut out = ((e as u32) << 10) | (man >> 13);
    if rest > 0x1000 || (rest == 0x1000 && out & 1 == 1) {
        out += 1; // may carry into the exponent, up to infinity: correct
    }
    sign | out as u16
}

/// BF16 bits to f32 (exact).
pub const fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 to BF16 bits, rounding to nearest, ties to even; NaN stays NaN.
pub const fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// Whether F16 bits are ±infinity.
pub const fn f16_is_infinite(h: u16) -> bool {
    h & 0x7FFF == 0x7C00
}

/// Whether BF16 bits are ±infinity.
pub const fn bf16_is_infinite(b: u16) -> bool {
    b & 0x7FFF == 0x7F80
}
