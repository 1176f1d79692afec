//! AVX2+FMA matrix product for the trainer's shapes: a 6×16 register tile
//! (12 accumulators; per step of the sum, 6 broadcasts of A and 2 loads of B
//! feed 12 FMAs, so the FMA units, not the loads, set the pace).
//!
//! B is copied 16 columns at a time into a panel that stays in L1 while
//! every row of A passes over it: read in place, the rows of the trainer's
//! matrices lie 512 or 1408 bytes apart and a panel's lines would fall into
//! a few L1 sets and evict each other. A is read in place when its rows are
//! contiguous (activations); stored by columns (the transposed gradient in
//! `dyᵀ·x`) it is first copied into 6-row blocks, for the same reason.
//! In training the operands arrive cold from L3, so each tile prefetches
//! the next tile's rows of A and its own tile of C.
//!
//! The AVX-512 kernel (`avx512.rs`) shares this file's panels of B and
//! copies of A.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use super::{Layout, Mask};
use core::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of C per register tile.
const MR: usize = 6;
/// Columns of C per register tile (two 8-lane vectors).
pub(super) const NR: usize = 16;
/// Depth per pass: a panel of KC × NR floats is 16 KiB, half of L1.
pub(super) const KC: usize = 256;

/// A panel of B: `[KC][NR]`, zero past the last column.
#[repr(align(64))]
pub(super) struct Panel(pub(super) [f32; KC * NR]);

/// Copies reused by every call on a thread (attention makes thousands of
/// tiny products per step: no allocation or clearing per call).
pub(super) struct Scratch {
    /// The current panel of B.
    pub(super) panel: Box<Panel>,
    /// A copied into blocks of a tile's rows, `[m/MR][kc][MR]`.
    pub(super) a_blocks: Vec<f32>,
}

thread_local! {
    pub(super) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        panel: Box::new(Panel([0.0; KC * NR])),
        a_blocks: Vec::new(),
    });
}

/// One product's operands as raw views, and its sizes `m × k` times
/// `k × n`, as both kernels start from them (B comes as a [`Source`]).
pub(super) struct Operands {
    pub(super) a: Strided,
    pub(super) c: *mut f32,
    /// C's row stride.
    pub(super) ldc: usize,
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) n: usize,
}

/// The kernels' common start: the operands as raw views, or `None` when
/// the depth `k` is 0 and nothing is left to do (C zeroed unless
/// `accumulate`).
///
/// # Safety
/// As the kernels': every element the layouts address lies inside its
/// slice.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn operands(
    a: &[f32],
    la: Layout,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
) -> Option<Operands> {
    let (m, k, n) = (la.rows, la.cols, lc.cols);
    debug_assert!(lc.col_stride == 1 && lc.rows == m);
    let a = Strided::of(a, la);
    let (c, ldc) = (c.as_mut_ptr(), lc.row_stride);
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i of c holds n elements (span checked).
                unsafe { core::ptr::write_bytes(c.add(i * ldc), 0, n) };
            }
        }
        return None;
    }
    Some(Operands { a, c, ldc, m, k, n })
}

/// Where one operand lies: element (r, c) at `ptr + r·row_stride + c·col_stride`.
#[derive(Clone, Copy)]
pub(super) struct Strided {
    pub(super) ptr: *const f32,
    pub(super) row_stride: usize,
    pub(super) col_stride: usize,
}

impl Strided {
    /// The view of `x` that `layout` describes.
    pub(super) fn of(x: &[f32], layout: Layout) -> Strided {
        Strided {
            ptr: x.as_ptr(),
            row_stride: layout.row_stride,
            col_stride: layout.col_stride,
        }
    }

    /// Pointer to element (r, c).
    ///
    /// # Safety
    /// (r, c) must lie inside the matrix the caller bounds-checked.
    #[inline(always)]
    pub(super) unsafe fn at(self, r: usize, c: usize) -> *const f32 {
        // SAFETY: in bounds by this function's contract.
        unsafe { self.ptr.add(r * self.row_stride + c * self.col_stride) }
    }
}

/// Where a product's B comes from.
#[derive(Clone, Copy)]
pub(super) enum Source {
    /// Read in place: each panel is copied as the product reaches it.
    InPlace(Strided),
    /// Copied whole beforehand by [`pack_b_pass`] (`panels` panels per
    /// pass), shared by the products that read it.
    Packed { rows: *const f32, panels: usize },
}

