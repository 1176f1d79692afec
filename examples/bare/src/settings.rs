// The sample the bare binary prints: compiled into `main.rs` and read by
// `tests/bare.rs`, which runs `kinglet generate` with the same settings.

const PROMPT: &str = "Once upon a time";
const NEW_TOKENS: u32 = 48;
const TEMPERATURE: f32 = 0.8;
const TOP_P: f32 = 0.9;
const SEED: u64 = 42;
/// Context positions: the prompt (16 characters, or BOS and 4 BPE tokens)
/// and the new tokens fit, so the sample never needs a second context.
const MAX_SEQ: u32 = 64;
