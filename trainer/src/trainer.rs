//! The training state and one optimizer step: sample micro-batches, forward,
//! backward (accumulating), clip, schedule, AdamW.

use crate::adamw::{clip_global_norm, global_norm, AdamW, AdamWStep};
use crate::bail;
use crate::checkpoint::Checkpoint;
use crate::config::{ModelConfig, TrainConfig};
use crate::data::{sample_batch, CharTokenizer, Corpus};
use crate::error::Result;
use crate::params::ParamLayout;
use crate::qat::{quantize_weights_into, Qat};
use crate::ranks::{check_rank_count, share, Alone, Ranks};
use crate::rng::Rng;
use crate::schedule::learning_rate;
use crate::shards::{shard_sequences, BatchShards};

/// Seeds the batch sampler differently from the initializer.
const DATA_STREAM: u64 = 0xD1B5_4A32_D192_ED03;

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean training loss over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// A model being trained, with everything a checkpoint holds.
pub struct Trainer {
    /// Tensor layout of the arenas.
    pub layout: ParamLayout,
    /// Optimization settings.
    pub train: TrainConfig,
    /// Parameter arena. [layout.total]
    pub params: Vec<f32>,
    /// Gradient arena. [layout.total]
    pub grads: Vec<f32>,
    /// AdamW moments.
    pub adamw: AdamW,
    /// Optimizer steps taken.
    pub step: u64,
    /// Batch sampler.
    pub data_rng: Rng,
    /// Validation loss at the last evaluation.
    pub val_loss: Option<f32>,
    /// The character vocabulary.
    pub tokenizer: CharTokenizer,
    /// sha256 of the corpus, hex.
    pub corpus_sha256: String,
    /// The corpus file's absolute path, empty if unknown.
    pub corpus_path: String,
    /// Quantization-aware training, if on (set with [`Trainer::set_qat`]).
    pub qat: Option<Qat>,
    /// The fake-quantized weights the forward pass runs with under QAT. [layout.total]
    shadow: Vec<f32>,
    /// Per-shard activations and gradients of a micro-batch.
    shards: BatchShards,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl Trainer {
    /// A fresh model for `corpus`, with its tokenizer, sha256 and path.
    pub fn for_corpus(model: ModelConfig, train: TrainConfig, corpus: &Corpus) -> Result<Self> {
        let mut trainer = Self::new(
            model,
            train,
            corpus.tokenizer.clone(),
            corpus.sha256.clone(),
        )?;
        trainer.corpus_path = corpus.path.clone();
        Ok(trainer)
    }

    /// A fresh model: initialized from `train.seed`.
    pub fn new(
        model: ModelConfig,
        train: TrainConfig,
        tokenizer: CharTokenizer,
        corpus_sha256: String,
    ) -> Result<Self> {
        model.validate()?;
        train.validate()?;
        if tokenizer.len() != model.vocab_size {
            bail!(
                Corpus,
                "the corpus has {} characters but the model's vocabulary is {}",
                tokenizer.len(),
                model.vocab_size
            );
        }
        let layout = ParamLayout::new(&model);
        let params = layout.init(train.init_std, &mut Rng::new(train.seed));
        let n = layout.total;
        Ok(Trainer {
            train,
            params,
            grads: vec![0.0; n],
            adamw: AdamW::new(n),
            step: 0,
            data_rng: Rng::new(train.seed ^ DATA_STREAM),
            val_loss: None,
            tokenizer,
            corpus_sha256,
            corpus_path: String::new(),
            qat: None,
            shadow: Vec::new(),
            shards: BatchShards::new(&model, train.batch, model.context),
            inputs: Vec::new(),
            targets: Vec::new(),
            layout,
        })
    }

    /// Continues from a checkpoint, with `train` settings (which may extend
    /// the number of steps).
    pub fn from_checkpoint(c: Checkpoint, train: TrainConfig) -> Result<Self> {
        train.validate()?;
        let layout = ParamLayout::new(&c.model);
        let n = layout.total;
        Ok(Trainer {
            train,
            params: c.params,
            grads: vec![0.0; n],
            adamw: AdamW { m: c.m, v: c.v },
            step: c.step,
            data_rng: Rng::from_state(c.data_rng),
            val_loss: c.val_loss,
            tokenizer: c.tokenizer,
            corpus_sha256: c.corpus_sha256,
            corpus_path: c.corpus_path,
            qat: c.qat,
            shadow: Vec::new(),
            shards: BatchShards::new(&c.model, train.batch, c.model.context),
            inputs: Vec::new(),
            targets: Vec::new(),
            layout,
        })
    }

    /// The state as a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            model: self.layout.config,
            train: self.train,
            step: self.step,
            data_rng: self.data_rng.state(),
            val_loss: self.val_loss,
            corpus_sha256: self.corpus_sha256.clone(),
            corpus_path: self.corpus_path.clone(),
            tokenizer: self.tokenizer.clone(),
            params: self.params.clone(),
            m: self.adamw.m.clone(),
            v: self.adamw.v.clone(),
            qat: self.qat,
        }
    }

    /// Turns quantization-aware training on (or off with `None`) for the
    /// steps still to come.
    pub fn set_qat(&mut self, qat: Option<Qat>) -> Result<()> {
        if let Some(q) = &qat {
            q.check_model(&self.layout.config)?;
        }
        self.qat = qat;
        Ok(())
    }

    /// The model's shape.
    pub fn model(&self) -> &ModelConfig {
        &self.layout.config
    }

    /// Tokens one step consumes.
    pub fn tokens_per_step(&self) -> usize {
        self.train.batch * self.train.accum_steps * self.model().context
    }

    /// Spreads the steps over `ranks`: this process runs its share of each
    /// micro-batch's shards. An error if their number does not divide the
    /// shard count.
    pub fn spread_over(&mut self, ranks: &dyn Ranks) -> Result<()> {
        let (config, batch) = (self.layout.config, self.train.batch);
        let count = shard_sequences(batch, config.context).len();
        check_rank_count(ranks.size(), count, batch, config.context)?;
        let share = share(ranks.rank(), ranks.size(), count);
        self.shards = BatchShards::share(&config, batch, config.context, share);
        Ok(())
    }

    /// One optimizer step on random windows of `train_tokens`. A non-finite
    /// loss stops before any update, naming the step (1-based).
    pub fn step(&mut self, train_tokens: &[u32]) -> Result<StepStats> {
        self.step_with(train_tokens, &mut Alone)
    }

    /// [`Trainer::step`] as one of `ranks` (after [`Trainer::spread_over`]):
    /// every rank samples the same micro-batches, runs its shards, and ends
    /// with rank 0's sum of the gradients, so every rank takes the same step.
    pub fn step_with(&mut self, train_tokens: &[u32], ranks: &mut dyn Ranks) -> Result<StepStats> {
        let t = &self.train;
        let context = self.layout.config.context;
        let scale = 1.0 / (t.batch * context * t.accum_steps) as f32;
        self.grads.fill(0.0);
        // Straight-through estimator: forward and backward run with the
        // rounded weights, and AdamW applies their gradients to the floats.
        let qat = self.qat.filter(|q| q.active_at(self.step));
        if let Some(q) = &qat {
            quantize_weights_into(&self.layout, &self.params, &mut self.shadow, q.dtype)?;
        }
        let weights: &[f32] = if qat.is_some() {
            &self.shadow
        } else {
            &self.params
        };
        let quantize_inputs = qat.is_some_and(|q| q.activations);
        let mut losses = vec![0.0f64; t.accum_steps];
        for loss in &mut losses {
            sample_batch(
                train_tokens,
                t.batch,
                context,
                &mut self.data_rng,
                &mut self.inputs,
                &mut self.targets,
            );
            self.shards.run(
                &self.layout,
                weights,
                &mut self.grads,
                (&self.inputs, &self.targets),
                scale,
                quantize_inputs,
            );
            *loss = ranks.combine_micro_batch(&mut self.shards, &mut self.grads);
        }
        ranks.share_step(&mut losses, &mut self.grads);
        if let Some(loss) = losses.iter().find(|l| !l.is_finite()) {
            bail!(
                Diverged,
                "training loss became {loss} at step {}; stopped without updating",
                self.step + 1
            );
        }
        let loss_sum: f64 = losses.iter().sum();
        let grad_norm = if t.grad_clip > 0.0 {
            clip_global_norm(&mut self.grads, t.grad_clip)
        } else {
            global_norm(&self.grads)
        };
        if !grad_norm.is_finite() {
            bail!(
                Diverged,
                "gradient norm became {grad_norm} at step {}; stopped without updating",
                self.step + 1
            );
        }
        let lr = learning_rate(t, self.step);
        let settings = AdamWStep {
            lr,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
            decay_norms: t.decay_norms,
            t: self.step + 1,
        };
        self.adamw
            .step(&self.layout, &mut self.params, &self.grads, settings);
        self.step += 1;
        Ok(StepStats {
            loss: loss_sum / t.accum_steps as f64,
            lr,
            grad_norm,
        })
    }
}