impl Source {
    /// Whether B was copied beforehand.
    pub(super) fn is_packed(self) -> bool {
        matches!(self, Source::Packed { .. })
    }

    /// The panel of B's rows k0..k0+kc, columns j0..j0+cols as the tile
    /// reads it (`[kc][NR]`, zeros past `cols`): copied into `panel` when B
    /// is read in place.
    ///
    /// # Safety
    /// AVX2; those rows and columns lie inside B (and inside the copy,
    /// which holds every pass and panel of B).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel(
        self,
        panel: &mut Panel,
        k0: usize,
        kc: usize,
        j0: usize,
        cols: usize,
    ) -> *const f32 {
        match self {
            Source::InPlace(b) => {
                // SAFETY: forwarded contract; the panel holds KC ≥ kc rows.
                unsafe { pack_b(panel.0.as_mut_ptr(), b, k0, kc, j0, cols) };
                panel.0.as_ptr()
            }
            // SAFETY: the copy's pass from k0 holds `panels` panels of kc rows.
            Source::Packed { rows, panels } => unsafe {
                rows.add((k0 * panels + (j0 / NR) * kc) * NR)
            },
        }
    }
}

/// `c = a·b + (c if accumulate)`; `a: m×k`, `b: k×n`, `c: m×n`, c's columns
/// contiguous (`lc.col_stride == 1`), skipping the tiles and depths `mask`
/// allows.
///
/// # Safety
/// The CPU supports AVX2 and FMA; every element the layouts address lies
/// inside its slice (the caller checked the spans); `c` aliases neither input.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sgemm(
    a: &[f32],
    la: Layout,
    b: Source,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
    mask: Mask,
) {
    // SAFETY: the spans were checked (this function's precondition).
    let operands = unsafe { operands(a, la, c, lc, accumulate) };
    let Some(Operands { a, c, ldc, m, k, n }) = operands else {
        return;
    };
    let copy_a = la.col_stride != 1;
    SCRATCH.with_borrow_mut(
        |Scratch {
             panel,
             a_blocks: blocks,
         }| {
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                let acc = accumulate || k0 > 0;
                if copy_a {
                    // SAFETY: rows 0..m, columns k0..k0+kc are inside a.
                    unsafe { pack_a::<MR>(blocks, a, m, k0, kc) };
                }
                for j0 in (0..n).step_by(NR) {
                    let cols = NR.min(n - j0);
                    // SAFETY: rows k0..k0+kc, columns j0..j0+cols are inside b.
                    let panel = unsafe { b.panel(panel, k0, kc, j0, cols) };
                    for i0 in (0..m).step_by(MR) {
                        let rows = MR.min(m - i0);
                        if !mask.wants(i0, rows, j0) {
                            continue;
                        }
                        // A tile summing no depth still writes C (zeros, or C).
                        let (start, end) = mask.depth(i0, rows, k0, kc);
                        // A's block for rows i0.., depth from `start`, in
                        // place or copied.
                        let (a0, rs, cs) = if copy_a {
                            (blocks[i0 * kc + start * MR..].as_ptr(), 1, MR)
                        } else {
                            // (i0, k0 + start): inside a, or just past the
                            // pass when the tile sums nothing (then unread).
                            let at = (k0 + start) * a.col_stride + i0 * a.row_stride;
                            (a.ptr.wrapping_add(at), a.row_stride, a.col_stride)
                        };
                        // The next tile's rows of A, for prefetching: the
                        // next 6 rows, or the first 6 for the next panel.
                        let next = if i0 + MR < m { i0 + MR } else { 0 };
                        let tile = Tile {
                            a: a0,
                            next_a: a.ptr.wrapping_add(next * a.row_stride + k0 * a.col_stride),
                            prefetch_a: !copy_a,
                            rs,
                            cs,
                            b: panel.wrapping_add(start * NR),
                            c: c.wrapping_add(i0 * ldc + j0),
                            ldc,
                            kc: end - start,
                            cols,
                            acc,
                        };
                        // SAFETY: the tile's rows and columns lie inside A (or
                        // its copy), the panel and c.
                        unsafe { tile.run(rows) };
                    }
                }
            }
        },
    );
}

