//! `check-reference`: replays a PyTorch reference dump (format
//! `reference-dump-1`, as `data/torch-ref/tiny_f64.json`) and measures how far
//! the trainer's loss, logits, gradients, AdamW update and step losses are
//! from it, each relative to the reference tensor's largest magnitude.

use crate::activations::Activations;
use crate::adamw::{AdamW, AdamWStep};
use crate::bail;
use crate::budget;
use crate::config::ModelConfig;
use crate::error::{Result, TrainError};
use crate::model;
use crate::params::ParamLayout;
use kinglet_tools::memory::Budget;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// The largest relative error `check-reference` accepts.
pub const TOLERANCE: f64 = 1e-4;

/// One compared quantity.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// What was compared, e.g. `grad.layers.0.wq`.
    pub quantity: String,
    /// max |ours − reference| / max |reference| (absolute when the reference is all zero).
    pub worst_relative: f64,
}

/// Every comparison, in the order they were made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReferenceReport {
    /// One row per quantity.
    pub rows: Vec<Comparison>,
}

impl ReferenceReport {
    /// The largest error of all rows.
    pub fn worst(&self) -> f64 {
        self.rows
            .iter()
            .map(|r| r.worst_relative)
            .fold(0.0, |a, b| if b.is_nan() { f64::NAN } else { a.max(b) })
    }

    /// Whether every row is within [`TOLERANCE`] (NaN fails).
    pub fn passes(&self) -> bool {
        self.rows.iter().all(|r| r.worst_relative <= TOLERANCE)
    }
}

/// An array from the dump's binary file.
struct Array {
    shape: Vec<usize>,
    values: Vec<f64>,
}

struct Dump {
    json: Value,
    arrays: HashMap<String, Array>,
}

impl Dump {
    fn open(json_path: &Path) -> Result<Dump> {
        let text = std::fs::read_to_string(json_path)
            .map_err(|e| TrainError::Io(format!("cannot read {}: {e}", json_path.display())))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| {
            TrainError::Reference(format!("{} is not JSON: {e}", json_path.display()))
        })?;
        if json["format"] != "reference-dump-1" {
            bail!(
                Reference,
                "{}: expected format \"reference-dump-1\"",
                json_path.display()
            );
        }
        let bin_path = json_path.with_extension("bin");
        let bin = std::fs::read(&bin_path).map_err(|e| {
            TrainError::Io(format!(
                "cannot read the array file {} beside the dump: {e}",
                bin_path.display()
            ))
        })?;
        let mut arrays = HashMap::new();
        let list = json["arrays"]
            .as_array()
            .ok_or_else(|| TrainError::Reference("dump has no \"arrays\" list".into()))?;
        for a in list {
            let name = a["name"]
                .as_str()
                .ok_or_else(|| TrainError::Reference("array without a name".into()))?;
            let shape: Vec<usize> = a["shape"]
                .as_array()
                .ok_or_else(|| TrainError::Reference(format!("array {name} has no shape")))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| TrainError::Reference(format!("array {name} has a bad shape")))?;
            let count: usize = shape.iter().product();
            let offset = a["offset"].as_u64().unwrap_or(u64::MAX) as usize;
            let (width, dtype) = match a["dtype"].as_str() {
                Some("f64") => (8, 'f'),
                Some("f32") => (4, 'g'),
                Some("i32") => (4, 'i'),
                Some("i64") => (8, 'l'),
                other => bail!(Reference, "array {name}: unsupported dtype {other:?}"),
            };
            let bytes = count
                .checked_mul(width)
                .and_then(|n| offset.checked_add(n).map(|end| (n, end)))
                .filter(|&(n, end)| end <= bin.len() && a["bytes"].as_u64() == Some(n as u64));
            let Some((n, _)) = bytes else {
                bail!(
                    Reference,
                    "array {name} does not fit the array file or its byte count is wrong"
                );
            };
            let raw = &bin[offset..offset + n];
            let values = raw
                .chunks_exact(width)
                .map(|b| match dtype {
                    'f' => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
                    'g' => f32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as f64,
                    'i' => i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as f64,
                    _ => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64,
                })
                .collect();
            arrays.insert(name.to_string(), Array { shape, values });
        }
        Ok(Dump { json, arrays })
    }

    fn array(&self, name: &str) -> Result<&Array> {
        self.arrays
            .get(name)
            .ok_or_else(|| TrainError::Reference(format!("the dump has no array {name}")))
    }

    fn config_usize(&self, key: &str) -> Result<usize> {
        self.json["config"][key]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| TrainError::Reference(format!("dump config lacks integer {key}")))
    }

    fn config_f64(&self, key: &str) -> Result<f64> {
        self.json["config"][key]
            .as_f64()
            .ok_or_else(|| TrainError::Reference(format!("dump config lacks number {key}")))
    }

    fn tokens(&self, name: &str, vocab: usize) -> Result<Vec<u32>> {
        let a = self.array(name)?;
        a.values
            .iter()
            .map(|&t| {
                if t >= 0.0 && (t as usize) < vocab {
                    Ok(t as u32)
                } else {
                    Err(TrainError::Reference(format!(
                        "{name} holds token {t}, outside the vocabulary"
                    )))
                }
            })
            .collect()
    }
}

