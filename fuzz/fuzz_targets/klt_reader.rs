//! The .klt reader, its checksum verification and everything firmware does
//! with a file it was handed: `ModelFile::new_checked`, every accessor,
//! `verify`/`verify_each`, and when all checks pass, a session in a buffer
//! of `session_floats`, forward steps, a prefill and the generator.
//!
//! Each input runs as given (so the checksum checks themselves are fuzzed)
//! and again with its CRCs repaired (so mutations reach the checks and the
//! arithmetic behind them).
#![no_main]

use kinglet_fuzz::{exercise_model, repair_checksums};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let seed = data.len() as u64 ^ data.iter().take(64).map(|&b| b as u64).sum::<u64>();
    exercise_model(data, seed);
    let mut repaired = data.to_vec();
    repair_checksums(&mut repaired);
    if repaired != data {
        exercise_model(&repaired, seed);
    }
});
