//! `kinglet_session_bytes_chunk` and `kinglet_session_init_chunk`: a
//! session sized for a smaller prefill chunk needs a smaller arena and
//! generates the same text; chunks out of range are refused.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use kinglet_ffi::codes::*;
use kinglet_ffi::*;

/// The bundled character-level model (q8_0).
const MODEL: &[u8] = include_bytes!("../../models/shakespeare.klt");
const MAX_SEQ: u32 = 64;

/// Appends each piece to the `Vec<u8>` behind `user`.
unsafe extern "C" fn collect(piece: *const c_char, len: usize, user: *mut c_void) -> c_int {
    // SAFETY: `piece` holds `len` bytes and `user` is the `Vec` `generate` passed.
    unsafe {
        let text = std::slice::from_raw_parts(piece.cast::<u8>(), len);
        (*user.cast::<Vec<u8>>()).extend_from_slice(text);
    }
    0
}

fn bytes(chunk: u32) -> usize {
    // SAFETY: MODEL is a live buffer of its length.
    unsafe { kinglet_session_bytes_chunk(MODEL.as_ptr(), MODEL.len(), MAX_SEQ, chunk) }
}

/// `kinglet_session_init_chunk` in an arena of `arena_len` bytes.
fn init(arena: &mut [u8], chunk: u32) -> Result<*mut kinglet_session, c_int> {
    let mut session: *mut kinglet_session = ptr::null_mut();
    // SAFETY: every pointer and length describes a live buffer.
    let rc = unsafe {
        kinglet_session_init_chunk(
            arena.as_mut_ptr().cast(),
            arena.len(),
            MODEL.as_ptr(),
            MODEL.len(),
            MAX_SEQ,
            chunk,
            &mut session,
        )
    };
    if rc == KINGLET_OK {
        Ok(session)
    } else {
        Err(rc)
    }
}

/// The text of a sampled generation in a session of `chunk` positions per
/// prefill, in an arena of exactly its size.
fn generate(chunk: u32) -> String {
    let mut arena = vec![0u8; bytes(chunk)];
    let session = init(&mut arena, chunk).expect("session");
    let prompt = "ROMEO:\nWhat light through yonder window breaks?";
    let mut text: Vec<u8> = Vec::new();
    // SAFETY: the session lives in `arena`; `text` outlives the call.
    let rc = unsafe {
        kinglet_generate_n(
            session,
            prompt.as_ptr().cast(),
            prompt.len(),
            12,
            0.8,
            42,
            Some(collect),
            (&mut text as *mut Vec<u8>).cast(),
        )
    };
    assert_eq!(rc, 12, "chunk {chunk}");
    String::from_utf8(text).expect("UTF-8")
}

#[test]
fn a_smaller_chunk_needs_a_smaller_arena() {
    // SAFETY: MODEL is a live buffer of its length.
    let default = unsafe { kinglet_session_bytes(MODEL.as_ptr(), MODEL.len(), MAX_SEQ) };
    assert_eq!(default, bytes(16));
    assert!(bytes(1) < bytes(3) && bytes(3) < bytes(16), "{}", bytes(1));
    assert_eq!(bytes(0), 0);
    assert_eq!(bytes(17), 0);
    assert_eq!(bytes(u32::MAX), 0);
}

#[test]
fn every_chunk_generates_the_same_text() {
    let want = generate(16);
    assert!(want.starts_with("ROMEO:") && want.len() > 50, "{want}");
    for chunk in [1, 3, 5] {
        assert_eq!(generate(chunk), want, "chunk {chunk}");
    }
}

#[test]
fn bad_chunks_and_arenas_for_smaller_chunks_are_refused() {
    let mut arena = vec![0u8; bytes(16)];
    for chunk in [0, 17, u32::MAX] {
        assert_eq!(init(&mut arena, chunk).err(), Some(KINGLET_E_PREFILL_CHUNK));
    }
    let for_1 = bytes(1);
    assert_eq!(
        init(&mut arena[..for_1], 3).err(),
        Some(KINGLET_E_ARENA_TOO_SMALL)
    );
    assert_eq!(
        init(&mut arena[..for_1 - 1], 1).err(),
        Some(KINGLET_E_ARENA_TOO_SMALL)
    );
    assert!(init(&mut arena[..for_1], 1).is_ok());
}
