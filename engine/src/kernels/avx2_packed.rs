//! The AVX2 and AVX-VNNI paths' products for the packed layout
//! (`packed.rs`), the AVX-512 kernels' layout read in 256-bit halves: each
//! 64-byte vector of a group-block is rows 0–7 in its first half and rows
//! 8–15 in its second, four levels of a row in each 32-bit lane. A product
//! with an activation word broadcast leaves each row's sum in its own lane,
//! and the sixteen scales are one load: no transposes and no gathering of
//! scales per block, which is most of the work in ggml's layout.
//!
//! Same bits as the reference: each row's block total is the same exact
//! integer, scaled and added block after block.
//!
//! As the quantized chain in `avx2.rs`, these functions are
//! `#[inline(always)]` without features of their own and generic over
//! `VNNI`: the entry points (`avx2::matvec_packed`, `avxvnni::…`) give them
//! AVX2's features, or AVX2's and AVX-VNNI's.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::arch::x86_64::*;

use super::avx2::{
    block_offsets, prefetch, quad_products, quant_matmul_with, quant_rows_with, shifted,
    shifted_levels, CHUNK_BLOCKS,
};
use super::packed::{GROUP_ROWS, GROUP_SCALE_BYTES, VECTOR_BYTES};
use super::shapes::{block_bytes, QuantMatmul, QuantRows};
use crate::quant::BlockQ8;

/// Rows in one half of a group: one 32-bit lane each of a `__m256i`.
const HALF_ROWS: usize = GROUP_ROWS / 2;
/// Bytes of one half of a vector of levels.
const HALF_BYTES: usize = VECTOR_BYTES / 2;

/// How far ahead of the group-block it multiplies a packed matvec requests
/// the bytes it will read (this file's and the AVX-512 one), for a matrix
/// marked streamed. A packed matrix is one sequential stream, yet the
/// hardware prefetcher alone left the slower kernels short of the memory's
/// rate: on Zen 5 the request took the 110M decode's AVX2 q8_0 from 255–258
/// to 304–326 tok/s and AVX-512 q4_0 from 491–513 to 582–626; 4 KB gained
/// less, 12–32 KB less again. The VNNI Q8_0 kernels reach the memory's rate
/// without it and gained nothing, and the kernels lost 10–25% with it on a
/// matrix in cache (docs/PERFORMANCE.md, 2026-12-04, later). On Zen 4 the
/// AVX-512 Q4_0 kernel ran 10–28% slower with it and the AVX2 Q8_0 one
/// 20–25% slower (1–8 KB ahead), so no path requests on AMD family 19h
/// ([`super::Path::requests_ahead`]).
pub(super) const PREFETCH_BYTES: usize = 8 << 10;

/// The eight 4-byte words of an activation block's levels, each broadcast
/// to every lane: word `k` multiplies levels `4k .. 4k + 4` of every row.
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
unsafe fn activation_words(xb: &BlockQ8) -> [__m256i; 8] {
    // SAFETY: the caller's features; bytes 4k .. 4k + 4 of the 32 of
    // `xb.qs` (unaligned reads).
    unsafe {
        let mut words = [_mm256_setzero_si256(); 8];
        for (k, w) in words.iter_mut().enumerate() {
            let word = core::ptr::read_unaligned(xb.qs.as_ptr().add(4 * k).cast::<i32>());
            *w = _mm256_set1_epi32(word);
        }
        words
    }
}

/// A half's levels as its products take them, vector `k` holding levels
/// `4k .. 4k + 4` of each row.
struct HalfLevels {
    /// The products' unsigned operands: Q4_0's nibbles `q`; Q8_0's
    /// `w + 128` as stored with AVX-VNNI, else `|w|`.
    unsigned: [__m256i; 8],
    /// Q8_0 without AVX-VNNI: the signed `w`, whose signs the activations
    /// take (`avx2::block_products` in two steps, so that a product of several
    /// positions takes `|w|` once). Unused otherwise.
    signs: [__m256i; 8],
}

