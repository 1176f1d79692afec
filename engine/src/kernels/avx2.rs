//! x86-64 intrinsics for AVX2 + FMA + F16C: the reference's arithmetic
//! (`reference.rs`), only faster, bit for bit.
//!
//! - Float rows keep the reference's 16 lanes in two `__m256` per row (lanes
//!   0–7 and 8–15), each a separate multiply and add (never fused); the
//!   reduction adds the two registers (lane `j` plus lane `j+8`), then
//!   reduces the eight pairwise, then adds the tail in order. Speed comes
//!   from walking several rows at once (independent add chains), not from
//!   splitting one row's sum.
//! - Q8_0 / Q4_0 rows compute each block's i32 sum exactly with integer SIMD
//!   and add `d_w · d_x · isum` to the row sum one block after another, as
//!   the reference does; eight rows go together, one f32 lane each, so the
//!   scaling and the adds of eight rows are one vector operation each.
//!   The AVX-VNNI path (`avxvnni.rs`) runs the same kernels with each
//!   block's products in one `vpdpbusd` (see `quad_products`).
//!
//! Every function needs AVX2, FMA and F16C (the `# Safety` sections say no
//! more, but AVX-VNNI where `VNNI` is set); lengths come in the checked types of `shapes.rs`, whose facts make
//! every load below in bounds, as each `unsafe` block restates.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::arch::x86_64::*;
use half::{bf16, f16};

use super::avx2_packed;
use super::reference::{self, NORM_ROWS};
use super::shapes::{
    block_bytes, Activations, Float, FloatMatmul, FloatRows, HeadRows, HeadScores, HeadSums,
    QuantMatmul, QuantRows, QueryScores, QuerySums, Strided,
};
use crate::quant::BlockQ8;
use crate::tensor::BLOCK_LEN;

/// Element encodings of float rows, as const-generic tags.
pub(super) const F32: u8 = 0;
pub(super) const F16: u8 = 1;
pub(super) const BF16: u8 = 2;

/// Floats in one `__m256`.
const WIDTH: usize = 8;
/// The reference's lanes: two registers.
const LANES: usize = 2 * WIDTH;
const _: () = assert!(LANES == super::reference::LANES);
/// Rows the float matvec walks together (independent add chains) when the
/// matrix is small enough to be in cache.
const ROW_GROUP: usize = 4;
/// Matrices larger than this are streamed from memory one row after the
/// other: one sequential stream, which the hardware prefetcher follows
/// best. Interleaving the short streams of several rows left it behind
/// (32000×288 f32: 6.2–7.5 GB/s four rows at a time, 8.7–9.0 one row at a
/// time, 8.1–11.8 for a plain read of the same bytes; Zen 3). A decode step
/// reads every matrix once, so all but the smallest come from memory, not
/// cache, even the 330 KB ones of a 15M model (60 MB).
pub(super) const STREAM_BYTES: usize = 64 << 10;
/// The f16 scale in front of each Q8_0 / Q4_0 block.
const SCALE_BYTES: usize = 2;
/// Bytes per cache line, the unit of prefetching.
const CACHE_LINE: usize = 64;

/// Bytes per element of encoding `DT`.
const fn element_bytes(dt: u8) -> usize {
    if dt == F32 {
        4
    } else {
        2
    }
}

/// Decodes one element (for row tails).
#[inline(always)]
fn decode_one<const DT: u8>(bytes: &[u8]) -> f32 {
    match DT {
        F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        F16 => f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32(),
        _ => bf16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32(),
    }
}

/// Loads and widens eight elements of encoding `DT` to f32.
///
/// # Safety
/// AVX2 and F16C are available, and `p` points to `8 · element_bytes(DT)`
/// readable bytes (no alignment needed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<const DT: u8>(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees the bytes are readable; the loads are
    // unaligned variants.
    unsafe {
        match DT {
            F32 => _mm256_loadu_ps(p.cast::<f32>()),
            F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())),
            // bf16 is the high half of an f32: widen and shift into place.
            _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.cast::<__m128i>()),
            ))),
        }
    }
}

/// The reference's reduction of 16 lanes held as lanes 0–7 (`lo`) and 8–15
/// (`hi`): `m = lo + hi`, then `((m0+m4)+(m1+m5)) + ((m2+m6)+(m3+m7))`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce_lanes(lo: __m256, hi: __m256) -> f32 {
    reduce8(_mm256_add_ps(lo, hi))
}

/// `((m0+m4)+(m1+m5)) + ((m2+m6)+(m3+m7))` of one register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn reduce8(m: __m256) -> f32 {
    // [m0+m4, m1+m5, m2+m6, m3+m7]
    let halves = _mm_add_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    // [(m0+m4)+(m1+m5), (m2+m6)+(m3+m7), …]
    let pairs = _mm_hadd_ps(halves, halves);
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
}

/// The reference's in-order tail after the whole lanes: `sum += w · x`.
#[inline(always)]
pub(super) fn tail_sum<const DT: u8>(mut sum: f32, row_tail: &[u8], x_tail: &[f32]) -> f32 {
    for (w, &xv) in row_tail.chunks_exact(element_bytes(DT)).zip(x_tail) {
        sum += decode_one::<DT>(w) * xv;
    }
    sum
}

/// `out[r] = Σ_c w[r][c] · x[c]` for float rows, the reference's bits.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
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
/// or, for a matrix larger than [`STREAM_BYTES`], one row after another.
///
/// # Safety
/// AVX2, FMA and F16C are available; `x.len() ≥ 1` and
/// `w.len() == out.len() · x.len() · element_bytes(DT)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_rows<const DT: u8>(out: &mut [f32], w: &[u8], x: &[f32]) {
    let row_bytes = x.len() * element_bytes(DT);
    if w.len() > STREAM_BYTES {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
            // SAFETY: `row` is one row of x.len() elements.
            *o = unsafe { dot_rows::<DT, 1>(row.as_ptr(), row_bytes, x)[0] };
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
        *o = unsafe { dot_rows::<DT, 1>(row.as_ptr(), row_bytes, x)[0] };
    }
}

/// The dot products of `R` consecutive rows (`first` points at the first,
/// the rows `row_bytes` apart) with `x`, each in the reference order.
///
/// # Safety
/// AVX2, FMA and F16C are available; `R` rows of `x.len()` elements of
/// encoding `DT` are readable from `first`, `row_bytes` apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_rows<const DT: u8, const R: usize>(
    first: *const u8,
    row_bytes: usize,
    x: &[f32],
) -> [f32; R] {
    let cols = x.len();
    let eb = element_bytes(DT);
    let whole = cols - cols % LANES;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 16 <= whole <= cols: x[c..c + 16] and elements
        // c..c + 16 of each row are in bounds.
        unsafe {
            let x0 = _mm256_loadu_ps(x.as_ptr().add(c));
            let x1 = _mm256_loadu_ps(x.as_ptr().add(c + WIDTH));
            for (r, a) in acc.iter_mut().enumerate() {
                let p = first.add(r * row_bytes + c * eb);
                a[0] = _mm256_add_ps(a[0], _mm256_mul_ps(load8::<DT>(p), x0));
                a[1] = _mm256_add_ps(a[1], _mm256_mul_ps(load8::<DT>(p.add(WIDTH * eb)), x1));
            }
        }
        c += LANES;
    }
    core::array::from_fn(|r| {
        // SAFETY: row r's elements whole..cols are in bounds.
        let row_tail = unsafe {
            core::slice::from_raw_parts(first.add(r * row_bytes + whole * eb), (cols - whole) * eb)
        };
        tail_sum::<DT>(reduce_lanes(acc[r][0], acc[r][1]), row_tail, &x[whole..])
    })
}

