//! Inputs the `c_api` fuzz target (fuzz/fuzz_targets/c_api.rs) found, kept
//! so the fixes stay fixed.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use kinglet::checksum::crc32c;
use kinglet::format::DIR_ENTRY_BYTES;
use kinglet::ModelFile;
use kinglet_ffi::codes::*;
use kinglet_ffi::*;

/// A tiny q8_0 model (fuzz/tiny_llama2c.py, converted) whose tensor data the
/// fuzzer scrambled: a forward pass drives its activations to NaN, which
/// the Q8 activation quantizer refuses.
const NAN_ACTIVATIONS: &[u8] = include_bytes!("../../tests/data/fuzz/c_api-nan-activations.klt");

unsafe extern "C" fn ignore(_: *const c_char, _: usize, _: *mut c_void) -> c_int {
    0
}

/// Opens a session of `max_seq` positions on `model` and generates from
/// `prompt` as the fuzz target did; the return code of `kinglet_generate`.
fn generate(model: &[u8], max_seq: u32, prompt: &CStr) -> c_int {
    // SAFETY: every pointer and length describes a live buffer.
    unsafe {
        let need = kinglet_session_bytes(model.as_ptr(), model.len(), max_seq);
        assert!(need > 0);
        let mut arena = vec![0u8; need];
        let mut session: *mut kinglet_session = ptr::null_mut();
        let rc = kinglet_session_init(
            arena.as_mut_ptr().cast(),
            need,
            model.as_ptr(),
            model.len(),
            max_seq,
            &mut session,
        );
        assert_eq!(rc, KINGLET_OK);
        kinglet_generate(
            session,
            prompt.as_ptr(),
            3,
            0.7,
            7,
            Some(ignore),
            ptr::null_mut(),
        )
    }
}

/// Rewrites the tensor CRCs and the header CRC so the damage passes the
/// checksums: the weights are then absurd rather than damaged.
fn with_matching_checksums(file: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    let model = ModelFile::new_checked(file).unwrap();
    let directory = file
        .windows(13)
        .position(|w| w == b"tok_embedding")
        .unwrap();
    for t in model.tensors() {
        let at = directory + t.index as usize * DIR_ENTRY_BYTES + 72;
        out[at..at + 4].copy_from_slice(&crc32c(t.data).to_le_bytes());
    }
    // Zero the padding the fuzzer also scribbled on.
    let mut end = model.header_bytes();
    for t in model.tensors() {
        out[end..t.offset as usize].fill(0);
        end = t.offset as usize + t.data.len();
    }
    let h = model.header_bytes();
    let crc = crc32c(&out[..h - 4]);
    out[h - 4..h].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Found: `kinglet_generate` returned KINGLET_E_INTERNAL ("a bug in
/// kinglet") for a model whose weights overflow, which is a fact about the
/// model, not a bug. It is KINGLET_E_BAD_MODEL now.
#[test]
fn non_finite_activations_are_a_bad_model_not_an_internal_error() {
    // SAFETY: a live buffer.
    let check = unsafe { kinglet_check(NAN_ACTIVATIONS.as_ptr(), NAN_ACTIVATIONS.len()) };
    assert_eq!(check, KINGLET_E_CHECKSUM, "the fuzzer damaged the weights");
    assert_eq!(generate(NAN_ACTIVATIONS, 7, c""), KINGLET_E_BAD_MODEL);

    let absurd = with_matching_checksums(NAN_ACTIVATIONS);
    // SAFETY: a live buffer.
    let check = unsafe { kinglet_check(absurd.as_ptr(), absurd.len()) };
    assert_eq!(
        check, KINGLET_E_BAD_MODEL,
        "every checksum matches, but some block scales are NaN or infinite"
    );
    assert_eq!(generate(&absurd, 7, c""), KINGLET_E_BAD_MODEL);
    assert_eq!(generate(&absurd, 8, c"\xe6\x97\xa5"), KINGLET_E_BAD_MODEL);
}
