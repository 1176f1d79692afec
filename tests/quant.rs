//! The quantizer against ggml's reference rounding, its error bounds, and the
//! integer dot products against f64 arithmetic on the dequantized values.

use kinglet::quant::{
    dequantize_activations, dequantize_row, fake_quantize, fake_quantize_activations,
    matvec_quantized, q4_0_dot, q8_0_dot, quantize_activations, quantize_row, BlockQ8,
};
use kinglet::tensor::{BLOCK_LEN, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES};
use kinglet::{Dtype, Error, Matrix};
use kinglet_tools::rng::Rng;

/// A row of `n` values whose blocks have very different magnitudes
/// (2^-30 .. 2^12, so that f16 holds them all), some exact zeros, and some
/// all-zero blocks.
fn row(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    for _ in 0..n / BLOCK_LEN {
        let kind = rng.next_u64() % 8;
        let scale = 2f32.powi((rng.next_u64() % 43) as i32 - 30);
        for _ in 0..BLOCK_LEN {
            x.push(match kind {
                0 => 0.0,
                1 if rng.next_u64().is_multiple_of(3) => 0.0,
                // Half-step multiples: many exact rounding ties.
                2 => ((rng.next_u64() % 33) as f32 - 16.0) * 0.5 * scale,
                _ => rng.uniform() * scale,
            });
        }
    }
    x
}

fn encoded_len(dtype: Dtype, n: usize) -> usize {
    dtype.row_bytes(n).expect("test sizes are whole blocks")
}

fn quantize(dtype: Dtype, x: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0u8; encoded_len(dtype, x.len())];
    quantize_row(dtype, x, &mut bytes).expect("finite test data");
    bytes
}

fn dequantize(dtype: Dtype, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut x = vec![0f32; n];
    dequantize_row(dtype, bytes, &mut x).expect("matching lengths");
    x
}

fn block(values: &[(usize, f32)]) -> [f32; BLOCK_LEN] {
    let mut x = [0f32; BLOCK_LEN];
    for &(i, v) in values {
        x[i] = v;
    }
    x
}

/// f16 bits of `v` (round to nearest even), through the engine's F16 path.
fn f16_bytes(v: f32) -> [u8; 2] {
    let mut bytes = [0u8; 2];
    quantize_row(Dtype::F16, &[v], &mut bytes).expect("finite, in f16 range");
    bytes
}

fn f16_value(bytes: [u8; 2]) -> f32 {
    let mut v = [0f32];
    dequantize_row(Dtype::F16, &bytes, &mut v).expect("one element");
    v[0]
}

// ---------------------------------------------------------------------------
// Known answers (hand-computed from ggml's reference code)
// ---------------------------------------------------------------------------

#[test]
fn q8_0_rounds_halves_away_from_zero() {
    // amax 127 → d = 1, id = 1: x·id is x itself.
    let x = block(&[
        (0, 127.0),
        (1, 2.5),
        (2, -2.5),
        (3, 0.5),
        (4, -0.5),
        (5, 1.499_999_9),
        (6, 126.5),
        (7, -127.0),
        (8, -0.0),
        (9, 3.499_999_8),
        (31, -0.499_999_97),
    ]);
    let mut want = [0u8; Q8_0_BLOCK_BYTES];
    want[..2].copy_from_slice(&[0x00, 0x3c]); // f16(1.0)
    let q: [i8; 11] = [127, 3, -3, 1, -1, 1, 127, -127, 0, 3, 0];
    for (i, &q) in q.iter().enumerate() {
        want[2 + i] = q as u8;
    }
    want[2 + 31] = 0; // -0.49999997 rounds to -0 → 0
    assert_eq!(quantize(Dtype::Q8_0, &x), want);
}

