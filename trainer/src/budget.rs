//! What a run holds in memory, checked against the memory budget before
//! anything large is allocated. The budget is kinglet's: `--max-memory`,
//! else the memory available when the command starts (see
//! `kinglet_tools::memory`). Every size is computed in checked arithmetic,
//! so a flag such as `--batch 2305843009213693952` is refused in one line,
//! never wrapped around or allocated.

use kinglet_tools::cmd::grouped;
use kinglet_tools::memory::Budget;

use crate::activations::arena_floats;
use crate::config::{ModelConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::params::ParamLayout;
use crate::shards::SHARDS;

/// One part of a run's memory.
struct Part {
    /// Its size (`None`: beyond 64 bits).
    bytes: Option<u64>,
    /// What it holds.
    what: String,
    /// What lowers it.
    lower: &'static str,
}

/// The model's parameters, times `copies` arrays of them.
fn weights(m: &ModelConfig, copies: u64, what: &str) -> Part {
    let params = ParamLayout::new(m).total as u64;
    Part {
        bytes: params.checked_mul(copies * 4),
        what: format!("the {} parameters {what}", grouped(params)),
        lower: "a smaller --dim, --hidden or --layers (or a smaller vocabulary) lowers it",
    }
}

/// The activations of `batch` windows of the context, and `extra` bytes.
fn activations(m: &ModelConfig, batch: usize, extra: Option<u64>, what: String) -> Part {
    Part {
        bytes: arena_floats(m, batch, m.context)
            .and_then(|f| f.checked_mul(4))
            .and_then(|b| b.checked_add(extra?)),
        what,
        lower: "a smaller --batch or --context lowers it",
    }
}

/// The activations of a micro-batch of `batch` windows.
fn batch_activations(m: &ModelConfig, batch: usize) -> Part {
    let what = format!(
        "the activations of --batch {} windows of {} tokens",
        grouped(batch as u64),
        m.context
    );
    activations(m, batch, Some(0), what)
}

/// `Ok` when the parts fit `budget` together; else one line naming the
/// total, the budget, and the largest part with what lowers it.
fn check(budget: &Budget, doing: &str, parts: Vec<Part>) -> Result<()> {
    let total = parts
        .iter()
        .try_fold(0u64, |sum, p| sum.checked_add(p.bytes?));
    if budget.fits(total) {
        return Ok(());
    }
    // `None` (beyond counting) is the largest.
    let largest = parts
        .iter()
        .max_by_key(|p| p.bytes.map_or(u128::MAX, u128::from))
        .expect("at least one part");
    let lower = format!("most of it is {}: {}", largest.what, largest.lower);
    Err(TrainError::Memory(
        budget.check(total, doing, &lower).unwrap_err().to_string(),
    ))
}

/// A training run: the parameters with their gradients and AdamW's two
/// moments (and the gradients of up to three more shards, and the rounded
/// weights of QAT), a micro-batch's activations, and an evaluation's.
pub fn check_training(
    budget: &Budget,
    m: &ModelConfig,
    t: &TrainConfig,
    eval_windows: usize,
    qat: bool,
) -> Result<()> {
    let copies = 4 + (SHARDS as u64 - 1) + u64::from(qat);
    let eval_batch = t.batch.min(eval_windows);
    let starts = (eval_windows as u64).checked_mul(8);
    let parts = vec![
        weights(m, copies, "with their gradients and optimizer state"),
        batch_activations(m, t.batch),
        Part {
            lower: "fewer --eval-windows lower it",
            ..activations(
                m,
                eval_batch,
                starts,
                format!("evaluating {} --eval-windows", grouped(eval_windows as u64)),
            )
        },
    ];
    check(budget, "training", parts)
}

/// `kinglet-train eval`, once the checkpoint is read: the activations of
/// `batch` windows at a time, and the rounded weights of a QAT model.
pub fn check_evaluation(budget: &Budget, m: &ModelConfig, batch: usize, qat: bool) -> Result<()> {
    let mut parts = vec![batch_activations(m, batch)];
    if qat {
        parts.push(weights(m, 1, "rounded as the export will"));
    }
    check(budget, "the evaluation", parts)
}

/// `check-reference`: the activations of the dump's batch.
pub fn check_reference(budget: &Budget, m: &ModelConfig, batch: usize) -> Result<()> {
    let what = format!(
        "the activations of the dump's {} windows of {} tokens",
        grouped(batch as u64),
        m.context
    );
    let parts = vec![Part {
        lower: "the dump's batch and block_size set it",
        ..activations(m, batch, Some(0), what)
    }];
    check(budget, "replaying the dump", parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::preset;

    fn seed() -> (ModelConfig, TrainConfig) {
        let p = preset("seed").expect("preset");
        let mut m = p.model;
        m.vocab_size = 65;
        (m, p.train)
    }

    #[test]
    fn the_seed_preset_fits_and_huge_flags_name_themselves() {
        let (m, t) = seed();
        let budget = Budget::new(Some(1 << 30));
        check_training(&budget, &m, &t, 256, false).expect("the seed preset fits 1 GiB");

        let huge = TrainConfig {
            batch: 1_000_000_000_000,
            ..t
        };
        let e = check_training(&budget, &m, &huge, 256, false).unwrap_err();
        assert!(matches!(e, TrainError::Memory(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("training needs "), "{text}");
        assert!(text.contains("--batch 1,000,000,000,000"), "{text}");
        assert!(!text.contains('\n'));

        let wrapping = TrainConfig {
            batch: 2_305_843_009_213_693_952,
            ..t
        };
        let text = check_training(&budget, &m, &wrapping, 256, false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("more than 16 EiB") && text.contains("--batch"),
            "{text}"
        );

        let text = check_training(&budget, &m, &t, 1_000_000_000_000, false)
            .unwrap_err()
            .to_string();
        assert!(text.contains("--eval-windows"), "{text}");

        let wide = ModelConfig {
            dim: 65536,
            n_heads: 8,
            n_kv_heads: 8,
            n_layers: 1,
            hidden_dim: 32,
            ..m
        };
        let text = check_training(&budget, &wide, &t, 256, false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("parameters") && text.contains("--dim"),
            "{text}"
        );
    }
}
