//! The C API of the kinglet engine (`include/kinglet.h`): check a model,
//! size an arena, start a session inside it, and generate text through a
//! callback. Nothing allocates; the caller owns the model bytes and the arena.
//!
//! The code uses `core` only. With the default `std` feature the library
//! links std, which supplies the panic runtime, and every entry point turns
//! a panic (a kinglet bug) into `KINGLET_E_INTERNAL` instead of aborting.
//! Without it the crate is `#![no_std]` for C firmware; it must then be built
//! with `-C panic=abort` (Rust's precompiled `core` cannot unwind without
//! std), and a panic calls the platform's `abort()`.
#![no_std]
// Raw pointers from C are this crate's whole purpose.
#![allow(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod codes;
pub mod layout;
mod state;

use core::ffi::{c_char, c_int, c_void, CStr};

use codes::*;
use kinglet::session::PREFILL_CHUNK;
use kinglet::ModelFile;
pub use state::kinglet_session;

/// The `emit` callback: a piece of UTF-8 text (`len` bytes, not
/// NUL-terminated) and the caller's `user` pointer; non-zero stops generation.
pub type EmitFn =
    unsafe extern "C" fn(piece: *const c_char, len: usize, user: *mut c_void) -> c_int;

/// Runs `body`, turning a panic into `on_panic` when std is linked.
fn guarded<R>(on_panic: R, body: impl FnOnce() -> R) -> R {
    #[cfg(feature = "std")]
    {
        std::panic::catch_unwind(core::panic::AssertUnwindSafe(body)).unwrap_or(on_panic)
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = on_panic;
        body()
    }
}

/// The model bytes `model[..len]`, or `None` for a NULL pointer.
///
/// # Safety
/// A non-NULL `model` must point at `len` readable bytes.
unsafe fn model_bytes<'a>(model: *const u8, len: usize) -> Option<&'a [u8]> {
    if model.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes.
    Some(unsafe { core::slice::from_raw_parts(model, len) })
}

/// The library version, a static NUL-terminated string such as `"0.1.0"`.
#[no_mangle]
pub extern "C" fn kinglet_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// The message of an error code: a static NUL-terminated string, never NULL.
#[no_mangle]
pub extern "C" fn kinglet_strerror(code: c_int) -> *const c_char {
    codes::message_ptr(code)
}

/// Validates a model completely: its layout, its header checksum and the
/// checksum of every tensor (it reads every byte). 0 or a negative code.
///
/// # Safety
/// A non-NULL `model` must point at `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn kinglet_check(model: *const u8, len: usize) -> c_int {
    guarded(KINGLET_E_INTERNAL, || {
        // SAFETY: forwarded from the caller.
        let Some(bytes) = (unsafe { model_bytes(model, len) }) else {
            return KINGLET_E_NULL;
        };
        match ModelFile::new_checked(bytes).and_then(|m| m.verify()) {
            Ok(()) => KINGLET_OK,
            Err(e) => code_of(&e),
        }
    })
}

/// The model's `max_seq_len` (the largest `max_seq` a session may have), or
/// 0 when the model is NULL or invalid.
///
/// # Safety
/// A non-NULL `model` must point at `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn kinglet_model_max_seq(model: *const u8, len: usize) -> u32 {
    guarded(0, || {
        // SAFETY: forwarded from the caller.
        let Some(bytes) = (unsafe { model_bytes(model, len) }) else {
            return 0;
        };
        ModelFile::new_checked(bytes).map_or(0, |m| m.config().max_seq_len)
    })
}

/// Arena bytes a session of `max_seq` positions needs, at any arena
/// alignment, with prefill chunks of `KINGLET_MAX_PREFILL_CHUNK` (16)
/// positions; 0 when the model is NULL or invalid or `max_seq` is out of
/// range.
///
/// # Safety
/// A non-NULL `model` must point at `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn kinglet_session_bytes(
    model: *const u8,
    len: usize,
    max_seq: u32,
) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { kinglet_session_bytes_chunk(model, len, max_seq, PREFILL_CHUNK as u32) }
}