#[test]
fn q8_0_multiplies_by_the_inverse_scale_like_ggml() {
    // amax 1 → d = f32(1/127) (f16 0x2008), id = f32(1/d) = 127 exactly.
    // x = 0x3d112244: x·id = 4.4999995 → 4, although x/d = 4.5 → 5 in f32.
    let x = block(&[
        (0, 1.0),
        (1, f32::from_bits(0x3d11_2244)),
        (2, f32::from_bits(0xbf70_e1c3)), // x·id = −119.49999 → −119 (x/d → −120)
        (3, -1.0),
        (4, 0.5), // 63.5 → 64
        (5, -0.5),
    ]);
    let d = 1.0f32 / 127.0;
    assert_eq!(f16_bytes(d), [0x08, 0x20]);
    assert_eq!(1.0 / d, 127.0);
    let mut want = [0u8; Q8_0_BLOCK_BYTES];
    want[..2].copy_from_slice(&[0x08, 0x20]);
    for (i, q) in [127i8, 4, -119, -127, 64, -64].into_iter().enumerate() {
        want[2 + i] = q as u8;
    }
    assert_eq!(quantize(Dtype::Q8_0, &x), want);
}

#[test]
fn q8_0_all_zero_block_is_all_zero_bytes() {
    let mut x = [0f32; 2 * BLOCK_LEN];
    x[BLOCK_LEN..].fill(-0.0);
    assert_eq!(quantize(Dtype::Q8_0, &x), [0u8; 2 * Q8_0_BLOCK_BYTES]);
    let back = dequantize(Dtype::Q8_0, &[0u8; 2 * Q8_0_BLOCK_BYTES], 2 * BLOCK_LEN);
    assert!(back.iter().all(|&v| v.to_bits() == 0));
}

/// Levels (0..=15) of a Q4_0 block, packed the ggml way.
fn pack_q4(levels: &[u8; BLOCK_LEN]) -> [u8; 16] {
    let mut packed = [0u8; 16];
    for j in 0..16 {
        packed[j] = levels[j] | (levels[j + 16] << 4);
    }
    packed
}

#[test]
fn q4_0_negative_extreme_and_clamp_to_15() {
    // max = −8 (first of the two magnitudes 8, so the later +8 loses the tie):
    // d = −8/−8 = 1, id = 1, level = min(15, trunc(x + 8.5)).
    let x = block(&[
        (0, -8.0),
        (1, 2.5),        // 11.0 → 11: halves go up
        (2, -2.5),       // 6.0 → 6: so −2.5 dequantizes to −2
        (3, 0.5),        // 9
        (4, -0.5),       // 8.0 → 8
        (5, 7.5),        // 16.0 → 16 → clamped to 15
        (6, -7.9),       // 0.6 → 0
        (7, 0.49),       // 8.99 → 8
        (16, 8.0),       // 16.5 → 16 → clamped to 15
        (17, 3.0),       // 11.5 → 11
        (31, -0.999_99), // 7.50001 → 7
    ]);
    let mut levels = [8u8; BLOCK_LEN];
    for (i, l) in [
        (0, 0),
        (1, 11),
        (2, 6),
        (3, 9),
        (4, 8),
        (5, 15),
        (6, 0),
        (7, 8),
        (16, 15),
        (17, 11),
        (31, 7),
    ] {
        levels[i] = l;
    }
    let mut want = [0u8; Q4_0_BLOCK_BYTES];
    want[..2].copy_from_slice(&[0x00, 0x3c]); // f16(+1.0)
    want[2..].copy_from_slice(&pack_q4(&levels));
    let bytes = quantize(Dtype::Q4_0, &x);
    assert_eq!(bytes, want);

    let back = dequantize(Dtype::Q4_0, &bytes, BLOCK_LEN);
    assert_eq!(back[0], -8.0);
    assert_eq!(back[2], -2.0);
    assert_eq!(back[5], 7.0);
    assert_eq!(back[16], 7.0, "the clamped element loses a whole step");
}

#[test]
fn q4_0_positive_extreme_flips_the_scale() {
    // max = +8 → d = −1, id = −1: levels are trunc(8.5 − x).
    let x = block(&[
        (0, 8.0),  // 0.5 → 0 → value (0−8)·(−1) = 8
        (1, 2.5),  // 6.0 → 6 → value 2: ties now go toward −∞ in x
        (2, -8.0), // 16.5 → 16 → 15 → value −7
        (3, -2.5), // 11.0 → 11 → value −3
    ]);
    let mut levels = [8u8; BLOCK_LEN];
    levels[..4].copy_from_slice(&[0, 6, 15, 11]);
    let mut want = [0u8; Q4_0_BLOCK_BYTES];
    want[..2].copy_from_slice(&[0x00, 0xbc]); // f16(−1.0)
    want[2..].copy_from_slice(&pack_q4(&levels));
    let bytes = quantize(Dtype::Q4_0, &x);
    assert_eq!(bytes, want);
    assert_eq!(
        &dequantize(Dtype::Q4_0, &bytes, BLOCK_LEN)[..4],
        &[8.0, 2.0, -7.0, -3.0]
    );
}

