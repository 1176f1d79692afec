//! The linear layers' weights copied into the product kernels' panels
//! ([`PackedB`]) once per micro-batch, for every shard's passes: each shard
//! copied every matrix again for its forward (Wᵀ) and its input gradients
//! (W), two or four times the same copies per step (docs/PERFORMANCE.md).
//! A copy moves no value, so the products keep their bits.

use crate::gemm::{Layout, PackedB};
use crate::params::ParamLayout;
use rayon::prelude::*;

/// Which passes the copies serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passes {
    /// Only the forward pass (evaluation, sampling).
    Forward,
    /// Only the backward pass.
    Backward,
    /// Both (a training step).
    Both,
}

/// One weight matrix W [out, inp], copied as the passes read it.
pub struct Copies<'w> {
    /// Wᵀ, B of the forward product `y = x Wᵀ`.
    forward: Option<PackedB<'w>>,
    /// W, B of the input gradient `dx = dy W`.
    input_grad: Option<PackedB<'w>>,
}

impl<'w> Copies<'w> {
    fn new(w: &'w [f32], inp: usize, out: usize, passes: Passes) -> Self {
        let forward =
            (passes != Passes::Backward).then(|| PackedB::new(w, Layout::transposed(inp, out)));
        let input_grad =
            (passes != Passes::Forward).then(|| PackedB::new(w, Layout::row_major(out, inp)));
        Copies {
            forward,
            input_grad,
        }
    }

    /// Wᵀ for the forward product.
    ///
    /// Panics if the copies were made for the backward pass only (a bug in
    /// the caller).
    pub fn forward(&self) -> &PackedB<'w> {
        self.forward
            .as_ref()
            .expect("copies made for the forward pass")
    }

    /// W for the input gradient.
    ///
    /// Panics if the copies were made for the forward pass only (a bug in
    /// the caller).
    pub fn input_grad(&self) -> &PackedB<'w> {
        self.input_grad
            .as_ref()
            .expect("copies made for the backward pass")
    }
}

/// One block's linear layers.
pub struct LayerCopies<'w> {
    /// [dim, dim]
    pub wq: Copies<'w>,
    /// [kv_dim, dim]
    pub wk: Copies<'w>,
    /// [kv_dim, dim]
    pub wv: Copies<'w>,
    /// [dim, dim]
    pub wo: Copies<'w>,
    /// [hidden, dim]
    pub w1: Copies<'w>,
    /// [dim, hidden]
    pub w2: Copies<'w>,
    /// [hidden, dim]
    pub w3: Copies<'w>,
}

/// Every linear layer of the model, copied.
pub struct WeightCopies<'w> {
    /// One per block.
    pub layers: Vec<LayerCopies<'w>>,
    /// The classifier [vocab, dim] (the token embedding when tied).
    pub classifier: Copies<'w>,
}

impl<'w> WeightCopies<'w> {
    /// Copies the linear layers of `params` (the arena of `layout`) for
    /// `passes`, all matrices in parallel.
    pub fn new(layout: &ParamLayout, params: &'w [f32], passes: Passes) -> Self {
        let c = &layout.config;
        let w = layout.views(params);
        let (d, kv, f, v) = (c.dim, c.kv_dim(), c.hidden_dim, c.vocab_size);
        // (matrix, inp, out) in the order they are dealt out below.
        let mut matrices: Vec<(&'w [f32], usize, usize)> = Vec::new();
        for lw in &w.layers {
            matrices.extend([
                (lw.wq, d, d),
                (lw.wk, d, kv),
                (lw.wv, d, kv),
                (lw.wo, d, d),
                (lw.w1, d, f),
                (lw.w2, f, d),
                (lw.w3, d, f),
            ]);
        }
        matrices.push((w.classifier.unwrap_or(w.tok_embedding), d, v));
        let copies: Vec<Copies<'w>> = matrices
            .into_par_iter()
            .map(|(m, inp, out)| Copies::new(m, inp, out, passes))
            .collect();
        let mut copies = copies.into_iter();
        let mut next = || copies.next().expect("one copy per matrix");
        let layers = (0..c.n_layers)
            .map(|_| LayerCopies {
                wq: next(),
                wk: next(),
                wv: next(),
                wo: next(),
                w1: next(),
                w2: next(),
                w3: next(),
            })
            .collect();
        WeightCopies {
            layers,
            classifier: next(),
        }
    }
}