/// Dot product over the common length of two f32 slices, the reference's
/// bits.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
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
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let whole = n - n % WIDTH;
    let av = _mm256_set1_ps(a);
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 8 <= n <= both lengths; `y` is borrowed mutably, so the
        // store aliases nothing else.
        unsafe {
            let p = y.as_mut_ptr().add(c);
            let xv = _mm256_loadu_ps(x.as_ptr().add(c));
            _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), _mm256_mul_ps(av, xv)));
        }
        c += WIDTH;
    }
    for (yv, &xv) in y[whole..n].iter_mut().zip(&x[whole..n]) {
        *yv += a * xv;
    }
}

/// Keys whose scores [`attention_scores`] computes together (independent
/// add chains).
const SCORE_KEYS: usize = 4;

/// Eight vectors transposed: lane `r` of result `j` is lane `j` of `rows[r]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(rows: &[__m256; 8]) -> [__m256; 8] {
    let (t0, t1) = (
        _mm256_unpacklo_ps(rows[0], rows[1]),
        _mm256_unpackhi_ps(rows[0], rows[1]),
    );
    let (t2, t3) = (
        _mm256_unpacklo_ps(rows[2], rows[3]),
        _mm256_unpackhi_ps(rows[2], rows[3]),
    );
    let (t4, t5) = (
        _mm256_unpacklo_ps(rows[4], rows[5]),
        _mm256_unpackhi_ps(rows[4], rows[5]),
    );
    let (t6, t7) = (
        _mm256_unpacklo_ps(rows[6], rows[7]),
        _mm256_unpackhi_ps(rows[6], rows[7]),
    );
    // `low[j]`: element j of rows 0–3 in its low 128 bits, element j + 4 in
    // its high ones; `high[j]` the same of rows 4–7.
    let low = [
        _mm256_shuffle_ps::<0x44>(t0, t2),
        _mm256_shuffle_ps::<0xee>(t0, t2),
        _mm256_shuffle_ps::<0x44>(t1, t3),
        _mm256_shuffle_ps::<0xee>(t1, t3),
    ];
    let high = [
        _mm256_shuffle_ps::<0x44>(t4, t6),
        _mm256_shuffle_ps::<0xee>(t4, t6),
        _mm256_shuffle_ps::<0x44>(t5, t7),
        _mm256_shuffle_ps::<0xee>(t5, t7),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(low[0], high[0]),
        _mm256_permute2f128_ps::<0x20>(low[1], high[1]),
        _mm256_permute2f128_ps::<0x20>(low[2], high[2]),
        _mm256_permute2f128_ps::<0x20>(low[3], high[3]),
        _mm256_permute2f128_ps::<0x31>(low[0], high[0]),
        _mm256_permute2f128_ps::<0x31>(low[1], high[1]),
        _mm256_permute2f128_ps::<0x31>(low[2], high[2]),
        _mm256_permute2f128_ps::<0x31>(low[3], high[3]),
    ]
}

/// The scores of `n ≤ 8` consecutive keys of a head narrower than the
/// reference's sixteen lanes (`first` points at the first key, the keys
/// `stride` floats apart), key `r` in lane `r`. The reference's `dot` is
/// then only its tail, a product added at a time from zero: each lane does
/// that for its key, the keys transposed eight columns at a time (as one
/// dot product per key, the adds were a chain per key: a third of
/// stories260K's decode, its heads being 8 floats).
///
/// # Safety
/// AVX2, FMA and F16C are available; `q.len() < 16`; `n ≤ 8` keys of
/// `q.len()` floats are readable from `first`, `stride` floats apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn narrow_batch_scores(first: *const f32, stride: usize, q: &[f32], n: usize) -> __m256 {
    let mut acc = _mm256_setzero_ps();
    // Loops of a constant eight with a test inside, not of `n` or
    // `qc.len()`: unrolled, the rows stay in registers.
    for (c, qc) in q.chunks(WIDTH).enumerate() {
        let in_head = first_lanes(qc.len());
        let mut rows = [_mm256_setzero_ps(); WIDTH];
        for (r, row) in rows.iter_mut().enumerate() {
            if r < n {
                // SAFETY: elements 8c .. 8c + qc.len() of key r < n (the
                // precondition); the masked-off lanes are not read.
                *row = unsafe { _mm256_maskload_ps(first.add(r * stride + c * WIDTH), in_head) };
            }
        }
        let columns = transpose8(&rows);
        for (j, column) in columns.into_iter().enumerate() {
            if let Some(&qj) = qc.get(j) {
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(qj), column));
            }
        }
    }
    acc
}

/// `scores[p] = dot(q, keys row p)`, the reference's bits: for a head
/// narrower than sixteen floats eight keys at a time, one a lane; else four
/// keys at a time.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attention_scores(scores: &mut [f32], q: &[f32], keys: Strided<'_>) {
    let q = &q[..keys.width];
    let scores = &mut scores[..keys.rows];
    let base = keys.data.as_ptr().wrapping_add(keys.offset).cast::<u8>();
    let row_bytes = keys.stride * 4;
    if keys.width < LANES {
        for (b, batch) in scores.chunks_mut(WIDTH).enumerate() {
            // SAFETY: key rows 8b .. 8b + batch.len() ≤ keys.rows each hold
            // `width` floats from offset, `stride` apart (the `Strided`
            // facts); the store writes `batch`'s lanes only.
            unsafe {
                let first = base.add(b * WIDTH * row_bytes).cast::<f32>();
                let s = narrow_batch_scores(first, keys.stride, q, batch.len());
                _mm256_maskstore_ps(batch.as_mut_ptr(), first_lanes(batch.len()), s);
            }
        }
        return;
    }
    let mut groups = scores.chunks_exact_mut(SCORE_KEYS);
    let mut first = 0;
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

/// Floats of the output [`weighted_sum`] keeps in registers per pass: a
/// whole head of up to 64, so each value row is read once.
const SUM_WIDTH: usize = 8 * WIDTH;

/// `out = 0`, then `out += weights[p] · values row p` for each position in
/// order, the reference's bits (the same multiply and add per element, in
/// the same order), with the output kept in registers across the positions.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn weighted_sum(out: &mut [f32], weights: &[f32], values: Strided<'_>) {
    out[..values.width].fill(0.0);
    // SAFETY: the features are available (this function's precondition).
    unsafe { add_weighted(out, weights, values) }
}