#[test]
fn q4_0_all_zero_block_has_a_negative_zero_scale() {
    // ggml: d = 0.0f / −8 = −0.0, stored as f16 0x8000; every level is 8.
    let mut want = [0x88u8; Q4_0_BLOCK_BYTES];
    want[..2].copy_from_slice(&[0x00, 0x80]);
    assert_eq!(quantize(Dtype::Q4_0, &[0.0; BLOCK_LEN]), want);
    let back = dequantize(Dtype::Q4_0, &want, BLOCK_LEN);
    assert!(back.iter().all(|&v| v == 0.0));
}

#[test]
fn q4_0_low_nibble_is_element_j_high_nibble_is_element_j_plus_16() {
    // Hand-made block: scale 0.5, byte j = (j) | (15 − j) << 4.
    let mut bytes = [0u8; Q4_0_BLOCK_BYTES];
    bytes[..2].copy_from_slice(&f16_bytes(0.5));
    for j in 0..16 {
        bytes[2 + j] = j as u8 | ((15 - j as u8) << 4);
    }
    let x = dequantize(Dtype::Q4_0, &bytes, BLOCK_LEN);
    for j in 0..16 {
        assert_eq!(x[j], (j as f32 - 8.0) * 0.5, "element {j}");
        assert_eq!(x[j + 16], (7.0 - j as f32) * 0.5, "element {}", j + 16);
    }
    // The values sit exactly on the grid (max is x[0] = −4, so d = 0.5):
    // quantizing them again gives the same bytes.
    assert_eq!(quantize(Dtype::Q4_0, &x), bytes);
}

#[test]
fn q8_0_layout_is_scale_then_signed_bytes() {
    let mut bytes = [0u8; Q8_0_BLOCK_BYTES];
    bytes[..2].copy_from_slice(&f16_bytes(0.25));
    for j in 0..BLOCK_LEN {
        bytes[2 + j] = (j as i8 * 4 - 64) as u8;
    }
    let x = dequantize(Dtype::Q8_0, &bytes, BLOCK_LEN);
    for (j, &v) in x.iter().enumerate() {
        assert_eq!(v, (j as f32 * 4.0 - 64.0) * 0.25);
    }
}

#[test]
fn float_dtypes_store_little_endian_round_to_nearest_even() {
    let x = [1.0f32, -2.0, 1.0 + 1.0 / 2048.0];
    assert_eq!(
        quantize(Dtype::F32, &x),
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
    );
    // f16: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 → even → 1.0.
    assert_eq!(
        quantize(Dtype::F16, &x),
        [0x00, 0x3c, 0x00, 0xc0, 0x00, 0x3c]
    );
    assert_eq!(
        quantize(Dtype::BF16, &x),
        [0x80, 0x3f, 0x00, 0xc0, 0x80, 0x3f]
    );
}

/// Every f16 bit pattern decodes exactly (the scales of every Q8_0/Q4_0
/// block go through the same conversion), and every finite one encodes back
/// to itself.
#[test]
fn every_f16_bit_pattern_decodes_exactly() {
    for bits in 0..=u16::MAX {
        let got = f16_value(bits.to_le_bytes());
        let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
        let exponent = i32::from((bits >> 10) & 0x1f);
        let mantissa = f64::from(bits & 0x3ff);
        match exponent {
            0x1f if mantissa == 0.0 => assert_eq!(got, sign as f32 * f32::INFINITY),
            0x1f => {
                assert!(got.is_nan(), "{bits:04x}");
                let payload = got.to_bits() & 0x007f_ffff;
                assert_eq!(payload, 0x0040_0000 | (u32::from(bits & 0x3ff) << 13));
                assert_eq!(got.is_sign_negative(), sign < 0.0);
            }
            _ => {
                let want = if exponent == 0 {
                    sign * mantissa * 2f64.powi(-24)
                } else {
                    sign * (1.0 + mantissa / 1024.0) * 2f64.powi(exponent - 15)
                };
                assert_eq!(got.to_bits(), (want as f32).to_bits(), "{bits:04x}");
                assert_eq!(f16_bytes(got), bits.to_le_bytes(), "{bits:04x}");
            }
        }
    }
}

