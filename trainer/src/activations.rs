//! The activation arena: every buffer the forward saves for the backward, and
//! the backward's scratch, in one `Vec<f32>` sized once per (batch, context).

use crate::config::ModelConfig;
use crate::layers::rope::RopeTable;

/// Saved forward values of one block (n = batch · context rows).
pub struct LayerActs<'a> {
    /// Block input (residual stream). [n, dim]
    pub resid_in: &'a mut [f32],
    /// RMSNorm output before attention. [n, dim]
    pub attn_xn: &'a mut [f32],
    /// Its reciprocal RMS per row. `[n]`
    pub attn_rstd: &'a mut [f32],
    /// Queries after RoPE. [n, dim]
    pub q: &'a mut [f32],
    /// Keys after RoPE. [n, kv_dim]
    pub k: &'a mut [f32],
    /// Values. [n, kv_dim]
    pub v: &'a mut [f32],
    /// Attention probabilities. [batch, heads, T, T]
    pub probs: &'a mut [f32],
    /// Attention output before Wo. [n, dim]
    pub att_y: &'a mut [f32],
    /// Residual stream after attention. [n, dim]
    pub resid_mid: &'a mut [f32],
    /// RMSNorm output before the MLP. [n, dim]
    pub ffn_xn: &'a mut [f32],
    /// Its reciprocal RMS per row. `[n]`
    pub ffn_rstd: &'a mut [f32],
    /// W1 x. [n, hidden]
    pub h1: &'a mut [f32],
    /// W3 x. [n, hidden]
    pub h3: &'a mut [f32],
    /// sigmoid(h1), saved for the backward. [n, hidden]
    pub sig: &'a mut [f32],
    /// silu(h1) · h3. [n, hidden]
    pub gate: &'a mut [f32],
}

/// Everything after the last block, and the backward scratch.
pub struct HeadActs<'a> {
    /// Output of the last block. [n, dim]
    pub resid_out: &'a mut [f32],
    /// Final RMSNorm output. [n, dim]
    pub xn: &'a mut [f32],
    /// `[n]`
    pub rstd: &'a mut [f32],
    /// [n, vocab]
    pub logits: &'a mut [f32],
    /// Per-position loss. `[n]`
    pub losses: &'a mut [f32],
}

/// Gradient scratch for the backward pass, reused by every block.
pub struct GradScratch<'a> {
    /// ∂L/∂(residual stream), flowing down through the blocks. [n, dim]
    pub dresid: &'a mut [f32],
    /// ∂L/∂(a norm's output). [n, dim]
    pub dxn: &'a mut [f32],
    /// [n, dim]
    pub dq: &'a mut [f32],
    /// [n, kv_dim]
    pub dk: &'a mut [f32],
    /// [n, kv_dim]
    pub dv: &'a mut [f32],
    /// ∂L/∂(attention output before Wo). [n, dim]
    pub datt_y: &'a mut [f32],
    /// [n, hidden]
    pub dh1: &'a mut [f32],
    /// [n, hidden]
    pub dh3: &'a mut [f32],
    /// [n, hidden]
    pub dgate: &'a mut [f32],
    /// [n, vocab]
    pub dlogits: &'a mut [f32],
}

/// All views into the arena at once (they are disjoint).
pub struct ActViews<'a> {
    /// One per block.
    pub layers: Vec<LayerActs<'a>>,
    /// After the blocks.
    pub head: HeadActs<'a>,
    /// Backward scratch.
    pub grad: GradScratch<'a>,
}

/// The arena and the shape it was sized for.
pub struct Activations {
    arena: Vec<f32>,
    /// Sequences the arena holds.
    pub batch: usize,
    /// Window length.
    pub context: usize,
    config: ModelConfig,
    /// RoPE angles for positions `0..context`.
    pub rope: RopeTable,
}

fn sizes(c: &ModelConfig, batch: usize, context: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let n = batch * context;
    let (d, kv, f, v) = (c.dim, c.kv_dim(), c.hidden_dim, c.vocab_size);
    let layer = vec![
        n * d,
        n * d,
        n,
        n * d,
        n * kv,
        n * kv,
        batch * c.n_heads * context * context,
        n * d,
        n * d,
        n * d,
        n,
        n * f,
        n * f,
        n * f,
        n * f,
    ];
    let head = vec![n * d, n * d, n, n * v, n];
    let grad = vec![
        n * d,
        n * d,
        n * d,
        n * kv,
        n * kv,
        n * d,
        n * f,
        n * f,
        n * f,
        n * v,
    ];
    (layer, head, grad)
}

