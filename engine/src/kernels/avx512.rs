//! x86-64 intrinsics for AVX-512 F/BW/VL with VNNI: the reference's
//! arithmetic (`reference.rs`), only faster, bit for bit. The structure is
//! `avx2.rs`'s, twice as wide:
//!
//! - Float rows keep the reference's 16 lanes in one `__m512` per row, each
//!   a separate multiply and add (never fused); the reduction adds the two
//!   256-bit halves (lane `j` plus lane `j+8`) and finishes as the AVX2 path
//!   does, then adds the tail in order.
//! - Q8_0 / Q4_0 rows go sixteen at a time, one f32 lane each. A block's
//!   integer sum comes from `vpdpbusd` (unsigned × signed bytes, four
//!   products per i32, never saturating): Q8_0 levels are made unsigned by
//!   adding 128 (`Σ (w+128)·x = Σ w·x + 128·Σ x`), Q4_0 nibbles are unsigned
//!   already (`Σ q·x = Σ (q−8)·x + 8·Σ x`); the offset `k·Σ x` is computed
//!   once per activation block and subtracted, which leaves the exact sum.
//! - The matrix-matrix product (prefill) lays each block of sixteen rows
//!   out once with row `r` in lane `r`, four levels a lane, and multiplies
//!   it with each position's levels broadcast four at a time: the totals
//!   land in their lanes, with no reduction per position.
//! - A matrix repacked at load time (`packed.rs`) is already in that form,
//!   scales and levels of a group's block side by side: its matrix-vector
//!   product loads them as they are (for Q4_0, masks and shifts out the
//!   nibbles) and multiplies them with the broadcast activation words too.
//! - The activation quantizer takes sixteen blocks at a time, one lane per
//!   block for the maxima and scales.
//! - Rows that do not fill a group, and activation blocks past the last
//!   sixteen, run `avx2.rs`'s kernels (AVX-512 CPUs have AVX2): the bits do
//!   not depend on which rows or blocks go together.
//!
//! Every function needs AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI (the
//! `# Safety` sections say no more); lengths come in the checked types of
//! `shapes.rs`, whose facts make every load below in bounds, as each
//! `unsafe` block restates.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::avx2::{
    self, block_offsets, by_position_blocks, prefetch, reduce8, tail_sum, BF16, CHUNK_BLOCKS, F16,
    F32, STREAM_BYTES,
};
use super::avx2_packed::PREFETCH_BYTES;
use super::packed::{GROUP_SCALE_BYTES, VECTOR_BYTES};
use super::reference::{self, NORM_ROWS};
use super::shapes::{
    block_bytes, Activations, Float, FloatMatmul, FloatRows, HeadScores, HeadSums, QuantMatmul,
    QuantRows, QueryScores, QuerySums, Strided,
};
use crate::packed_weights::CACHED_BYTES;
use crate::quant::BlockQ8;
use crate::tensor::BLOCK_LEN;

pub use super::avx2::crc32c_update;

/// Floats in one `__m512`: the reference's lanes.
const LANES: usize = 16;
const _: () = assert!(LANES == super::reference::LANES);
/// Rows the float matvec walks together when the matrix is small enough to
/// be in cache.
const ROW_GROUP: usize = 4;
/// Vectors of `x` (its first `16 · HELD_IN_HALVES` columns) that
/// [`held_x_rows`] keeps in registers when it reads rows in 256-bit halves
/// (narrow rows: each half takes a register of its own).
const HELD_IN_HALVES: usize = 16;
/// Vectors of `x` that [`held_x_rows`] keeps in registers when it reads
/// rows in whole vectors (rows of 32 vectors or more). On 110M's rows 20,
/// 24 and 28 read alike (docs/PERFORMANCE.md, 2026-12-04 (midnight)).
const HELD_WHOLE: usize = 24;
/// The f16 scale in front of each Q8_0 / Q4_0 block.
const SCALE_BYTES: usize = 2;

/// Bytes per element of encoding `DT`.
const fn element_bytes(dt: u8) -> usize {
    if dt == F32 {
        4
    } else {
        2
    }
}

/// Loads and widens sixteen elements of encoding `DT` to f32.
///
/// # Safety
/// The features are available, and `p` points to `16 · element_bytes(DT)`
/// readable bytes (no alignment needed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn load16<const DT: u8>(p: *const u8) -> __m512 {
    // SAFETY: the caller guarantees the bytes are readable; the loads are
    // unaligned variants.
    unsafe {
        match DT {
            F32 => _mm512_loadu_ps(p.cast::<f32>()),
            F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<__m256i>())),
            // bf16 is the high half of an f32: widen and shift into place.
            _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                _mm256_loadu_si256(p.cast::<__m256i>()),
            ))),
        }
    }
}

/// The reference's reduction of the 16 lanes of `v`: lanes 0–7 plus lanes
/// 8–15, then the eight pairwise.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn reduce_lanes(v: __m512) -> f32 {
    let low = _mm512_castps512_ps256(v);
    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    reduce8(_mm256_add_ps(low, high))
}

/// `out[r] = Σ_c w[r][c] · x[c]` for float rows, the reference's bits.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn matvec(a: FloatRows<'_>) {
    // SAFETY: the features are available; `FloatRows` holds `out.len()`
    // rows of `x.len() ≥ 1` elements of its encoding.
    unsafe {
        match a.dtype {
            Float::F32 => float_rows::<F32>(a.out, a.w, a.x),
            Float::F16 => float_rows::<F16>(a.out, a.w, a.x),
            Float::BF16 => float_rows::<BF16>(a.out, a.w, a.x),
        }
    }
}

/// [`matvec`] for encoding `DT`: [`ROW_GROUP`] rows at a time, then one;
/// or, for a matrix larger than [`STREAM_BYTES`], one row after another
/// (one sequential stream: see `avx2.rs`), one 512-bit load a vector. On
/// Zen 4 streamed f32 matrices, the classifier included, run
/// [`held_x_rows`] instead. Holding `x` in registers across the rows and
/// reading the rows in 256-bit halves cost 20–30% of a 110M f32 decode on
/// Zen 5 (docs/PERFORMANCE.md, 2026-12-03). Elsewhere a matrix larger than
/// the last-level cache ([`CACHED_BYTES`], a classifier) runs the AVX2
/// kernel's rows, two 256-bit chains: from memory they read 25–30% faster
/// on Zen 5 (a 32000 × 768 f32 classifier 29–32 → 36–40 GB/s), in cache
/// 5–10% slower.
///
/// # Safety
/// The features are available; `x.len() ≥ 1` and
/// `w.len() == out.len() · x.len() · element_bytes(DT)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn float_rows<const DT: u8>(out: &mut [f32], w: &[u8], x: &[f32]) {
    let row_bytes = x.len() * element_bytes(DT);
    if DT == F32 && w.len() > STREAM_BYTES && super::path::amd_family_19h() {
        let narrow = x.len() < 2 * HELD_IN_HALVES * LANES;
        // SAFETY: the features are available; `w` holds `out.len()` rows
        // of `x.len()` f32 elements (this function's precondition); rows
        // that are not narrow have 32 ≥ HELD_WHOLE whole vectors.
        unsafe {
            match (narrow, x.len() >= HELD_IN_HALVES * LANES) {
                (false, _) => held_x_rows::<HELD_WHOLE, false, true>(out, w, x),
                (true, true) => held_x_rows::<HELD_IN_HALVES, true, true>(out, w, x),
                (true, false) => held_x_rows::<HELD_IN_HALVES, true, false>(out, w, x),
            }
        };
        return;
    }
    if w.len() > STREAM_BYTES {
        let from_memory = w.len() > CACHED_BYTES;
        for (o, row) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
            // SAFETY: `row` is one row of x.len() elements; AVX2, FMA and
            // F16C are among the features.
            *o = unsafe {
                if from_memory {
                    avx2::dot_rows::<DT, 1>(row.as_ptr(), row_bytes, x)[0]
                } else {
                    dot_rows::<DT, 1>(row.as_ptr(), row_bytes, x)[0]
                }
            };
        }
        return;
    }
    let mut out_groups = out.chunks_exact_mut(ROW_GROUP);
    let mut w_groups = w.chunks_exact(ROW_GROUP * row_bytes);
    for (o, rows) in (&mut out_groups).zip(&mut w_groups) {
        // SAFETY: `rows` is ROW_GROUP rows of x.len() elements.
        let sums = unsafe { dot_rows::<DT, ROW_GROUP>(rows.as_ptr(), row_bytes, x) };
        o.copy_from_slice(&sums);
    }
    for (o, row) in out_groups
        .into_remainder()
        .iter_mut()
        .zip(w_groups.remainder().chunks_exact(row_bytes))
    {
        // SAFETY: `row` is one row of x.len() elements.
        *o = unsafe { dot_rows::<DT, 1>(row.as_ptr(), row_bytes, x) }[0];
    }
}

/// Sixteen f32 from `p` as two masked 256-bit loads, in one `__m512`: the
/// lanes of one 512-bit load. On Zen 4, streaming f32 rows from memory,
/// 256-bit loads read faster than 512-bit ones (docs/PERFORMANCE.md,
/// 2026-12-03 (evening)); on Zen 5 these masked loads ran at half the rate.
///
/// # Safety
/// The features are available, and `p` points to 16 readable f32 (no
/// alignment needed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn load16_in_halves(p: *const f32) -> __m512 {
    // SAFETY: each masked load reads only its eight unmasked lanes, both
    // within the 16 readable floats; no alignment is needed.
    unsafe { _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(0x00ff, p), 0xff00, p) }
}

/// Sixteen f32 of a row from `p`: by [`load16_in_halves`] with `HALVES`,
/// else one 512-bit load.
///
/// # Safety
/// The features are available, and `p` points to 16 readable f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row16<const HALVES: bool>(p: *const f32) -> __m512 {
    // SAFETY: this function's contract.
    unsafe {
        if HALVES {
            load16_in_halves(p)
        } else {
            _mm512_loadu_ps(p)
        }
    }
}

/// [`float_rows`] of a streamed f32 matrix on an AMD family 19h CPU (Zen
/// 4): one row after another, each in the reference order, with the first
/// `HELD` vectors of `x` held in registers. Rows are read by
/// [`load16_in_halves`] with `HALVES` (rows narrower than 32 vectors, most
/// of such a row held), else by one 512-bit load a vector folded into its
/// multiply.
///
/// Measured on Zen 4 (docs/PERFORMANCE.md): 15M f32 decode (rows of 288)
/// ran 12–19% faster with the halves than with one load of the row and
/// one of `x` a vector (`cargo bench --bench decode`, three alternating
/// pairs), but 110M's rows of 768 and 2048 ran 0.5–7% slower with them
/// (2026-12-04 (late night)); whole vectors with 24 held streamed a 110M
/// token's matrices 5–13% faster than one load of each a vector, and
/// 110M f32 decode about 5% faster (2026-12-04 (midnight)). `ALL`: `x` has at
/// least `HELD` whole vectors, so every held step runs.
///
/// # Safety
/// The features are available; `w.len() == out.len() · x.len() · 4`; with
/// `ALL`, `x.len() ≥ 16 · HELD`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn held_x_rows<const HELD: usize, const HALVES: bool, const ALL: bool>(
    out: &mut [f32],
    w: &[u8],
    x: &[f32],
) {
    let cols = x.len();
    let whole = cols - cols % LANES;
    let held = (whole / LANES).min(HELD);
    let held_x: [__m512; HELD] = core::array::from_fn(|i| {
        if ALL || i < held {
            // SAFETY: 16·i + 16 <= 16·held <= whole <= cols (with `ALL`,
            // held is HELD).
            unsafe { _mm512_loadu_ps(x.as_ptr().add(i * LANES)) }
        } else {
            _mm512_setzero_ps()
        }
    });
    for (o, row) in out.iter_mut().zip(w.chunks_exact(cols * 4)) {
        let p = row.as_ptr().cast::<f32>();
        let mut acc = _mm512_setzero_ps();
        // A fixed count: unrolled, and `held_x` stays in registers.
        for (i, &xv) in held_x.iter().enumerate() {
            if ALL || i < held {
                // SAFETY: elements 16·i .. 16·i + 16 <= whole of the row.
                let wv = unsafe { row16::<HALVES>(p.add(i * LANES)) };
                acc = _mm512_add_ps(acc, _mm512_mul_ps(wv, xv));
            }
        }
        for c in (held * LANES..whole).step_by(LANES) {
            // SAFETY: c + 16 <= whole <= cols: x[c..c + 16] and elements
            // c..c + 16 of the row are in bounds.
            let (wv, xv) = unsafe {
                (
                    row16::<HALVES>(p.add(c)),
                    _mm512_loadu_ps(x.as_ptr().add(c)),
                )
            };
            acc = _mm512_add_ps(acc, _mm512_mul_ps(wv, xv));
        }
        *o = tail_sum::<F32>(reduce_lanes(acc), &row[whole * 4..], &x[whole..]);
    }
}