/// Copies B's rows k0..k0+kc, columns j0..j0+cols to `out` as `[kc][NR]`,
/// zeros past `cols` (so the tile loads whole vectors).
///
/// # Safety
/// AVX2; those rows and columns lie inside b; `out` is 32-byte aligned and
/// holds kc·NR floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_b(
    out: *mut f32,
    b: Strided,
    k0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
) {
    // SAFETY: reads stay inside rows k0..k0+kc, columns j0..j0+cols of b;
    // writes inside the panel's first kc rows.
    unsafe {
        if cols == NR && b.col_stride == 1 {
            // Rows of B are contiguous: two vector copies per row, and a
            // prefetch of the line the next panel copies from this row.
            for p in 0..kc {
                let row = b.at(k0 + p, j0);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR) as *const i8);
                _mm256_store_ps(out.add(p * NR), _mm256_loadu_ps(row));
                _mm256_store_ps(out.add(p * NR + 8), _mm256_loadu_ps(row.add(8)));
            }
        } else if cols == NR && b.row_stride == 1 && kc.is_multiple_of(8) {
            // B is a transposed row-major matrix (Wᵀ): transpose 8×8 blocks.
            for p in (0..kc).step_by(8) {
                for half in [0, 8] {
                    let mut v = [_mm256_setzero_ps(); 8];
                    for (j, v) in v.iter_mut().enumerate() {
                        *v = _mm256_loadu_ps(b.at(k0 + p, j0 + half + j));
                    }
                    let t = transpose8(v);
                    for (i, t) in t.into_iter().enumerate() {
                        _mm256_store_ps(out.add((p + i) * NR + half), t);
                    }
                }
            }
        } else {
            for p in 0..kc {
                for j in 0..NR {
                    *out.add(p * NR + j) = if j < cols { *b.at(k0 + p, j0 + j) } else { 0.0 };
                }
            }
        }
    }
}

/// Copies B's rows k0..k0+kc (one pass) to `out` as the panels of
/// [`Source::Packed`], side by side: `[n/NR][kc][NR]`.
///
/// # Safety
/// AVX2; rows k0..k0+kc, columns 0..n lie inside b; `out` is 32-byte
/// aligned and holds `n.div_ceil(NR)·kc·NR` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_b_pass(out: *mut f32, b: Strided, k0: usize, kc: usize, n: usize) {
    for j0 in (0..n).step_by(NR) {
        // SAFETY: panel j0/NR of the pass lies inside `out`; its rows and
        // columns inside b.
        unsafe { pack_b(out.add(j0 * kc), b, k0, kc, j0, NR.min(n - j0)) };
    }
}

/// The transpose of the 8×8 matrix whose rows are `r`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Makes `blocks` hold at least `len` floats, keeping what it held: the
/// copies of A write every element a tile reads (a tile at A's last rows
/// reads only those rows, never the rest of its block), so clearing them
/// first, as much work as the copy, bought nothing.
pub(super) fn grow(blocks: &mut Vec<f32>, len: usize) {
    if blocks.len() < len {
        blocks.resize(len, 0.0);
    }
}

/// Copies A's rows 0..m, columns k0..k0+kc into `blocks` as
/// `[m/MR][kc][MR]` (MR: the tile's rows); the block rows past row m keep
/// old values (see [`grow`]).
///
/// # Safety
/// Those rows and columns lie inside a.
pub(super) unsafe fn pack_a<const MR: usize>(
    blocks: &mut Vec<f32>,
    a: Strided,
    m: usize,
    k0: usize,
    kc: usize,
) {
    let whole = m - m % MR;
    grow(blocks, m.div_ceil(MR) * MR * kc);
    // A stored by columns (dyᵀ): each column is one contiguous run, read
    // once, front to back, and dealt out MR floats per block; other
    // layouts, and the rows past the last whole block, one element at a time.
    let by_columns = a.row_stride == 1;
    let first_single = if by_columns { whole } else { 0 };
    for p in 0..kc {
        if by_columns {
            // SAFETY: rows 0..m of column k0+p are inside a.
            let col = unsafe { core::slice::from_raw_parts(a.at(0, k0 + p), m) };
            for (i0, chunk) in (0..whole).step_by(MR).zip(col.chunks_exact(MR)) {
                blocks[i0 * kc + p * MR..][..MR].copy_from_slice(chunk);
            }
        }
        for i in first_single..m {
            // SAFETY: (i, k0+p) is inside a by the contract.
            blocks[(i - i % MR) * kc + p * MR + i % MR] = unsafe { *a.at(i, k0 + p) };
        }
    }
}