/// Half `h` (rows `8h .. 8h + 8`) of a group-block's levels (`levels`
/// points past its scales).
///
/// # Safety
/// AVX2 is available; the group-block's 4 (Q4_0) or 8 (Q8_0) vectors of
/// levels follow `levels`.
#[inline(always)]
unsafe fn half_levels<const Q4: bool, const VNNI: bool>(levels: *const u8, h: usize) -> HalfLevels {
    // Loops and a helper, not closures: a closure would not have the
    // kernel's features.
    // SAFETY: the caller's features and group-block.
    unsafe {
        let mut v = [_mm256_setzero_si256(); 8];
        if Q4 {
            // Vector j holds the bytes whose low nibbles are elements 4j ..
            // and whose high nibbles are elements 16 + 4j ...
            let nibble = _mm256_set1_epi8(0x0f);
            for j in 0..4 {
                let packed = half_vector(levels, j, h);
                v[j] = _mm256_and_si256(packed, nibble);
                v[j + 4] = _mm256_and_si256(_mm256_srli_epi32::<4>(packed), nibble);
            }
        } else {
            for (k, l) in v.iter_mut().enumerate() {
                let stored = half_vector(levels, k, h);
                *l = if VNNI { stored } else { shifted_levels(stored) };
            }
        }
        let mut unsigned = v;
        if !(Q4 || VNNI) {
            for u in &mut unsigned {
                *u = _mm256_sign_epi8(*u, *u);
            }
        }
        HalfLevels { unsigned, signs: v }
    }
}

/// Half `h` of vector `i` of a group-block's levels (`levels` points past
/// its scales).
///
/// # Safety
/// AVX2 is available; vector `i` is inside the group-block.
#[inline(always)]
unsafe fn half_vector(levels: *const u8, i: usize, h: usize) -> __m256i {
    // SAFETY: the caller's promise; unaligned load.
    unsafe { _mm256_loadu_si256(levels.add(i * VECTOR_BYTES + h * HALF_BYTES).cast()) }
}

/// Each of the half's eight rows' exact block total, one per lane:
/// `Σ level · x`, minus the block's offset where the levels are shifted
/// (`minus_offset` is then `−k · Σ x`, else 0).
///
/// Without AVX-VNNI, Q4_0's pairs of products (at most 2·15·127) are added
/// as i16 over the whole block (8 · 3,810 < 2¹⁵) and widened once; Q8_0's
/// go through `avx2::block_products`' steps, exact for every byte.
///
/// # Safety
/// AVX2 is available, and AVX-VNNI if `VNNI`.
#[inline(always)]
unsafe fn half_totals<const Q4: bool, const VNNI: bool>(
    half: &HalfLevels,
    words: &[__m256i; 8],
    minus_offset: i32,
) -> __m256i {
    let levels = &half.unsigned;
    // SAFETY: the caller's features.
    unsafe {
        if VNNI {
            // Two chains (even and odd words) halve the latency per block.
            let mut even = _mm256_set1_epi32(minus_offset);
            let mut odd = _mm256_setzero_si256();
            for k in (0..8).step_by(2) {
                even = _mm256_dpbusd_avx_epi32(even, levels[k], words[k]);
                odd = _mm256_dpbusd_avx_epi32(odd, levels[k + 1], words[k + 1]);
            }
            _mm256_add_epi32(even, odd)
        } else if Q4 {
            let mut pairs = _mm256_maddubs_epi16(levels[0], words[0]);
            for k in 1..8 {
                pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(levels[k], words[k]));
            }
            let totals = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
            _mm256_add_epi32(totals, _mm256_set1_epi32(minus_offset))
        } else {
            // `block_products(w, x)`, its `|w|` taken once per half.
            let mut products = [_mm256_setzero_si256(); 8];
            for (k, p) in products.iter_mut().enumerate() {
                let signed = _mm256_sign_epi8(words[k], half.signs[k]);
                *p = quad_products::<false>(levels[k], signed);
            }
            let mut even = products[0];
            let mut odd = products[1];
            for k in (2..8).step_by(2) {
                even = _mm256_add_epi32(even, products[k]);
                odd = _mm256_add_epi32(odd, products[k + 1]);
            }
            _mm256_add_epi32(even, odd)
        }
    }
}

/// The eight f16 scales of half `h` of a group-block (`block` points at
/// it), as f32.
///
/// # Safety
/// AVX2 and F16C are available; `block` points at a whole group-block.
#[inline(always)]
unsafe fn half_scales(block: *const u8, h: usize) -> __m256 {
    // SAFETY: the caller's features; the group-block starts with its
    // sixteen f16 scales, half h's eight in the 16 bytes from 16h.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(block.add(h * 2 * HALF_ROWS).cast())) }
}

/// `sums + (d_w · d_x) · totals` per row: the reference's operations in its
/// order (a multiply, a multiply, an add; never fused).
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
unsafe fn add_scaled(sums: __m256, d_w: __m256, d_x: f32, totals: __m256i) -> __m256 {
    // SAFETY: the caller's features.
    unsafe {
        let scale = _mm256_mul_ps(d_w, _mm256_set1_ps(d_x));
        _mm256_add_ps(sums, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(totals)))
    }
}