/// The dot products of `R` consecutive rows (`first` points at the first,
/// the rows `row_bytes` apart) with `x`, each in the reference order.
///
/// # Safety
/// The features are available; `R` rows of `x.len()` elements of encoding
/// `DT` are readable from `first`, `row_bytes` apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_rows<const DT: u8, const R: usize>(
    first: *const u8,
    row_bytes: usize,
    x: &[f32],
) -> [f32; R] {
    let cols = x.len();
    let eb = element_bytes(DT);
    let whole = cols - cols % LANES;
    let mut acc = [_mm512_setzero_ps(); R];
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 16 <= whole <= cols: x[c..c + 16] and elements
        // c..c + 16 of each row are in bounds.
        unsafe {
            let xv = _mm512_loadu_ps(x.as_ptr().add(c));
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = load16::<DT>(first.add(r * row_bytes + c * eb));
                *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, xv));
            }
        }
        c += LANES;
    }
    core::array::from_fn(|r| {
        // SAFETY: row r's elements whole..cols are in bounds.
        let row_tail = unsafe {
            core::slice::from_raw_parts(first.add(r * row_bytes + whole * eb), (cols - whole) * eb)
        };
        tail_sum::<DT>(reduce_lanes(acc[r]), row_tail, &x[whole..])
    })
}

/// Dot product over the common length of two f32 slices, the reference's
/// bits.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // SAFETY: `a` is one "row" of n f32 elements.
    unsafe { dot_rows::<F32, 1>(a.as_ptr().cast::<u8>(), 0, b)[0] }
}

/// `y += a · x` over the common length, the reference's bits (a multiply,
/// then an add: no fused rounding).
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let whole = n - n % LANES;
    let av = _mm512_set1_ps(a);
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 16 <= n <= both lengths; `y` is borrowed mutably, so
        // the store aliases nothing else.
        unsafe {
            let p = y.as_mut_ptr().add(c);
            let xv = _mm512_loadu_ps(x.as_ptr().add(c));
            _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), _mm512_mul_ps(av, xv)));
        }
        c += LANES;
    }
    for (yv, &xv) in y[whole..n].iter_mut().zip(&x[whole..n]) {
        *yv += a * xv;
    }
}

/// Keys whose scores [`attention_scores`] computes together when the head
/// is not a whole number of vectors.
const SCORE_KEYS: usize = 4;

/// Keys whose scores [`attention_scores`] reduces together when the head
/// is a whole number of vectors: one output vector.
const BATCH_KEYS: usize = LANES;

/// The key each of a batch's accumulators holds, so that [`reduce_batch`]
/// leaves key `k`'s score in lane `k`: accumulator `i` holds key
/// `4·(i mod 4) + i / 4`.
const BATCH_ORDER: [usize; BATCH_KEYS] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

/// [`reduce_lanes`] of sixteen vectors at once, the same additions in the
/// same tree for each (lane `j` plus lane `j+8`, then `j` plus `j+4`, then
/// the two pairs), interleaved so that sixteen reductions share the
/// shuffles: with `acc` in [`BATCH_ORDER`], key `k`'s total lands in lane
/// `k`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn reduce_batch(acc: &[__m512; BATCH_KEYS]) -> __m512 {
    batch_tree(acc, |a, b| _mm512_add_ps(a, b))
}

/// [`reduce_batch`]'s tree of shuffles with `combine` in place of `+`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn batch_tree(acc: &[__m512; BATCH_KEYS], combine: impl Fn(__m512, __m512) -> __m512) -> __m512 {
    // Each key's lanes 0–7 plus its lanes 8–15: two keys per vector.
    let halves = |a: __m512, b: __m512| {
        combine(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        )
    };
    // Each key's 0–3 plus 4–7 of those: one key per 128-bit lane.
    let quarters = |a: __m512, b: __m512| {
        combine(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    };
    // Within each 128-bit lane, elements 0+1 and 2+3 of a, then of b.
    let pairs = |a: __m512, b: __m512| {
        combine(
            _mm512_shuffle_ps::<0b10_00_10_00>(a, b),
            _mm512_shuffle_ps::<0b11_01_11_01>(a, b),
        )
    };
    let h: [__m512; 8] = core::array::from_fn(|k| halves(acc[2 * k], acc[2 * k + 1]));
    let q: [__m512; 4] = core::array::from_fn(|m| quarters(h[2 * m], h[2 * m + 1]));
    pairs(pairs(q[0], q[1]), pairs(q[2], q[3]))
}

/// The scores of [`BATCH_KEYS`] consecutive keys (`first` points at the
/// first, the keys `row_bytes` apart), each the reference's `dot` of a
/// head that is a whole number of vectors.
///
/// # Safety
/// The features are available; `q.len()` is a multiple of 16 and 16 keys
/// of `q.len()` floats are readable from `first`, `row_bytes` apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn batch_scores(first: *const u8, row_bytes: usize, q: &[f32]) -> __m512 {
    let mut acc = [_mm512_setzero_ps(); BATCH_KEYS];
    for (c, qc) in q.chunks_exact(LANES).enumerate() {
        // SAFETY: `qc` is 16 floats.
        let qv = unsafe { _mm512_loadu_ps(qc.as_ptr()) };
        // Key after key (one pointer, not sixteen): key k goes to
        // accumulator BATCH_ORDER[k], the order being its own inverse.
        let mut key = first.wrapping_add(c * LANES * 4);
        for &slot in &BATCH_ORDER {
            // SAFETY: elements 16c .. 16c + 16 of each key are in bounds
            // (the precondition).
            let k = unsafe { _mm512_loadu_ps(key.cast()) };
            acc[slot] = _mm512_add_ps(acc[slot], _mm512_mul_ps(k, qv));
            key = key.wrapping_add(row_bytes);
        }
    }
    reduce_batch(&acc)
}

/// `scores[p] = dot(q, keys row p)`, the reference's bits: sixteen keys at
/// a time with their reductions interleaved when the head is a whole
/// number of vectors, the AVX2 kernel's eight a lane when it is narrower
/// than one, else four keys at a time.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn attention_scores(scores: &mut [f32], q: &[f32], keys: Strided<'_>) {
    if keys.width < LANES {
        // SAFETY: the features include AVX2's.
        return unsafe { super::avx2::attention_scores(scores, q, keys) };
    }
    let q = &q[..keys.width];
    let scores = &mut scores[..keys.rows];
    let base = keys.data.as_ptr().wrapping_add(keys.offset).cast::<u8>();
    let row_bytes = keys.stride * 4;
    let mut first = 0;
    let scores = if keys.width.is_multiple_of(LANES) {
        let mut batches = scores.chunks_exact_mut(BATCH_KEYS);
        for batch in &mut batches {
            // SAFETY: key rows first .. first + 16 < keys.rows each hold
            // `width` floats from offset (the `Strided` facts); `batch` is
            // 16 floats.
            unsafe {
                let s = batch_scores(base.add(first * row_bytes), row_bytes, q);
                _mm512_storeu_ps(batch.as_mut_ptr(), s);
            }
            first += BATCH_KEYS;
        }
        batches.into_remainder()
    } else {
        scores
    };
    let mut groups = scores.chunks_exact_mut(SCORE_KEYS);
    for group in &mut groups {
        // SAFETY: key rows first .. first + 4 < keys.rows each hold `width`
        // floats from offset (the `Strided` facts).
        let sums =
            unsafe { dot_rows::<F32, SCORE_KEYS>(base.add(first * row_bytes), row_bytes, q) };
        group.copy_from_slice(&sums);
        first += SCORE_KEYS;
    }
    for s in groups.into_remainder() {
        // SAFETY: as above, for one row.
        *s = unsafe { dot_rows::<F32, 1>(base.add(first * row_bytes), row_bytes, q)[0] };
        first += 1;
    }
}

/// Floats of the output [`weighted_sum`] keeps in registers per pass.
const SUM_WIDTH: usize = 4 * LANES;

/// `out = 0`, then `out += weights[p] · values row p` for each position in
/// order, the reference's bits, with the output kept in registers across
/// the positions.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn weighted_sum(out: &mut [f32], weights: &[f32], values: Strided<'_>) {
    out[..values.width].fill(0.0);
    // SAFETY: the features are available (this function's precondition).
    unsafe { add_weighted(out, weights, values) }
}

/// `out += weights[p] · values row p` for each position in order: the
/// reference's `axpy` per position, the output in registers across them.
///
/// # Safety
/// The features are available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn add_weighted(out: &mut [f32], weights: &[f32], values: Strided<'_>) {
    let out = &mut out[..values.width];
    let weights = &weights[..values.rows.min(weights.len())];
    let (width, stride, offset) = (values.width, values.stride, values.offset);
    let mut start = 0;
    while start < width {
        // Up to four vectors of the output; the last one may be partial,
        // its lanes past `width` masked off (an element's arithmetic does
        // not depend on its neighbours, so any width gives the same bits:
        // narrow heads, such as stories260K's 8, stay vectorized).
        let left = width - start;
        let vectors = left.div_ceil(LANES).min(SUM_WIDTH / LANES);
        let masks: [__mmask16; SUM_WIDTH / LANES] = core::array::from_fn(|i| {
            let n = left.saturating_sub(i * LANES).min(LANES);
            ((1u32 << n) - 1) as __mmask16
        });
        let mut acc: [__m512; SUM_WIDTH / LANES] = core::array::from_fn(|i| {
            // SAFETY: the unmasked lanes are elements start + 16·i .. <
            // width of `out`; masked-off lanes are not read.
            unsafe { _mm512_maskz_loadu_ps(masks[i], out.as_ptr().add(start + i * LANES)) }
        });
        for (p, &w) in weights.iter().enumerate() {
            let wv = _mm512_set1_ps(w);
            for (i, a) in acc.iter_mut().take(vectors).enumerate() {
                // SAFETY: the unmasked lanes are elements start + 16·i ..
                // < width of value row p < values.rows, which holds `width`
                // floats from offset; masked-off lanes are not read.
                let v = unsafe {
                    _mm512_maskz_loadu_ps(
                        masks[i],
                        values
                            .data
                            .as_ptr()
                            .add(p * stride + offset + start + i * LANES),
                    )
                };
                *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, v));
            }
        }
        for (i, a) in acc.iter().take(vectors).enumerate() {
            // SAFETY: as above, inside `out`; masked-off lanes are not
            // written.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(start + i * LANES), masks[i], *a) };
        }
        start += (vectors * LANES).min(left);
    }
}

