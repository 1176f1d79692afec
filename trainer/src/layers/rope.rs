//! Rotary position embedding on adjacent pairs `(x[2i], x[2i+1])` of each head,
//! angle `pos · theta^(-2i/head_dim)` (llama2.c's convention).

/// cos and sin of every (position, pair) angle.
#[derive(Clone, Debug)]
pub struct RopeTable {
    /// [context, head_dim/2]
    cos: Vec<f32>,
    /// [context, head_dim/2]
    sin: Vec<f32>,
    pairs: usize,
}

impl RopeTable {
    /// The table for positions `0..context`.
    pub fn new(context: usize, head_dim: usize, theta: f32) -> Self {
        let pairs = head_dim / 2;
        let mut cos = Vec::with_capacity(context * pairs);
        let mut sin = Vec::with_capacity(context * pairs);
        for pos in 0..context {
            for pair in 0..pairs {
                // The engine's own angle, so both rotate by the same bits.
                let (c, s) = kinglet::ops::rope_rotation(pos as u32, pair, head_dim, theta);
                cos.push(c);
                sin.push(s);
            }
        }
        RopeTable { cos, sin, pairs }
    }
}

/// Rotates each head of each row in place; row `r` is at position `r % context`.
/// x: [n, width], width = heads · head_dim.
pub fn forward(x: &mut [f32], table: &RopeTable, context: usize, width: usize) {
    rotate(x, table, context, width, 1.0);
}

/// The transpose of the rotation (rotate back by the same angle), in place on
/// the gradient. dx: [n, width].
pub fn backward(dx: &mut [f32], table: &RopeTable, context: usize, width: usize) {
    rotate(dx, table, context, width, -1.0);
}

fn rotate(x: &mut [f32], table: &RopeTable, context: usize, width: usize, direction: f32) {
    crate::gemm::vectorized(
        #[inline(always)]
        || rotate_rows(x, table, context, width, direction),
    );
}

#[inline(always)]
fn rotate_rows(x: &mut [f32], table: &RopeTable, context: usize, width: usize, direction: f32) {
    let head_dim = table.pairs * 2;
    for (row_index, row) in x.chunks_exact_mut(width).enumerate() {
        let pos = row_index % context;
        let cos = &table.cos[pos * table.pairs..(pos + 1) * table.pairs];
        let sin = &table.sin[pos * table.pairs..(pos + 1) * table.pairs];
        for head in row.chunks_exact_mut(head_dim) {
            for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
                let s = s * direction;
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = a * s + b * c;
            }
        }
    }
}
