//! The session state that lives at the start of the caller's arena: the
//! model view, the engine session (which borrows the view and the `f32`
//! buffer after it in the same arena), the prompt token slots and the
//! tokenizer's scratch.
//!
//! The state refers to itself and to the arena, so it is never moved and
//! never borrowed as a whole: fields are reached through raw-pointer
//! projections, the model view only shared, the session and the token
//! slots only exclusively and never both through one reference.

use core::cell::Cell;
use core::ffi::c_int;
use core::mem::size_of;
use core::ptr::{addr_of, addr_of_mut};

use kinglet::generate::Generator;
use kinglet::session::PREFILL_CHUNK;
use kinglet::{tokenizer, Config, ModelFile, Sampler, SamplerConfig, Session};

use crate::codes::*;
use crate::layout::{self, layout, PROMPT_BYTES_PER_POSITION};

/// Marks an initialized state ("KINGLETS"), to catch some stray pointers.
const TAG: u64 = u64::from_le_bytes(*b"KINGLETS");

type Model = ModelFile<&'static [u8]>;

/// An opaque session, placed inside the caller's arena.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct kinglet_session {
    tag: u64,
    model: Model,
    session: Session<'static, &'static [u8]>,
    /// `[4 × max_seq + 2]` prompt token ids.
    tokens: &'static mut [u32],
    /// `[scratch_words(4 × max_seq + 2)]` words for merging the prompt.
    scratch: &'static mut [u32],
}

const _: () = assert!(core::mem::align_of::<kinglet_session>() <= layout::ARENA_ALIGN);

/// Arena bytes for a session of `max_seq` positions whose prefill runs
/// `chunk` positions together (any arena alignment).
pub fn arena_bytes(config: &Config, max_seq: u32, chunk: usize) -> Option<usize> {
    layout::arena_bytes(size_of::<kinglet_session>(), config, max_seq, chunk)
}

/// Builds a session in `arena[..arena_len]` for the model in `bytes`, its
/// prefill running `chunk` positions together.
///
/// # Safety
/// `arena` must be valid for reads and writes of `arena_len` bytes, and it
/// and `bytes` must stay valid, unmoved and otherwise untouched while the
/// returned session is used.
pub unsafe fn init(
    arena: *mut u8,
    arena_len: usize,
    bytes: &'static [u8],
    max_seq: u32,
    chunk: usize,
) -> Result<*mut kinglet_session, c_int> {
    let model = ModelFile::new_checked(bytes).map_err(|e| code_of(&e))?;
    let config = *model.config();
    if max_seq == 0 || max_seq > config.max_seq_len {
        return Err(KINGLET_E_MAX_SEQ);
    }
    if chunk == 0 || chunk > PREFILL_CHUNK {
        return Err(KINGLET_E_PREFILL_CHUNK);
    }
    // The worst-case size, not just what this address needs, so that
    // whether an arena is big enough never depends on where it happens to be.
    let needed = arena_bytes(&config, max_seq, chunk).ok_or(KINGLET_E_ARENA_TOO_SMALL)?;
    if arena_len < needed {
        return Err(KINGLET_E_ARENA_TOO_SMALL);
    }
    let regions = layout(
        arena as usize,
        size_of::<kinglet_session>(),
        &config,
        max_seq,
        chunk,
    )
    .ok_or(KINGLET_E_ARENA_TOO_SMALL)?;
    if regions.end > arena_len {
        return Err(KINGLET_E_ARENA_TOO_SMALL);
    }
    // SAFETY: every region lies within `arena[..arena_len]` (checked just
    // above), they do not overlap, and the state and the f32 buffer are
    // 64-byte aligned. The buffers are zeroed before slices are made of
    // them, so no reference ever sees uninitialized memory.
    unsafe {
        let state = arena.add(regions.state).cast::<kinglet_session>();
        let floats_ptr = arena.add(regions.floats_at).cast::<f32>();
        let tokens_ptr = arena.add(regions.tokens_at).cast::<u32>();
        let scratch_ptr = arena.add(regions.scratch_at).cast::<u32>();
        floats_ptr.write_bytes(0, regions.floats);
        tokens_ptr.write_bytes(0, regions.token_slots);
        scratch_ptr.write_bytes(0, regions.scratch_words);
        let floats: &'static mut [f32] =
            core::slice::from_raw_parts_mut(floats_ptr, regions.floats);
        let tokens: &'static mut [u32] =
            core::slice::from_raw_parts_mut(tokens_ptr, regions.token_slots);
        let scratch: &'static mut [u32] =
            core::slice::from_raw_parts_mut(scratch_ptr, regions.scratch_words);
        addr_of_mut!((*state).tag).write(0);
        addr_of_mut!((*state).model).write(model);
        let model: &'static Model = &*addr_of!((*state).model);
        let session = match Session::with_chunk(model, floats, max_seq, chunk) {
            Ok(session) => session,
            Err(e) => return Err(code_of(&e)),
        };
        addr_of_mut!((*state).session).write(session);
        addr_of_mut!((*state).tokens).write(tokens);
        addr_of_mut!((*state).scratch).write(scratch);
        addr_of_mut!((*state).tag).write(TAG);
        Ok(state)
    }
}