/// [`attention_scores`] for each head of a run, a block of positions at a
/// time across the heads; each score is the reference's `dot`, whichever
/// block computes it.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn attention_scores_heads(a: HeadScores<'_>) {
    let HeadScores { scores, q, keys } = a;
    let run = keys.run;
    by_position_blocks(&keys, |i, first, n| {
        let block = &mut scores[run.score_range(i)][first..first + n];
        let rows = keys.head(i).rows_in(first, n);
        // SAFETY: the features are available (this function's
        // precondition).
        unsafe { attention_scores(block, &q[run.head_range(i)], rows) };
    });
}

/// [`weighted_sum`] for each head of a run, added to what `out` holds, a
/// block of positions at a time across the heads; each output element
/// still adds the positions in order, the reference's bits.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn add_weighted_heads(a: HeadSums<'_>) {
    let HeadSums {
        out,
        weights,
        values,
    } = a;
    let run = values.run;
    by_position_blocks(&values, |i, first, n| {
        let block = &weights[run.score_range(i)][first..first + n];
        let rows = values.head(i).rows_in(first, n);
        // SAFETY: the features are available (this function's
        // precondition).
        unsafe { add_weighted(&mut out[run.head_range(i)], block, rows) };
    });
}

/// [`attention_scores`] for each query `t` of a block, the reference's
/// bits. When the block has sixteen rows or more and the head is whole
/// vectors of up to [`TRANSPOSED_CHUNKS`], the first sixteen keys are
/// transposed once (key `r` in lane `r`) and the queries that see at most
/// those take their sixteen scores four queries at a time
/// ([`transposed_scores`]), storing the scores of the keys they see;
/// others run [`attention_scores`].
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn attention_scores_queries(a: QueryScores<'_>) {
    let rows = &a.keys; // the block's, all of them
    let chunks = rows.width / LANES;
    let transposed =
        rows.rows >= BATCH_KEYS && rows.width.is_multiple_of(LANES) && chunks <= TRANSPOSED_CHUNKS;
    let mut tiles = [MaybeUninit::<[__m512; LANES]>::uninit(); TRANSPOSED_CHUNKS];
    let kt: &[[__m512; LANES]] = if transposed {
        let first = rows.data.as_ptr().wrapping_add(rows.offset).cast::<u8>();
        // SAFETY: the block's key rows 0 .. 16 each hold `width` floats
        // from offset (the `Strided` facts), whole vectors; the first
        // `chunks` tiles are written before they are read.
        unsafe {
            transpose_keys(&mut tiles[..chunks], first, rows.stride * 4);
            core::slice::from_raw_parts(tiles.as_ptr().cast(), chunks)
        }
    } else {
        &[]
    };
    let mut group: [Option<(&mut [f32], &[f32])>; QUERY_GROUP] = Default::default();
    let mut grouped = 0;
    for (scores, q, keys) in a.queries() {
        if transposed && keys.rows <= BATCH_KEYS {
            group[grouped] = Some((scores, q));
            grouped += 1;
            if grouped == QUERY_GROUP {
                // SAFETY: the features are available; `kt` holds the
                // heads' vectors.
                unsafe { transposed_scores(kt, &mut group) };
                grouped = 0;
            }
        } else {
            // SAFETY: the features are available (this function's
            // precondition).
            unsafe { attention_scores(scores, q, keys) };
        }
    }
    group[grouped..].fill_with(|| None);
    // SAFETY: as above.
    unsafe { transposed_scores(kt, &mut group) };
}

/// Head vectors of up to which [`attention_scores_queries`] transposes a
/// block's keys (heads of up to 128 floats; 8 KiB of stack).
const TRANSPOSED_CHUNKS: usize = 8;

/// Queries whose scores [`transposed_scores`] computes together, each load
/// of the transposed keys shared by them.
const QUERY_GROUP: usize = 4;

/// `kt[c][j]` = element `16c + j` of each of the sixteen keys from
/// `first` (`row_bytes` apart), key `r` in lane `r` ([`transpose_tile`]).
///
/// # Safety
/// The features are available; 16 keys of `16 · kt.len()` floats are
/// readable from `first`, `row_bytes` apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn transpose_keys(
    kt: &mut [MaybeUninit<[__m512; LANES]>],
    first: *const u8,
    row_bytes: usize,
) {
    for (c, tile) in kt.iter_mut().enumerate() {
        // SAFETY: elements 16c .. 16c + 16 of each key are readable (the
        // precondition).
        tile.write(unsafe { transpose_tile(first.add(c * LANES * 4), row_bytes) });
    }
}

/// Vector `j` = element `j` of each of the sixteen rows of 16 floats from
/// `first` (`row_bytes` apart), row `r` in lane `r`: four stages of
/// shuffles.
///
/// # Safety
/// The features are available; 16 floats are readable at each of `first
/// + r · row_bytes`, `r` < 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn transpose_tile(first: *const u8, row_bytes: usize) -> [__m512; LANES] {
    let mut r = [_mm512_setzero_ps(); LANES];
    for (i, v) in r.iter_mut().enumerate() {
        // SAFETY: row i's 16 floats are readable (the precondition).
        *v = unsafe { _mm512_loadu_ps(first.add(i * row_bytes).cast()) };
    }
    // Within each 128-bit lane: rows 2i and 2i + 1 interleaved, elements
    // 0–1 (even t) and 2–3 (odd t).
    let mut t = [_mm512_setzero_ps(); LANES];
    for i in 0..LANES / 2 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + k]: element k of each 128-bit lane, rows 4i .. 4i + 4.
    let mut u = [_mm512_setzero_ps(); LANES];
    for i in 0..LANES / 4 {
        for h in 0..2 {
            let (a, b) = (
                _mm512_castps_pd(t[4 * i + h]),
                _mm512_castps_pd(t[4 * i + h + 2]),
            );
            u[4 * i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            u[4 * i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    // Element 4L + k gathers 128-bit lane L of u[k], u[4 + k], u[8 + k],
    // u[12 + k].
    let mut out = [_mm512_setzero_ps(); LANES];
    for k in 0..4 {
        let low01 = _mm512_shuffle_f32x4::<0x44>(u[k], u[4 + k]);
        let high01 = _mm512_shuffle_f32x4::<0x44>(u[8 + k], u[12 + k]);
        let low23 = _mm512_shuffle_f32x4::<0xEE>(u[k], u[4 + k]);
        let high23 = _mm512_shuffle_f32x4::<0xEE>(u[8 + k], u[12 + k]);
        out[k] = _mm512_shuffle_f32x4::<0x88>(low01, high01);
        out[4 + k] = _mm512_shuffle_f32x4::<0xDD>(low01, high01);
        out[8 + k] = _mm512_shuffle_f32x4::<0x88>(low23, high23);
        out[12 + k] = _mm512_shuffle_f32x4::<0xDD>(low23, high23);
    }
    out
}

/// The scores of the group's queries against the sixteen transposed keys
/// `kt`, each the reference's `dot` (lane `j` over the head's vectors in
/// order, then [`reduce_lanes`](reference::reduce_lanes)'s tree, here on
/// whole vectors: no shuffles); each query stores the scores of the keys
/// it sees (its slice's length). Empty slots compute the first query's
/// scores again and store nothing.
///
/// # Safety
/// The features are available; each query's head holds `16 · kt.len()`
/// floats and its scores at most 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn transposed_scores(
    kt: &[[__m512; LANES]],
    group: &mut [Option<(&mut [f32], &[f32])>; QUERY_GROUP],
) {
    let Some((_, q0)) = &group[0] else {
        return;
    };
    let q: [*const f32; QUERY_GROUP] = core::array::from_fn(|t| match &group[t] {
        Some((_, q)) => q.as_ptr(),
        None => q0.as_ptr(),
    });
    // One call site, so that `lane_pair` is inlined: called from eight,
    // it was not, and each call went through the stack and a `vzeroupper`.
    // SAFETY: each head holds the `kt.len()` vectors `lane_pair` reads.
    let m: [[__m512; QUERY_GROUP]; LANES / 2] =
        core::array::from_fn(|j| unsafe { lane_pair(kt, &q, j) });
    let left = add_each(add_each(m[0], m[4]), add_each(m[1], m[5]));
    let right = add_each(add_each(m[2], m[6]), add_each(m[3], m[7]));
    let sums = add_each(left, right);
    for (slot, v) in group.iter_mut().zip(sums) {
        if let Some((scores, _)) = slot {
            let lanes = ((1u32 << scores.len()) - 1) as __mmask16;
            // SAFETY: the store writes lanes 0 .. len of `scores`, which
            // holds at most 16 (the precondition).
            unsafe { _mm512_mask_storeu_ps(scores.as_mut_ptr(), lanes, v) };
        }
    }
}

/// Lane `j` plus lane `j + 8` of each query's dot products with the
/// sixteen transposed keys, the first level of the reference's tree; lane
/// `j` is `0 + q[j]·k[j] + q[16 + j]·k[16 + j] + …` in order, the
/// reference's.
///
/// # Safety
/// The features are available; each head holds `16 · kt.len()` floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn lane_pair(
    kt: &[[__m512; LANES]],
    q: &[*const f32; QUERY_GROUP],
    j: usize,
) -> [__m512; QUERY_GROUP] {
    let mut low = [_mm512_setzero_ps(); QUERY_GROUP];
    let mut high = [_mm512_setzero_ps(); QUERY_GROUP];
    let half = LANES / 2;
    for (c, keys) in kt.iter().enumerate() {
        for t in 0..QUERY_GROUP {
            // SAFETY: elements 16c + j and 16c + j + 8 < 16 · kt.len() of
            // the head.
            let (ql, qh) = unsafe { (*q[t].add(c * LANES + j), *q[t].add(c * LANES + j + half)) };
            low[t] = _mm512_add_ps(low[t], _mm512_mul_ps(keys[j], _mm512_set1_ps(ql)));
            high[t] = _mm512_add_ps(high[t], _mm512_mul_ps(keys[j + half], _mm512_set1_ps(qh)));
        }
    }
    add_each(low, high)
}

/// `a + b`, query by query.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn add_each(a: [__m512; QUERY_GROUP], b: [__m512; QUERY_GROUP]) -> [__m512; QUERY_GROUP] {
    let mut s = a;
    for (s, b) in s.iter_mut().zip(b) {
        *s = _mm512_add_ps(*s, b);
    }
    s
}

/// [`weighted_sum`] for each query `t` of a block, added to what its output
/// holds, the reference's bits. When the head is whole vectors, queries
/// four at a time share each load of the values over the positions they
/// all see ([`add_weighted_group`]).
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn add_weighted_queries(a: QuerySums<'_>) {
    let values = a.values;
    if !values.width.is_multiple_of(LANES) {
        for (out, weights, values) in a.queries() {
            // SAFETY: the features are available (this function's
            // precondition).
            unsafe { add_weighted(out, weights, values) };
        }
        return;
    }
    let mut group: [Option<(&mut [f32], &[f32])>; QUERY_GROUP] = Default::default();
    let mut grouped = 0;
    for (out, weights, _) in a.queries() {
        group[grouped] = Some((out, weights));
        grouped += 1;
        if grouped == QUERY_GROUP {
            // SAFETY: the features are available; each query's output and
            // the rows it sees hold whole vectors.
            unsafe { add_weighted_group(&mut group, values) };
            grouped = 0;
        }
    }
    group[grouped..].fill_with(|| None);
    // SAFETY: as above.
    unsafe { add_weighted_group(&mut group, values) };
}