/// `out += weights[p] · values row p` for each position in order: the
/// reference's `axpy` per position, the output in registers across them.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_weighted(out: &mut [f32], weights: &[f32], values: Strided<'_>) {
    let out = &mut out[..values.width];
    let weights = &weights[..values.rows.min(weights.len())];
    let (width, stride, offset) = (values.width, values.stride, values.offset);
    let whole = width - width % WIDTH;
    let mut start = 0;
    while start < whole {
        let vectors = ((whole - start) / WIDTH).min(SUM_WIDTH / WIDTH);
        let mut acc: [__m256; SUM_WIDTH / WIDTH] = core::array::from_fn(|i| {
            if i < vectors {
                // SAFETY: start + 8·i + 8 <= whole <= width, inside `out`.
                unsafe { _mm256_loadu_ps(out.as_ptr().add(start + i * WIDTH)) }
            } else {
                _mm256_setzero_ps()
            }
        });
        for (p, &w) in weights.iter().enumerate() {
            let wv = _mm256_set1_ps(w);
            for (i, a) in acc.iter_mut().take(vectors).enumerate() {
                // SAFETY: start + 8·i + 8 <= whole <= width, and value row
                // p < values.rows holds `width` floats from offset.
                let v = unsafe {
                    _mm256_loadu_ps(
                        values
                            .data
                            .as_ptr()
                            .add(p * stride + offset + start + i * WIDTH),
                    )
                };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, v));
            }
        }
        for (i, a) in acc.iter().take(vectors).enumerate() {
            // SAFETY: as above, inside `out`.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(start + i * WIDTH), *a) };
        }
        start += vectors * WIDTH;
    }
    let tail = &mut out[whole..];
    for (p, &w) in weights.iter().enumerate() {
        for (o, &v) in tail.iter_mut().zip(&values.row(p)[whole..]) {
            *o += w * v;
        }
    }
}

/// Cached positions a run of heads goes through together: every head's
/// scores (or sums) over a block before the next block. A position's KV
/// heads sit side by side in its row, so a block's rows are read once,
/// together, rather than each head striding over the whole cache.
const HEAD_BLOCK: usize = 16;

/// Asks for head `i`'s columns of rows `first .. first + n` (those before
/// `positions`): the next block's, while this one is computed. With the
/// order alone the hardware prefetcher still fell behind (AVX-512 path,
/// 110M shape; see docs/PERFORMANCE.md).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch_block(rows: &HeadRows<'_>, i: usize, first: usize, n: usize) {
    let head = rows.head(i);
    let end = rows.run.positions.min(first + n);
    for row in first..end {
        let start = head
            .data
            .as_ptr()
            .wrapping_add(row * head.stride + head.offset);
        prefetch(start.cast::<u8>(), head.width * 4);
    }
}

/// Walks a run of heads over its cached `rows` a [`HEAD_BLOCK`] of
/// positions at a time: for each block and each head `i`, requests that
/// head's columns of the next block (for heads of a cache line or more),
/// then runs `head_block(i, first, n)` on positions `first .. first + n`.
/// Shared by the AVX2 and AVX-512 attention kernels, which differ only in
/// `head_block`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn by_position_blocks(
    rows: &HeadRows<'_>,
    mut head_block: impl FnMut(usize, usize, usize),
) {
    let run = rows.run;
    // A head narrower than a cache line shares its lines with the next
    // heads, and does little with each row: asking for them head by head
    // cost more than it brought. Without the requests stories260K (heads
    // of 8) decoded 256 steps at 24.9–25.4k tok/s against 21.8–21.9k (AVX2
    // path, q4_0, Zen 4, `cargo bench --bench decode`); heads of 16 (the
    // bundled model) and 48 (15M) ran alike either way.
    let requests = run.head_dim * 4 >= CACHE_LINE;
    let mut first = 0;
    while first < run.positions {
        let n = HEAD_BLOCK.min(run.positions - first);
        for i in 0..run.heads {
            // The query heads of a group read one KV head's columns: asked
            // for by the first of them only.
            if requests && (i == 0 || (run.first_head + i).is_multiple_of(run.group)) {
                prefetch_block(rows, i, first + n, HEAD_BLOCK);
            }
            head_block(i, first, n);
        }
        first += n;
    }
}

/// [`attention_scores`] for each head of a run, a block of positions at a
/// time across the heads; each score is the reference's `dot`, whichever
/// block computes it.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
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
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
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

/// [`attention_scores`] for each query of a block: its head against the
/// rows it sees, the reference's bits.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attention_scores_queries(a: QueryScores<'_>) {
    for (scores, q, keys) in a.queries() {
        // SAFETY: the features are available (this function's
        // precondition).
        unsafe { attention_scores(scores, q, keys) };
    }
}

/// [`weighted_sum`] for each query of a block, added to what its output
/// holds, the reference's bits.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn add_weighted_queries(a: QuerySums<'_>) {
    for (out, weights, values) in a.queries() {
        // SAFETY: the features are available (this function's
        // precondition).
        unsafe { add_weighted(out, weights, values) };
    }
}

// ---------------------------------------------------------------------------
// exp, softmax's exponentials, SwiGLU's gate
// ---------------------------------------------------------------------------

/// [`reference::exp`] on eight lanes: the same operations in the same order
/// (a multiply, then an add: never fused), hence the same bits lane by lane.
/// `max(lowest, x)` and `min(highest, x)` return `x` when it is NaN, as the
/// reference's selects do.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(_mm256_set1_ps(reference::EXP_LOWEST), x);
    let x = _mm256_min_ps(_mm256_set1_ps(reference::EXP_HIGHEST), x);
    let rounder = _mm256_set1_ps(reference::EXP_ROUNDER);
    let shifted = _mm256_add_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(reference::EXP_LOG2_E)),
        rounder,
    );
    let n = _mm256_sub_ps(shifted, rounder);
    let r = _mm256_sub_ps(
        _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(reference::EXP_LN2_HI))),
        _mm256_mul_ps(n, _mm256_set1_ps(reference::EXP_LN2_LO)),
    );
    let mut p = _mm256_set1_ps(reference::EXP_POLY[0]);
    for &c in &reference::EXP_POLY[1..] {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
    }
    let k = _mm256_sub_epi32(
        _mm256_castps_si256(shifted),
        _mm256_set1_epi32(reference::EXP_ROUNDER.to_bits() as i32),
    );
    let half = _mm256_srai_epi32::<1>(k);
    let rest = _mm256_sub_epi32(k, half);
    _mm256_mul_ps(_mm256_mul_ps(p, pow2(half)), pow2(rest))
}

/// 2^k per lane for `k` in −126 ..= 127, built in the exponent bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pow2(k: __m256i) -> __m256 {
    let biased = _mm256_add_epi32(k, _mm256_set1_epi32(127));
    _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
}

/// A mask of lanes `0 .. n` (`n ≤ 8`) for `maskload` / `maskstore`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn first_lanes(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// `x[i] = exp(x[i] − shift)`, returning their sum in the reference's
/// order: lanes 0–7 and 8–15 in two registers, the fixed reduction, then the
/// tail (its exponentials computed in masked vectors) in order.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn exp_and_sum(x: &mut [f32], shift: f32) -> f32 {
    let n = x.len();
    let whole = n - n % LANES;
    let s = _mm256_set1_ps(shift);
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 16 <= n; `x` is borrowed mutably, so the stores alias
        // nothing else.
        unsafe {
            let p = x.as_mut_ptr().add(c);
            let e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), s));
            let e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(WIDTH)), s));
            _mm256_storeu_ps(p, e0);
            _mm256_storeu_ps(p.add(WIDTH), e1);
            lo = _mm256_add_ps(lo, e0);
            hi = _mm256_add_ps(hi, e1);
        }
        c += LANES;
    }
    let mut sum = reduce_lanes(lo, hi);
    let tail = &mut x[whole..];
    for chunk in tail.chunks_mut(WIDTH) {
        let mask = first_lanes(chunk.len());
        // SAFETY: the mask covers the chunk's `len ≤ 8` floats; lanes past
        // it are neither read nor written.
        unsafe {
            let v = _mm256_maskload_ps(chunk.as_ptr(), mask);
            _mm256_maskstore_ps(chunk.as_mut_ptr(), mask, exp8(_mm256_sub_ps(v, s)));
        }
    }
    for &e in tail.iter() {
        sum += e;
    }
    sum
}