/// One register tile's work: `C[rows × cols] = A[rows × kc]·B[kc × cols]
/// (+ C if acc)`, with A element (r, p) at `a + r·rs + p·cs`, B row p at
/// `b + p·NR` (a packed panel, whole vectors) and C row r at `c + r·ldc`.
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    /// Where the next tile's A starts (a hint: never dereferenced).
    next_a: *const f32,
    /// Prefetch the next tile's rows of A (read in place, rows contiguous):
    /// activations arrive cold from L3, and 6 short row streams do not wake
    /// the hardware prefetcher in time.
    prefetch_a: bool,
    rs: usize,
    cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    kc: usize,
    cols: usize,
    acc: bool,
}

impl Tile {
    /// Runs the kernel compiled for `rows` (1..=6) rows.
    ///
    /// # Safety
    /// As [`Tile::rows`].
    #[inline(always)]
    unsafe fn run(self, rows: usize) {
        // SAFETY: forwarded contract.
        unsafe {
            match rows {
                6 => self.rows::<6>(),
                5 => self.rows::<5>(),
                4 => self.rows::<4>(),
                3 => self.rows::<3>(),
                2 => self.rows::<2>(),
                _ => self.rows::<1>(),
            }
        }
    }

    /// # Safety
    /// AVX2+FMA; A's first R rows and kc columns, the panel's kc rows, and
    /// C's first R rows and `cols` columns lie in bounds.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const R: usize>(self) {
        let Tile {
            a,
            next_a,
            prefetch_a,
            rs,
            cs,
            b,
            c,
            ldc,
            kc,
            cols,
            acc,
        } = self;
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        // SAFETY: all pointers stay inside the tile the contract guarantees;
        // the masked loads and stores touch only C's first `cols` columns.
        // Prefetch addresses are hints, formed with wrapping arithmetic.
        unsafe {
            // C is read (acc) or written only after the whole sum: fetch it now.
            for r in 0..R {
                let row = c.wrapping_add(r * ldc);
                _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR - 1) as *const i8);
            }
            macro_rules! step {
                ($p:expr) => {{
                    let p = $p;
                    let b0 = _mm256_load_ps(b.add(p * NR));
                    let b1 = _mm256_load_ps(b.add(p * NR + 8));
                    for r in 0..R {
                        let x = _mm256_broadcast_ss(&*a.add(r * rs + p * cs));
                        lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                        hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
                    }
                }};
            }
            // 16 steps use one cache line of each row of A: per 16 steps,
            // one prefetch per row of the next tile.
            let whole = kc - kc % 16;
            for p0 in (0..whole).step_by(16) {
                if prefetch_a {
                    for r in 0..R {
                        let line = next_a.wrapping_add(r * rs + p0);
                        _mm_prefetch::<_MM_HINT_T0>(line as *const i8);
                    }
                }
                for p in p0..p0 + 16 {
                    step!(p);
                }
            }
            for p in whole..kc {
                step!(p);
            }
            if cols == NR {
                for r in 0..R {
                    let row = c.add(r * ldc);
                    if acc {
                        lo[r] = _mm256_add_ps(lo[r], _mm256_loadu_ps(row));
                        hi[r] = _mm256_add_ps(hi[r], _mm256_loadu_ps(row.add(8)));
                    }
                    _mm256_storeu_ps(row, lo[r]);
                    _mm256_storeu_ps(row.add(8), hi[r]);
                }
                return;
            }
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32), lanes);
            let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32 - 8), lanes);
            for r in 0..R {
                let row = c.add(r * ldc);
                // wrapping: with cols ≤ 8 the high half may lie past the end
                // of c (its mask is empty, so nothing is touched there).
                let high = row.wrapping_add(8);
                if acc {
                    lo[r] = _mm256_add_ps(lo[r], _mm256_maskload_ps(row, m0));
                    hi[r] = _mm256_add_ps(hi[r], _mm256_maskload_ps(high, m1));
                }
                _mm256_maskstore_ps(row, m0, lo[r]);
                _mm256_maskstore_ps(high, m1, hi[r]);
            }
        }
    }
}