/// [`add_weighted`] for a group of queries (`None`: an empty slot) over
/// rows of whole vectors, the group's outputs in registers up to four
/// vectors of each at a time ([`add_weighted_pass`]). Each output element
/// still adds its positions in order.
///
/// # Safety
/// The features are available; `values.width` is a multiple of 16, each
/// query's output holds `width` floats and its weights at most
/// `values.rows`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn add_weighted_group(
    group: &mut [Option<(&mut [f32], &[f32])>; QUERY_GROUP],
    values: Strided<'_>,
) {
    let mut queries = [WeightedQuery::EMPTY; QUERY_GROUP];
    for (query, slot) in queries.iter_mut().zip(group.iter_mut()) {
        if let Some((out, weights)) = slot {
            *query = WeightedQuery {
                out: out.as_mut_ptr(),
                weights: weights.as_ptr(),
                seen: weights.len(),
            };
        }
    }
    let mut start = 0;
    while start < values.width {
        let rows = values.data.as_ptr().wrapping_add(values.offset + start);
        let (q, stride) = (queries, values.stride);
        // SAFETY: the features are available; each output holds `width`
        // floats, each query's weights `seen` ≤ `values.rows`, and each
        // value row the pass's vectors from `start` (the width is whole
        // vectors, the `Strided` facts).
        let vectors = unsafe {
            match (values.width - start) / LANES {
                1 => add_weighted_pass::<1>(q, start, rows, stride),
                2 => add_weighted_pass::<2>(q, start, rows, stride),
                3 => add_weighted_pass::<3>(q, start, rows, stride),
                _ => add_weighted_pass::<4>(q, start, rows, stride),
            }
        };
        start += vectors * LANES;
    }
}

/// One query of [`add_weighted_group`]: its output, and its weights for
/// the first `seen` rows; an empty slot sees none (and its output is not
/// touched).
#[derive(Clone, Copy)]
struct WeightedQuery {
    out: *mut f32,
    weights: *const f32,
    seen: usize,
}

impl WeightedQuery {
    const EMPTY: Self = WeightedQuery {
        out: core::ptr::null_mut(),
        weights: core::ptr::null(),
        seen: 0,
    };
}

/// `out[column ..][.. 16·V] += weights[p] · row p` for each query and each
/// row it sees in order, the reference's bits, the rows `stride` floats
/// apart from `rows` (a query skips the rows it does not see). Returns
/// `V`.
///
/// # Safety
/// The features are available; each query that sees rows has an output
/// holding `column + 16·V` floats and its weights, and each row it sees
/// holds `16·V` floats from `rows`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn add_weighted_pass<const V: usize>(
    queries: [WeightedQuery; QUERY_GROUP],
    column: usize,
    rows: *const f32,
    stride: usize,
) -> usize {
    let mut acc = [[_mm512_setzero_ps(); V]; QUERY_GROUP];
    for (a, query) in acc.iter_mut().zip(&queries) {
        if query.seen > 0 {
            for (i, v) in a.iter_mut().enumerate() {
                // SAFETY: column + 16·i + 16 ≤ column + 16·V floats of the
                // output.
                *v = unsafe { _mm512_loadu_ps(query.out.add(column + i * LANES)) };
            }
        }
    }
    let rows_seen = queries.iter().map(|q| q.seen).max().unwrap_or(0);
    let mut row = rows;
    for p in 0..rows_seen {
        let mut v = [_mm512_setzero_ps(); V];
        for (i, v) in v.iter_mut().enumerate() {
            // SAFETY: row p < seen of some query holds 16·V floats.
            *v = unsafe { _mm512_loadu_ps(row.add(i * LANES)) };
        }
        for (a, query) in acc.iter_mut().zip(&queries) {
            if p < query.seen {
                // SAFETY: p < seen, which the query's weights hold.
                let wv = _mm512_set1_ps(unsafe { *query.weights.add(p) });
                for (a, v) in a.iter_mut().zip(v) {
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, v));
                }
            }
        }
        row = row.wrapping_add(stride);
    }
    for (a, query) in acc.iter().zip(&queries) {
        if query.seen > 0 {
            for (i, v) in a.iter().enumerate() {
                // SAFETY: as above, inside the output.
                unsafe { _mm512_storeu_ps(query.out.add(column + i * LANES), *v) };
            }
        }
    }
    V
}

/// [`reduce_batch`]'s shuffles with `max` instead of `+`: key (here,
/// block) `k`'s maximum lands in lane `k` when `acc` is in
/// [`BATCH_ORDER`]. Any order of `max` gives the same bits on values that
/// are not NaN.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn max_batch(acc: &[__m512; BATCH_KEYS]) -> __m512 {
    batch_tree(acc, |a, b| _mm512_max_ps(a, b))
}

/// Activation blocks [`quantize_activations`] takes together: one lane
/// each for their scales.
const QUANT_BLOCKS: usize = LANES;

/// `roundf(p)` per lane as an i32, as the AVX2 quantizer computes it:
/// `trunc(p)` plus ±1 (the sign of `p`) where `|p − trunc(p)| ≥ ½`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn round_half_away(p: __m512) -> __m512i {
    let sign = _mm512_set1_epi32(i32::MIN);
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
    let frac = _mm512_abs_ps(_mm512_sub_ps(p, t));
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    let p_sign = _mm512_and_si512(_mm512_castps_si512(p), sign);
    let one = _mm512_castps_si512(_mm512_set1_ps(1.0));
    let step = _mm512_or_si512(_mm512_maskz_mov_epi32(up, one), p_sign);
    _mm512_cvtps_epi32(_mm512_add_ps(t, _mm512_castsi512_ps(step)))
}

/// The AVX2 path's activation quantizer, the same bits, sixteen blocks at
/// a time: their maxima side by side in one vector ([`max_batch`]), their
/// scales and inverse scales in one division each, then each block's 32
/// levels in two vectors, narrowed to bytes with `vpmovsdb` (saturating,
/// as the AVX2 path's packs; the levels are within −127..=127 anyway).
/// Eight or more blocks past the last sixteen go zero-padded to sixteen,
/// fewer run the AVX2 kernel.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn quantize_activations(a: Activations<'_>) {
    let (x, dst) = (a.x, a.dst);
    let mut xs = x.chunks_exact(QUANT_BLOCKS * BLOCK_LEN);
    let mut outs = dst.chunks_exact_mut(QUANT_BLOCKS);
    for (x16, out16) in (&mut xs).zip(&mut outs) {
        // SAFETY: the features are available; 16 blocks each.
        unsafe { quantize_sixteen(x16, out16) };
    }
    let (x, dst) = (xs.remainder(), outs.into_remainder());
    if dst.len() < PADDED_BLOCKS {
        // SAFETY: AVX2, FMA and F16C are among this function's features;
        // the blocks left and their 32 floats each (the `Activations`
        // facts, sixteen blocks at a time).
        unsafe { avx2::quantize_activations(Activations { x, dst }) }
    } else {
        // The blocks left, zero-padded to sixteen (a block's levels and
        // scale depend on its own floats only).
        let mut padded = [0.0f32; QUANT_BLOCKS * BLOCK_LEN];
        padded[..x.len()].copy_from_slice(x);
        let mut blocks = [BlockQ8::ZERO; QUANT_BLOCKS];
        // SAFETY: as above.
        unsafe { quantize_sixteen(&padded, &mut blocks) };
        dst.copy_from_slice(&blocks[..dst.len()]);
    }
}

/// Blocks left past the last sixteen from which [`quantize_activations`]
/// pads them to sixteen: a padded batch costs about what sixteen blocks
/// do, about eight blocks of the AVX2 kernel (kernel bench, `quantize`
/// rows).
const PADDED_BLOCKS: usize = 8;

/// [`quantize_activations`] for sixteen blocks.
///
/// # Safety
/// The features are available; `x16` holds 16 blocks of finite floats and
/// `out16` 16 blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quantize_sixteen(x16: &[f32], out16: &mut [BlockQ8]) {
    // Block j's two vectors (read twice, from the L1 cache the second
    // time, rather than held in 32 registers).
    let halves = |j: usize| {
        // SAFETY: `x16` is 16 blocks of 32 floats, and j < 16.
        unsafe {
            let block = x16.as_ptr().add(j * BLOCK_LEN);
            [_mm512_loadu_ps(block), _mm512_loadu_ps(block.add(LANES))]
        }
    };
    let amax = max_batch(&core::array::from_fn(|i| {
        let [lo, hi] = halves(BATCH_ORDER[i]);
        _mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi))
    }));
    let d = _mm512_div_ps(amax, _mm512_set1_ps(127.0));
    let inverse = _mm512_div_ps(_mm512_set1_ps(1.0), d);
    // 0 where d is 0 (1/d is infinite) or 1/d overflows.
    let finite =
        _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(inverse), _mm512_set1_ps(f32::INFINITY));
    let id = _mm512_maskz_mov_ps(finite, inverse);
    let (mut ds, mut ids) = ([0.0f32; QUANT_BLOCKS], [0.0f32; QUANT_BLOCKS]);
    // SAFETY: each array is 16 floats.
    unsafe {
        _mm512_storeu_ps(ds.as_mut_ptr(), d);
        _mm512_storeu_ps(ids.as_mut_ptr(), id);
    }
    for (j, out) in out16.iter_mut().enumerate() {
        let idv = _mm512_set1_ps(ids[j]);
        let [lo, hi] =
            halves(j).map(|h| _mm512_cvtsepi32_epi8(round_half_away(_mm512_mul_ps(h, idv))));
        out.d = ds[j];
        // SAFETY: `out.qs` is 32 bytes, 16 from each half.
        unsafe {
            _mm_storeu_si128(out.qs.as_mut_ptr().cast(), lo);
            _mm_storeu_si128(out.qs.as_mut_ptr().add(LANES).cast(), hi);
        }
    }
}

// ---------------------------------------------------------------------------
// exp, softmax's exponentials, SwiGLU's gate
// ---------------------------------------------------------------------------

/// [`reference::exp`] on sixteen lanes: the same operations in the same
/// order (a multiply, then an add: never fused), hence the same bits lane by
/// lane. `max(lowest, x)` and `min(highest, x)` return `x` when it is NaN,
/// as the reference's selects do.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn exp16(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_set1_ps(reference::EXP_LOWEST), x);
    let x = _mm512_min_ps(_mm512_set1_ps(reference::EXP_HIGHEST), x);
    let rounder = _mm512_set1_ps(reference::EXP_ROUNDER);
    let shifted = _mm512_add_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(reference::EXP_LOG2_E)),
        rounder,
    );
    let n = _mm512_sub_ps(shifted, rounder);
    let r = _mm512_sub_ps(
        _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(reference::EXP_LN2_HI))),
        _mm512_mul_ps(n, _mm512_set1_ps(reference::EXP_LN2_LO)),
    );
    let mut p = _mm512_set1_ps(reference::EXP_POLY[0]);
    for &c in &reference::EXP_POLY[1..] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c));
    }
    let k = _mm512_sub_epi32(
        _mm512_castps_si512(shifted),
        _mm512_set1_epi32(reference::EXP_ROUNDER.to_bits() as i32),
    );
    let half = _mm512_srai_epi32::<1>(k);
    let rest = _mm512_sub_epi32(k, half);
    _mm512_mul_ps(_mm512_mul_ps(p, pow2(half)), pow2(rest))
}

/// 2^k per lane for `k` in −126 ..= 127, built in the exponent bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pow2(k: __m512i) -> __m512 {
    let biased = _mm512_add_epi32(k, _mm512_set1_epi32(127));
    _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased))
}

/// The lane mask of elements `0 .. n`, `n ≤ 16`.
#[inline(always)]
fn first_lanes(n: usize) -> __mmask16 {
    ((1u32 << n.min(LANES)) - 1) as __mmask16
}

