//! Learning rate: linear warmup, then constant or cosine decay to a floor.

use crate::config::{Decay, TrainConfig};

/// The learning rate for 0-based optimizer step `step`.
pub fn learning_rate(c: &TrainConfig, step: u64) -> f32 {
    if step < c.warmup_steps {
        return c.lr * (step + 1) as f32 / c.warmup_steps as f32;
    }
    match c.decay {
        Decay::Constant => c.lr,
        Decay::Cosine => {
            let span = c.steps.saturating_sub(c.warmup_steps).max(1);
            let progress = ((step - c.warmup_steps) as f64 / span as f64).min(1.0);
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            (c.min_lr as f64 + (c.lr - c.min_lr) as f64 * cosine) as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::preset;

    #[test]
    fn warmup_rises_then_cosine_reaches_the_floor() {
        let c = preset("small").expect("preset").train;
        assert!(learning_rate(&c, 0) < learning_rate(&c, 10));
        assert_eq!(learning_rate(&c, c.warmup_steps - 1), c.lr);
        assert_eq!(learning_rate(&c, c.warmup_steps), c.lr);
        let end = learning_rate(&c, c.steps);
        assert!((end - c.min_lr).abs() < 1e-9, "{end}");
        let mid = learning_rate(&c, (c.steps + c.warmup_steps) / 2);
        assert!((mid - (c.lr + c.min_lr) / 2.0).abs() < 1e-5, "{mid}");
        let seed = preset("seed").expect("preset").train;
        assert_eq!(learning_rate(&seed, 0), 1e-3);
        assert_eq!(learning_rate(&seed, 999), 1e-3);
    }
}
