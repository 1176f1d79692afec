//! The trainer's matrix product, and the only `unsafe` in the trainer.
//!
//! `matrixmultiply`'s sgemm (runtime-dispatched AVX2/FMA kernels) does the
//! work by default. Beside it sits a blocked kernel written for the trainer's
//! shapes (x86-64 with AVX2 and FMA, opt-in with `KINGLET_GEMM=avx2`, see
//! [`backend`]): B in 16-column panels (read in place when its rows are
//! contiguous, else packed), A packed in 6-row panels, K in equal blocks of
//! at most 256, and a 6×16 micro-kernel keeping its 12 ymm accumulators in
//! registers. Every call goes through [`sgemm`], which checks that each
//! strided matrix fits inside its slice.
//!
//! Each element of C is computed in an order that depends only on the
//! shapes, so the result does not depend on which thread computes it.

/// A strided view description: `rows × cols` elements, element (r, c) at
/// `r * row_stride + c * col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows, in elements.
    pub row_stride: usize,
    /// Distance between columns, in elements.
    pub col_stride: usize,
}

impl Layout {
    /// Row-major, contiguous rows.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Layout {
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major `cols × rows` matrix, viewed in place.
    pub fn transposed(rows: usize, cols: usize) -> Self {
        Layout {
            rows,
            cols,
            row_stride: 1,
            col_stride: rows,
        }
    }

    /// Smallest slice length that holds every element.
    fn span(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }

    /// Element (r, c) of `m`.
    #[inline(always)]
    fn at(&self, m: &[f32], r: usize, c: usize) -> f32 {
        m[r * self.row_stride + c * self.col_stride]
    }
}

/// Which implementation [`sgemm`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The AVX2+FMA blocked kernel of this file.
    Avx2,
    /// `matrixmultiply`'s sgemm.
    Portable,
}

/// The implementation in use (decided once): `matrixmultiply`, unless the
/// environment variable `KINGLET_GEMM=avx2` asks for the blocked kernel and
/// the CPU has AVX2 and FMA. End to end on the seed preset (Zen 3, load
/// ≈ 1.5) the blocked kernel was slower — 5,900–6,500 against 7,650–7,700
/// tokens/s on one thread — although it matched matrixmultiply on the bare
/// products (62 GFLOP/s both), so it stays opt-in, for further tuning.
pub fn backend() -> Backend {
    use std::sync::OnceLock;
    static CHOICE: OnceLock<Backend> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let wanted = std::env::var_os("KINGLET_GEMM").is_some_and(|v| v == "avx2");
        if wanted && avx2_available() {
            Backend::Avx2
        } else {
            Backend::Portable
        }
    })
}

/// Whether this CPU can run the blocked kernel.
fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return true;
    }
    false
}

/// `c = a · b + (c if accumulate)`, with `a: m×k`, `b: k×n`, `c: m×n`.
///
/// Panics if the layouts disagree or a matrix does not fit its slice: that is
/// a bug in the caller (all shapes here come from the model config), never a
/// reaction to outside input.
pub fn sgemm(
    a: &[f32],
    la: Layout,
    b: &[f32],
    lb: Layout,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
) {
    sgemm_with(backend(), a, la, b, lb, c, lc, accumulate);
}