#[test]
fn blocks_whose_inverse_scale_overflows_quantize_to_zero() {
    // 1/d is +∞ here; ggml would convert ∞/NaN to an integer (undefined in C).
    let x = [1e-39f32; BLOCK_LEN];
    assert_eq!(quantize(Dtype::Q8_0, &x), [0u8; Q8_0_BLOCK_BYTES]);
    let q4 = quantize(Dtype::Q4_0, &x);
    assert_eq!(&q4[..2], &[0x00, 0x80]); // f16(−1e-39 / 8) = −0
    assert!(q4[2..].iter().all(|&b| b == 0x88));
    let mut blocks = [BlockQ8::ZERO];
    quantize_activations(&x, &mut blocks).unwrap();
    assert_eq!(blocks[0].qs, [0; BLOCK_LEN]);
}

// ---------------------------------------------------------------------------
// Error bounds and the QAT identity
// ---------------------------------------------------------------------------

/// Exact bounds, per block with f32 scale `d` (what the levels were computed
/// with) and stored f16 scale `s`:
/// - Q8_0: |x − deq| ≤ d/2 + 127·|d − s| + 2⁻²²·amax
/// - Q4_0: |x − deq| ≤ |d|/2 + 8·|d − s| + 2⁻²²·amax, except the element
///   clamped from level 16 to 15, which is within |d| + 8·|d − s| + 2⁻²²·amax.
///
/// The 2⁻²² term covers the f32 roundings of 1/d, x·(1/d) and q·s.
#[test]
fn round_trip_error_is_within_the_stated_bounds() {
    let mut rng = Rng::new(1);
    let x = row(&mut rng, 4096 * BLOCK_LEN);
    for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
        let bytes = quantize(dtype, &x);
        let back = dequantize(dtype, &bytes, x.len());
        let block_bytes = bytes.len() / (x.len() / BLOCK_LEN);
        let mut worst_ratio = 0f64;
        for (b, (xb, db)) in x.chunks(BLOCK_LEN).zip(back.chunks(BLOCK_LEN)).enumerate() {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            let first_max = xb
                .iter()
                .copied()
                .fold(0f32, |m, v| if m.abs() < v.abs() { v } else { m });
            let d = match dtype {
                Dtype::Q8_0 => amax as f32 / 127.0,
                _ => first_max / -8.0,
            } as f64;
            let stored = &bytes[b * block_bytes..];
            let s = f16_value([stored[0], stored[1]]) as f64;
            let levels = if dtype == Dtype::Q8_0 { 127.0 } else { 8.0 };
            let slack = levels * (d - s).abs() + amax / (1u64 << 22) as f64;
            for (j, (&xv, &dv)) in xb.iter().zip(db).enumerate() {
                let err = (xv as f64 - dv as f64).abs();
                let clamped = dtype == Dtype::Q4_0 && xv as f64 / d > 7.5;
                let bound = if clamped { d.abs() } else { d.abs() / 2.0 } + slack;
                assert!(
                    err <= bound,
                    "{dtype:?} block {b} element {j}: x={xv} deq={dv} err={err} bound={bound}"
                );
                // Where the f16 scale is normal (not subnormal or zero), its
                // relative error is at most 2⁻¹¹.
                if s.abs() >= 1.0 / 16384.0 {
                    worst_ratio = worst_ratio.max(err / d.abs());
                }
            }
        }
        println!("{dtype:?}: worst |x − deq| / |d| with a normal f16 scale = {worst_ratio:.4}");
        let limit = if dtype == Dtype::Q8_0 {
            0.5 + 127.0 / 2048.0
        } else {
            1.0 + 8.0 / 2048.0
        };
        assert!(worst_ratio <= limit + 1e-6, "{dtype:?}: {worst_ratio}");
    }
}

