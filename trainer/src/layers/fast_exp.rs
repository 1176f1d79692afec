//! The trainer's `exp`: the engine's own ([`kinglet::kernels::reference::exp`]),
//! branch-free plain f32 arithmetic that the compiler vectorizes (libm's
//! `expf` is a call per element and was ~6% of a training step), within
//! 2 ulp of e^x over the whole f32 range. One definition for both, so the
//! trainer's softmax, SwiGLU gate and cross-entropy use the same `exp` as
//! inference.

pub use kinglet::kernels::reference::exp;

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