/// `x[i] = exp(x[i] − shift)`, returning their sum in the reference's
/// order: the sixteen lanes in one register, the fixed reduction, then the
/// tail (its exponentials computed in one masked vector) in order.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn exp_and_sum(x: &mut [f32], shift: f32) -> f32 {
    let n = x.len();
    let whole = n - n % LANES;
    let s = _mm512_set1_ps(shift);
    let mut lanes = _mm512_setzero_ps();
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 16 <= n; `x` is borrowed mutably, so the store aliases
        // nothing else.
        unsafe {
            let p = x.as_mut_ptr().add(c);
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p), s));
            _mm512_storeu_ps(p, e);
            lanes = _mm512_add_ps(lanes, e);
        }
        c += LANES;
    }
    let mut sum = reduce_lanes(lanes);
    let tail = &mut x[whole..];
    let mask = first_lanes(tail.len());
    // SAFETY: the mask covers the tail's `len < 16` floats; lanes past it
    // are neither read nor written.
    unsafe {
        let v = _mm512_maskz_loadu_ps(mask, tail.as_ptr());
        _mm512_mask_storeu_ps(tail.as_mut_ptr(), mask, exp16(_mm512_sub_ps(v, s)));
    }
    for &e in tail.iter() {
        sum += e;
    }
    sum
}

/// [`reference::silu_times`] on sixteen lanes: `(g · (1 / (1 + exp(−g)))) · u`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn silu_times16(g: __m512, u: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    // −g flips the sign bit, as the reference's negation does.
    let minus_g = _mm512_castsi512_ps(_mm512_xor_si512(
        _mm512_castps_si512(g),
        _mm512_set1_epi32(i32::MIN),
    ));
    let e = exp16(minus_g);
    let silu = _mm512_mul_ps(g, _mm512_div_ps(one, _mm512_add_ps(one, e)));
    _mm512_mul_ps(silu, u)
}

/// [`reference::sum_of_squares_rows`], the same additions: each 16 × 16
/// tile of the rows transposed ([`transpose_tile`]), so that element `i`
/// of every row is one vector and the sixteen sums one accumulator.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn sum_of_squares_rows(x: &[f32], dim: usize) -> [f32; NORM_ROWS] {
    if !dim.is_multiple_of(LANES) {
        // SAFETY: AVX2, FMA and F16C are among the features.
        return unsafe { avx2::sum_of_squares_rows(x, dim) };
    }
    let x = &x[..NORM_ROWS * dim];
    let mut sums = _mm512_setzero_ps();
    for c in 0..dim / LANES {
        // SAFETY: elements 16c .. 16c + 16 of each of the 16 rows, `dim`
        // floats apart, are inside `x`.
        let tile = unsafe { transpose_tile(x.as_ptr().add(c * LANES).cast(), dim * 4) };
        for v in tile {
            sums = _mm512_add_ps(sums, _mm512_mul_ps(v, v));
        }
    }
    let mut out = [0.0f32; NORM_ROWS];
    // SAFETY: `out` is 16 floats.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), sums) };
    out
}

reference_at_width!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni":
    fn divide(x: &mut [f32], d: f32);
    fn all_finite(x: &[f32]) -> bool;
    fn rope(v: &mut [f32], rotations: &[f32]);
    fn add_assign(x: &mut [f32], y: &[f32]);
);

/// SwiGLU's gate over the common length, the reference's bits: sixteen
/// elements at a time, then a masked vector.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let mut c = 0;
    while c < n {
        let mask = first_lanes(n - c);
        // SAFETY: the mask covers elements c .. min(c + 16, n) of both
        // slices; lanes past them are neither read nor written. `gate` is
        // borrowed mutably.
        unsafe {
            let p = gate.as_mut_ptr().add(c);
            let g = _mm512_maskz_loadu_ps(mask, p);
            let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(c));
            _mm512_mask_storeu_ps(p, mask, silu_times16(g, u));
        }
        c += LANES;
    }
}

// ---------------------------------------------------------------------------
// Matrix × several vectors (prefill), float
// ---------------------------------------------------------------------------

/// Rows and positions of one tile of the float matmul: 24 accumulators,
/// four activation vectors and a row's weights in the 32 registers. Four
/// positions divide a prefill chunk of 16 (three left a one-position tile
/// per chunk); 6 × 4 ran f32 at 81–106 GFLOP/s where 4 × 3 ran 83–90
/// (docs/PERFORMANCE.md, 2026-12-05, afternoon).
const MATMUL_ROWS: usize = 6;
const MATMUL_POSITIONS: usize = 4;

/// `out[t·rows + r] = Σ_c w[r][c] · x[t·cols + c]` for float rows
/// (position-major), each element the bits of [`matvec`] for row `r` and
/// position `t`.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn matmul(a: FloatMatmul<'_>) {
    // SAFETY: the features are available; `FloatMatmul` holds rows · n
    // outputs, n positions of cols ≥ 1 inputs and rows rows of weights.
    unsafe {
        match a.dtype {
            Float::F32 => float_matmul::<F32>(a),
            Float::F16 => float_matmul::<F16>(a),
            Float::BF16 => float_matmul::<BF16>(a),
        }
    }
}

/// [`matmul`] for encoding `DT`, in tiles of up to [`MATMUL_ROWS`] rows ×
/// [`MATMUL_POSITIONS`] positions.
///
/// # Safety
/// The features are available; `a.dtype` is `DT`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn float_matmul<const DT: u8>(a: FloatMatmul<'_>) {
    let (rows, n, cols) = (a.rows(), a.n, a.cols);
    let row_bytes = cols * element_bytes(DT);
    let mut r = 0;
    while r < rows {
        let group = if rows - r >= MATMUL_ROWS {
            MATMUL_ROWS
        } else {
            1
        };
        let mut t = 0;
        while t < n {
            let positions = (n - t).min(MATMUL_POSITIONS);
            let w = a.w[r * row_bytes..].as_ptr();
            let x = &a.x[t * cols..];
            // SAFETY: rows r .. r + group and positions t .. t + positions
            // are in range (the `FloatMatmul` facts).
            let tile = unsafe {
                match (group, positions) {
                    (6, 4) => float_tile::<DT, 6, 4>(w, row_bytes, x, cols),
                    (6, 3) => float_tile::<DT, 6, 3>(w, row_bytes, x, cols),
                    (6, 2) => float_tile::<DT, 6, 2>(w, row_bytes, x, cols),
                    (6, _) => float_tile::<DT, 6, 1>(w, row_bytes, x, cols),
                    (_, 4) => float_tile::<DT, 1, 4>(w, row_bytes, x, cols),
                    (_, 3) => float_tile::<DT, 1, 3>(w, row_bytes, x, cols),
                    (_, 2) => float_tile::<DT, 1, 2>(w, row_bytes, x, cols),
                    _ => float_tile::<DT, 1, 1>(w, row_bytes, x, cols),
                }
            };
            for (i, sums) in tile.iter().enumerate().take(group) {
                for (p, &v) in sums.iter().enumerate().take(positions) {
                    a.out[(t + p) * rows + r + i] = v;
                }
            }
            t += positions;
        }
        r += group;
    }
}

/// `R` rows (from `w`, `row_bytes` apart) times `P` positions (from `x`,
/// `cols` apart), each product in the reference order; the results in the
/// first `R × P` places.
///
/// # Safety
/// The features are available; `R` rows of `cols` elements of encoding
/// `DT` are readable from `w`, and `x.len() >= P · cols`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn float_tile<const DT: u8, const R: usize, const P: usize>(
    w: *const u8,
    row_bytes: usize,
    x: &[f32],
    cols: usize,
) -> [[f32; MATMUL_POSITIONS]; MATMUL_ROWS] {
    let eb = element_bytes(DT);
    let whole = cols - cols % LANES;
    let x = &x[..P * cols];
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 16 <= whole <= cols: the loads stay inside the R rows
        // and the P positions.
        unsafe {
            let xv: [__m512; P] =
                core::array::from_fn(|p| _mm512_loadu_ps(x.as_ptr().add(p * cols + c)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let wv = load16::<DT>(w.add(r * row_bytes + c * eb));
                for (a, &xp) in acc_r.iter_mut().zip(&xv) {
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, xp));
                }
            }
        }
        c += LANES;
    }
    let mut sums = [[0.0f32; MATMUL_POSITIONS]; MATMUL_ROWS];
    for (r, acc_r) in acc.iter().enumerate() {
        // SAFETY: row r's elements whole..cols are in bounds.
        let row_tail = unsafe {
            core::slice::from_raw_parts(w.add(r * row_bytes + whole * eb), (cols - whole) * eb)
        };
        for (p, a) in acc_r.iter().enumerate() {
            let x_tail = &x[p * cols + whole..(p + 1) * cols];
            sums[r][p] = tail_sum::<DT>(reduce_lanes(*a), row_tail, x_tail);
        }
    }
    sums
}

// ---------------------------------------------------------------------------
// Q8_0 / Q4_0 against BlockQ8 activations
// ---------------------------------------------------------------------------

/// Rows the quantized kernels walk together, one f32 lane each.
const QUANT_ROWS: usize = 16;

/// Which two rows of a group of sixteen share a register in the integer
/// sums (the low 256 bits, the high 256 bits): arranged so that
/// [`transpose_sum`] leaves row `r`'s total in lane `r`.
const ROW_PAIRS: [(usize, usize); 8] = [
    (0, 4),
    (1, 5),
    (2, 6),
    (3, 7),
    (8, 12),
    (9, 13),
    (10, 14),
    (11, 15),
];

/// How many groups of [`QUANT_ROWS`] rows ahead the quantized matvec
/// prefetches (see [`avx2::prefetch`]).
const PREFETCH_GROUPS: usize = 1;

/// The unsigned levels of one block of two rows: bytes 0–31 from the block
/// at `a`, bytes 32–63 from the block at `b` (each pointing at its scale).
/// Q8_0: `w + 128`; Q4_0: the nibbles `q` (element `j` of the block in
/// byte `j` of its half). `vpdpbusd` of these with a block's 32 activation
/// levels in both halves gives sixteen partial sums, lanes 0–7 for `a`,
/// 8–15 for `b`: `Σ (w+128)·x` or `Σ q·x`.
///
/// # Safety
/// The features are available and `a`, `b` each point to one whole block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pair_levels<const Q4: bool>(a: *const u8, b: *const u8) -> __m512i {
    // SAFETY: the block bytes after the scale are readable (32 for Q8_0,
    // 16 for Q4_0).
    unsafe {
        if Q4 {
            // Each half: the 16 packed bytes twice, the second copy shifted
            // down by 4, then masked: elements 0..15, then 16..31.
            let pa = _mm256_broadcastsi128_si256(_mm_loadu_si128(a.add(SCALE_BYTES).cast()));
            let pb = _mm256_broadcastsi128_si256(_mm_loadu_si128(b.add(SCALE_BYTES).cast()));
            let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(pa), pb);
            let shifts = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4);
            _mm512_and_si512(_mm512_srlv_epi32(both, shifts), _mm512_set1_epi8(0x0f))
        } else {
            let wa = _mm256_loadu_si256(a.add(SCALE_BYTES).cast());
            let wb = _mm256_loadu_si256(b.add(SCALE_BYTES).cast());
            let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(wa), wb);
            // w + 128 as an unsigned byte: flip the sign bit.
            _mm512_xor_si512(both, _mm512_set1_epi8(i8::MIN))
        }
    }
}

/// The levels of one block of the sixteen rows, in [`ROW_PAIRS`] order
/// (`block` points at the first row's block, the rows `row_bytes` apart).
///
/// # Safety
/// The features are available; block `block + r · row_bytes` is whole for
/// every `r < 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_levels<const Q4: bool>(block: *const u8, row_bytes: usize) -> [__m512i; 8] {
    core::array::from_fn(|p| {
        let (ra, rb) = ROW_PAIRS[p];
        // SAFETY: the caller's precondition, for rows ra and rb.
        unsafe { pair_levels::<Q4>(block.add(ra * row_bytes), block.add(rb * row_bytes)) }
    })
}