/// [`reference::silu_times`] on eight lanes: `(g · (1 / (1 + exp(−g)))) · u`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn silu_times8(g: __m256, u: __m256) -> __m256 {
    let one = _mm256_set1_ps(1.0);
    // −g flips the sign bit, as the reference's negation does.
    let e = exp8(_mm256_xor_ps(g, _mm256_set1_ps(-0.0)));
    let silu = _mm256_mul_ps(g, _mm256_div_ps(one, _mm256_add_ps(one, e)));
    _mm256_mul_ps(silu, u)
}

/// [`reference::crc32c_update`] with SSE 4.2's `crc32`, which computes the
/// same remainder eight bytes an instruction (then the tail a byte at a
/// time). One chain of instructions is enough: 9.85 GB/s on a Zen 4
/// against the table's 0.46 (`cargo bench --bench kernels`, its loading
/// lines), about what one core reads from memory.
///
/// # Safety
/// SSE 4.2 is available.
#[target_feature(enable = "sse4.2")]
pub unsafe fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut words = bytes.chunks_exact(8);
    let mut c = u64::from(crc);
    for word in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
    }
    // The instruction leaves the 32-bit remainder in the low half.
    let c = c as u32;
    words.remainder().iter().fold(c, |c, &b| _mm_crc32_u8(c, b))
}

reference_at_width!("avx2,fma,f16c":
    fn sum_of_squares_rows(x: &[f32], dim: usize) -> [f32; NORM_ROWS];
    fn divide(x: &mut [f32], d: f32);
    fn all_finite(x: &[f32]) -> bool;
    fn rope(v: &mut [f32], rotations: &[f32]);
    fn add_assign(x: &mut [f32], y: &[f32]);
);

/// SwiGLU's gate over the common length, the reference's bits: eight
/// elements at a time, then a masked vector.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let whole = n - n % WIDTH;
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 8 <= n <= both lengths; `gate` is borrowed mutably.
        unsafe {
            let p = gate.as_mut_ptr().add(c);
            let u = _mm256_loadu_ps(up.as_ptr().add(c));
            _mm256_storeu_ps(p, silu_times8(_mm256_loadu_ps(p), u));
        }
        c += WIDTH;
    }
    if whole < n {
        let mask = first_lanes(n - whole);
        // SAFETY: the mask covers elements whole .. n of both slices; lanes
        // past them are neither read nor written.
        unsafe {
            let p = gate.as_mut_ptr().add(whole);
            let g = _mm256_maskload_ps(p, mask);
            let u = _mm256_maskload_ps(up.as_ptr().add(whole), mask);
            _mm256_maskstore_ps(p, mask, silu_times8(g, u));
        }
    }
}

/// `quant::quantize_activations` for finite `x` of whole blocks, bit for
/// bit: per block `amax = max |x|`, `d = amax / 127`, `id = 1/d` (0 when
/// `d` is 0 or `1/d` overflows), `q = roundf(x · id)`, rounding halves away
/// from zero (computed exactly as `trunc(p) + (|p − trunc(p)| ≥ ½ ? ±1 : 0)`,
/// `p − trunc(p)` being exact for |p| < 2²³).
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_activations(a: Activations<'_>) {
    let (x, dst) = (a.x, a.dst);
    let sign = _mm256_set1_ps(-0.0);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    for (block, out) in x.chunks_exact(BLOCK_LEN).zip(dst.iter_mut()) {
        // SAFETY: `block` is 32 floats.
        let v: [__m256; 4] =
            core::array::from_fn(|i| unsafe { _mm256_loadu_ps(block.as_ptr().add(i * WIDTH)) });
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        // Exact whatever the order: the inputs are not NaN.
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let amax = _mm_cvtss_f32(m);
        let d = amax / 127.0;
        let id = if d == 0.0 {
            0.0
        } else {
            let id = 1.0 / d;
            if id.is_finite() {
                id
            } else {
                0.0
            }
        };
        let idv = _mm256_set1_ps(id);
        let levels = v.map(|v| {
            let p = _mm256_mul_ps(v, idv);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
            let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
            let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), one);
            // ±1 with the sign of p where the fraction is at least ½, else ±0.
            let step = _mm256_or_ps(up, _mm256_and_ps(sign, p));
            _mm256_cvtps_epi32(_mm256_add_ps(t, step))
        });
        // i32 → i16 → i8 with saturation (the levels are within −128..=127
        // anyway), undoing the per-128-bit-half interleaving of the packs.
        let words01 = _mm256_packs_epi32(levels[0], levels[1]);
        let words23 = _mm256_packs_epi32(levels[2], levels[3]);
        let bytes = _mm256_packs_epi16(words01, words23);
        let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        out.d = d;
        // SAFETY: `out.qs` is 32 bytes.
        unsafe { _mm256_storeu_si256(out.qs.as_mut_ptr().cast::<__m256i>(), ordered) };
    }
}

// ---------------------------------------------------------------------------
// Q8_0 / Q4_0 against BlockQ8 activations
// ---------------------------------------------------------------------------

/// Eight i32 lanes, each the sum of four adjacent products `u_j · s_j` of
/// unsigned bytes `u` and signed bytes `s`: one `vpdpbusd` with AVX-VNNI
/// (`VNNI`), else `maddubs` (pairs, to i16) then `madd` (pairs of pairs, to
/// i32). The two agree wherever no pair of products reaches ±2¹⁵ (there
/// `maddubs` saturates); the callers' operands stay below it.
///
/// The `#[inline(always)]` functions from here to [`quant_matmul_with`]
/// have no `target_feature` of their own: they are inlined into the kernel
/// that calls them (this file's, or the AVX-VNNI path's in `avxvnni.rs`),
/// whose features they then have.
///
/// # Safety
/// AVX2 is available, and AVX-VNNI if `VNNI`.
#[inline(always)]
pub(super) unsafe fn quad_products<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
    // SAFETY: the caller's features.
    unsafe {
        if VNNI {
            _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }
}

/// Eight i32 partial sums of `Σ w_j · x_j` over one block of 32 signed
/// weights `w` and activation levels `x`.
///
/// Exact for every weight byte and activation levels in −127..=127 (what the
/// quantizer produces): `|w|` fits u8 (128 for −128), `x · sign(w)` fits i8,
/// and a pair of products is at most 2·128·127 < 2¹⁵. (With AVX-VNNI the
/// kernels multiply `w + 128` instead, see [`block_isums`].)
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
pub(super) unsafe fn block_products(w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: the caller's features.
    unsafe { quad_products::<false>(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)) }
}

/// The 32 levels of a Q8_0 block as unsigned bytes `w + 128` (the sign bit
/// flipped): `vpdpbusd` sums four products of these with activation levels
/// without saturating (4·255·127 < 2³¹), and `Σ (w + 128) · x` minus
/// `128 · Σ x` (see [`block_offsets`]) is `Σ w · x`.
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
pub(super) unsafe fn shifted_levels(w: __m256i) -> __m256i {
    // SAFETY: the caller's features.
    unsafe { _mm256_xor_si256(w, _mm256_set1_epi8(i8::MIN)) }
}