/// The longest prompt, in bytes, the session accepts:
/// `PROMPT_BYTES_PER_POSITION × max_seq`.
///
/// # Safety
/// `state` must be non-NULL and come from [`init`], whose contract still holds.
pub unsafe fn prompt_limit(state: *mut kinglet_session) -> Result<usize, c_int> {
    // SAFETY: `state` points at an initialized state by contract; the tag
    // is read first to catch some pointers that do not.
    unsafe {
        if addr_of!((*state).tag).read() != TAG {
            return Err(KINGLET_E_BAD_SESSION);
        }
        Ok((*addr_of!((*state).session)).max_seq() as usize * PROMPT_BYTES_PER_POSITION)
    }
}

/// Generates from the UTF-8 `prompt` into `emit` (see `kinglet_generate`);
/// the number of sampled tokens, or a code.
///
/// # Safety
/// `state` must be non-NULL and come from [`init`], whose contract still holds.
pub unsafe fn generate(
    state: *mut kinglet_session,
    prompt: &[u8],
    max_new_tokens: u32,
    temperature: f32,
    seed: u64,
    emit: &mut dyn FnMut(&str) -> c_int,
) -> Result<u32, c_int> {
    // SAFETY: `state` points at an initialized state by contract; the tag
    // is read first to catch some pointers that do not.
    let (model, session, tokens, scratch) = unsafe {
        if addr_of!((*state).tag).read() != TAG {
            return Err(KINGLET_E_BAD_SESSION);
        }
        (
            &*addr_of!((*state).model),
            &mut *addr_of_mut!((*state).session),
            &mut **addr_of_mut!((*state).tokens),
            &mut **addr_of_mut!((*state).scratch),
        )
    };
    if prompt.len() > session.max_seq() as usize * PROMPT_BYTES_PER_POSITION {
        return Err(KINGLET_E_PROMPT_TOO_LONG);
    }
    let prompt = core::str::from_utf8(prompt).map_err(|_| KINGLET_E_PROMPT_UTF8)?;
    let config = *model.config();
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(KINGLET_E_TEMPERATURE);
    }
    let sampling = SamplerConfig {
        temperature,
        top_k: 0,
        top_p: 1.0,
        seed,
    };
    let mut sampler = Sampler::new(config.vocab_size, sampling).map_err(|e| code_of(&e))?;
    session.reset();
    // The slots hold one token per prompt byte before merging, plus BOS and
    // the dummy prefix, and the scratch is sized for them, so encoding
    // cannot run out of room.
    let n = tokenizer::encode_with_scratch(&model.vocab(), prompt, true, tokens, scratch)
        .map_err(|e| code_of(&e))?;
    let prompt_tokens = &tokens[..n];
    let mut generator = Generator::new(session, &mut sampler, prompt_tokens, max_new_tokens)
        .map_err(|e| code_of(&e))?;
    let stopped = Cell::new(false);
    let mut sink = |piece: &str| {
        if !stopped.get() && !piece.is_empty() && emit(piece) != 0 {
            stopped.set(true);
        }
    };
    loop {
        match generator.step(&mut sink) {
            Ok(Some(_)) if !stopped.get() => {}
            Ok(_) => break,
            Err(e) => return Err(code_of(&e)),
        }
    }
    Ok(generator.new_tokens())
}
