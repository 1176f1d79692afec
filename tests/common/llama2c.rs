//! The header of a llama2.c checkpoint, for the tests and benches that write
//! one (`tests/llama2c_import.rs`, `benches/llama2c.rs`, through `#[path]`).

use kinglet::Config;

/// The 7 little-endian i32 of llama2.c's `Config`, with `vocab` as given
/// (version 0 files make it negative for an untied classifier).
pub fn config_bytes(c: &Config, vocab: i32) -> Vec<u8> {
    let dims = [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads];
    let mut ints: Vec<i32> = dims.iter().map(|&d| d as i32).collect();
    ints.extend([vocab, c.max_seq_len as i32]);
    ints.iter().flat_map(|v| v.to_le_bytes()).collect()
}