/// The f16 scales of one block of the sixteen rows, as f32 (row `r` in
/// lane `r`).
///
/// # Safety
/// The features are available; the two bytes at `block + r · row_bytes`
/// are readable for every `r < 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scales(block: *const u8, row_bytes: usize) -> __m512 {
    // SAFETY: the caller's precondition, for rows 0–3, 4–7, 8–11, 12–15.
    let word = |first: usize| unsafe { avx2::four_scales(block, row_bytes, first) } as i64;
    _mm512_cvtph_ps(_mm256_set_epi64x(word(12), word(8), word(4), word(0)))
}

/// `sum += (d_w · d_x) · (t − offset)` for the sixteen rows, one lane each:
/// `t` the totals of the products of `levels` with one activation block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn add_block(sums: __m512, levels: &[__m512i; 8], dw: __m512, xb: &BlockQ8, offset: i32) -> __m512 {
    // SAFETY: `xb.qs` is 32 bytes.
    let x = unsafe { _mm256_loadu_si256(xb.qs.as_ptr().cast()) };
    let x = _mm512_broadcast_i64x4(x);
    let products = levels.map(|l| _mm512_dpbusd_epi32(_mm512_setzero_si512(), l, x));
    add_totals(sums, transpose_sum(&products), dw, xb, offset)
}

/// `sum += (d_w · d_x) · (t − offset)` for the sixteen rows, one lane each,
/// given their totals `t` with one activation block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn add_totals(sums: __m512, totals: __m512i, dw: __m512, xb: &BlockQ8, offset: i32) -> __m512 {
    let totals = _mm512_sub_epi32(totals, _mm512_set1_epi32(offset));
    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(xb.d));
    _mm512_add_ps(sums, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(totals)))
}

/// The totals `Σ q·x` of one Q4_0 block of the sixteen rows with the
/// activation block `xb`, row `r` in lane `r` (`block` points at the first
/// row's block, the rows `row_bytes` apart). A row's 16 packed bytes fill
/// one 128-bit lane, so a vector holds four rows (vector `e`: rows `e`,
/// `e+4`, `e+8`, `e+12`): its low nibbles meet activations 0–15 and its high
/// nibbles 16–31 in two `vpdpbusd`, leaving four partial sums per row, and a
/// 4×4 transpose-add per lane puts row `4L + e` in element `e` of lane `L`.
/// Half the shuffles of [`block_levels`] and [`transpose_sum`].
///
/// # Safety
/// The features are available; block `block + r · row_bytes` is whole for
/// every `r < 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_totals(block: *const u8, row_bytes: usize, xb: &BlockQ8) -> __m512i {
    // SAFETY: `xb.qs` is 32 bytes.
    let (x_low, x_high) = unsafe {
        (
            _mm512_broadcast_i32x4(_mm_loadu_si128(xb.qs.as_ptr().cast())),
            _mm512_broadcast_i32x4(_mm_loadu_si128(xb.qs.as_ptr().add(16).cast())),
        )
    };
    let nibble = _mm512_set1_epi8(0x0f);
    let partial: [__m512i; 4] = core::array::from_fn(|e| {
        // SAFETY: 16 bytes follow each row's scale (the caller's block).
        let row = |i: usize| unsafe {
            _mm_loadu_si128(block.add((e + 4 * i) * row_bytes + SCALE_BYTES).cast())
        };
        let v = _mm512_castsi128_si512(row(0));
        let v = _mm512_inserti32x4::<1>(v, row(1));
        let v = _mm512_inserti32x4::<2>(v, row(2));
        let v = _mm512_inserti32x4::<3>(v, row(3));
        let low = _mm512_and_si512(v, nibble);
        let high = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
        let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), low, x_low);
        _mm512_dpbusd_epi32(sums, high, x_high)
    });
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], then each vector's total.
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    };
    let (ab, cd) = (pair(partial[0], partial[1]), pair(partial[2], partial[3]));
    _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd))
}

/// Reduces the eight pair vectors of [`ROW_PAIRS`] to one vector of the
/// sixteen rows' totals, row `r` in lane `r` (exact: integer adds).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn transpose_sum(v: &[__m512i; 8]) -> __m512i {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3].
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    };
    // Per 128-bit lane: the sums of that lane's four elements of a, b, c, d.
    let quad = |ab: __m512i, cd: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd))
    };
    // 128-bit lanes: rows 0–3 (first half), 0–3 (second half), 4–7, 4–7.
    let q0 = quad(pair(v[0], v[1]), pair(v[2], v[3]));
    // The same for rows 8–11 and 12–15.
    let q1 = quad(pair(v[4], v[5]), pair(v[6], v[7]));
    // Lanes 0, 2 of each, and lanes 1, 3 of each: [0–3, 4–7, 8–11, 12–15].
    let first = _mm512_shuffle_i64x2::<0b10_00_10_00>(q0, q1);
    let second = _mm512_shuffle_i64x2::<0b11_01_11_01>(q0, q1);
    _mm512_add_epi32(first, second)
}

/// Continues the sums of [`QUANT_ROWS`] consecutive rows (`first` points at
/// the first row's first block of this stretch, the rows `row_bytes` apart)
/// over the stretch `x` of activation blocks: per row,
/// `sum += (d_w · d_x) · isum` block after block, one lane per row, while
/// the rows [`PREFETCH_GROUPS`] groups further on are requested.
///
/// # Safety
/// The features are available; `x.len() <= CHUNK_BLOCKS`; for every row
/// `r < 16`, `first + r · row_bytes` is followed by `x.len()` whole blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sixteen_rows<const Q4: bool>(
    mut sums: __m512,
    first: *const u8,
    row_bytes: usize,
    x: &[BlockQ8],
    offsets: &[i32; CHUNK_BLOCKS],
) -> __m512 {
    let bb = block_bytes(Q4);
    let ahead = first.wrapping_add(PREFETCH_GROUPS * QUANT_ROWS * row_bytes);
    for (b, (xb, &offset)) in x.iter().zip(offsets).enumerate() {
        prefetch(ahead.wrapping_add(b * QUANT_ROWS * bb), QUANT_ROWS * bb);
        // SAFETY: block b of each of the sixteen rows is whole (the
        // function's precondition).
        unsafe {
            let block = first.add(b * bb);
            let dw = scales(block, row_bytes);
            sums = if Q4 {
                add_totals(sums, q4_totals(block, row_bytes, xb), dw, xb, offset)
            } else {
                add_block(sums, &block_levels::<Q4>(block, row_bytes), dw, xb, offset)
            };
        }
    }
    sums
}

/// `out[r] = q8_0_dot(row r, x)` (or `q4_0_dot`), the reference's bits:
/// sixteen rows at a time in stretches of [`CHUNK_BLOCKS`] blocks, each
/// row's sum carried over in `out`; the rows left over run the AVX2 kernel.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn matvec_quantized(a: QuantRows<'_>) {
    // SAFETY: the features are available; `QuantRows` holds `out.len()`
    // rows of `x.len() ≥ 1` blocks.
    unsafe {
        if a.q4 {
            quant_rows::<true>(a.out, a.w, a.x)
        } else {
            quant_rows::<false>(a.out, a.w, a.x)
        }
    }
}

/// [`matvec_quantized`] for Q8_0 (`Q4` false) or Q4_0 rows.
///
/// # Safety
/// The features are available, `x.len() > 0`, and
/// `w.len() == out.len() · x.len() · block_bytes(Q4)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quant_rows<const Q4: bool>(out: &mut [f32], w: &[u8], x: &[BlockQ8]) {
    let row_bytes = x.len() * block_bytes(Q4);
    let grouped = out.len() - out.len() % QUANT_ROWS;
    let (out, rest) = out.split_at_mut(grouped);
    let (w, w_rest) = w.split_at(grouped * row_bytes);
    out.fill(0.0);
    for (c, xs) in x.chunks(CHUNK_BLOCKS).enumerate() {
        let offsets = block_offsets::<Q4>(xs);
        let skip = c * CHUNK_BLOCKS * block_bytes(Q4);
        for (g, o) in out.chunks_exact_mut(QUANT_ROWS).enumerate() {
            // SAFETY: rows 16g .. 16g + 16 each hold x.len() blocks, of which
            // this stretch is blocks c·64 .. c·64 + xs.len(); `o` is 16
            // floats.
            unsafe {
                let first = w.as_ptr().add(g * QUANT_ROWS * row_bytes + skip);
                let sums = _mm512_loadu_ps(o.as_ptr());
                let sums = sixteen_rows::<Q4>(sums, first, row_bytes, xs, &offsets);
                _mm512_storeu_ps(o.as_mut_ptr(), sums);
            }
        }
    }
    if !rest.is_empty() {
        // SAFETY: AVX2, FMA and F16C are among the features; `w_rest` holds
        // rest.len() rows of x.len() blocks.
        unsafe { avx2::quant_rows::<Q4>(rest, w_rest, x) };
    }
}

/// Positions [`matmul_quantized`] multiplies with one group's block of
/// levels while it is in registers (a prefill chunk is 16).
const MATMUL_QUANT_POSITIONS: usize = 16;

/// `matmul_quantized`'s form of one block of sixteen rows: the 32 unsigned
/// levels of each row (as in [`pair_levels`]) laid out for `vpdpbusd`,
/// vector `k` holding levels `4k .. 4k + 4` of every row, row `r` in i32
/// lane `r` (a 16 × 8 transpose of 32-bit words). A product with one
/// position's levels `4k .. 4k + 4` broadcast then leaves each row's
/// partial sum in its own lane: no reduction per position.
///
/// # Safety
/// The features are available; block `block + r · row_bytes` is whole for
/// every `r < 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn lane_levels<const Q4: bool>(block: *const u8, row_bytes: usize) -> [__m512i; 8] {
    let levels = |r: usize| block.wrapping_add(r * row_bytes + SCALE_BYTES);
    // Words 0–3 of four vectors, per 128-bit lane: [v0 w0, v1 w0, v2 w0,
    // v3 w0], [.. w1 ..], [.. w2 ..], [.. w3 ..].
    let transpose4 = |v: [__m512i; 4]| {
        let (a0, a1) = (
            _mm512_unpacklo_epi32(v[0], v[1]),
            _mm512_unpackhi_epi32(v[0], v[1]),
        );
        let (a2, a3) = (
            _mm512_unpacklo_epi32(v[2], v[3]),
            _mm512_unpackhi_epi32(v[2], v[3]),
        );
        [
            _mm512_unpacklo_epi64(a0, a2),
            _mm512_unpackhi_epi64(a0, a2),
            _mm512_unpacklo_epi64(a1, a3),
            _mm512_unpackhi_epi64(a1, a3),
        ]
    };
    if Q4 {
        // Vector i: the 16 packed bytes of rows i, i+4, i+8, i+12, one per
        // 128-bit lane; transposed, packed word m of row r is in lane r.
        // SAFETY: 16 bytes follow each row's scale (the caller's block).
        let v: [__m512i; 4] = core::array::from_fn(|i| unsafe {
            let v = _mm512_castsi128_si512(_mm_loadu_si128(levels(i).cast()));
            let v = _mm512_inserti32x4::<1>(v, _mm_loadu_si128(levels(i + 4).cast()));
            let v = _mm512_inserti32x4::<2>(v, _mm_loadu_si128(levels(i + 8).cast()));
            _mm512_inserti32x4::<3>(v, _mm_loadu_si128(levels(i + 12).cast()))
        });
        let packed = transpose4(v);
        let nibble = _mm512_set1_epi8(0x0f);
        // Elements 4m.. are the low nibbles of bytes 4m.., elements
        // 16 + 4m.. their high nibbles.
        core::array::from_fn(|k| {
            if k < 4 {
                _mm512_and_si512(packed[k], nibble)
            } else {
                _mm512_and_si512(_mm512_srli_epi32::<4>(packed[k - 4]), nibble)
            }
        })
    } else {
        // Vector i: rows i | i+4 (i < 4), rows i+4 | i+8 (i ≥ 4), 256 bits
        // each; transposed per half of four, each 128-bit lane then holds
        // one word of four rows, and the lanes are put in row order.
        // SAFETY: 32 bytes follow each row's scale (the caller's block).
        let v: [__m512i; 8] = core::array::from_fn(|i| unsafe {
            let (a, b) = if i < 4 { (i, i + 4) } else { (i + 4, i + 8) };
            let low = _mm512_castsi256_si512(_mm256_loadu_si256(levels(a).cast()));
            _mm512_inserti64x4::<1>(low, _mm256_loadu_si256(levels(b).cast()))
        });
        let low = transpose4([v[0], v[1], v[2], v[3]]);
        let high = transpose4([v[4], v[5], v[6], v[7]]);
        // w + 128 as an unsigned byte: flip the sign bit.
        let unsigned = _mm512_set1_epi8(i8::MIN);
        core::array::from_fn(|k| {
            let words = if k < 4 {
                _mm512_shuffle_i64x2::<0b10_00_10_00>(low[k], high[k])
            } else {
                _mm512_shuffle_i64x2::<0b11_01_11_01>(low[k - 4], high[k - 4])
            };
            _mm512_xor_si512(words, unsigned)
        })
    }
}

