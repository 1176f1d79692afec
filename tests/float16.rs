//! The engine's own f16/bf16 conversions agree with the `half` crate.

mod common;

use common::Rng;
use kinglet::float16::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

#[test]
fn every_f16_widens_like_half() {
    for h in 0..=u16::MAX {
        let ours = f16_to_f32(h);
        let theirs = half::f16::from_bits(h).to_f32();
        assert!(
            ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
            "{h:#06x}"
        );
        let (ours, theirs) = (bf16_to_f32(h), half::bf16::from_bits(h).to_f32());
        assert!(
            ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
            "bf16 {h:#06x}"
        );
    }
}

#[test]
fn narrowing_rounds_like_half() {
    let mut rng = Rng::new(42);
    let check = |x: f32| {
        let (ours, theirs) = (f32_to_f16(x), half::f16::from_f32(x).to_bits());
        assert!(
            ours == theirs || (x.is_nan() && ours & 0x7C00 == 0x7C00 && ours & 0x3FF != 0),
            "f16 {x:e}: {ours:#x} vs {theirs:#x}"
        );
        let (ours, theirs) = (f32_to_bf16(x), half::bf16::from_f32(x).to_bits());
        assert!(
            ours == theirs || (x.is_nan() && ours & 0x7F80 == 0x7F80 && ours & 0x7F != 0),
            "bf16 {x:e}: {ours:#x} vs {theirs:#x}"
        );
    };
    for _ in 0..1_000_000 {
        check(f32::from_bits(rng.next_u64() as u32));
    }
    // Every f16 value, the halfway points between neighbours, and edges.
    for h in 0..0x7C00u16 {
        let x = f16_to_f32(h);
        let next = f16_to_f32(h + 1);
        for v in [x, (x + next) / 2.0, -x, -(x + next) / 2.0] {
            check(v);
        }
    }
    for x in [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        65520.0,
        1e-8,
        f32::MIN_POSITIVE,
        f32::MAX,
    ] {
        check(x);
    }
}
