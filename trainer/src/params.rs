//! Flat f32 arenas (parameters, gradients, AdamW moments) with named views,
//! laid out in the .klt file's canonical tensor order.

use crate::config::ModelConfig;
use crate::rng::Rng;

/// One named tensor inside an arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSlot {
    /// Canonical .klt name, e.g. `layers.0.wq`.
    pub name: String,
    /// `[len]` for norm gains, `[rows, cols]` for matrices (out, in).
    pub shape: Vec<usize>,
    /// First element in the arena.
    pub offset: usize,
}

impl TensorSlot {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the slot has no elements (never, for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of this tensor within the arena.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }

    /// Matrices (2-D) get weight decay; norm gains (1-D) do not by default.
    pub fn is_matrix(&self) -> bool {
        self.shape.len() == 2
    }
}

/// Where every tensor lives in the arenas.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    /// The model these tensors belong to.
    pub config: ModelConfig,
    /// Tensors in canonical order; together they tile the arena.
    pub slots: Vec<TensorSlot>,
    /// Total number of f32 elements.
    pub total: usize,
}

impl ParamLayout {
    /// The layout for `config`: the engine's canonical tensor table, each
    /// tensor right after the previous one.
    pub fn new(config: &ModelConfig) -> Self {
        let mut offset = 0;
        let slots = kinglet::canonical_tensors(&config.to_engine())
            .map(|t| {
                let slot = TensorSlot {
                    name: t.role.to_string(),
                    shape: t.dims().iter().map(|&d| d as usize).collect(),
                    offset,
                };
                offset += slot.len();
                slot
            })
            .collect();
        ParamLayout {
            config: *config,
            slots,
            total: offset,
        }
    }

    /// The slot called `name`.
    pub fn slot(&self, name: &str) -> Option<&TensorSlot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// Named read-only views into `arena`.
    pub fn views<'a>(&self, arena: &'a [f32]) -> Weights<&'a [f32]> {
        assert_eq!(arena.len(), self.total, "arena does not match its layout");
        let pieces = self.slots.iter().map(|s| &arena[s.range()]).collect();
        Weights::from_pieces(pieces, self.config.n_layers, self.config.tied_classifier)
    }

    /// Named mutable views into `arena` (the slots tile it, so they are disjoint).
    pub fn views_mut<'a>(&self, arena: &'a mut [f32]) -> Weights<&'a mut [f32]> {
        assert_eq!(arena.len(), self.total, "arena does not match its layout");
        let mut rest = arena;
        let mut pieces = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(slot.len());
            pieces.push(head);
            rest = tail;
        }
        Weights::from_pieces(pieces, self.config.n_layers, self.config.tied_classifier)
    }

    /// A freshly initialized parameter arena: norm gains 1, matrices
    /// N(0, std), residual output projections (wo, w2) scaled by
    /// 1/sqrt(2·n_layers) so the residual stream does not grow with depth.
    pub fn init(&self, std: f32, rng: &mut Rng) -> Vec<f32> {
        let mut arena = vec![0.0f32; self.total];
        let residual_scale = 1.0 / (2.0 * self.config.n_layers as f64).sqrt();
        for slot in &self.slots {
            let values = &mut arena[slot.range()];
            if !slot.is_matrix() {
                values.fill(1.0);
                continue;
            }
            let is_residual_out = slot.name.ends_with(".wo") || slot.name.ends_with(".w2");
            let scale = std as f64 * if is_residual_out { residual_scale } else { 1.0 };
            for x in values {
                *x = (rng.normal() * scale) as f32;
            }
        }
        arena
    }
}

/// One block's tensors.
#[derive(Debug)]
pub struct LayerWeights<S> {
    /// `[dim]`
    pub attn_norm: S,
    /// `[dim, dim]`
    pub wq: S,
    /// `[kv_dim, dim]`
    pub wk: S,
    /// `[kv_dim, dim]`
    pub wv: S,
    /// `[dim, dim]`
    pub wo: S,
    /// `[dim]`
    pub ffn_norm: S,
    /// `[hidden, dim]`
    pub w1: S,
    /// `[dim, hidden]`
    pub w2: S,
    /// `[hidden, dim]`
    pub w3: S,
}

/// The whole model's tensors (parameters, or gradients of them).
#[derive(Debug)]
pub struct Weights<S> {
    /// `[vocab, dim]`
    pub tok_embedding: S,
    /// One per block.
    pub layers: Vec<LayerWeights<S>>,
    /// `[dim]`
    pub norm: S,
    /// `[vocab, dim]`; `None` when tied to the embedding.
    pub classifier: Option<S>,
}

impl<S> Weights<S> {
    fn from_pieces(pieces: Vec<S>, n_layers: usize, tied: bool) -> Self {
        let mut it = pieces.into_iter();
        let mut next = || it.next().expect("layout yields every canonical tensor");
        let tok_embedding = next();
        let layers = (0..n_layers)
            .map(|_| LayerWeights {
                attn_norm: next(),
                wq: next(),
                wk: next(),
                wv: next(),
                wo: next(),
                ffn_norm: next(),
                w1: next(),
                w2: next(),
                w3: next(),
            })
            .collect();
        let norm = next();
        let classifier = if tied { None } else { Some(next()) };
        Weights {
            tok_embedding,
            layers,
            norm,
            classifier,
        }
    }
}
