//! Model shape, training hyperparameters, and the named presets.

use crate::bail;
use crate::error::Result;

/// The shape of a LLaMA model as the trainer builds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Training window length (the exported model's `max_seq_len`).
    pub context: usize,
    /// Width of the residual stream.
    pub dim: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Width of the SwiGLU hidden layer.
    pub hidden_dim: usize,
    /// Whether the classifier reuses the token embedding.
    pub tied_classifier: bool,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
}

impl ModelConfig {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Width of all key (or value) heads of one position.
    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_kv_heads
    }

    /// The engine's view of this model.
    pub fn to_engine(&self) -> kinglet::Config {
        kinglet::Config {
            dim: self.dim as u32,
            hidden_dim: self.hidden_dim as u32,
            n_layers: self.n_layers as u32,
            n_heads: self.n_heads as u32,
            n_kv_heads: self.n_kv_heads as u32,
            vocab_size: self.vocab_size as u32,
            max_seq_len: self.context as u32,
            rope_theta: self.rope_theta,
            norm_eps: self.norm_eps,
            tied_classifier: self.tied_classifier,
        }
    }

    /// Checks the shape with the engine's own rules (so every trained model can
    /// be exported), after catching zeros with a message that names the flag.
    pub fn validate(&self) -> Result<()> {
        for (value, flag) in [
            (self.vocab_size, "vocabulary size"),
            (self.context, "--context"),
            (self.dim, "--dim"),
            (self.n_layers, "--layers"),
            (self.n_heads, "--heads"),
            (self.n_kv_heads, "--kv-heads"),
            (self.hidden_dim, "--hidden"),
        ] {
            if value == 0 {
                bail!(Settings, "{flag} must be at least 1");
            }
            if value > u32::MAX as usize {
                bail!(Settings, "{flag} is too large ({value})");
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            bail!(
                Settings,
                "--dim {} is not divisible by --heads {}",
                self.dim,
                self.n_heads
            );
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            bail!(
                Settings,
                "--heads {} is not divisible by --kv-heads {}",
                self.n_heads,
                self.n_kv_heads
            );
        }
        // The engine's rules for these two, said with the flags' names.
        if !(self.rope_theta.is_finite() && self.rope_theta >= 1.0) {
            bail!(
                Settings,
                "--rope-theta must be a finite number >= 1 (got {})",
                self.rope_theta
            );
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            bail!(
                Settings,
                "--norm-eps must be a finite number in (0, 1) (got {})",
                self.norm_eps
            );
        }
        if let Err(e) = self.to_engine().validate() {
            bail!(Settings, "model shape not supported: {e}");
        }
        Ok(())
    }
}

/// How the learning rate moves after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    /// Stays at the peak.
    Constant,
    /// Half a cosine from the peak down to the floor at the last step.
    Cosine,
}

/// Most optimizer steps a run may ask for: a billion steps of the smallest
/// model take weeks; more is a typo.
pub const MAX_STEPS: u64 = 1_000_000_000;

/// Most micro-batches accumulated per step.
pub const MAX_ACCUM: usize = 65_536;

/// Everything about the optimization that is not the model's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches whose gradients are summed before one optimizer step.
    pub accum_steps: usize,
    /// Optimizer steps in the run.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// Learning-rate floor at the end of a cosine decay.
    pub min_lr: f32,
    /// Linear warmup steps (from lr/warmup to lr).
    pub warmup_steps: u64,
    /// Shape of the schedule after warmup.
    pub decay: Decay,
    /// AdamW first-moment decay.
    pub beta1: f32,
    /// AdamW second-moment decay.
    pub beta2: f32,
    /// AdamW denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Also decay the 1-D norm gains (off by default).
    pub decay_norms: bool,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f32,
    /// Standard deviation of the normal initialization.
    pub init_std: f32,
    /// Seed for initialization and batch sampling.
    pub seed: u64,
}

impl TrainConfig {
    /// Checks the numbers that would otherwise fail deep inside training.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            bail!(Settings, "--batch must be at least 1");
        }
        if self.steps == 0 {
            bail!(Settings, "--steps must be at least 1");
        }
        if self.accum_steps == 0 {
            bail!(Settings, "--accum must be at least 1");
        }
        if self.steps > MAX_STEPS {
            bail!(
                Settings,
                "--steps must be at most {MAX_STEPS} (got {})",
                self.steps
            );
        }
        if self.accum_steps > MAX_ACCUM {
            bail!(
                Settings,
                "--accum must be at most {MAX_ACCUM} (got {})",
                self.accum_steps
            );
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            bail!(
                Settings,
                "--adam-eps must be a finite number > 0 (got {})",
                self.eps
            );
        }
        for (v, flag) in [
            (self.lr, "--lr"),
            (self.min_lr, "--min-lr"),
            (self.eps, "--adam-eps"),
            (self.weight_decay, "--weight-decay"),
            (self.grad_clip, "--grad-clip"),
            (self.init_std, "--init-std"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!(Settings, "{flag} must be a finite number >= 0 (got {v})");
            }
        }
        for (v, flag) in [(self.beta1, "--beta1"), (self.beta2, "--beta2")] {
            if !(0.0..1.0).contains(&v) {
                bail!(Settings, "{flag} must be in [0, 1) (got {v})");
            }
        }
        Ok(())
    }
}

/// A named starting point; every field can be overridden by a flag.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    /// The model shape (vocab size is filled in from the corpus).
    pub model: ModelConfig,
    /// The optimization settings.
    pub train: TrainConfig,
}

/// Names accepted by `--preset`.
pub const PRESET_NAMES: [&str; 2] = ["seed", "small"];

/// The preset called `name`, or `None`.
pub fn preset(name: &str) -> Option<Preset> {
    // The tutorial model this project grew from, as a correct LLaMA.
    let seed = Preset {
        model: ModelConfig {
            vocab_size: 65,
            context: 16,
            dim: 128,
            n_layers: 4,
            n_heads: 8,
            n_kv_heads: 8,
            hidden_dim: 352,
            tied_classifier: false,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
        },
        train: TrainConfig {
            batch: 32,
            accum_steps: 1,
            steps: 1000,
            lr: 1e-3,
            min_lr: 1e-3,
            warmup_steps: 0,
            decay: Decay::Constant,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            decay_norms: false,
            grad_clip: 0.0,
            init_std: 0.02,
            seed: 1337,
        },
    };
    match name {
        "seed" => Some(seed),
        // Longer context and a wider, deeper model for readable text; warmup
        // and cosine decay keep the larger learning rate stable.
        "small" => Some(Preset {
            model: ModelConfig {
                context: 128,
                dim: 192,
                n_layers: 6,
                n_heads: 6,
                n_kv_heads: 6,
                hidden_dim: 512,
                ..seed.model
            },
            train: TrainConfig {
                batch: 16,
                steps: 5000,
                lr: 2e-3,
                min_lr: 2e-4,
                warmup_steps: 200,
                decay: Decay::Cosine,
                grad_clip: 1.0,
                ..seed.train
            },
        }),
        _ => None,
    }
}