/// [`add_block`] for levels in [`lane_levels`]' form: the same float
/// operations on the same exact integer totals, whose sums come from eight
/// `vpdpbusd` with the activation words broadcast.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn add_lane_block(
    sums: __m512,
    levels: &[__m512i; 8],
    dw: __m512,
    xb: &BlockQ8,
    minus_offset: i32,
) -> __m512 {
    // Starting from −offset leaves the exact total (no partial sum comes
    // near the i32 range).
    let mut totals = _mm512_set1_epi32(minus_offset);
    for (k, l) in levels.iter().enumerate() {
        // SAFETY: bytes 4k .. 4k + 4 of the 32 of `xb.qs`; unaligned read.
        let word = unsafe { core::ptr::read_unaligned(xb.qs.as_ptr().add(4 * k).cast::<i32>()) };
        totals = _mm512_dpbusd_epi32(totals, *l, _mm512_set1_epi32(word));
    }
    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(xb.d));
    _mm512_add_ps(sums, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(totals)))
}

/// `out[t·rows + r] = q8_0_dot(row r, xq[t])` (or `q4_0_dot`), position-major,
/// the reference's bits: each element is the one-position kernel's lane for its row. Each
/// block of a group of sixteen rows is laid out once ([`lane_levels`]) and
/// multiplied with up to sixteen positions; the rows left over run the
/// AVX2 kernel.
///
/// # Safety
/// The features are available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn matmul_quantized(a: QuantMatmul<'_>) {
    let (n, blocks) = (a.n, a.blocks);
    // SAFETY: the features are available; `QuantMatmul` holds rows · n
    // outputs, n positions of blocks ≥ 1 activation blocks and rows rows.
    unsafe {
        if a.q4 {
            quant_matmul::<true, false>(a.out, a.w, a.x, n, blocks)
        } else {
            quant_matmul::<false, false>(a.out, a.w, a.x, n, blocks)
        }
    }
}

/// Positions whose sums [`register_sums`] keeps in registers: eight sums,
/// eight vectors of levels and the scales leave room for the arithmetic in
/// the 32 registers (sixteen sums spilled).
const REGISTER_POSITIONS: usize = 8;
const _: () = assert!(
    REGISTER_POSITIONS == 8,
    "register_sums calls its eight positions one by one"
);

/// [`matmul_quantized`] for Q8_0 (`Q4` false) or Q4_0 rows: up to
/// [`MATMUL_QUANT_POSITIONS`] positions at a time, over stretches of
/// [`CHUNK_BLOCKS`] blocks (whose offsets are computed once for every
/// group), each group's sums carried over in `out`. `PACKED`: `w` is in
/// the packed layout (`packed.rs`), whose group-blocks are loaded as they
/// are, [`REGISTER_POSITIONS`] positions at a time with their sums in
/// registers; else in ggml's, laid out by [`lane_levels`] once per block
/// for all the positions.
///
/// # Safety
/// The features are available; `n > 0`, `blocks > 0`,
/// `xq.len() == n · blocks`, `out.len() = rows · n`, and
/// `w.len() == rows · blocks · block_bytes(Q4)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quant_matmul<const Q4: bool, const PACKED: bool>(
    out: &mut [f32],
    w: &[u8],
    xq: &[BlockQ8],
    n: usize,
    blocks: usize,
) {
    let bb = block_bytes(Q4);
    let row_bytes = blocks * bb;
    let rows = out.len() / n;
    let groups = rows / QUANT_ROWS;
    let (w, w_rest) = w.split_at(groups * QUANT_ROWS * row_bytes);
    let mut minus_offsets = [[0i32; CHUNK_BLOCKS]; MATMUL_QUANT_POSITIONS];
    for t0 in (0..n).step_by(MATMUL_QUANT_POSITIONS) {
        let positions = (n - t0).min(MATMUL_QUANT_POSITIONS);
        // Positions t0 .. t0 + in_registers go REGISTER_POSITIONS at a time.
        let in_registers = if PACKED {
            positions - positions % REGISTER_POSITIONS
        } else {
            0
        };
        for c in (0..blocks).step_by(CHUNK_BLOCKS) {
            let stretch = Stretch {
                xq,
                blocks,
                first_block: c,
                len: (blocks - c).min(CHUNK_BLOCKS),
            };
            for (p, o) in minus_offsets.iter_mut().take(positions).enumerate() {
                *o = block_offsets::<Q4>(stretch.of(t0 + p)).map(|v| -v);
            }
            for g in 0..groups {
                // Packed: group-block c + b at 16·bb·(c + b) in the group;
                // ggml: block c + b of the first row at bb·(c + b).
                let step = if PACKED { QUANT_ROWS * bb } else { bb };
                let group = GroupRows {
                    first: w[g * QUANT_ROWS * row_bytes + c * step..].as_ptr(),
                    step,
                    row_bytes,
                };
                // Position t's sums for rows 16g .. 16g + 16: the 16 floats
                // at out[t·rows + 16g], carried over from the previous
                // stretch (the reference's sums start at zero).
                let sums = PositionSums {
                    at: t0 * rows + g * QUANT_ROWS,
                    rows,
                    carry: c > 0,
                };
                for p in (0..in_registers).step_by(REGISTER_POSITIONS) {
                    // SAFETY: rows 16g .. 16g + 16 each hold `blocks` blocks
                    // (as 16 group-blocks), of which the stretch's are
                    // read; positions t0 + p .. + 8 ≤ n have their blocks
                    // and outputs.
                    unsafe {
                        register_sums::<Q4>(
                            out,
                            sums.from(p),
                            &group,
                            &stretch,
                            t0 + p,
                            &minus_offsets[p..],
                        )
                    };
                }
                // SAFETY: as above, for positions t0 + in_registers ..
                // t0 + positions, in either layout.
                unsafe {
                    memory_sums::<Q4, PACKED>(
                        out,
                        sums,
                        &group,
                        &stretch,
                        t0,
                        &minus_offsets,
                        in_registers..positions,
                    )
                };
            }
        }
    }
    if groups * QUANT_ROWS < rows {
        // SAFETY: AVX2, FMA and F16C are among the features; `w_rest` holds
        // the rows past the last group, in ggml's layout, whose results go
        // at columns 16·groups .. rows of each position's `rows` outputs.
        unsafe {
            avx2::quant_matmul::<Q4>(&mut out[groups * QUANT_ROWS..], rows, w_rest, xq, n, blocks)
        };
    }
}

/// One group of sixteen rows over a stretch of blocks: block `b` of the
/// stretch at `first + b · step` (the group-block when packed; in ggml's
/// layout the first row's block, the others `row_bytes` apart).
struct GroupRows {
    first: *const u8,
    step: usize,
    row_bytes: usize,
}

impl GroupRows {
    /// Block `b` of the stretch: its levels in [`lane_levels`]' form and the
    /// sixteen rows' scales, with the same block of the next group
    /// prefetched.
    ///
    /// # Safety
    /// The features are available; block `b` is whole for the sixteen rows.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn block<const Q4: bool, const PACKED: bool>(&self, b: usize) -> ([__m512i; 8], __m512) {
        let bytes = QUANT_ROWS * block_bytes(Q4);
        let ahead = self
            .first
            .wrapping_add(PREFETCH_GROUPS * QUANT_ROWS * self.row_bytes);
        prefetch(ahead.wrapping_add(b * bytes), bytes);
        // SAFETY: block b is whole for the sixteen rows (the caller's
        // promise).
        unsafe {
            let block = self.first.add(b * self.step);
            if PACKED {
                (
                    packed_levels::<Q4>(block.add(GROUP_SCALE_BYTES)),
                    packed_scales(block),
                )
            } else {
                (
                    lane_levels::<Q4>(block, self.row_bytes),
                    scales(block, self.row_bytes),
                )
            }
        }
    }
}

/// Activation blocks `first_block .. first_block + len` of each position's
/// `blocks` in `xq`.
struct Stretch<'a> {
    xq: &'a [BlockQ8],
    blocks: usize,
    first_block: usize,
    len: usize,
}

impl Stretch<'_> {
    /// Position `t`'s blocks of the stretch.
    fn of(&self, t: usize) -> &[BlockQ8] {
        &self.xq[t * self.blocks + self.first_block..][..self.len]
    }
}

/// Where a group's sums are: position `p`'s sixteen floats at
/// `out[at + p · rows ..]`, read first when `carry` (else they start at
/// zero, as the reference's).
#[derive(Clone, Copy)]
struct PositionSums {
    at: usize,
    rows: usize,
    carry: bool,
}

impl PositionSums {
    /// The sums from position `p` on.
    fn from(self, p: usize) -> PositionSums {
        PositionSums {
            at: self.index(p),
            ..self
        }
    }

    /// Where position `p`'s sixteen floats start in `out`.
    fn index(self, p: usize) -> usize {
        self.at + p * self.rows
    }

    /// Position `p`'s sums as they start.
    ///
    /// # Safety
    /// The features are available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn load(self, out: &[f32], p: usize) -> __m512 {
        if !self.carry {
            return _mm512_setzero_ps();
        }
        let lanes = &out[self.index(p)..][..QUANT_ROWS];
        // SAFETY: `lanes` is 16 floats.
        unsafe { _mm512_loadu_ps(lanes.as_ptr()) }
    }

    /// Stores position `p`'s sums.
    ///
    /// # Safety
    /// The features are available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn store(self, out: &mut [f32], p: usize, sums: __m512) {
        let lanes = &mut out[self.index(p)..][..QUANT_ROWS];
        // SAFETY: `lanes` is 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sums) }
    }
}

/// Adds the products of one packed group of sixteen rows with positions
/// `t ..` (the next [`REGISTER_POSITIONS`]) over a stretch to their sums,
/// which stay in registers across the stretch: each group-block is loaded
/// once for these positions.
///
/// # Safety
/// The features are available; every block of the stretch is whole for the
/// sixteen rows; `minus_offsets` holds the positions' arrays first.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn register_sums<const Q4: bool>(
    out: &mut [f32],
    sums_at: PositionSums,
    w: &GroupRows,
    x: &Stretch<'_>,
    t: usize,
    minus_offsets: &[[i32; CHUNK_BLOCKS]],
) {
    const P: usize = REGISTER_POSITIONS;
    // Plain loops: `core::array::from_fn`'s closures were not inlined here,
    // and cost an eighth of the products' time.
    let mut xs: [&[BlockQ8]; P] = [&[]; P];
    let mut offsets: [&[i32]; P] = [&[]; P];
    let mut sums = [_mm512_setzero_ps(); P];
    for p in 0..P {
        xs[p] = x.of(t + p);
        offsets[p] = &minus_offsets[p][..x.len];
        // SAFETY: the features are available (this function's
        // precondition).
        sums[p] = unsafe { sums_at.load(out, p) };
    }
    for b in 0..x.len {
        // SAFETY: block b of the stretch is whole (the precondition).
        let (levels, dw) = unsafe { w.block::<Q4, true>(b) };
        // Written out per position, with constant indices: a loop over `p`
        // was not unrolled, and kept the sums in memory.
        macro_rules! add_positions {
            ($($p:literal)*) => {$(
                sums[$p] = add_lane_block(sums[$p], &levels, dw, &xs[$p][b], offsets[$p][b]);
            )*};
        }
        add_positions!(0 1 2 3 4 5 6 7);
    }
    for (p, s) in sums.into_iter().enumerate() {
        // SAFETY: the features are available.
        unsafe { sums_at.store(out, p, s) };
    }
}