/// Arena bytes a session of `max_seq` positions needs, at any arena
/// alignment, when its prompt runs `prefill_chunk` positions at a time (1 to
/// `KINGLET_MAX_PREFILL_CHUNK`; 1 for a session that decodes token by
/// token, the smallest); 0 when the model is NULL or invalid or `max_seq`
/// or `prefill_chunk` is out of range.
///
/// # Safety
/// A non-NULL `model` must point at `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn kinglet_session_bytes_chunk(
    model: *const u8,
    len: usize,
    max_seq: u32,
    prefill_chunk: u32,
) -> usize {
    guarded(0, || {
        // SAFETY: forwarded from the caller.
        let Some(bytes) = (unsafe { model_bytes(model, len) }) else {
            return 0;
        };
        let Ok(model) = ModelFile::new_checked(bytes) else {
            return 0;
        };
        let config = model.config();
        if max_seq == 0 || max_seq > config.max_seq_len {
            return 0;
        }
        // Out of range chunks give no size (`None`).
        state::arena_bytes(config, max_seq, prefill_chunk as usize).unwrap_or(0)
    })
}

/// Opens the model (layout and header checksum; see `kinglet_check` for the
/// tensor checksums) and starts a session of `max_seq` positions inside
/// `arena`. On success `*out` points into the arena.
///
/// # Safety
/// Non-NULL pointers must be valid: `model` for `len` reads and `arena` for
/// `arena_len` reads and writes, both for as long as the session is used,
/// neither moved nor modified by anyone else meanwhile; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn kinglet_session_init(
    arena: *mut c_void,
    arena_len: usize,
    model: *const u8,
    len: usize,
    max_seq: u32,
    out: *mut *mut kinglet_session,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe {
        kinglet_session_init_chunk(
            arena,
            arena_len,
            model,
            len,
            max_seq,
            PREFILL_CHUNK as u32,
            out,
        )
    }
}

