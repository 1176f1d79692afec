//! AVX-512 matrix product for the trainer's shapes: a 16×16 register tile,
//! one 16-lane vector per row of C (16 accumulators; per step of the sum,
//! one load of B and 16 broadcasts of A, folded into the FMAs, feed 16
//! FMAs).
//!
//! On Zen 4 a 512-bit FMA runs as two 256-bit halves, so the gain over the
//! AVX2 kernel's 6×16 tile is not width: each load of B serves 16 rows
//! instead of 6, and a step issues a quarter of the instructions. Rows come
//! 16 at a time, which divides every row count the trainer's products have.
//!
//! A is always copied, 16 rows at a time, into blocks the tile reads front
//! to back: read in place, 16 rows 4 KiB apart (the hidden layer's 1024
//! floats) fall into one 8-way L1 set and evict each other at every step.
//! The rest is the AVX2 kernel's (`avx2.rs`): the same 16-wide, 256-deep
//! panels of B, and the same order of every sum (the depth in order inside
//! a pass, then C plus the pass), so both kernels give the same bits.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use super::avx2::{
    grow, operands, pack_a, transpose8, Operands, Scratch, Source, Strided, KC, NR, SCRATCH,
};
use super::{Layout, Mask};
use core::arch::x86_64::*;

/// Rows of C per register tile.
const MR: usize = 16;

/// `c = a·b + (c if accumulate)`; `a: m×k`, `b: k×n`, `c: m×n`, c's columns
/// contiguous (`lc.col_stride == 1`), skipping the tiles and depths `mask`
/// allows.
///
/// # Safety
/// The CPU supports AVX-512F, AVX2 and FMA; every element the layouts
/// address lies inside its slice (the caller checked the spans); `c`
/// aliases neither input.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx2,fma")]
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
    SCRATCH.with_borrow_mut(
        |Scratch {
             panel,
             a_blocks: blocks,
         }| {
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                let acc = accumulate || k0 > 0;
                // SAFETY: the CPU has AVX2; rows 0..m, columns k0..k0+kc
                // are inside a.
                unsafe {
                    if a.col_stride == 1 {
                        pack_a_rows(blocks, a, m, k0, kc)
                    } else {
                        pack_a::<MR>(blocks, a, m, k0, kc)
                    }
                };
                for j0 in (0..n).step_by(NR) {
                    let cols = NR.min(n - j0);
                    // SAFETY: the CPU has AVX2; rows k0..k0+kc, columns
                    // j0..j0+cols are inside b.
                    let panel = unsafe { b.panel(panel, k0, kc, j0, cols) };
                    // A copy of B made beforehand arrives cold: its next
                    // panel (the next kc rows of the copy) is fetched a
                    // share per tile while this one runs.
                    let ahead = b.is_packed().then(|| panel.wrapping_add(kc * NR));
                    let per_tile = kc.div_ceil(m.div_ceil(MR));
                    for i0 in (0..m).step_by(MR) {
                        let rows = MR.min(m - i0);
                        if let Some(next) = ahead {
                            let first = i0 / MR * per_tile;
                            for line in first..(first + per_tile).min(kc) {
                                let at = next.wrapping_add(line * NR) as *const i8;
                                _mm_prefetch::<_MM_HINT_T0>(at);
                            }
                        }
                        if !mask.wants(i0, rows, j0) {
                            continue;
                        }
                        // A tile summing no depth still writes C (zeros, or C).
                        let (start, end) = mask.depth(i0, rows, k0, kc);
                        let tile = Tile {
                            a: blocks[i0 * kc + start * MR..].as_ptr(),
                            b: panel.wrapping_add(start * NR),
                            c: c.wrapping_add(i0 * ldc + j0),
                            ldc,
                            kc: end - start,
                            cols,
                            acc,
                        };
                        // SAFETY: the tile's rows and columns lie inside
                        // A's copy, the panel and c; the CPU has AVX-512F.
                        unsafe { tile.run(rows) };
                    }
                }
            }
        },
    );
}