/// Our tensor name for a dump parameter name.
fn our_name(dump_name: &str) -> &str {
    match dump_name {
        "tok_emb" => "tok_embedding",
        "lm_head" => "classifier",
        other => other,
    }
}

fn relative_error(ours: impl Iterator<Item = f64>, reference: &[f64]) -> f64 {
    let mut worst = 0.0f64;
    let mut scale = 0.0f64;
    let mut n = 0;
    for (a, &b) in ours.zip(reference) {
        let diff = (a - b).abs();
        worst = if diff.is_nan() {
            f64::NAN
        } else {
            worst.max(diff)
        };
        scale = scale.max(b.abs());
        n += 1;
    }
    if n != reference.len() {
        return f64::NAN;
    }
    if scale > 0.0 {
        worst / scale
    } else {
        worst
    }
}

/// Replays the dump at `json_path` (its `.bin` beside it) and compares.
pub fn check_reference(json_path: &Path) -> Result<ReferenceReport> {
    let dump = Dump::open(json_path)?;
    let n_heads = dump.config_usize("n_heads")?;
    let rope = dump.json["config"]["rope"]
        .as_str()
        .unwrap_or("interleaved");
    if rope != "interleaved" {
        bail!(
            Reference,
            "the dump uses RoPE convention {rope:?}; kinglet rotates adjacent (interleaved) pairs"
        );
    }
    let config = ModelConfig {
        vocab_size: dump.config_usize("vocab")?,
        context: dump.config_usize("block_size")?,
        dim: dump.config_usize("d_model")?,
        n_layers: dump.config_usize("n_layers")?,
        n_heads,
        n_kv_heads: dump.config_usize("n_kv_heads").unwrap_or(n_heads),
        hidden_dim: dump.config_usize("hidden")?,
        tied_classifier: dump.json["config"]["tie"].as_bool().unwrap_or(false),
        rope_theta: dump.config_f64("rope_theta")? as f32,
        norm_eps: dump.config_f64("norm_eps")? as f32,
    };
    config.validate()?;
    let batch = dump.config_usize("batch")?;
    let decay_norms = match dump.json["config"]["wd_mode"].as_str().unwrap_or("2d") {
        "2d" => false,
        "all" => true,
        other => bail!(
            Reference,
            "unsupported wd_mode {other:?} (expected \"2d\" or \"all\")"
        ),
    };
    let opt = |t| -> Result<AdamWStep> {
        Ok(AdamWStep {
            lr: dump.config_f64("lr")? as f32,
            beta1: dump.config_f64("beta1")? as f32,
            beta2: dump.config_f64("beta2")? as f32,
            eps: dump.config_f64("eps")? as f32,
            weight_decay: dump.config_f64("wd")? as f32,
            decay_norms,
            t,
        })
    };
    let layout = ParamLayout::new(&config);
    let names: Vec<String> = dump.json["param_names"]
        .as_array()
        .ok_or_else(|| TrainError::Reference("dump lacks param_names".into()))?
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| TrainError::Reference("param_names must be strings".into()))?;
    let mut params = vec![0.0f32; layout.total];
    let mut covered = vec![false; layout.slots.len()];
    for name in &names {
        let Some(index) = layout.slots.iter().position(|s| s.name == our_name(name)) else {
            bail!(
                Reference,
                "the dump's parameter {name} has no place in this model"
            );
        };
        let slot = &layout.slots[index];
        let a = dump.array(&format!("param.{name}"))?;
        if a.shape != slot.shape {
            bail!(
                Reference,
                "param.{name} has shape {:?}, expected {:?}",
                a.shape,
                slot.shape
            );
        }
        for (p, &x) in params[slot.range()].iter_mut().zip(&a.values) {
            *p = x as f32;
        }
        covered[index] = true;
    }
    if let Some(i) = covered.iter().position(|c| !c) {
        bail!(
            Reference,
            "the dump has no initial values for {}",
            layout.slots[i].name
        );
    }

    let x = dump.tokens("x", config.vocab_size)?;
    let y = dump.tokens("y", config.vocab_size)?;
    if batch.checked_mul(config.context) != Some(x.len()) || y.len() != x.len() {
        bail!(Reference, "x and y must hold batch × block_size tokens");
    }
    budget::check_reference(&Budget::new(None), &config, batch)?;
    let mut acts = Activations::new(&config, batch, config.context);
    let mut report = ReferenceReport::default();
    let mut push = |quantity: String, worst_relative: f64| {
        report.rows.push(Comparison {
            quantity,
            worst_relative,
        })
    };

    let loss = model::forward(&layout, &params, &mut acts, &x, Some(&y));
    push(
        "loss".into(),
        relative_error([loss].into_iter(), &dump.array("loss")?.values),
    );
    let logits = model::logits(&mut acts, batch);
    push(
        "logits".into(),
        relative_error(
            logits.iter().map(|&v| v as f64),
            &dump.array("logits")?.values,
        ),
    );
    let mut grads = vec![0.0f32; layout.total];
    // The mean loss over the batch's positions.
    let scale = 1.0 / (batch * config.context) as f32;
    model::backward(&layout, &params, &mut grads, &mut acts, &x, &y, scale);
    // Every named tensor of `arena` against the dump's `{prefix}.{name}`.
    let mut per_tensor = |prefix: &str, arena: &[f32]| -> Result<()> {
        for name in &names {
            let slot = layout
                .slot(our_name(name))
                .map(|s| s.range())
                .unwrap_or(0..0);
            let quantity = format!("{prefix}.{name}");
            let reference = &dump.array(&quantity)?.values;
            let ours = arena[slot].iter().map(|&v| v as f64);
            push(quantity, relative_error(ours, reference));
        }
        Ok(())
    };
    per_tensor("grad", &grads)?;

    let mut adamw = AdamW::new(layout.total);
    adamw.step(&layout, &mut params, &grads, opt(1)?);
    per_tensor("param_after1", &params)?;

    // The reference's step losses: the loss before each of its AdamW steps
    // on the same batch, the first being the initial loss.
    let reference_losses = &dump.array("step_losses")?.values;
    let mut losses = vec![loss];
    for t in 2..=reference_losses.len() as u64 {
        losses.push(model::forward(&layout, &params, &mut acts, &x, Some(&y)));
        grads.fill(0.0);
        model::backward(&layout, &params, &mut grads, &mut acts, &x, &y, scale);
        adamw.step(&layout, &mut params, &grads, opt(t)?);
    }
    push(
        "step_losses".into(),
        relative_error(losses.iter().copied(), reference_losses),
    );
    Ok(report)
}