/// Whether the kernels multiply shifted levels (Q4_0's nibbles `q`, and
/// with AVX-VNNI Q8_0's `w + 128`) and subtract [`block_offsets`] from
/// each block's sum.
pub(super) const fn shifted<const Q4: bool, const VNNI: bool>() -> bool {
    Q4 || VNNI
}

/// The 32 signed levels of a Q8_0 block (`block` points at its scale).
///
/// # Safety
/// AVX2 is available and `block` points to `Q8_0_BLOCK_BYTES` readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_levels(block: *const u8) -> __m256i {
    // SAFETY: bytes SCALE_BYTES .. SCALE_BYTES + 32 of the block are readable.
    unsafe { _mm256_loadu_si256(block.add(SCALE_BYTES).cast::<__m256i>()) }
}

/// The 32 stored nibbles `q` (0..=15, the level is `q − 8`) of a Q4_0
/// block: byte `j` holds element `j` in its low nibble and element `j + 16`
/// in its high nibble.
///
/// # Safety
/// AVX2 is available and `block` points to `Q4_0_BLOCK_BYTES` readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_nibbles(block: *const u8) -> __m256i {
    // SAFETY: bytes SCALE_BYTES .. SCALE_BYTES + 16 of the block are readable.
    let packed = unsafe { _mm_loadu_si128(block.add(SCALE_BYTES).cast::<__m128i>()) };
    // The 16 bytes in both halves (a broadcast load), the high half shifted
    // down by 4: one shift instead of a shift and an insert.
    let both = _mm256_broadcastsi128_si256(packed);
    let shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// Reduces eight vectors of partial sums to one vector of their totals:
/// lane `k` = Σ of `v[k]`'s lanes (exact: integer adds).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose_sum(v: &[__m256i; 8]) -> __m256i {
    // Single-uop unpacks rather than `hadd` (several uops on this CPU).
    // Per 128-bit half: [a0+a2, b0+b2, a1+a3, b1+b3].
    let pair = |a: __m256i, b: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
    };
    // Per half: [Σa, Σb, Σc, Σd] of the four vectors' lanes in that half.
    let quad = |ab: __m256i, cd: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd))
    };
    let q0123 = quad(pair(v[0], v[1]), pair(v[2], v[3]));
    let q4567 = quad(pair(v[4], v[5]), pair(v[6], v[7]));
    let low = _mm256_permute2x128_si256::<0x20>(q0123, q4567);
    let high = _mm256_permute2x128_si256::<0x31>(q0123, q4567);
    _mm256_add_epi32(low, high)
}

/// Rows the quantized matvec walks together, one f32 lane per row: block
/// `b` of eight rows is summed as eight integers, scaled and added to the
/// eight row sums with one vector multiply and add, in the reference's
/// order for each row.
pub const QUANT_ROWS: usize = 8;

/// How many groups of [`QUANT_ROWS`] rows ahead the quantized matvec
/// prefetches.
const PREFETCH_GROUPS: usize = 2;

/// Blocks of activations whose offsets are computed at once (rows are
/// walked a stretch of this many blocks at a time; the AVX-512 kernels too).
pub(super) const CHUNK_BLOCKS: usize = 64;

/// Eight partial sums of one block's products: `Σ w_j · x_j` for Q8_0,
/// `Σ q_j · x_j` for Q4_0 and, with AVX-VNNI, `Σ (w_j + 128) · x_j` for
/// Q8_0 (for those two the caller subtracts [`block_offsets`]; a pair of
/// nibble products is at most 2·15·127); `xq` holds the block's 32
/// activation levels.
///
/// # Safety
/// As [`quad_products`], and `block` points to one whole block.
#[inline(always)]
unsafe fn block_isums<const Q4: bool, const VNNI: bool>(block: *const u8, xq: __m256i) -> __m256i {
    // SAFETY: forwarded precondition.
    unsafe {
        if Q4 {
            quad_products::<VNNI>(q4_0_nibbles(block), xq)
        } else if VNNI {
            quad_products::<VNNI>(shifted_levels(q8_0_levels(block)), xq)
        } else {
            block_products(q8_0_levels(block), xq)
        }
    }
}

/// Sum of the eight lanes of an integer vector (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_lanes_i32(v: __m256i) -> i32 {
    let halves = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let pairs = _mm_add_epi32(halves, _mm_unpackhi_epi64(halves, halves));
    let total = _mm_add_epi32(pairs, _mm_shuffle_epi32::<0b01>(pairs));
    _mm_cvtsi128_si32(total)
}

/// `k · Σ_j x_j` for each of up to [`CHUNK_BLOCKS`] activation blocks
/// (missing blocks get 0), `k` the shift of the stored levels:
/// `Σ (q_j − 8) · x_j = Σ q_j · x_j − 8 · Σ x_j` for Q4_0, which stores
/// level `q − 8` as `q`; `k` = 128 for Q8_0's `w + 128`. Inlined, so the
/// sums vectorize with the caller's features (a call, built for the
/// baseline x86-64, took 2% of a 110M prefill).
#[inline(always)]
pub(super) fn block_offsets<const Q4: bool>(x: &[BlockQ8]) -> [i32; CHUNK_BLOCKS] {
    let k = if Q4 { 8 } else { 128 };
    let mut offsets = [0; CHUNK_BLOCKS];
    for (o, b) in offsets.iter_mut().zip(x) {
        *o = k * b.qs.iter().map(|&q| i32::from(q)).sum::<i32>();
    }
    offsets
}

/// Continues the sums of [`QUANT_ROWS`] consecutive rows (`first` points at
/// the first row's block 0 of this stretch, the rows `row_bytes` apart) over
/// the stretch `x` of activation blocks: per row, `sum += (d_w · d_x) · isum`
/// block after block, one lane per row, while the rows
/// [`PREFETCH_GROUPS`] groups further on are requested (see [`prefetch`]).
///
/// # Safety
/// As [`quad_products`], and FMA and F16C are available;
/// `x.len() <= CHUNK_BLOCKS`; for every row `r < 8`,
/// `first + r · row_bytes` is followed by `x.len()` whole blocks.
#[inline(always)]
unsafe fn eight_rows<const Q4: bool, const VNNI: bool>(
    sums: __m256,
    first: *const u8,
    row_bytes: usize,
    x: &[BlockQ8],
    offsets: &[i32; CHUNK_BLOCKS],
) -> __m256 {
    let bb = block_bytes(Q4);
    let mut sums = sums;
    let ahead = first.wrapping_add(PREFETCH_GROUPS * QUANT_ROWS * row_bytes);
    for (b, (xb, &offset)) in x.iter().zip(offsets).enumerate() {
        // SAFETY: the caller's features; `xb.qs` is 32 bytes; block b of
        // each of the eight rows is whole (the function's precondition).
        unsafe {
            prefetch(ahead.wrapping_add(b * QUANT_ROWS * bb), QUANT_ROWS * bb);
            let xq = _mm256_loadu_si256(xb.qs.as_ptr().cast::<__m256i>());
            let block = first.add(b * bb);
            // A loop, not `array::from_fn`: a closure would not have the
            // kernel's features.
            let mut isums = [_mm256_setzero_si256(); QUANT_ROWS];
            for (r, isum) in isums.iter_mut().enumerate() {
                *isum = block_isums::<Q4, VNNI>(block.add(r * row_bytes), xq);
            }
            let mut totals = transpose_sum(&isums);
            if shifted::<Q4, VNNI>() {
                totals = _mm256_sub_epi32(totals, _mm256_set1_epi32(offset));
            }
            let dw = scales(block, row_bytes);
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(xb.d));
            sums = _mm256_add_ps(sums, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(totals)));
        }
    }
    sums
}

