//! The packed weights `generate` and `eval` give their sessions unless
//! `--no-pack` is given: on a CPU whose kernel path reads packed matrices
//! faster (every x86 one: AVX2, AVX-VNNI, AVX-512), the model's Q8_0 and Q4_0 matrices are
//! repacked once at load into a buffer of their size (see
//! `kinglet::packed_weights`). The results are the same bits either way;
//! only speed and memory change.

use kinglet::{packed_weights_bytes, ModelFile};

use memmap2::MmapMut;

use crate::memory::Budget;
use crate::model_bytes::huge_page_buffer;

/// A zeroed buffer for `model`'s packed weights (on huge pages where the
/// system gives them), or `None` when packing is
/// off (`enabled` false), does not pay on this CPU's kernel path, the model
/// has no quantized matrices, or the buffer does not fit `budget` beside
/// the `others` bytes the command needs (`None`: beyond counting) or the
/// allocator refuses it: packing only speeds things up, so the command
/// then runs without it.
pub fn packed_buffer<T: AsRef<[u8]>>(
    model: &ModelFile<T>,
    enabled: bool,
    budget: &Budget,
    others: Option<u64>,
) -> Option<MmapMut> {
    let bytes = packed_weights_bytes(model);
    if !enabled || bytes == 0 || !kinglet::kernels::Path::active().packs_weights() {
        return None;
    }
    let total = others.and_then(|o| o.checked_add(bytes as u64));
    if !budget.fits(total) {
        return None;
    }
    // On huge pages, as the model's bytes are: every token streams them.
    huge_page_buffer(bytes).ok()
}
