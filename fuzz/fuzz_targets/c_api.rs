//! The C API on fuzzed model bytes and fuzzed arenas: `kinglet_check`,
//! `kinglet_model_max_seq`, `kinglet_session_bytes`, `kinglet_session_init`
//! and a short `kinglet_generate`.
//!
//! Input: a u32 `max_seq` (little-endian), an arena byte (bits 0-5: the
//! arena's offset from a 64-byte boundary; bit 6: the arena is one byte
//! short; bit 7: repair the model's checksums first), then the model bytes.
#![no_main]

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use kinglet_ffi::codes::*;
use kinglet_ffi::{
    kinglet_check, kinglet_generate, kinglet_model_max_seq, kinglet_session, kinglet_session_bytes,
    kinglet_session_init,
};
use kinglet_fuzz::{repair_checksums, MAX_SESSION_FLOATS};
use libfuzzer_sys::fuzz_target;

/// Counts the bytes emitted and checks each piece is UTF-8.
unsafe extern "C" fn count_utf8(piece: *const c_char, len: usize, user: *mut c_void) -> c_int {
    // SAFETY: kinglet passes `len` readable bytes; `user` is our counter.
    let bytes = unsafe { std::slice::from_raw_parts(piece.cast::<u8>(), len) };
    assert!(std::str::from_utf8(bytes).is_ok(), "emit got invalid UTF-8");
    unsafe { *user.cast::<usize>() += len };
    0
}

fuzz_target!(|data: &[u8]| {
    let Some((head, model)) = data.split_first_chunk::<5>() else {
        return;
    };
    let max_seq = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let arena_byte = head[4];
    let mut model = model.to_vec();
    if arena_byte & 0x80 != 0 {
        repair_checksums(&mut model);
    }
    // SAFETY (all calls): pointers and lengths describe live buffers.
    let checked = unsafe { kinglet_check(model.as_ptr(), model.len()) };
    assert!(
        checked == KINGLET_OK || (-29..=-20).contains(&checked),
        "check gave {checked}"
    );
    assert_eq!(
        unsafe { kinglet_check(ptr::null(), model.len()) },
        KINGLET_E_NULL
    );
    let model_max = unsafe { kinglet_model_max_seq(model.as_ptr(), model.len()) };
    let need = unsafe { kinglet_session_bytes(model.as_ptr(), model.len(), max_seq) };
    if need == 0 {
        // Refused: an invalid model, or max_seq out of range.
        assert!(max_seq == 0 || max_seq > model_max || model_max == 0);
        return;
    }
    if need > 4 * MAX_SESSION_FLOATS {
        return;
    }
    let short = arena_byte & 0x40 != 0;
    let offset = (arena_byte & 0x3f) as usize;
    let len = need - short as usize;
    // [offset + len] bytes; the arena starts `offset` bytes in. u64 storage
    // puts `offset` at a known distance from 8-byte alignment, and the
    // 64-byte position of the allocation varies anyway.
    let mut storage = vec![0u64; (offset + len).div_ceil(8)];
    let arena = unsafe { storage.as_mut_ptr().cast::<u8>().add(offset) };
    let mut session: *mut kinglet_session = ptr::null_mut();
    let rc = unsafe {
        kinglet_session_init(
            arena.cast(),
            len,
            model.as_ptr(),
            model.len(),
            max_seq,
            &mut session,
        )
    };
    if short {
        assert_eq!(rc, KINGLET_E_ARENA_TOO_SMALL);
        return;
    }
    assert_eq!(rc, KINGLET_OK, "session_bytes said yes, init said {rc}");
    let mut emitted = 0usize;
    let temperature = (max_seq % 3) as f32 * 0.7;
    for prompt in [c"Once upon a", c"", c"\xe6\x97\xa5"] {
        let rc = unsafe {
            kinglet_generate(
                session,
                prompt.as_ptr(),
                3,
                temperature,
                max_seq as u64,
                Some(count_utf8),
                (&raw mut emitted).cast(),
            )
        };
        assert!(
            (0..=3).contains(&rc) || (-9..=-1).contains(&rc) || (-29..=-20).contains(&rc),
            "generate gave {rc}"
        );
    }
});