/// Floats of the arena for `batch` sequences of `context` positions, in
/// checked arithmetic (`None`: more than 64 bits count), so a size from a
/// flag can be compared with the memory budget before it is allocated.
pub fn arena_floats(c: &ModelConfig, batch: usize, context: usize) -> Option<u64> {
    let [batch, context, d, kv, f, v, heads, layers] = [
        batch,
        context,
        c.dim,
        c.kv_dim(),
        c.hidden_dim,
        c.vocab_size,
        c.n_heads,
        c.n_layers,
    ]
    .map(|x| x as u64);
    let n = batch.checked_mul(context)?;
    // Per position: a block's 15 buffers but the attention probabilities,
    // the head's 5, the backward scratch's 10 (see `sizes`).
    let per_layer = n.checked_mul(6 * d + 2 * kv + 2 + 4 * f)?;
    let probs = batch
        .checked_mul(heads)?
        .checked_mul(context)?
        .checked_mul(context)?;
    let head_and_grad = n.checked_mul(6 * d + 2 * kv + 2 + 3 * f + 2 * v)?;
    per_layer
        .checked_add(probs)?
        .checked_mul(layers)?
        .checked_add(head_and_grad)
}

impl Activations {
    /// An arena for `batch` sequences of `context` positions.
    pub fn new(config: &ModelConfig, batch: usize, context: usize) -> Self {
        let (layer, head, grad) = sizes(config, batch, context);
        let total = layer.iter().sum::<usize>() * config.n_layers
            + head.iter().sum::<usize>()
            + grad.iter().sum::<usize>();
        Activations {
            arena: vec![0.0; total],
            batch,
            context,
            config: *config,
            rope: RopeTable::new(context, config.head_dim(), config.rope_theta),
        }
    }

    /// Bytes held, for the curious.
    pub fn bytes(&self) -> usize {
        self.arena.len() * 4
    }

    /// Carves the arena into named views, keeping only the first `rows`
    /// positions of every per-position buffer (a smaller last batch).
    pub fn views(&mut self, sequences: usize) -> (ActViews<'_>, &RopeTable) {
        assert!(
            sequences <= self.batch,
            "more sequences than the arena holds"
        );
        let (layer, head, grad) = sizes(&self.config, self.batch, self.context);
        let (used_layer, used_head, used_grad) = sizes(&self.config, sequences, self.context);
        let mut rest: &mut [f32] = &mut self.arena;
        let mut take = |full: usize, used: usize| -> &mut [f32] {
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(full);
            rest = tail;
            &mut piece[..used]
        };
        let mut layers = Vec::with_capacity(self.config.n_layers);
        for _ in 0..self.config.n_layers {
            let mut s = layer.iter().zip(&used_layer).map(|(&f, &u)| (f, u));
            let mut next = || {
                let (f, u) = s.next().expect("15 layer buffers");
                take(f, u)
            };
            layers.push(LayerActs {
                resid_in: next(),
                attn_xn: next(),
                attn_rstd: next(),
                q: next(),
                k: next(),
                v: next(),
                probs: next(),
                att_y: next(),
                resid_mid: next(),
                ffn_xn: next(),
                ffn_rstd: next(),
                h1: next(),
                h3: next(),
                sig: next(),
                gate: next(),
            });
        }
        let mut s = head.iter().zip(&used_head).map(|(&f, &u)| (f, u));
        let mut next = || {
            let (f, u) = s.next().expect("5 head buffers");
            take(f, u)
        };
        let head = HeadActs {
            resid_out: next(),
            xn: next(),
            rstd: next(),
            logits: next(),
            losses: next(),
        };
        let mut s = grad.iter().zip(&used_grad).map(|(&f, &u)| (f, u));
        let mut next = || {
            let (f, u) = s.next().expect("10 grad buffers");
            take(f, u)
        };
        let grad = GradScratch {
            dresid: next(),
            dxn: next(),
            dq: next(),
            dk: next(),
            dv: next(),
            datt_y: next(),
            dh1: next(),
            dh3: next(),
            dgate: next(),
            dlogits: next(),
        };
        (ActViews { layers, head, grad }, &self.rope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::preset;

    #[test]
    fn arena_floats_counts_the_arena() {
        let mut c = preset("seed").expect("preset").model;
        c.vocab_size = 65;
        for (batch, context, kv_heads) in [(1, 1, 4), (3, 16, 4), (2, 7, 2)] {
            c.context = context;
            c.n_kv_heads = kv_heads;
            let arena = Activations::new(&c, batch, context);
            assert_eq!(
                arena_floats(&c, batch, context),
                Some(arena.bytes() as u64 / 4)
            );
        }
        assert_eq!(arena_floats(&c, usize::MAX / 2, 16), None);
    }
}
