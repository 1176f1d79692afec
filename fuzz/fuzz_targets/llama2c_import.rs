//! The llama2.c importer: a checkpoint (versions 0, 1, 2) and a
//! `tokenizer.bin`. Input: a u32 little-endian length `n`, then `n` bytes
//! of checkpoint, then the tokenizer bytes (`seed-corpora.sh` builds seeds
//! in this shape). Whatever imports must convert to a .klt file that opens
//! and verifies.
#![no_main]

use kinglet::{Dtype, ModelFile};
use kinglet_tools::import::llama2c;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let split = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (checkpoint, tokenizer) = rest.split_at(split);
    let _ = llama2c::parse_checkpoint(checkpoint);
    let _ = llama2c::parse_tokenizer(tokenizer, 512);
    let Ok(model) = llama2c::import(checkpoint, tokenizer) else {
        return;
    };
    // Imported weights are finite or not; both must write. Q8_0 also runs
    // the quantizer on whatever values came in.
    for dtype in [Dtype::F32, Dtype::Q8_0] {
        let mut file = Vec::new();
        if model.write_klt(dtype, &mut file).is_err() {
            continue;
        }
        let opened = ModelFile::new_checked(&file[..]).expect("an imported model opens");
        opened.verify().expect("an imported model verifies");
    }
});