/// `kinglet_session_init` for a session whose prompt runs `prefill_chunk`
/// positions at a time (1 to `KINGLET_MAX_PREFILL_CHUNK`), in an arena of
/// `kinglet_session_bytes_chunk` bytes. The chunk changes no output, only
/// the arena's size and the prompt's speed.
///
/// # Safety
/// As `kinglet_session_init`.
#[no_mangle]
pub unsafe extern "C" fn kinglet_session_init_chunk(
    arena: *mut c_void,
    arena_len: usize,
    model: *const u8,
    len: usize,
    max_seq: u32,
    prefill_chunk: u32,
    out: *mut *mut kinglet_session,
) -> c_int {
    guarded(KINGLET_E_INTERNAL, || {
        if arena.is_null() || out.is_null() {
            return KINGLET_E_NULL;
        }
        // SAFETY: forwarded from the caller, who keeps the bytes alive and
        // unchanged while the session is used (the 'static is that promise).
        let Some(bytes) = (unsafe { model_bytes::<'static>(model, len) }) else {
            return KINGLET_E_NULL;
        };
        let chunk = prefill_chunk as usize;
        // SAFETY: forwarded from the caller.
        match unsafe { state::init(arena.cast(), arena_len, bytes, max_seq, chunk) } {
            Ok(session) => {
                // SAFETY: `out` is non-NULL and writable by contract.
                unsafe { out.write(session) };
                KINGLET_OK
            }
            Err(code) => code,
        }
    })
}

/// Generates text from a NUL-terminated prompt: resets the session, runs
/// BOS (when the model has one) and the prompt, then samples up to
/// `max_new_tokens` tokens (fewer at an end-of-text token or a full
/// context). All text, the prompt's included, goes to `emit` in whole UTF-8
/// characters; `emit` returning non-zero stops generation. Returns the
/// number of tokens sampled, or a negative code.
///
/// It reads the prompt up to its NUL but never more than
/// `4 × max_seq + 1` bytes: a prompt without a NUL within them is
/// `KINGLET_E_PROMPT_TOO_LONG`. `kinglet_generate_n` takes a length instead.
///
/// # Safety
/// `session` must come from `kinglet_session_init` (its arena and model still
/// valid); `prompt` must be readable up to its NUL or `4 × max_seq + 1`
/// bytes, whichever comes first; `emit` must be safe to call with `user`.
#[no_mangle]
pub unsafe extern "C" fn kinglet_generate(
    session: *mut kinglet_session,
    prompt: *const c_char,
    max_new_tokens: u32,
    temperature: f32,
    seed: u64,
    emit: Option<EmitFn>,
    user: *mut c_void,
) -> c_int {
    guarded(KINGLET_E_INTERNAL, || {
        if session.is_null() || prompt.is_null() || emit.is_none() {
            return KINGLET_E_NULL;
        }
        // SAFETY: `session` is non-NULL and from kinglet_session_init.
        let limit = match unsafe { state::prompt_limit(session) } {
            Ok(limit) => limit,
            Err(code) => return code,
        };
        // SAFETY: the caller promises the bytes up to the NUL or the limit
        // + 1, and the scan stops at whichever comes first.
        let Some(len) = (0..=limit).find(|&i| unsafe { prompt.add(i).read() } == 0) else {
            return KINGLET_E_PROMPT_TOO_LONG;
        };
        // SAFETY: the `len` bytes before the NUL were just read.
        let prompt = unsafe { core::slice::from_raw_parts(prompt.cast::<u8>(), len) };
        // SAFETY: forwarded from the caller.
        unsafe {
            generate(
                session,
                prompt,
                max_new_tokens,
                temperature,
                seed,
                emit,
                user,
            )
        }
    })
}

/// [`kinglet_generate`] with the prompt given as `prompt_len` bytes of
/// UTF-8 at `prompt` (no NUL needed; a NUL byte inside is a character like
/// any other). `prompt` may be NULL when `prompt_len` is 0. The length is
/// checked against `4 × max_seq` before any byte is read.
///
/// # Safety
/// As [`kinglet_generate`], except that `prompt` must be readable for
/// `prompt_len` bytes (when that many are not too many).
#[no_mangle]
pub unsafe extern "C" fn kinglet_generate_n(
    session: *mut kinglet_session,
    prompt: *const c_char,
    prompt_len: usize,
    max_new_tokens: u32,
    temperature: f32,
    seed: u64,
    emit: Option<EmitFn>,
    user: *mut c_void,
) -> c_int {
    guarded(KINGLET_E_INTERNAL, || {
        if session.is_null() || (prompt.is_null() && prompt_len > 0) || emit.is_none() {
            return KINGLET_E_NULL;
        }
        // SAFETY: `session` is non-NULL and from kinglet_session_init.
        match unsafe { state::prompt_limit(session) } {
            Ok(limit) if prompt_len > limit => return KINGLET_E_PROMPT_TOO_LONG,
            Ok(_) => {}
            Err(code) => return code,
        }
        let prompt: &[u8] = if prompt_len == 0 {
            &[]
        } else {
            // SAFETY: non-NULL, and the caller promises `prompt_len` bytes.
            unsafe { core::slice::from_raw_parts(prompt.cast::<u8>(), prompt_len) }
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            generate(
                session,
                prompt,
                max_new_tokens,
                temperature,
                seed,
                emit,
                user,
            )
        }
    })
}

/// Both generate entry points after their prompt is a byte slice.
///
/// # Safety
/// `session` non-NULL and from `kinglet_session_init`; `emit`, if any, safe
/// to call with `user`.
unsafe fn generate(
    session: *mut kinglet_session,
    prompt: &[u8],
    max_new_tokens: u32,
    temperature: f32,
    seed: u64,
    emit: Option<EmitFn>,
    user: *mut c_void,
) -> c_int {
    let Some(emit) = emit else {
        return KINGLET_E_NULL;
    };
    let mut sink = |piece: &str| {
        // SAFETY: `piece` is valid for its length during the call; the
        // caller vouches for `emit` and `user`.
        unsafe { emit(piece.as_ptr().cast(), piece.len(), user) }
    };
    // SAFETY: forwarded from the caller.
    match unsafe {
        state::generate(
            session,
            prompt,
            max_new_tokens,
            temperature,
            seed,
            &mut sink,
        )
    } {
        Ok(tokens) => c_int::try_from(tokens).unwrap_or(c_int::MAX),
        Err(code) => code,
    }
}

#[cfg(all(not(feature = "std"), not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    extern "C" {
        fn abort() -> !;
    }
    // SAFETY: the C library's abort() takes nothing and never returns.
    unsafe { abort() }
}

/// Rust's precompiled `core` refers to the unwinding personality routine
/// even when everything is built with `panic=abort`; with std absent nothing
/// else defines it, and with `panic=abort` nothing ever calls it.
#[cfg(all(not(feature = "std"), not(test)))]
#[no_mangle]
extern "C" fn rust_eh_personality() {}