/// Requests the `bytes` from `start` into L2. A group of rows reads its
/// rows' short streams at once, which the hardware prefetcher follows
/// poorly on matrices from DRAM; so, while block `b` of a group is summed,
/// a group further on asks for as many bytes of its contiguous rows, and by
/// the group's last block all of them have been asked for.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch(start: *const u8, bytes: usize) {
    for line in 0..bytes.div_ceil(CACHE_LINE) {
        // A prefetch is only a hint and never faults; the address is formed
        // with wrapping arithmetic and not dereferenced.
        _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add(line * CACHE_LINE).cast::<i8>());
    }
}

/// The f16 scales of one block of eight rows (`block` points at the first
/// row's, the rows `row_bytes` apart), as f32.
///
/// # Safety
/// AVX2, FMA and F16C are available; the two bytes at
/// `block + r · row_bytes` are readable for every `r < 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales(block: *const u8, row_bytes: usize) -> __m256 {
    // SAFETY: the caller's precondition, for rows 0–3 and 4–7.
    let (low, high) = unsafe {
        (
            four_scales(block, row_bytes, 0),
            four_scales(block, row_bytes, 4),
        )
    };
    _mm256_cvtph_ps(_mm_set_epi64x(high as i64, low as i64))
}

/// The f16 scale bits of rows `first .. first + 4` of a group (`block`
/// points at the first row's block, the rows `row_bytes` apart), packed
/// into one 64-bit word in general registers, row `first` lowest: eight
/// 2-byte stores then a 16-byte load would stall on store forwarding.
///
/// # Safety
/// The two bytes at `block + r · row_bytes` are readable for every
/// `r` in `first .. first + 4`.
#[inline(always)]
pub(super) unsafe fn four_scales(block: *const u8, row_bytes: usize, first: usize) -> u64 {
    (0..4).fold(0u64, |w, i| {
        // SAFETY: the caller's precondition.
        let bits = unsafe {
            block
                .add((first + i) * row_bytes)
                .cast::<u16>()
                .read_unaligned()
        };
        w | u64::from(bits) << (16 * i)
    })
}

/// [`eight_rows`] for one row: the same arithmetic, one block at a time.
///
/// # Safety
/// As [`quad_products`], and `row` holds at least `x.len()` whole blocks.
#[inline(always)]
unsafe fn one_row<const Q4: bool, const VNNI: bool>(
    mut sum: f32,
    row: &[u8],
    x: &[BlockQ8],
    offsets: &[i32; CHUNK_BLOCKS],
) -> f32 {
    let bb = block_bytes(Q4);
    for (b, (xb, &offset)) in x.iter().zip(offsets).enumerate() {
        let start = b * bb;
        // SAFETY: the caller's features; block b lies inside the row;
        // `xb.qs` is 32 bytes.
        let mut isum = unsafe {
            let xq = _mm256_loadu_si256(xb.qs.as_ptr().cast::<__m256i>());
            sum_lanes_i32(block_isums::<Q4, VNNI>(row.as_ptr().add(start), xq))
        };
        if shifted::<Q4, VNNI>() {
            isum -= offset;
        }
        let dw = f16::from_bits(u16::from_le_bytes([row[start], row[start + 1]])).to_f32();
        sum += dw * xb.d * isum as f32;
    }
    sum
}

/// `out[r] = q8_0_dot(row r, x)` (`Q4` false) or `q4_0_dot(row r, x)`
/// (`Q4` true) for `out.len()` rows of `x.len()` blocks each, equal bit for
/// bit to the reference: exact integer block sums, then
/// `sum += (d_w · d_x) · isum` block by block.
///
/// Rows go [`QUANT_ROWS`] at a time (one f32 lane each), in stretches of
/// [`CHUNK_BLOCKS`] blocks, each row's sum carried over in `out`.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec_quantized(a: QuantRows<'_>) {
    // SAFETY: the features are available.
    unsafe { quant_rows_of::<false>(a) }
}

/// [`matvec_quantized`] with the block products of [`quad_products`].
///
/// # Safety
/// As [`quad_products`], and FMA and F16C are available.
#[inline(always)]
pub(super) unsafe fn quant_rows_of<const VNNI: bool>(a: QuantRows<'_>) {
    // SAFETY: the caller's features; `QuantRows` holds `out.len()` rows of
    // `x.len() ≥ 1` blocks.
    unsafe {
        if a.q4 {
            quant_rows_with::<true, VNNI>(a.out, a.w, a.x)
        } else {
            quant_rows_with::<false, VNNI>(a.out, a.w, a.x)
        }
    }
}

/// [`quant_rows_with`] with AVX2's products, as a function with AVX2's
/// features, for the AVX-512 kernels' last rows (an `inline(always)` body
/// would be copied into them).
///
/// # Safety
/// AVX2, FMA and F16C are available; the rest as [`quant_rows_with`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quant_rows<const Q4: bool>(out: &mut [f32], w: &[u8], x: &[BlockQ8]) {
    // SAFETY: the features are available; forwarded precondition.
    unsafe { quant_rows_with::<Q4, false>(out, w, x) }
}

/// [`matvec_quantized`] for Q8_0 (`Q4` false) or Q4_0 rows.
///
/// # Safety
/// As [`quad_products`], and FMA and F16C are available; `x.len() > 0`,
/// and `w.len() == out.len() · x.len() · block_bytes(Q4)`.
#[inline(always)]
pub(super) unsafe fn quant_rows_with<const Q4: bool, const VNNI: bool>(
    out: &mut [f32],
    w: &[u8],
    x: &[BlockQ8],
) {
    let bb = block_bytes(Q4);
    let row_bytes = x.len() * bb;
    let groups = out.len() / QUANT_ROWS;
    out.fill(0.0);
    for (c, xs) in x.chunks(CHUNK_BLOCKS).enumerate() {
        let offsets = if shifted::<Q4, VNNI>() {
            block_offsets::<Q4>(xs)
        } else {
            [0; CHUNK_BLOCKS]
        };
        let skip = c * CHUNK_BLOCKS * bb;
        let (grouped, rest) = out.split_at_mut(groups * QUANT_ROWS);
        for (g, o) in grouped.chunks_exact_mut(QUANT_ROWS).enumerate() {
            // SAFETY: the caller's features; rows 8g .. 8g + 8 < out.len()
            // each hold x.len() blocks, of which this stretch is blocks
            // c·64 .. c·64 + xs.len(); `o` is 8 floats.
            unsafe {
                let first = w.as_ptr().add(g * QUANT_ROWS * row_bytes + skip);
                let sums = _mm256_loadu_ps(o.as_ptr());
                let sums = eight_rows::<Q4, VNNI>(sums, first, row_bytes, xs, &offsets);
                _mm256_storeu_ps(o.as_mut_ptr(), sums);
            }
        }
        let rest_rows = w[groups * QUANT_ROWS * row_bytes..].chunks_exact(row_bytes);
        for (o, row) in rest.iter_mut().zip(rest_rows) {
            // SAFETY: the caller's features; the stretch holds exactly
            // xs.len() blocks of the row.
            *o = unsafe { one_row::<Q4, VNNI>(*o, &row[skip..skip + xs.len() * bb], xs, &offsets) };
        }
    }
}