/// [`pack_a`] for A with contiguous rows: 8×8 blocks transposed in
/// registers, element by element only at the edges.
///
/// # Safety
/// AVX2; rows 0..m, columns k0..k0+kc lie inside a, whose `col_stride` is 1.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pack_a_rows(blocks: &mut Vec<f32>, a: Strided, m: usize, k0: usize, kc: usize) {
    grow(blocks, m.div_ceil(MR) * MR * kc);
    let out = blocks.as_mut_ptr();
    // Element (r, p) goes to `block(r) + p·MR + r % MR`.
    let at = |r: usize, p: usize| (r - r % MR) * kc + p * MR + r % MR;
    let (whole_rows, whole_depth) = (m - m % 8, kc - kc % 8);
    // SAFETY: reads stay inside rows 0..m, columns k0..k0+kc of a; writes
    // inside `blocks`, sized above for every (r, p) with r < m, p < kc.
    unsafe {
        for r0 in (0..whole_rows).step_by(8) {
            for p0 in (0..whole_depth).step_by(8) {
                let mut v = [_mm256_setzero_ps(); 8];
                for (j, v) in v.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(a.at(r0 + j, k0 + p0));
                }
                for (i, t) in transpose8(v).into_iter().enumerate() {
                    _mm256_storeu_ps(out.add(at(r0, p0 + i)), t);
                }
            }
            for p in whole_depth..kc {
                for r in r0..r0 + 8 {
                    *out.add(at(r, p)) = *a.at(r, k0 + p);
                }
            }
        }
        for r in whole_rows..m {
            for p in 0..kc {
                *out.add(at(r, p)) = *a.at(r, k0 + p);
            }
        }
    }
}

/// One register tile's work: `C[rows × cols] = A[rows × kc]·B[kc × cols]
/// (+ C if acc)`, with A element (r, p) at `a + p·MR + r` (a block of A's
/// copy), B row p at `b + p·NR` (a packed panel, whole vectors) and C row r
/// at `c + r·ldc`.
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    kc: usize,
    cols: usize,
    acc: bool,
}

impl Tile {
    /// Runs the kernel compiled for `rows` (1..=16) rows: 16 but at the
    /// edges of shapes the trainer does not use.
    ///
    /// # Safety
    /// As [`Tile::rows`].
    #[inline(always)]
    unsafe fn run(self, rows: usize) {
        // SAFETY: forwarded contract.
        unsafe {
            match rows {
                16 => self.rows::<16>(),
                12..=15 => self.split::<12>(rows),
                8..=11 => self.split::<8>(rows),
                4..=7 => self.split::<4>(rows),
                3 => self.rows::<3>(),
                2 => self.rows::<2>(),
                _ => self.rows::<1>(),
            }
        }
    }

    /// The first R rows, then the rest (fewer than 4) by [`Tile::run`]:
    /// every element's sum runs in the same order whichever tile holds it.
    ///
    /// # Safety
    /// As [`Tile::rows`], for `rows` rows.
    #[inline(always)]
    unsafe fn split<const R: usize>(self, rows: usize) {
        // SAFETY: rows R.. of the tile are rows of the caller's tile.
        unsafe {
            self.rows::<R>();
            if rows > R {
                let rest = Tile {
                    a: self.a.wrapping_add(R),
                    c: self.c.wrapping_add(R * self.ldc),
                    ..self
                };
                rest.run(rows - R);
            }
        }
    }

    /// # Safety
    /// AVX-512F; the block's first R rows and kc steps, the panel's kc rows,
    /// and C's first R rows and `cols` columns lie in bounds.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn rows<const R: usize>(self) {
        let Tile {
            a,
            b,
            c,
            ldc,
            kc,
            cols,
            acc,
        } = self;
        let mut sums = [_mm512_setzero_ps(); R];
        // SAFETY: all pointers stay inside the tile the contract guarantees;
        // the masked loads and stores touch only C's first `cols` columns.
        // Prefetch addresses are hints.
        unsafe {
            // C is read (acc) or written only after the whole sum: fetch it now.
            for r in 0..R {
                _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(r * ldc) as *const i8);
            }
            macro_rules! step {
                ($p:expr) => {{
                    let p = $p;
                    let row_of_b = _mm512_load_ps(b.add(p * NR));
                    for (r, sum) in sums.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*a.add(p * MR + r));
                        *sum = _mm512_fmadd_ps(x, row_of_b, *sum);
                    }
                }};
            }
            for p in 0..kc {
                step!(p);
            }
            // Columns past `cols` are masked off (`cols` ≤ 16).
            let mask: __mmask16 = if cols >= NR { !0 } else { (1u16 << cols) - 1 };
            for (r, sum) in sums.into_iter().enumerate() {
                let row = c.add(r * ldc);
                let sum = if acc {
                    _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, row))
                } else {
                    sum
                };
                _mm512_mask_storeu_ps(row, mask, sum);
            }
        }
    }
}