/// `out[r] = q8_0_dot(row r, x)` (or `q4_0_dot`) for a matrix in the packed
/// layout, the reference's bits.
///
/// # Safety
/// AVX2, FMA and F16C are available, and AVX-VNNI if `VNNI`; `a.w` is in
/// the packed layout.
#[inline(always)]
pub(super) unsafe fn matvec_packed_of<const VNNI: bool>(a: QuantRows<'_>) {
    // SAFETY: the caller's features; `QuantRows` holds `out.len()` rows of
    // `x.len() ≥ 1` blocks, in the packed layout.
    unsafe {
        if a.q4 {
            packed_rows::<true, VNNI>(a.out, a.w, a.x, a.streamed)
        } else {
            packed_rows::<false, VNNI>(a.out, a.w, a.x, a.streamed)
        }
    }
}

/// [`matvec_packed_of`] for Q8_0 (`Q4` false) or Q4_0 rows, in stretches
/// of [`CHUNK_BLOCKS`] blocks whose offsets are computed once for every
/// group, the bytes [`PREFETCH_BYTES`] ahead requested when `streamed` (but
/// for VNNI Q8_0); the rows past the last whole group (in ggml's layout)
/// run the AVX2 path's kernel.
///
/// # Safety
/// As [`matvec_packed_of`]; `x.len() > 0`, and `w` is
/// `out.len() · x.len() · block_bytes(Q4)` bytes.
#[inline(always)]
unsafe fn packed_rows<const Q4: bool, const VNNI: bool>(
    out: &mut [f32],
    w: &[u8],
    x: &[BlockQ8],
    streamed: bool,
) {
    let ahead = streamed && (Q4 || !VNNI);
    let group_block = GROUP_ROWS * block_bytes(Q4);
    let group_bytes = x.len() * group_block;
    let grouped = out.len() - out.len() % GROUP_ROWS;
    let (out, rest) = out.split_at_mut(grouped);
    let (w, w_rest) = w.split_at(grouped / GROUP_ROWS * group_bytes);
    out.fill(0.0);
    for (c, xs) in x.chunks(CHUNK_BLOCKS).enumerate() {
        let minus_offsets = minus_offsets::<Q4, VNNI>(xs);
        let skip = c * CHUNK_BLOCKS * group_block;
        for (g, o) in out.chunks_exact_mut(GROUP_ROWS).enumerate() {
            // SAFETY: the caller's features; group g holds x.len()
            // group-blocks, of which this stretch is blocks c·64 ..
            // c·64 + xs.len(); `o` is 16 floats.
            unsafe {
                let first = w.as_ptr().add(g * group_bytes + skip);
                let mut sums = [
                    _mm256_loadu_ps(o.as_ptr()),
                    _mm256_loadu_ps(o.as_ptr().add(HALF_ROWS)),
                ];
                for (b, (xb, &minus_offset)) in xs.iter().zip(&minus_offsets).enumerate() {
                    let block = first.add(b * group_block);
                    if ahead {
                        prefetch(block.wrapping_add(PREFETCH_BYTES), group_block);
                    }
                    let words = activation_words(xb);
                    for (h, s) in sums.iter_mut().enumerate() {
                        let levels = half_levels::<Q4, VNNI>(block.add(GROUP_SCALE_BYTES), h);
                        let totals = half_totals::<Q4, VNNI>(&levels, &words, minus_offset);
                        *s = add_scaled(*s, half_scales(block, h), xb.d, totals);
                    }
                }
                _mm256_storeu_ps(o.as_mut_ptr(), sums[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(HALF_ROWS), sums[1]);
            }
        }
    }
    if !rest.is_empty() {
        // SAFETY: the caller's features; `w_rest` holds rest.len() rows of
        // x.len() blocks in ggml's layout.
        unsafe { quant_rows_with::<Q4, VNNI>(rest, w_rest, x) };
    }
}

/// `−k · Σ x` for each block of the stretch where the levels are shifted
/// by `k` (see `avx2::block_offsets`), else zeros.
fn minus_offsets<const Q4: bool, const VNNI: bool>(xs: &[BlockQ8]) -> [i32; CHUNK_BLOCKS] {
    if shifted::<Q4, VNNI>() {
        block_offsets::<Q4>(xs).map(|v| -v)
    } else {
        [0; CHUNK_BLOCKS]
    }
}

/// Positions [`matmul_packed_of`] multiplies with each decoded group-block.
const MATMUL_POSITIONS: usize = 16;

/// `out[t·rows + r] = q8_0_dot(row r, xq[t])` (or `q4_0_dot`) for a matrix
/// in the packed layout, position-major, the reference's bits: each
/// group-block's levels are decoded once per half and multiplied with up
/// to sixteen positions.
///
/// # Safety
/// AVX2, FMA and F16C are available, and AVX-VNNI if `VNNI`; `a.w` is in
/// the packed layout.
#[inline(always)]
pub(super) unsafe fn matmul_packed_of<const VNNI: bool>(a: QuantMatmul<'_>) {
    let (n, blocks) = (a.n, a.blocks);
    // SAFETY: the caller's features; `QuantMatmul` holds rows · n outputs,
    // n positions of blocks ≥ 1 activation blocks and rows rows, in the
    // packed layout.
    unsafe {
        if a.q4 {
            packed_matmul::<true, VNNI>(a.out, a.w, a.x, n, blocks)
        } else {
            packed_matmul::<false, VNNI>(a.out, a.w, a.x, n, blocks)
        }
    }
}

/// [`matmul_packed_of`] for Q8_0 (`Q4` false) or Q4_0 rows, over stretches
/// of [`CHUNK_BLOCKS`] blocks, each group's sums carried over in `out`; the
/// rows past the last whole group run the AVX2 path's kernel.
///
/// # Safety
/// As [`matmul_packed_of`]; `n > 0`, `blocks > 0`,
/// `xq.len() == n · blocks`, `out.len() == rows · n`, and
/// `w.len() == rows · blocks · block_bytes(Q4)`.
#[inline(always)]
// Block `b` indexes the weights, each position's activations and offsets.
#[allow(clippy::needless_range_loop)]
unsafe fn packed_matmul<const Q4: bool, const VNNI: bool>(
    out: &mut [f32],
    w: &[u8],
    xq: &[BlockQ8],
    n: usize,
    blocks: usize,
) {
    let group_block = GROUP_ROWS * block_bytes(Q4);
    let group_bytes = blocks * group_block;
    let rows = out.len() / n;
    let groups = rows / GROUP_ROWS;
    let (w, w_rest) = w.split_at(groups * group_bytes);
    let mut minus = [[0i32; CHUNK_BLOCKS]; MATMUL_POSITIONS];
    for t0 in (0..n).step_by(MATMUL_POSITIONS) {
        let positions = (n - t0).min(MATMUL_POSITIONS);
        for c in (0..blocks).step_by(CHUNK_BLOCKS) {
            let stretch = (blocks - c).min(CHUNK_BLOCKS);
            let x_at = |t: usize| &xq[t * blocks + c..][..stretch];
            for (p, m) in minus.iter_mut().take(positions).enumerate() {
                *m = minus_offsets::<Q4, VNNI>(x_at(t0 + p));
            }
            for g in 0..groups {
                // sums[p]: rows 16g .. 16g + 16 of position t0 + p, carried
                // over from the previous stretch (the reference's sums
                // start at zero).
                let mut sums = [[0.0f32; GROUP_ROWS]; MATMUL_POSITIONS];
                if c > 0 {
                    for (p, s) in sums.iter_mut().take(positions).enumerate() {
                        s.copy_from_slice(&out[(t0 + p) * rows + g * GROUP_ROWS..][..GROUP_ROWS]);
                    }
                }
                let first = w[g * group_bytes + c * group_block..].as_ptr();
                for b in 0..stretch {
                    // SAFETY: group-block c + b of group g is whole.
                    let block = unsafe { first.add(b * group_block) };
                    for h in 0..2 {
                        // SAFETY: the caller's features; a whole
                        // group-block, its levels after its scales.
                        let (levels, d_w) = unsafe {
                            (
                                half_levels::<Q4, VNNI>(block.add(GROUP_SCALE_BYTES), h),
                                half_scales(block, h),
                            )
                        };
                        for (p, s) in sums.iter_mut().take(positions).enumerate() {
                            let xb = &x_at(t0 + p)[b];
                            let half = &mut s[h * HALF_ROWS..][..HALF_ROWS];
                            // SAFETY: the caller's features; `half` is 8
                            // floats.
                            unsafe {
                                let words = activation_words(xb);
                                let totals = half_totals::<Q4, VNNI>(&levels, &words, minus[p][b]);
                                let v = _mm256_loadu_ps(half.as_ptr());
                                let v = add_scaled(v, d_w, xb.d, totals);
                                _mm256_storeu_ps(half.as_mut_ptr(), v);
                            }
                        }
                    }
                }
                for (p, s) in sums.iter().take(positions).enumerate() {
                    out[(t0 + p) * rows + g * GROUP_ROWS..][..GROUP_ROWS].copy_from_slice(s);
                }
            }
        }
    }
    let grouped = groups * GROUP_ROWS;
    if grouped < rows {
        // SAFETY: the caller's features; `w_rest` holds rows − grouped rows
        // in ggml's layout, whose results go at columns grouped .. rows of
        // each position's `rows` outputs.
        unsafe { quant_matmul_with::<Q4, VNNI>(&mut out[grouped..], rows, w_rest, xq, n, blocks) };
    }
}