#[test]
fn fake_quantize_is_dequantize_of_quantize_bit_for_bit() {
    let mut rng = Rng::new(2);
    let x = row(&mut rng, 257 * BLOCK_LEN);
    for dtype in Dtype::ALL {
        let via_bytes = dequantize(dtype, &quantize(dtype, &x), x.len());
        let mut fake = x.clone();
        fake_quantize(dtype, &mut fake).unwrap();
        let same = fake
            .iter()
            .zip(&via_bytes)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{dtype:?}");
    }
}

#[test]
fn activations_use_the_q8_0_rounding_with_an_f32_scale() {
    let mut rng = Rng::new(3);
    let x = row(&mut rng, 64 * BLOCK_LEN);
    let mut blocks = vec![BlockQ8::ZERO; 64];
    quantize_activations(&x, &mut blocks).unwrap();
    let weights = quantize(Dtype::Q8_0, &x);
    for (b, (block, stored)) in blocks
        .iter()
        .zip(weights.chunks(Q8_0_BLOCK_BYTES))
        .enumerate()
    {
        let levels: Vec<u8> = block.qs.iter().map(|&q| q as u8).collect();
        assert_eq!(levels, &stored[2..], "block {b}: same levels as Q8_0");
        assert_eq!(f16_bytes(block.d), [stored[0], stored[1]], "block {b}");
        let amax = x[b * BLOCK_LEN..(b + 1) * BLOCK_LEN]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(block.d, amax / 127.0, "block {b}: f32 scale");
    }

    let mut expanded = vec![0f32; x.len()];
    dequantize_activations(&blocks, &mut expanded).unwrap();
    let mut fake = x.clone();
    fake_quantize_activations(&mut fake).unwrap();
    assert!(fake
        .iter()
        .zip(&expanded)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // The f32 scale makes activations at least as accurate as Q8_0 weights.
    for (b, xb) in x.chunks(BLOCK_LEN).enumerate() {
        let d = blocks[b].d as f64;
        for (j, &v) in xb.iter().enumerate() {
            let err = (v as f64 - fake[b * BLOCK_LEN + j] as f64).abs();
            assert!(err <= d / 2.0 + 127.0 * d / (1u64 << 22) as f64);
        }
    }
}

// ---------------------------------------------------------------------------
// Integer dot products and the matrix-vector product
// ---------------------------------------------------------------------------

/// f64 dot of the dequantized weight row with the exact activation values
/// (`q · d` in f64), and Σ|terms| for the tolerance.
fn reference_dot(dtype: Dtype, w_row: &[u8], xq: &[BlockQ8]) -> (f64, f64) {
    let w = dequantize(dtype, w_row, xq.len() * BLOCK_LEN);
    let mut dot = 0f64;
    let mut magnitude = 0f64;
    for (wb, xb) in w.chunks(BLOCK_LEN).zip(xq) {
        for (&wv, &q) in wb.iter().zip(&xb.qs) {
            let term = wv as f64 * (q as f64 * xb.d as f64);
            dot += term;
            magnitude += term.abs();
        }
    }
    (dot, magnitude)
}

fn assert_dot_close(got: f32, want: f64, magnitude: f64, blocks: usize, what: &str) {
    // Per block: s·d and ·isum round twice; the running sum rounds once per block.
    let tolerance = (blocks as f64 + 2.0) * magnitude / (1u64 << 23) as f64;
    assert!(
        (got as f64 - want).abs() <= tolerance,
        "{what}: got {got}, f64 {want}, tolerance {tolerance}"
    );
}

#[test]
fn integer_dots_match_f64_dots_of_dequantized_values() {
    let mut rng = Rng::new(4);
    for blocks in [1usize, 2, 3, 5, 8, 31, 100] {
        for trial in 0..20 {
            let w = row(&mut rng, blocks * BLOCK_LEN);
            let x = row(&mut rng, blocks * BLOCK_LEN);
            let mut xq = vec![BlockQ8::ZERO; blocks];
            quantize_activations(&x, &mut xq).unwrap();
            for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
                let w_row = quantize(dtype, &w);
                let got = match dtype {
                    Dtype::Q8_0 => q8_0_dot(&w_row, &xq),
                    _ => q4_0_dot(&w_row, &xq),
                }
                .unwrap();
                let (want, magnitude) = reference_dot(dtype, &w_row, &xq);
                let what = format!("{dtype:?}, {blocks} blocks, trial {trial}");
                assert_dot_close(got, want, magnitude, blocks, &what);
            }
        }
    }
}

