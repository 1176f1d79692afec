//! Token embedding: a row lookup.

/// `out[n, :] = table[tokens[n], :]`.
/// out: `[n, dim]`; table: `[vocab, dim]`; tokens: `[n]`, each < vocab.
pub fn forward(out: &mut [f32], table: &[f32], tokens: &[u32], dim: usize) {
    for (row, &token) in out.chunks_exact_mut(dim).zip(tokens) {
        let t = token as usize;
        row.copy_from_slice(&table[t * dim..(t + 1) * dim]);
    }
}

/// `dtable[tokens[n], :] += dout[n, :]`, in position order (tokens repeat, so
/// a fixed order keeps the sums deterministic).
/// dtable: `[vocab, dim]`; dout: `[n, dim]`.
pub fn backward(dtable: &mut [f32], dout: &[f32], tokens: &[u32], dim: usize) {
    for (row, &token) in dout.chunks_exact(dim).zip(tokens) {
        let t = token as usize;
        for (d, g) in dtable[t * dim..(t + 1) * dim].iter_mut().zip(row) {
            *d += g;
        }
    }
}
