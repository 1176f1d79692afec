//! Where things go inside the caller's arena: the session state at the first
//! 64-byte boundary, then the engine's `f32` session buffer, then the prompt
//! token slots and the tokenizer's scratch. Plain arithmetic on addresses,
//! checked, no pointers.

use kinglet::tokenizer::scratch_words;
use kinglet::{session_floats_for_chunk, Config};

/// Alignment of the session state and of the `f32` buffer after it. The
/// arena itself may have any alignment: up to `ARENA_ALIGN - 1` bytes at its
/// start are skipped, and [`arena_bytes`] counts them.
pub const ARENA_ALIGN: usize = 64;

/// A prompt may have at most this many bytes per session position. Encoding
/// needs a slot per byte before merging (plus BOS and the dummy prefix), so
/// the arena holds `PROMPT_BYTES_PER_POSITION × max_seq + 2` token slots.
pub const PROMPT_BYTES_PER_POSITION: usize = 4;

/// Byte offsets, from the start of the arena, of each region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The session state (`state_bytes` bytes, 64-byte aligned).
    pub state: usize,
    /// The engine buffer, `[floats]` f32, 64-byte aligned.
    pub floats_at: usize,
    /// Elements of the engine buffer ([`session_floats_for_chunk`]).
    pub floats: usize,
    /// The prompt token slots, `[token_slots]` u32.
    pub tokens_at: usize,
    /// Number of token slots.
    pub token_slots: usize,
    /// The tokenizer's merge scratch, `[scratch_words]` u32.
    pub scratch_at: usize,
    /// Words of scratch ([`scratch_words`] of the token slots).
    pub scratch_words: usize,
    /// One past the last byte used.
    pub end: usize,
}

/// Token slots for a session of `max_seq` positions, `None` on overflow.
pub fn token_slots(max_seq: u32) -> Option<usize> {
    (max_seq as usize)
        .checked_mul(PROMPT_BYTES_PER_POSITION)?
        .checked_add(2)
}

/// The regions of an arena starting at address `base`, for a state of
/// `state_bytes` bytes and a session of `max_seq` positions whose prefill
/// runs `chunk` positions together; `None` when a size overflows (or the
/// chunk is not 1 to `PREFILL_CHUNK`).
pub fn layout(
    base: usize,
    state_bytes: usize,
    config: &Config,
    max_seq: u32,
    chunk: usize,
) -> Option<Layout> {
    let skip = base.wrapping_neg() % ARENA_ALIGN;
    let state = skip;
    let floats_at = state.checked_add(round_up(state_bytes)?)?;
    let floats = session_floats_for_chunk(config, max_seq, chunk);
    let tokens_at = floats_at.checked_add(floats.checked_mul(4)?)?;
    let token_slots = token_slots(max_seq)?;
    let scratch_at = tokens_at.checked_add(token_slots.checked_mul(4)?)?;
    let scratch_words = scratch_words(token_slots);
    let end = scratch_at.checked_add(scratch_words.checked_mul(4)?)?;
    Some(Layout {
        state,
        floats_at,
        floats,
        tokens_at,
        token_slots,
        scratch_at,
        scratch_words,
        end,
    })
}

/// Arena bytes that suffice at any alignment: the worst-case skip plus the
/// regions. `None` on overflow.
pub fn arena_bytes(
    state_bytes: usize,
    config: &Config,
    max_seq: u32,
    chunk: usize,
) -> Option<usize> {
    // An address one past a 64-byte boundary skips the most: 63 bytes.
    layout(1, state_bytes, config, max_seq, chunk).map(|l| l.end)
}

fn round_up(n: usize) -> Option<usize> {
    Some(n.checked_add(ARENA_ALIGN - 1)? / ARENA_ALIGN * ARENA_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinglet::session::PREFILL_CHUNK;
    use kinglet::session_floats;

    fn config() -> Config {
        kinglet::config::stories::STORIES260K
    }

    #[test]
    fn regions_are_aligned_disjoint_and_within_arena_bytes() {
        let c = config();
        let worst = arena_bytes(200, &c, 16, PREFILL_CHUNK).unwrap();
        for base in [0usize, 1, 4, 63, 64, 4096 + 17] {
            let l = layout(base, 200, &c, 16, PREFILL_CHUNK).unwrap();
            assert_eq!((base + l.state) % ARENA_ALIGN, 0);
            assert_eq!((base + l.floats_at) % ARENA_ALIGN, 0);
            assert!(l.floats_at >= l.state + 200);
            assert_eq!(l.tokens_at, l.floats_at + 4 * session_floats(&c, 16));
            assert_eq!(l.scratch_at, l.tokens_at + 4 * (4 * 16 + 2));
            assert_eq!(l.end, l.scratch_at + 4 * (5 * 66 + 3 * 64));
            assert!(l.end <= worst, "base {base}");
        }
        assert_eq!(layout(1, 200, &c, 16, PREFILL_CHUNK).unwrap().end, worst);
        assert_eq!(
            worst,
            63 + 256 + 4 * session_floats(&c, 16) + 4 * 66 + 4 * (5 * 66 + 3 * 64)
        );
        // A smaller chunk shrinks the engine buffer only.
        let decode_only = arena_bytes(200, &c, 16, 1).unwrap();
        assert_eq!(
            worst - decode_only,
            4 * (session_floats(&c, 16) - session_floats_for_chunk(&c, 16, 1))
        );
        assert_eq!(layout(0, 200, &c, 16, 0), None);
        assert_eq!(layout(0, 200, &c, 16, PREFILL_CHUNK + 1), None);
    }

    #[test]
    fn overflow_is_none() {
        let c = config();
        assert_eq!(arena_bytes(usize::MAX - 10, &c, 16, PREFILL_CHUNK), None);
        let huge = Config {
            dim: u32::MAX,
            n_heads: 1,
            n_kv_heads: u32::MAX,
            n_layers: u32::MAX,
            ..c
        };
        assert_eq!(arena_bytes(200, &huge, u32::MAX, PREFILL_CHUNK), None);
    }
}