/// The accumulation is part of the contract (SIMD kernels must reproduce it
/// bit for bit): per block `isum` in i32, then `sum += d_w * d_x * isum` in
/// f32, left to right, blocks in order, starting from 0.
#[test]
fn dots_accumulate_in_the_documented_order() {
    let mut rng = Rng::new(6);
    let blocks = 37;
    let mut xq = vec![BlockQ8::ZERO; blocks];
    quantize_activations(&row(&mut rng, blocks * BLOCK_LEN), &mut xq).unwrap();
    for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
        let w_row = quantize(dtype, &row(&mut rng, blocks * BLOCK_LEN));
        let block_bytes = w_row.len() / blocks;
        let mut want = 0f32;
        for (wb, xb) in w_row.chunks(block_bytes).zip(&xq) {
            let d_w = f16_value([wb[0], wb[1]]);
            let levels: Vec<i32> = match dtype {
                Dtype::Q8_0 => wb[2..].iter().map(|&b| b as i8 as i32).collect(),
                _ => (0..BLOCK_LEN)
                    .map(|j| {
                        let byte = wb[2 + j % 16];
                        let nibble = if j < 16 { byte & 15 } else { byte >> 4 };
                        nibble as i32 - 8
                    })
                    .collect(),
            };
            let isum: i32 = levels.iter().zip(&xb.qs).map(|(&w, &x)| w * x as i32).sum();
            want += d_w * xb.d * isum as f32;
        }
        let got = match dtype {
            Dtype::Q8_0 => q8_0_dot(&w_row, &xq),
            _ => q4_0_dot(&w_row, &xq),
        }
        .unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{dtype:?}: {got} vs {want}");
    }
}

#[test]
fn integer_dot_of_extreme_levels_is_exact() {
    // All levels at ±127 / −8: the i32 block sums reach their extremes.
    let w = [-1.0f32; BLOCK_LEN];
    let x = [1.0f32; BLOCK_LEN];
    let mut xq = [BlockQ8::ZERO];
    quantize_activations(&x, &mut xq).unwrap();
    assert_eq!(xq[0].qs, [127; BLOCK_LEN]);
    let q8 = q8_0_dot(&quantize(Dtype::Q8_0, &w), &xq).unwrap();
    let q4 = q4_0_dot(&quantize(Dtype::Q4_0, &w), &xq).unwrap();
    // Weights: q8 levels −127 with s = f16(1/127); q4 level 0 (−8) with s = f16(1/8).
    let s8 = f16_value(f16_bytes(1.0 / 127.0));
    let d = 1.0f32 / 127.0;
    assert_eq!(q8, s8 * d * (-127 * 127 * 32) as f32);
    assert_eq!(q4, 0.125 * d * (-8 * 127 * 32) as f32);
}

#[test]
fn matvec_rows_equal_row_dots_for_awkward_shapes() {
    let mut rng = Rng::new(5);
    for rows in [1usize, 3, 7, 17, 33] {
        for cols in [32usize, 96, 160] {
            let x = row(&mut rng, cols);
            let mut xq = vec![BlockQ8::ZERO; cols / BLOCK_LEN];
            quantize_activations(&x, &mut xq).unwrap();
            for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
                let w = quantize(dtype, &row(&mut rng, rows * cols));
                let matrix = Matrix::new(dtype, rows, cols, &w).unwrap();
                let mut out = vec![f32::NAN; rows];
                matvec_quantized(&mut out, &matrix, &xq).unwrap();
                for (r, &o) in out.iter().enumerate() {
                    let row = matrix.row(r);
                    let dot = match dtype {
                        Dtype::Q8_0 => q8_0_dot(row, &xq),
                        _ => q4_0_dot(row, &xq),
                    }
                    .unwrap();
                    assert_eq!(
                        o.to_bits(),
                        dot.to_bits(),
                        "{dtype:?} {rows}x{cols} row {r}"
                    );
                    let (want, magnitude) = reference_dot(dtype, row, &xq);
                    assert_dot_close(o, want, magnitude, cols / BLOCK_LEN, "matvec");
                }
            }
        }
    }
}