// ---------------------------------------------------------------------------
// Matrix × several vectors (prefill)
// ---------------------------------------------------------------------------

/// Rows and positions of one tile of the float matmul: 3 × 2 × 2
/// accumulators, one half's two activation vectors and a row's weights fit
/// the sixteen vector registers (a 2 × 3 tile that loaded both halves'
/// activations at once kept accumulators on the stack and ran at half the
/// speed: docs/PERFORMANCE.md, 2026-12-05, afternoon).
const MATMUL_ROWS: usize = 3;
const MATMUL_POSITIONS: usize = 2;

/// `out[t·rows + r] = Σ_c w[r][c] · x[t·cols + c]` for float rows
/// (position-major), each element the bits of [`matvec`] for row `r` and
/// position `t`; each loaded stretch
/// of a row is used for several positions.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
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
/// AVX2, FMA and F16C are available; `a.dtype` is `DT`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_matmul<const DT: u8>(a: FloatMatmul<'_>) {
    let (rows, n, cols) = (a.rows(), a.n, a.cols);
    let row_bytes = cols * element_bytes(DT);
    let mut r = 0;
    while r < rows {
        let group = (rows - r).min(MATMUL_ROWS);
        let mut t = 0;
        while t < n {
            let positions = (n - t).min(MATMUL_POSITIONS);
            let w = a.w[r * row_bytes..].as_ptr();
            let x = &a.x[t * cols..];
            // SAFETY: rows r .. r + group and positions t .. t + positions
            // are in range (the `FloatMatmul` facts).
            let tile: [[f32; MATMUL_POSITIONS]; MATMUL_ROWS] = unsafe {
                match (group, positions) {
                    (3, 2) => float_tile::<DT, 3, 2>(w, row_bytes, x, cols),
                    (3, _) => float_tile::<DT, 3, 1>(w, row_bytes, x, cols),
                    (2, 2) => float_tile::<DT, 2, 2>(w, row_bytes, x, cols),
                    (2, _) => float_tile::<DT, 2, 1>(w, row_bytes, x, cols),
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
/// AVX2, FMA and F16C are available; `R` rows of `cols` elements of
/// encoding `DT` are readable from `w`, and `x.len() >= P · cols`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_tile<const DT: u8, const R: usize, const P: usize>(
    w: *const u8,
    row_bytes: usize,
    x: &[f32],
    cols: usize,
) -> [[f32; MATMUL_POSITIONS]; MATMUL_ROWS] {
    let eb = element_bytes(DT);
    let whole = cols - cols % LANES;
    let x = &x[..P * cols];
    // acc[h][r][p]: lanes 8h .. 8h + 8 of row r and position p. Each half
    // is a step of its own, so that only its P activation vectors are
    // held besides the accumulators.
    let mut acc = [[[_mm256_setzero_ps(); P]; R]; 2];
    let mut c = 0;
    while c < whole {
        for (h, acc_h) in acc.iter_mut().enumerate() {
            let at = c + h * WIDTH;
            // SAFETY: at + 8 <= whole <= cols: the loads stay inside the R
            // rows and the P positions.
            unsafe {
                let mut xv = [_mm256_setzero_ps(); P];
                for (p, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(x.as_ptr().add(p * cols + at));
                }
                for (r, acc_r) in acc_h.iter_mut().enumerate() {
                    let wv = load8::<DT>(w.add(r * row_bytes + at * eb));
                    for (a, xp) in acc_r.iter_mut().zip(&xv) {
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, *xp));
                    }
                }
            }
        }
        c += LANES;
    }
    let mut sums = [[0.0f32; MATMUL_POSITIONS]; MATMUL_ROWS];
    for (r, sums_r) in sums.iter_mut().enumerate().take(R) {
        // SAFETY: row r's elements whole..cols are in bounds.
        let row_tail = unsafe {
            core::slice::from_raw_parts(w.add(r * row_bytes + whole * eb), (cols - whole) * eb)
        };
        for (p, sum) in sums_r.iter_mut().enumerate().take(P) {
            let x_tail = &x[p * cols + whole..(p + 1) * cols];
            *sum = tail_sum::<DT>(reduce_lanes(acc[0][r][p], acc[1][r][p]), row_tail, x_tail);
        }
    }
    sums
}

/// Positions [`matmul_quantized`] multiplies with one decoded block of a
/// group of rows.
const MATMUL_QUANT_POSITIONS: usize = 16;

/// [`eight_rows`] for `positions` positions at once: block after block,
/// the eight rows' levels and scales are decoded once and multiplied with every position's activations, so the
/// decoding is shared by up to sixteen positions. `sums[p][r]` continues
/// the sum of row `r` and position `p`, in the reference's order.
///
/// # Safety
/// As [`quad_products`], and FMA and F16C are available; `positions <= 16`;
/// every `xs[p]` (`p < positions`) holds the same number
/// `k <= CHUNK_BLOCKS` of blocks; for every row `r < 8`,
/// `first + r · row_bytes` is followed by `k` whole blocks.
#[inline(always)]
unsafe fn eight_rows_positions<const Q4: bool, const VNNI: bool>(
    sums: &mut [[f32; QUANT_ROWS]; MATMUL_QUANT_POSITIONS],
    positions: usize,
    first: *const u8,
    row_bytes: usize,
    xs: &[&[BlockQ8]; MATMUL_QUANT_POSITIONS],
    offsets: &[[i32; CHUNK_BLOCKS]; MATMUL_QUANT_POSITIONS],
) {
    let bb = block_bytes(Q4);
    for b in 0..xs[0].len() {
        // SAFETY: the caller's features; block b of each of the eight rows
        // is whole.
        let (unsigned, levels, dw) = unsafe {
            // Loops, not `array::from_fn` or `map`: a closure would not have
            // the kernel's features.
            // Each row's unsigned operand: Q4_0's nibbles; Q8_0's `w + 128`
            // with AVX-VNNI, else `|w|`, whose signs (from `levels`) go to
            // the activations (see `block_products`).
            let mut unsigned = [_mm256_setzero_si256(); QUANT_ROWS];
            let mut levels = unsigned;
            let block = first.add(b * bb);
            for (r, (u, l)) in unsigned.iter_mut().zip(&mut levels).enumerate() {
                let at = block.add(r * row_bytes);
                if Q4 {
                    *u = q4_0_nibbles(at);
                } else {
                    *l = q8_0_levels(at);
                    *u = if VNNI {
                        shifted_levels(*l)
                    } else {
                        _mm256_sign_epi8(*l, *l)
                    };
                }
            }
            (unsigned, levels, scales(block, row_bytes))
        };
        for (p, (s, x)) in sums.iter_mut().zip(xs).take(positions).enumerate() {
            let xb = &x[b];
            // SAFETY: the caller's features; `xb.qs` is 32 bytes; `s` is 8
            // floats.
            unsafe {
                let xq = _mm256_loadu_si256(xb.qs.as_ptr().cast::<__m256i>());
                let mut isums = [_mm256_setzero_si256(); QUANT_ROWS];
                for (r, isum) in isums.iter_mut().enumerate() {
                    *isum = if shifted::<Q4, VNNI>() {
                        quad_products::<VNNI>(unsigned[r], xq)
                    } else {
                        quad_products::<VNNI>(unsigned[r], _mm256_sign_epi8(xq, levels[r]))
                    };
                }
                let mut totals = transpose_sum(&isums);
                if shifted::<Q4, VNNI>() {
                    totals = _mm256_sub_epi32(totals, _mm256_set1_epi32(offsets[p][b]));
                }
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(xb.d));
                let v = _mm256_loadu_ps(s.as_ptr());
                let v = _mm256_add_ps(v, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(totals)));
                _mm256_storeu_ps(s.as_mut_ptr(), v);
            }
        }
    }
}