/// Adds the products of one group of sixteen rows with positions `t0 + p`
/// (`p` in `positions`) over a stretch to their sums, kept in memory: each
/// block is loaded (in ggml's layout, laid out) once for all of them.
///
/// # Safety
/// The features are available; every block of the stretch is whole for the
/// sixteen rows; `minus_offsets` holds position `t0 + p`'s at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
// Block `b` indexes the weights, each position's activations and offsets.
#[allow(clippy::needless_range_loop)]
unsafe fn memory_sums<const Q4: bool, const PACKED: bool>(
    out: &mut [f32],
    sums_at: PositionSums,
    w: &GroupRows,
    x: &Stretch<'_>,
    t0: usize,
    minus_offsets: &[[i32; CHUNK_BLOCKS]; MATMUL_QUANT_POSITIONS],
    positions: core::ops::Range<usize>,
) {
    if positions.is_empty() {
        return;
    }
    let mut sums = [_mm512_setzero_ps(); MATMUL_QUANT_POSITIONS];
    for p in positions.clone() {
        // SAFETY: the features are available (this function's
        // precondition).
        sums[p] = unsafe { sums_at.load(out, p) };
    }
    for b in 0..x.len {
        // SAFETY: block b of the stretch is whole (the precondition).
        let (levels, dw) = unsafe { w.block::<Q4, PACKED>(b) };
        for p in positions.clone() {
            let xb = &x.of(t0 + p)[b];
            sums[p] = add_lane_block(sums[p], &levels, dw, xb, minus_offsets[p][b]);
        }
    }
    for p in positions {
        // SAFETY: the features are available.
        unsafe { sums_at.store(out, p, sums[p]) };
    }
}

const _: () = assert!(BLOCK_LEN == 32, "one __m256i per block of levels");

// ---------------------------------------------------------------------------
// Q8_0 / Q4_0 in the packed layout
// ---------------------------------------------------------------------------

/// The levels of one packed group-block (`levels` points past its scales)
/// in [`lane_levels`]' form: vector `k` holds unsigned levels `4k .. 4k + 4`
/// of every row, row `r` in lane `r`. Q8_0 vectors are stored so; Q4_0
/// vector `j` holds the packed bytes of elements `4j ..` (low nibbles) and
/// `16 + 4j ..` (high nibbles).
///
/// # Safety
/// The features are available; `levels` is followed by the group-block's
/// 4 (Q4_0) or 8 (Q8_0) vectors of [`VECTOR_BYTES`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn packed_levels<const Q4: bool>(levels: *const u8) -> [__m512i; 8] {
    let vector = |i: usize| {
        // SAFETY: vector i is inside the group-block (the caller's promise);
        // unaligned load.
        unsafe { _mm512_loadu_si512(levels.add(i * VECTOR_BYTES).cast()) }
    };
    if Q4 {
        let nibble = _mm512_set1_epi8(0x0f);
        let packed: [__m512i; 4] = core::array::from_fn(vector);
        core::array::from_fn(|k| {
            if k < 4 {
                _mm512_and_si512(packed[k], nibble)
            } else {
                _mm512_and_si512(_mm512_srli_epi32::<4>(packed[k - 4]), nibble)
            }
        })
    } else {
        core::array::from_fn(vector)
    }
}

/// The sixteen rows' scales of one packed group-block, as f32 (row `r` in
/// lane `r`).
///
/// # Safety
/// The features are available; `block` points at a whole group-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn packed_scales(block: *const u8) -> __m512 {
    // SAFETY: the group-block starts with its 32 bytes of scales.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(block.cast()) })
}

/// [`add_lane_block`] in two chains of four `vpdpbusd` (the even and the odd
/// words), added at the end: the same exact integer totals, half the
/// latency per block for the matrix-vector product, which has one
/// position to multiply.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn add_lane_block_two_chains(
    sums: __m512,
    levels: &[__m512i; 8],
    dw: __m512,
    xb: &BlockQ8,
    minus_offset: i32,
) -> __m512 {
    let word = |k: usize| {
        // SAFETY: bytes 4k .. 4k + 4 of the 32 of `xb.qs`; unaligned read.
        let w = unsafe { core::ptr::read_unaligned(xb.qs.as_ptr().add(4 * k).cast::<i32>()) };
        _mm512_set1_epi32(w)
    };
    let mut even = _mm512_set1_epi32(minus_offset);
    let mut odd = _mm512_setzero_si512();
    for k in (0..8).step_by(2) {
        even = _mm512_dpbusd_epi32(even, levels[k], word(k));
        odd = _mm512_dpbusd_epi32(odd, levels[k + 1], word(k + 1));
    }
    let totals = _mm512_add_epi32(even, odd);
    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(xb.d));
    _mm512_add_ps(sums, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(totals)))
}

/// `out[r] = q8_0_dot(row r, x)` (or `q4_0_dot`) for a matrix in the packed
/// layout, the reference's bits: each group-block's scales and levels
/// loaded as they are, the totals in their lanes; the rows past the last
/// whole group (in ggml's layout) run the AVX2 kernel.
///
/// # Safety
/// The features are available; `a.w` is in the packed layout.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn matvec_packed(a: QuantRows<'_>) {
    // SAFETY: the features are available; `QuantRows` holds `out.len()`
    // rows of `x.len() ≥ 1` blocks, in the packed layout.
    unsafe {
        if a.q4 {
            packed_rows::<true>(a.out, a.w, a.x, a.streamed)
        } else {
            packed_rows::<false>(a.out, a.w, a.x, a.streamed)
        }
    }
}

/// [`matvec_packed`] for Q8_0 (`Q4` false) or Q4_0 rows, in stretches of
/// [`CHUNK_BLOCKS`] blocks whose offsets are computed once for every group;
/// Q4_0's bytes [`PREFETCH_BYTES`] ahead requested when `streamed`.
///
/// # Safety
/// The features are available, `x.len() > 0`, and `w` is
/// `out.len() · x.len() · block_bytes(Q4)` bytes in the packed layout.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn packed_rows<const Q4: bool>(out: &mut [f32], w: &[u8], x: &[BlockQ8], streamed: bool) {
    let ahead = streamed && Q4;
    let group_block = QUANT_ROWS * block_bytes(Q4);
    let group_bytes = x.len() * group_block;
    let grouped = out.len() - out.len() % QUANT_ROWS;
    let (out, rest) = out.split_at_mut(grouped);
    let (w, w_rest) = w.split_at(grouped / QUANT_ROWS * group_bytes);
    out.fill(0.0);
    for (c, xs) in x.chunks(CHUNK_BLOCKS).enumerate() {
        let minus_offsets = block_offsets::<Q4>(xs).map(|v| -v);
        let skip = c * CHUNK_BLOCKS * group_block;
        for (g, o) in out.chunks_exact_mut(QUANT_ROWS).enumerate() {
            // SAFETY: group g holds x.len() group-blocks, of which this
            // stretch is blocks c·64 .. c·64 + xs.len(); `o` is 16 floats.
            unsafe {
                let first = w.as_ptr().add(g * group_bytes + skip);
                let mut sums = _mm512_loadu_ps(o.as_ptr());
                for (b, (xb, &minus_offset)) in xs.iter().zip(&minus_offsets).enumerate() {
                    let block = first.add(b * group_block);
                    if ahead {
                        prefetch(block.wrapping_add(PREFETCH_BYTES), group_block);
                    }
                    let dw = packed_scales(block);
                    let levels = packed_levels::<Q4>(block.add(GROUP_SCALE_BYTES));
                    sums = add_lane_block_two_chains(sums, &levels, dw, xb, minus_offset);
                }
                _mm512_storeu_ps(o.as_mut_ptr(), sums);
            }
        }
    }
    if !rest.is_empty() {
        // SAFETY: AVX2, FMA and F16C are among the features; `w_rest` holds
        // rest.len() rows of x.len() blocks in ggml's layout.
        unsafe { avx2::quant_rows::<Q4>(rest, w_rest, x) };
    }
}

/// `out[t·rows + r] = q8_0_dot(row r, xq[t])` (or `q4_0_dot`) for a matrix in
/// the packed layout: [`matmul_quantized`] with each group-block's levels
/// loaded as they are instead of laid out, the same bits.
///
/// # Safety
/// The features are available; `a.w` is in the packed layout.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn matmul_packed(a: QuantMatmul<'_>) {
    let (n, blocks) = (a.n, a.blocks);
    // SAFETY: as in `matmul_quantized`, the bytes in the packed layout.
    unsafe {
        if a.q4 {
            quant_matmul::<true, true>(a.out, a.w, a.x, n, blocks)
        } else {
            quant_matmul::<false, true>(a.out, a.w, a.x, n, blocks)
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// `held_x_rows` runs only on Zen 4 by choice; any CPU with the
    /// AVX-512 path checks its bits here, both ways of reading rows, at
    /// widths below, at and past the held part, with and without a tail.
    #[test]
    fn held_x_rows_give_the_references_bits() {
        let features = [
            std::is_x86_feature_detected!("avx2"),
            std::is_x86_feature_detected!("fma"),
            std::is_x86_feature_detected!("f16c"),
            std::is_x86_feature_detected!("avx512f"),
            std::is_x86_feature_detected!("avx512bw"),
            std::is_x86_feature_detected!("avx512vl"),
            std::is_x86_feature_detected!("avx512vnni"),
        ];
        if features.contains(&false) {
            std::println!("skipped: CPU lacks the AVX-512 path's features");
            return;
        }
        for cols in [7, 16, 250, 256, 259, 288, 384, 390, 500, 768, 2051] {
            let rows = 5;
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let x: Vec<f32> = (0..cols)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
                .collect();
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut expected = std::vec![0.0f32; rows];
            reference::matvec(FloatRows {
                out: &mut expected,
                w: &bytes,
                x: &x,
                dtype: Float::F32,
            });
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let mut halves = std::vec![0.0f32; rows];
            let mut whole = std::vec![0.0f32; rows];
            // SAFETY: the features were checked; `bytes` is rows × cols f32;
            // `ALL` only where x has that many whole vectors.
            unsafe {
                if cols >= HELD_IN_HALVES * LANES {
                    held_x_rows::<HELD_IN_HALVES, true, true>(&mut halves, &bytes, &x)
                } else {
                    held_x_rows::<HELD_IN_HALVES, true, false>(&mut halves, &bytes, &x)
                }
                if cols >= HELD_WHOLE * LANES {
                    held_x_rows::<HELD_WHOLE, false, true>(&mut whole, &bytes, &x)
                } else {
                    held_x_rows::<HELD_WHOLE, false, false>(&mut whole, &bytes, &x)
                }
            };
            assert_eq!(bits(&halves), bits(&expected), "halves, {cols} columns");
            assert_eq!(
                bits(&whole),
                bits(&expected),
                "whole vectors, {cols} columns"
            );
        }
    }
}