#[test]
fn matvec_of_an_empty_matrix() {
    let matrix = Matrix::new(Dtype::Q8_0, 0, 64, &[]).unwrap();
    let mut out: [f32; 0] = [];
    matvec_quantized(&mut out, &matrix, &[BlockQ8::ZERO; 2]).unwrap();
    let matrix = Matrix::new(Dtype::Q4_0, 2, 0, &[]).unwrap();
    let mut out = [f32::NAN; 2];
    matvec_quantized(&mut out, &matrix, &[]).unwrap();
    assert_eq!(out, [0.0, 0.0]);
}

// ---------------------------------------------------------------------------
// Refusals: never a panic, never a half-written buffer
// ---------------------------------------------------------------------------

#[test]
fn non_finite_values_are_refused_with_their_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![0.5f32; 3 * BLOCK_LEN];
        x[40] = bad;
        for dtype in Dtype::ALL {
            let mut dst = vec![0xaau8; encoded_len(dtype, x.len())];
            let err = quantize_row(dtype, &x, &mut dst).unwrap_err();
            assert!(
                matches!(err, Error::Unrepresentable { index: 40, dtype: d, reason: "not finite", .. } if d == dtype),
                "{dtype:?}: {err:?}"
            );
            assert!(dst.iter().all(|&b| b == 0xaa), "{dtype:?}: dst untouched");
            let mut y = x.clone();
            assert!(fake_quantize(dtype, &mut y).is_err());
            assert!(y[..40].iter().all(|&v| v == 0.5), "{dtype:?}: x untouched");
        }
        let mut blocks = vec![BlockQ8::ZERO; 3];
        let err = quantize_activations(&x, &mut blocks).unwrap_err();
        assert!(matches!(err, Error::Unrepresentable { index: 40, .. }));
        assert!(blocks.iter().all(|b| *b == BlockQ8::ZERO));
        let mut y = x.clone();
        assert!(fake_quantize_activations(&mut y).is_err());
        assert!(y[..40].iter().all(|&v| v == 0.5));
    }
}

