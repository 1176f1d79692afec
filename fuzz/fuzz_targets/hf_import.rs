//! The Hugging Face importer: `config.json`, `tokenizer.json` and one
//! `model.safetensors`. Input: u32 little-endian length `a`, `a` bytes of
//! config.json, u32 length `b`, `b` bytes of tokenizer.json, then the
//! safetensors bytes (`seed-corpora.sh` builds seeds in this shape).
//! Whatever imports must write a .klt file that opens and verifies.
#![no_main]

use kinglet_fuzz::check_imported;
use kinglet_tools::hf;
use libfuzzer_sys::fuzz_target;

/// The next `u32`-length-prefixed part of `data`, and the rest.
fn part(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    Some(rest.split_at((u32::from_le_bytes(*len) as usize).min(rest.len())))
}

fuzz_target!(|data: &[u8]| {
    let Some((config, rest)) = part(data) else {
        return;
    };
    let Some((tokenizer, safetensors)) = part(rest) else {
        return;
    };
    if let Ok(model) = hf::read::import_files(config, tokenizer, None, &[safetensors]) {
        check_imported(&model);
    }
});