/// `out[t·rows + r] = q8_0_dot(row r, xq[t])` (or `q4_0_dot`) for `rows`
/// rows of `blocks` blocks and `n` positions of activations (`xq`:
/// `[n × blocks]`), equal bit for bit to the reference: each element is the
/// one-position kernel's lane for its row. A group of eight rows (a few KB)
/// stays in L1 while every position is multiplied with it.
///
/// `out`: `[n × rows]` (position-major).
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_quantized(a: QuantMatmul<'_>) {
    // SAFETY: the features are available.
    unsafe { quant_matmul_of::<false>(a) }
}

/// [`matvec_quantized`] for a matrix in the packed layout (`packed.rs`),
/// the same bits: see `avx2_packed.rs`.
///
/// # Safety
/// AVX2, FMA and F16C are available; `a.w` is in the packed layout.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec_packed(a: QuantRows<'_>) {
    // SAFETY: the features are available; forwarded precondition.
    unsafe { avx2_packed::matvec_packed_of::<false>(a) }
}

/// [`matmul_quantized`] for a matrix in the packed layout, the same bits:
/// see `avx2_packed.rs`.
///
/// # Safety
/// AVX2, FMA and F16C are available; `a.w` is in the packed layout.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_packed(a: QuantMatmul<'_>) {
    // SAFETY: the features are available; forwarded precondition.
    unsafe { avx2_packed::matmul_packed_of::<false>(a) }
}

/// [`matmul_quantized`] with the block products of [`quad_products`].
///
/// # Safety
/// As [`quad_products`], and FMA and F16C are available.
#[inline(always)]
pub(super) unsafe fn quant_matmul_of<const VNNI: bool>(a: QuantMatmul<'_>) {
    let (n, blocks) = (a.n, a.blocks);
    let rows = a.out.len() / n;
    // SAFETY: the caller's features; `QuantMatmul` holds rows · n outputs,
    // n positions of blocks ≥ 1 activation blocks and rows rows.
    unsafe {
        if a.q4 {
            quant_matmul_with::<true, VNNI>(a.out, rows, a.w, a.x, n, blocks)
        } else {
            quant_matmul_with::<false, VNNI>(a.out, rows, a.w, a.x, n, blocks)
        }
    }
}

/// [`quant_matmul_with`] with AVX2's products, as a function with AVX2's
/// features, for the AVX-512 kernels' last rows (an `inline(always)` body
/// would be copied into them).
///
/// # Safety
/// AVX2, FMA and F16C are available; the rest as [`quant_matmul_with`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quant_matmul<const Q4: bool>(
    out: &mut [f32],
    stride: usize,
    w: &[u8],
    xq: &[BlockQ8],
    n: usize,
    blocks: usize,
) {
    // SAFETY: the features are available; forwarded precondition.
    unsafe { quant_matmul_with::<Q4, false>(out, stride, w, xq, n, blocks) }
}

/// [`matmul_quantized`] for Q8_0 (`Q4` false) or Q4_0 rows, the results
/// of position `t` and row `r` at `out[t·stride + r]` (`stride ≥ rows`: the
/// AVX-512 kernel hands over the last rows of a wider output).
///
/// # Safety
/// As [`quad_products`], and FMA and F16C are available; `n > 0`,
/// `blocks > 0`, `xq.len() == n · blocks`,
/// `out.len() ≥ (n − 1) · stride + rows`, and
/// `w.len() == rows · blocks · block_bytes(Q4)`.
#[inline(always)]
pub(super) unsafe fn quant_matmul_with<const Q4: bool, const VNNI: bool>(
    out: &mut [f32],
    stride: usize,
    w: &[u8],
    xq: &[BlockQ8],
    n: usize,
    blocks: usize,
) {
    let bb = block_bytes(Q4);
    let row_bytes = blocks * bb;
    let rows = w.len() / row_bytes;
    let groups = rows / QUANT_ROWS;
    for t in 0..n {
        out[t * stride..][..rows].fill(0.0);
    }
    let mut offsets = [[0i32; CHUNK_BLOCKS]; MATMUL_QUANT_POSITIONS];
    for t0 in (0..n).step_by(MATMUL_QUANT_POSITIONS) {
        let positions = (n - t0).min(MATMUL_QUANT_POSITIONS);
        for c in (0..blocks).step_by(CHUNK_BLOCKS) {
            let stretch = (blocks - c).min(CHUNK_BLOCKS);
            let x_at = |t: usize| &xq[t * blocks + c..t * blocks + c + stretch];
            if shifted::<Q4, VNNI>() {
                for (p, o) in offsets.iter_mut().take(positions).enumerate() {
                    *o = block_offsets::<Q4>(x_at(t0 + p));
                }
            }
            let skip = c * bb;
            let xs: [&[BlockQ8]; MATMUL_QUANT_POSITIONS] =
                core::array::from_fn(|p| x_at(t0 + p.min(positions - 1)));
            for g in 0..groups {
                // sums[p][r]: position t0 + p, row 8g + r.
                let mut sums = [[0.0f32; QUANT_ROWS]; MATMUL_QUANT_POSITIONS];
                for (p, s) in sums.iter_mut().take(positions).enumerate() {
                    s.copy_from_slice(&out[(t0 + p) * stride + g * QUANT_ROWS..][..QUANT_ROWS]);
                }
                // SAFETY: the caller's features; rows 8g .. 8g + 8 each
                // hold `blocks` blocks, of which this stretch is
                // c .. c + stretch; each `xs[p]` holds `stretch` blocks.
                unsafe {
                    let first = w.as_ptr().add(g * QUANT_ROWS * row_bytes + skip);
                    eight_rows_positions::<Q4, VNNI>(
                        &mut sums, positions, first, row_bytes, &xs, &offsets,
                    );
                }
                for (p, s) in sums.iter().take(positions).enumerate() {
                    out[(t0 + p) * stride + g * QUANT_ROWS..][..QUANT_ROWS].copy_from_slice(s);
                }
            }
            for r in groups * QUANT_ROWS..rows {
                let row = &w[r * row_bytes + skip..r * row_bytes + skip + stretch * bb];
                for (p, o) in offsets.iter().take(positions).enumerate() {
                    let at = (t0 + p) * stride + r;
                    // SAFETY: the caller's features; the stretch holds
                    // exactly `stretch` blocks.
                    out[at] = unsafe { one_row::<Q4, VNNI>(out[at], row, x_at(t0 + p), o) };
                }
            }
        }
    }
}

const _: () = assert!(BLOCK_LEN == 32, "one __m256i per block of levels");