/// [`sgemm`] with a chosen implementation (tests and benchmarks compare them).
/// [`Backend::Avx2`] falls back to the portable one where the CPU lacks it.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    backend: Backend,
    a: &[f32],
    la: Layout,
    b: &[f32],
    lb: Layout,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
) {
    assert!(
        la.cols == lb.rows && la.rows == lc.rows && lb.cols == lc.cols,
        "gemm shapes"
    );
    assert!(
        la.span() <= a.len() && lb.span() <= b.len() && lc.span() <= c.len(),
        "gemm bounds"
    );
    if lc.rows == 0 || lc.cols == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Avx2 && avx2_available() && lc.col_stride == 1 {
        blocked::sgemm(a, la, b, lb, c, lc, accumulate);
        return;
    }
    let _ = backend;
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the asserts above guarantee that every element the strides
    // address lies inside `a`, `b` and `c`; `c` is borrowed mutably and so
    // does not alias `a` or `b`.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            la.rows,
            la.cols,
            lb.cols,
            1.0,
            a.as_ptr(),
            la.row_stride as isize,
            la.col_stride as isize,
            b.as_ptr(),
            lb.row_stride as isize,
            lb.col_stride as isize,
            beta,
            c.as_mut_ptr(),
            lc.row_stride as isize,
            lc.col_stride as isize,
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod blocked {
    use super::Layout;
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    /// Rows of A per micro-tile.
    const MR: usize = 6;
    /// Columns of B per micro-tile (two ymm registers).
    const NR: usize = 16;
    /// Depth per block: a packed B panel (KC × NR floats = 16 KiB) stays in L1.
    const KC: usize = 256;

    thread_local! {
        /// Packing buffers, reused by every call on this thread: (A panels, B panels).
        static PACKED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// `c = a·b (+ c)`; c row-major (`col_stride == 1`). Shapes and bounds
    /// were checked by the caller.
    pub(super) fn sgemm(
        a: &[f32],
        la: Layout,
        b: &[f32],
        lb: Layout,
        c: &mut [f32],
        lc: Layout,
        accumulate: bool,
    ) {
        let (m, k, n) = (la.rows, la.cols, lb.cols);
        if k == 0 {
            if !accumulate {
                for row in 0..m {
                    c[row * lc.row_stride..][..n].fill(0.0);
                }
            }
            return;
        }
        let n_panels = n.div_ceil(NR);
        PACKED.with(|cell| {
            let mut packed = cell.borrow_mut();
            let (pa, pb) = &mut *packed;
            // K in equal blocks of at most KC (352 → 2 × 176, not 256 + 96).
            let depth = k.div_ceil(k.div_ceil(KC));
            // pa: [m_panels, depth, MR]; pb: [n_panels, depth, NR]
            pa.resize(m.div_ceil(MR) * depth * MR, 0.0);
            // Start the B panels on a cache line, so no 32-byte load of a
            // panel row straddles two lines.
            pb.resize(n_panels * depth * NR + NR, 0.0);
            let line = pb.as_ptr().align_offset(64).min(NR);
            let pb = &mut pb[line..];
            let mut k0 = 0;
            while k0 < k {
                let kc = (k - k0).min(depth);
                // Full panels of a B with contiguous rows are read in place
                // (their kc rows of 16 floats stay in L1 while every row
                // panel of A passes); the rest is packed.
                let b_in_place = lb.col_stride == 1;
                pack_b(pb, b, lb, k0, kc, b_in_place);
                for ip in 0..m.div_ceil(MR) {
                    let rows = (m - ip * MR).min(MR);
                    let panel = &mut pa[ip * kc * MR..][..kc * MR];
                    pack_rows(panel, a, la, ip * MR, rows, k0, kc);
                }
                let add = accumulate || k0 > 0;
                for jp in 0..n_panels {
                    let cols = (n - jp * NR).min(NR);
                    let (b_view, b_first, ldb) = if b_in_place && cols == NR {
                        (b, k0 * lb.row_stride + jp * NR, lb.row_stride)
                    } else {
                        (&pb[..], jp * kc * NR, NR)
                    };
                    let bp = &b_view[b_first..][..(kc - 1) * ldb + NR];
                    for ip in 0..m.div_ceil(MR) {
                        let first = ip * MR * lc.row_stride + jp * NR;
                        let rows = (m - ip * MR).min(MR);
                        let ap = &pa[ip * kc * MR..][..kc * MR];
                        if rows == MR && cols == NR {
                            // SAFETY: the tile's MR rows of NR elements, at
                            // `first + r·row_stride`, lie inside `c` (C is
                            // m×n, row-major, its span checked by the
                            // caller); `ap` holds kc·MR floats and `bp`
                            // (kc-1)·ldb + NR.
                            #[allow(unsafe_code)]
                            unsafe {
                                let tile = c[first..].as_mut_ptr();
                                kernel(kc, ap, bp, ldb, tile, lc.row_stride, add);
                            }
                        } else {
                            // A partial tile: compute a full one into a
                            // scratch tile and keep its valid corner.
                            let mut tile = [0.0f32; MR * NR];
                            // SAFETY: as above; `tile` holds MR rows of NR
                            // floats at stride NR.
                            #[allow(unsafe_code)]
                            unsafe {
                                kernel(kc, ap, bp, ldb, tile.as_mut_ptr(), NR, false);
                            }
                            for r in 0..rows {
                                let out = &mut c[first + r * lc.row_stride..][..cols];
                                for (o, &t) in out.iter_mut().zip(&tile[r * NR..][..cols]) {
                                    *o = if add { *o + t } else { t };
                                }
                            }
                        }
                    }
                }
                k0 += kc;
            }
        });
    }

    /// Rows `first..first+rows` (at most MR) of A's columns `k0..k0+kc`,
    /// k-major and zero-padded to MR rows. panel: [kc, MR]
    fn pack_rows(
        panel: &mut [f32],
        a: &[f32],
        la: Layout,
        first: usize,
        rows: usize,
        k0: usize,
        kc: usize,
    ) {
        if la.col_stride == 1 && rows == MR {
            // Rows of A are contiguous: read each once, scatter into the panel.
            for r in 0..MR {
                let src = &a[(first + r) * la.row_stride + k0..][..kc];
                for (dst, &v) in panel.chunks_exact_mut(MR).zip(src) {
                    dst[r] = v;
                }
            }
            return;
        }
        for (kk, dst) in panel[..kc * MR].chunks_exact_mut(MR).enumerate() {
            if la.row_stride == 1 && rows == MR {
                // Columns of A are contiguous (A = dyᵀ): MR floats at once.
                let at = first + (k0 + kk) * la.col_stride;
                dst.copy_from_slice(&a[at..at + MR]);
            } else {
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = if r < rows {
                        la.at(a, first + r, k0 + kk)
                    } else {
                        0.0
                    };
                }
            }
        }
    }

    /// B's rows `k0..k0+kc` into panels of NR columns, k-major, zero-padded.
    /// pb: [n_panels, kc, NR]
    /// With `skip_full`, only the last, partial panel.
    fn pack_b(pb: &mut [f32], b: &[f32], lb: Layout, k0: usize, kc: usize, skip_full: bool) {
        let n = lb.cols;
        for (jp, panel) in pb
            .chunks_exact_mut(kc * NR)
            .take(n.div_ceil(NR))
            .enumerate()
        {
            let cols = (n - jp * NR).min(NR);
            if skip_full && cols == NR {
                continue;
            }
            if lb.col_stride == 1 {
                // Rows of B are contiguous: copy NR at a time.
                for (kk, dst) in panel.chunks_exact_mut(NR).enumerate() {
                    let src = &b[(k0 + kk) * lb.row_stride + jp * NR..];
                    if cols == NR {
                        // A fixed-size copy (inlined; a variable one calls memmove).
                        dst.copy_from_slice(&src[..NR]);
                    } else {
                        dst[..cols].copy_from_slice(&src[..cols]);
                        dst[cols..].fill(0.0);
                    }
                }
            } else if lb.row_stride == 1 {
                // Columns of B are contiguous (B = Wᵀ): read each column
                // once, scatter into the L1-resident panel.
                for j in 0..NR {
                    if j < cols {
                        let src = &b[(jp * NR + j) * lb.col_stride + k0..][..kc];
                        for (dst, &v) in panel.chunks_exact_mut(NR).zip(src) {
                            dst[j] = v;
                        }
                    } else {
                        panel.chunks_exact_mut(NR).for_each(|dst| dst[j] = 0.0);
                    }
                }
            } else {
                for (kk, dst) in panel.chunks_exact_mut(NR).enumerate() {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = if j < cols {
                            lb.at(b, k0 + kk, jp * NR + j)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }

    /// The MR×NR tile at `c` (rows `ldc` apart) becomes `ap·bp (+ tile if add)`.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `ap` holds `kc·MR` floats and `bp`
    /// `(kc-1)·ldb + NR` (row k of the B panel at `k·ldb`); `c + r·ldc + j`
    /// is valid for writes for r < MR, j < NR.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel(
        kc: usize,
        ap: &[f32],
        bp: &[f32],
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        debug_assert!(ap.len() >= kc * MR && bp.len() >= (kc - 1) * ldb + NR);
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        // Fixed offsets from two pointers: no chain of address arithmetic
        // inside the loop.
        let (mut pa, mut pb) = (ap.as_ptr(), bp.as_ptr());
        for _ in 0..kc {
            // SAFETY: k < kc, so the loads read inside the panels (see # Safety).
            unsafe {
                let b0 = _mm256_loadu_ps(pb);
                let b1 = _mm256_loadu_ps(pb.add(8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*pa.add(r));
                    acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                }
                pa = pa.add(MR);
                pb = pb.add(ldb);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: row r < MR of the tile, NR floats (see # Safety).
            unsafe {
                let row = c.add(r * ldc);
                let (mut lo, mut hi) = (acc[0], acc[1]);
                if add {
                    lo = _mm256_add_ps(_mm256_loadu_ps(row), lo);
                    hi = _mm256_add_ps(_mm256_loadu_ps(row.add(8)), hi);
                }
                _mm256_storeu_ps(row, lo);
                _mm256_storeu_ps(row.add(8), hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], la: Layout, b: &[f32], lb: Layout, n: usize) -> Vec<f64> {
        let mut c = vec![0.0f64; la.rows * n];
        for i in 0..la.rows {
            for j in 0..n {
                c[i * n + j] = (0..la.cols)
                    .map(|p| la.at(a, i, p) as f64 * lb.at(b, p, j) as f64)
                    .sum();
            }
        }
        c
    }

    /// Both backends against an f64 product, on awkward shapes (partial
    /// tiles, several K blocks) and every operand layout the layers use.
    #[test]
    fn backends_match_a_naive_product() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 17),
            (7, 31, 15),
            (13, 300, 33),
            (64, 513, 65),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| next()).collect();
            for (la, lb) in [
                (Layout::row_major(m, k), Layout::row_major(k, n)),
                (Layout::transposed(m, k), Layout::transposed(k, n)),
            ] {
                let want = naive(&a, la, &b, lb, n);
                for backend in [Backend::Avx2, Backend::Portable] {
                    for accumulate in [false, true] {
                        let mut c = c0.clone();
                        let lc = Layout::row_major(m, n);
                        sgemm_with(backend, &a, la, &b, lb, &mut c, lc, accumulate);
                        for i in 0..m * n {
                            let expect = want[i] + if accumulate { c0[i] as f64 } else { 0.0 };
                            assert!(
                                (c[i] as f64 - expect).abs() < 1e-5 * (1.0 + k as f64).sqrt(),
                                "{backend:?} {m}×{k}×{n} acc={accumulate} at {i}: {} vs {expect}",
                                c[i]
                            );
                        }
                    }
                }
            }
        }
    }
}