#[test]
fn values_that_overflow_the_dtype_or_its_scale_are_refused() {
    let cases = [
        // Q8_0 scale amax/127 overflows f16 (max 65504) from about 8.32e6.
        (Dtype::Q8_0, 9.0e6f32, "its block's scale overflows f16"),
        // Q4_0 scale |max|/8 overflows from 524160.
        (Dtype::Q4_0, -6.0e5, "its block's scale overflows f16"),
        (Dtype::F16, 70_000.0, "overflows f16"),
        (Dtype::BF16, f32::MAX, "overflows bf16"),
    ];
    for (dtype, big, why) in cases {
        let mut x = vec![1.0f32; 2 * BLOCK_LEN];
        x[37] = big;
        let mut dst = vec![0u8; encoded_len(dtype, x.len())];
        let err = quantize_row(dtype, &x, &mut dst).unwrap_err();
        assert_eq!(
            err,
            Error::Unrepresentable {
                index: 37,
                value: big,
                dtype,
                reason: why
            }
        );
        let message = err.to_string();
        assert!(message.contains("element 37") && message.contains(dtype.name()));
    }
    // Just below the limits, all is well.
    let mut dst = vec![0u8; Q8_0_BLOCK_BYTES];
    quantize_row(Dtype::Q8_0, &[8.3e6; BLOCK_LEN], &mut dst).unwrap();
    let mut dst = vec![0u8; Q4_0_BLOCK_BYTES];
    quantize_row(Dtype::Q4_0, &[5.2e5; BLOCK_LEN], &mut dst).unwrap();
    // Activations keep an f32 scale: no such limit.
    let mut blocks = [BlockQ8::ZERO];
    quantize_activations(&[f32::MAX; BLOCK_LEN], &mut blocks).unwrap();
    assert_eq!(blocks[0].qs, [127; BLOCK_LEN]);
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let x = vec![0.25f32; 33];
    for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
        let mut dst = vec![0u8; 64];
        assert_eq!(
            quantize_row(dtype, &x, &mut dst),
            Err(Error::PartialBlock { len: 33 })
        );
        let mut y = x.clone();
        assert_eq!(
            fake_quantize(dtype, &mut y),
            Err(Error::PartialBlock { len: 33 })
        );
        assert_eq!(
            dequantize_row(dtype, &dst, &mut y),
            Err(Error::PartialBlock { len: 33 })
        );
    }
    // Float dtypes take any length.
    let mut y = x.clone();
    fake_quantize(Dtype::F16, &mut y).unwrap();

    let x = vec![0.25f32; 64];
    for dtype in Dtype::ALL {
        let n = encoded_len(dtype, 64);
        let mut short = vec![0u8; n - 1];
        assert_eq!(
            quantize_row(dtype, &x, &mut short),
            Err(Error::BufferTooSmall {
                needed: n,
                available: n - 1
            })
        );
        let mut long = vec![0u8; n + 1];
        assert!(matches!(
            quantize_row(dtype, &x, &mut long),
            Err(Error::InvalidInput { .. })
        ));
        let mut out = vec![0f32; 64];
        assert!(matches!(
            dequantize_row(dtype, &long, &mut out),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            dequantize_row(dtype, &short, &mut out),
            Err(Error::InvalidInput { .. })
        ));
    }

    let mut blocks = vec![BlockQ8::ZERO; 1];
    assert_eq!(
        quantize_activations(&x, &mut blocks),
        Err(Error::BufferTooSmall {
            needed: 2,
            available: 1
        })
    );
    let mut blocks = vec![BlockQ8::ZERO; 3];
    assert!(matches!(
        quantize_activations(&x, &mut blocks),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(
        quantize_activations(&x[..40], &mut blocks),
        Err(Error::PartialBlock { len: 40 })
    );
    let mut y = x[..40].to_vec();
    assert_eq!(
        fake_quantize_activations(&mut y),
        Err(Error::PartialBlock { len: 40 })
    );
    let mut out = vec![0f32; 95];
    assert!(dequantize_activations(&blocks, &mut out).is_err());

    let xq = vec![BlockQ8::ZERO; 2];
    let q8 = vec![0u8; 2 * Q8_0_BLOCK_BYTES];
    let q4 = vec![0u8; 2 * Q4_0_BLOCK_BYTES];
    assert!(q8_0_dot(&q8[..Q8_0_BLOCK_BYTES], &xq).is_err());
    assert!(q8_0_dot(&q8[..q8.len() - 1], &xq[..1]).is_err());
    assert!(q4_0_dot(&q4, &xq[..1]).is_err());
    assert!(q4_0_dot(&q8, &xq).is_err(), "Q8_0 bytes are not a Q4_0 row");
    assert_eq!(q8_0_dot(&q8, &xq), Ok(0.0));
    assert_eq!(q4_0_dot(&q4, &xq), Ok(0.0));
}

#[test]
fn matvec_refuses_mismatched_shapes() {
    let w = vec![0u8; 3 * 2 * Q8_0_BLOCK_BYTES];
    let matrix = Matrix::new(Dtype::Q8_0, 3, 64, &w).unwrap();
    let xq = vec![BlockQ8::ZERO; 2];
    let mut out = vec![0f32; 3];
    matvec_quantized(&mut out, &matrix, &xq).unwrap();

    assert!(matches!(
        matvec_quantized(&mut out, &matrix, &xq[..1]),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        matvec_quantized(&mut out[..2], &matrix, &xq),
        Err(Error::BufferTooSmall {
            needed: 3,
            available: 2
        })
    ));
    let mut long = vec![0f32; 4];
    assert!(matches!(
        matvec_quantized(&mut long, &matrix, &xq),
        Err(Error::InvalidInput { .. })
    ));
    // A hand-built Matrix whose bytes disagree with its shape.
    let inconsistent = Matrix { rows: 4, ..matrix };
    let mut out4 = vec![0f32; 4];
    assert!(matches!(
        matvec_quantized(&mut out4, &inconsistent, &xq),
        Err(Error::InvalidInput { .. })
    ));
    let float = Matrix::new(Dtype::F32, 1, 64, &[0u8; 256]).unwrap();
    assert!(matches!(
        matvec_quantized(&mut out[..1], &float, &xq),
        Err(Error::InvalidInput { .. })
    ));
    let partial = Matrix { cols: 40, ..matrix };
    assert!(matches!(
        matvec_quantized(&mut out, &partial, &xq),
        Err(Error::PartialBlock { len: 40 })
    ));
}
