//! The one place the trainer runs `unsafe` code: the matrix product. One
//! path per CPU, the fastest measured on the trainer's shapes
//! (docs/PERFORMANCE.md): on CPUs with AVX-512F this crate's 16×16 zmm
//! kernel (`gemm/avx512.rs`), on CPUs with AVX2 and FMA its 6×16 ymm kernel
//! (`gemm/avx2.rs`; both give the same bits), elsewhere `matrixmultiply`'s
//! portable sgemm ([`Kernel`]; `KINGLET_GEMM` forces one). Every call goes
//! through [`sgemm_with`], which checks that each strided matrix fits
//! inside its slice.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use std::sync::Mutex;

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
}

/// What a product of attention's triangular matrices may skip (a causal
/// mask). Rows and columns are those of C and A; what lies past the
/// diagonal is skipped a register tile at a time (16 × 16 on AVX-512), so
/// the sums that remain run in the order of the full product and give its
/// bits. Only this crate's kernels skip; `matrixmultiply` computes all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// The whole product.
    Full,
    /// Only C's lower triangle (column ≤ row) is wanted: C's elements above
    /// it may keep their old values. (The scores `Q Kᵀ`, and `dY Vᵀ`.)
    LowerC,
    /// A is zero above its diagonal (`A[i][p] = 0` for p > i): row i sums
    /// depth 0..=i. (The probabilities P in `P V`, and their gradient.)
    LowerA,
    /// A is zero below its diagonal (`A[i][p] = 0` for p < i): row i sums
    /// depth i... (Pᵀ in `Pᵀ dY`, and the gradient's transpose.)
    UpperA,
}

impl Mask {
    /// The part `start..end` of a pass over depth `k0..k0 + kc` (offsets
    /// into the pass) that a tile of C's rows `i0..i0 + rows` sums: where
    /// A is zero the full product adds exact zeros, which change no sum
    /// (a sum that starts at +0 stays +0).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn depth(self, i0: usize, rows: usize, k0: usize, kc: usize) -> (usize, usize) {
        match self {
            Mask::LowerA => (0, (i0 + rows).saturating_sub(k0).min(kc)),
            Mask::UpperA => (i0.saturating_sub(k0).min(kc), kc),
            Mask::Full | Mask::LowerC => (0, kc),
        }
    }

    /// Whether the tile of C's rows `i0..i0 + rows` and columns from `j0`
    /// is wanted at all.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn wants(self, i0: usize, rows: usize, j0: usize) -> bool {
        self != Mask::LowerC || j0 < i0 + rows
    }
}

/// `c = a · b + (c if accumulate)`, with `a: m×k`, `b: k×n`, `c: m×n`, by
/// the product path [`Kernel::chosen`].
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
    sgemm_with(Kernel::chosen(), a, la, b, lb, c, lc, accumulate);
}

/// [`sgemm`] skipping what `mask` says is zero or not wanted.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_masked(
    a: &[f32],
    la: Layout,
    b: &[f32],
    lb: Layout,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
    mask: Mask,
) {
    product(Kernel::chosen(), a, la, b, lb, c, lc, accumulate, mask);
}

/// The product paths: this crate's kernels, and `matrixmultiply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `gemm/avx512.rs`: a 16×16 tile in zmm registers (AVX-512F).
    Avx512,
    /// `gemm/avx2.rs`: a 6×16 tile in ymm registers (AVX2, FMA).
    Avx2,
    /// `matrixmultiply`'s sgemm, on any CPU.
    Portable,
}

impl Kernel {
    /// Every path, fastest first.
    pub const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx2, Kernel::Portable];

    /// The name `KINGLET_GEMM` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// The CPU feature this path needs and this CPU lacks, if any.
    pub fn missing_feature(self) -> Option<&'static str> {
        #[cfg(target_arch = "x86_64")]
        {
            let needs: &[(&str, bool)] = match self {
                Kernel::Avx512 => &[
                    ("avx512f", is_x86_feature_detected!("avx512f")),
                    ("avx2", is_x86_feature_detected!("avx2")),
                    ("fma", is_x86_feature_detected!("fma")),
                ],
                Kernel::Avx2 => &[
                    ("avx2", is_x86_feature_detected!("avx2")),
                    ("fma", is_x86_feature_detected!("fma")),
                ],
                Kernel::Portable => &[],
            };
            needs.iter().find(|(_, has)| !has).map(|(name, _)| *name)
        }
        #[cfg(not(target_arch = "x86_64"))]
        match self {
            Kernel::Portable => None,
            Kernel::Avx512 => Some("avx512f"),
            Kernel::Avx2 => Some("avx2"),
        }
    }

    /// Whether this CPU can run this path.
    pub fn available(self) -> bool {
        self.missing_feature().is_none()
    }

    /// The path [`sgemm`] takes, decided once: `KINGLET_GEMM` (`avx512`,
    /// `avx2` or `portable`, to compare them inside a real training run) if this CPU
    /// can run it, else the fastest this CPU has (see [`Kernel::fastest`]).
    pub fn chosen() -> Kernel {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let asked = std::env::var("KINGLET_GEMM").ok();
            let wanted = Kernel::ALL
                .into_iter()
                .find(|k| asked.as_deref() == Some(k.name()));
            match (asked, wanted) {
                (_, Some(k)) if k.available() => k,
                (Some(asked), wanted) => {
                    let fallback = Kernel::fastest();
                    let why = match wanted.and_then(Kernel::missing_feature) {
                        Some(feature) => format!("this CPU lacks {feature}"),
                        None => "expected avx512, avx2 or portable".into(),
                    };
                    eprintln!("KINGLET_GEMM={asked}: {why}; using {}", fallback.name());
                    fallback
                }
                (None, _) => Kernel::fastest(),
            }
        })
    }

    /// The fastest path this CPU has, measured on the trainer's shapes
    /// (docs/PERFORMANCE.md): AVX-512, AVX2, then `matrixmultiply`.
    pub fn fastest() -> Kernel {
        Kernel::ALL
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Kernel::Portable)
    }
}

/// Runs `f` compiled for AVX2 and FMA when the chosen product path has
/// them ([`Kernel::chosen`]), else as it is. The crate is built for the
/// baseline x86-64 (SSE2), so the element-wise passes between the products
/// (SwiGLU, softmax, RMSNorm, AdamW, the gradient sum) ran four lanes wide;
/// `f` inlined here runs eight. The bits do not change: the same IEEE
/// operations in the same order, only more lanes at once (Rust never fuses
/// a multiply and an add into an FMA by itself; `shards.rs`'s
/// `element_wise_passes_give_the_baseline_bits` checks a training step's
/// bits both ways). Callers pass a closure
/// marked `#[inline(always)]` (a large one is otherwise called, not
/// inlined, and keeps the baseline's code) that does one chunk's whole
/// loop, so the call costs one branch per chunk.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(test)]
    if BASELINE_ONLY.with(std::cell::Cell::get) {
        return f();
    }
    #[cfg(target_arch = "x86_64")]
    if Kernel::chosen() != Kernel::Portable {
        // SAFETY: the chosen path is one this CPU runs (`Kernel::chosen`
        // checks), and both of this crate's kernels need AVX2 and FMA.
        #[allow(unsafe_code)]
        return unsafe { with_avx2(f) };
    }
    f()
}

#[cfg(test)]
thread_local! {
    /// Set by a test on a thread of its own: [`vectorized`] runs its
    /// closures as the baseline build does, to compare the bits.
    pub(crate) static BASELINE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `f()`, inlined into a function compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// [`sgemm`] by a given path (the tests and the benchmark compare them).
/// This crate's kernels need `c`'s columns contiguous; other layouts of `c`
/// take `matrixmultiply`.
///
/// Panics as [`sgemm`] does, and if this CPU cannot run `kernel`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    kernel: Kernel,
    a: &[f32],
    la: Layout,
    b: &[f32],
    lb: Layout,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
) {
    product(kernel, a, la, b, lb, c, lc, accumulate, Mask::Full);
}

/// Every product's one way in: checks the operands, then takes `kernel`.
#[allow(clippy::too_many_arguments)]
fn product(
    kernel: Kernel,
    a: &[f32],
    la: Layout,
    b: &[f32],
    lb: Layout,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
    mask: Mask,
) {
    if !fits(a, la, b, lb, c, lc) {
        return;
    }
    assert!(kernel.available(), "gemm kernel {kernel:?} on this CPU");
    #[cfg(target_arch = "x86_64")]
    {
        let source = avx2::Source::InPlace(avx2::Strided::of(b, lb));
        if own_kernel(kernel, a, la, source, c, lc, accumulate, mask) {
            return;
        }
    }
    // The portable product computes every element; a mask only lets the
    // x86 kernels skip some.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = mask;
    sgemm_portable(a, la, b, lb, c, lc, accumulate);
}

/// Runs the product on this crate's `kernel` and says so, or returns false
/// where only `matrixmultiply` can (the portable path, or C's columns not
/// contiguous).
///
/// The caller has checked that `kernel` runs on this CPU and, with
/// [`fits`], that every element the strides address lies inside `a`, `c`
/// and B (or B's copy, which holds every pass and panel).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn own_kernel(
    kernel: Kernel,
    a: &[f32],
    la: Layout,
    b: avx2::Source,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
    mask: Mask,
) -> bool {
    if lc.col_stride != 1 {
        return false;
    }
    // SAFETY: the CPU runs `kernel` (AVX-512F, AVX2 and FMA, or AVX2 and
    // FMA) and the operands lie inside their slices (the caller's checks,
    // above); `c`, borrowed mutably, aliases neither input.
    #[allow(unsafe_code)]
    unsafe {
        match kernel {
            Kernel::Avx512 => avx512::sgemm(a, la, b, c, lc, accumulate, mask),
            Kernel::Avx2 => avx2::sgemm(a, la, b, c, lc, accumulate, mask),
            Kernel::Portable => return false,
        }
    };
    true
}

/// One row of a panel of B as this crate's kernels read it: 16 floats (the
/// tile's width), aligned for their vector loads.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PanelRow([f32; 16]);

#[cfg(target_arch = "x86_64")]
const _: () = assert!(std::mem::size_of::<PanelRow>() == avx2::NR * 4);

/// Copies of B made earlier and free for the next [`PackedB`] (their
/// memory stays mapped: no page faults per product).
static SPARE_COPIES: Mutex<Vec<Vec<PanelRow>>> = Mutex::new(Vec::new());

/// A matrix B copied once into the panels this crate's kernels read, for
/// the products that share it: the linear layers split their rows over
/// tasks, and each task copying the same weights again cost 5.7% of a
/// training step (docs/PERFORMANCE.md). The products keep their bits: only
/// where B's elements are read from changes. On the portable path nothing
/// is copied.
pub struct PackedB<'b> {
    b: &'b [f32],
    lb: Layout,
    kernel: Kernel,
    /// Pass by pass (256 deep), the panels of 16 columns side by side.
    rows: Vec<PanelRow>,
}

impl<'b> PackedB<'b> {
    /// Copies `b` for the path [`sgemm`] takes, pass by pass in parallel.
    pub fn new(b: &'b [f32], lb: Layout) -> Self {
        Self::with(Kernel::chosen(), b, lb)
    }

    /// Copies `b` for `kernel`'s products.
    ///
    /// Panics if `b` does not fit `lb`, or this CPU cannot run `kernel`.
    pub fn with(kernel: Kernel, b: &'b [f32], lb: Layout) -> Self {
        assert!(lb.span() <= b.len(), "gemm bounds");
        assert!(kernel.available(), "gemm kernel {kernel:?} on this CPU");
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut rows = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if matches!(kernel, Kernel::Avx512 | Kernel::Avx2) && lb.rows != 0 && lb.cols != 0 {
            use rayon::prelude::*;
            rows = SPARE_COPIES
                .lock()
                .map(|mut spare| spare.pop())
                .ok()
                .flatten()
                .unwrap_or_default();
            let (k, panels) = (lb.rows, lb.cols.div_ceil(avx2::NR));
            // Every row is written below (zeros past B's last column).
            if rows.len() < k * panels {
                rows.resize(k * panels, PanelRow([0.0; 16]));
            }
            let passes: Vec<(usize, &mut [PanelRow])> = rows[..k * panels]
                .chunks_mut(avx2::KC * panels)
                .enumerate()
                .map(|(pass, rows)| (pass * avx2::KC, rows))
                .collect();
            passes.into_par_iter().for_each(|(k0, out)| {
                let kc = out.len() / panels;
                // SAFETY: the CPU has AVX2 (asserted); rows k0..k0+kc of b
                // lie inside it (span checked); `out`, of 64-byte aligned
                // rows, holds the pass's panels.
                #[allow(unsafe_code)]
                unsafe {
                    let b = avx2::Strided::of(b, lb);
                    avx2::pack_b_pass(out.as_mut_ptr().cast(), b, k0, kc, lb.cols)
                };
            });
        }
        PackedB {
            b,
            lb,
            kernel,
            rows,
        }
    }
}

impl Drop for PackedB<'_> {
    fn drop(&mut self) {
        if self.rows.capacity() != 0 {
            if let Ok(mut spare) = SPARE_COPIES.lock() {
                spare.push(std::mem::take(&mut self.rows));
            }
        }
    }
}

/// [`sgemm`] with a B copied beforehand, by the path it was copied for.
/// As [`sgemm_with`], other layouts of `c` take `matrixmultiply`.
///
/// Panics as [`sgemm`] does.
pub fn sgemm_packed(
    a: &[f32],
    la: Layout,
    b: &PackedB<'_>,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
) {
    let (lb, kernel) = (b.lb, b.kernel);
    if !fits(a, la, b.b, lb, c, lc) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if !b.rows.is_empty() {
        // `kernel` was checked when B was copied.
        let packed = avx2::Source::Packed {
            rows: b.rows.as_ptr().cast(),
            panels: lb.cols.div_ceil(avx2::NR),
        };
        if own_kernel(kernel, a, la, packed, c, lc, accumulate, Mask::Full) {
            return;
        }
    }
    sgemm_with(kernel, a, la, b.b, lb, c, lc, accumulate);
}

/// [`sgemm`] by `matrixmultiply`, whatever the CPU: what runs where AVX2 or
/// FMA is missing, and the yardstick the benchmark compares against.
pub fn sgemm_portable(
    a: &[f32],
    la: Layout,
    b: &[f32],
    lb: Layout,
    c: &mut [f32],
    lc: Layout,
    accumulate: bool,
) {
    if !fits(a, la, b, lb, c, lc) {
        return;
    }
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: `fits` guarantees that every element the strides address lies
    // inside `a`, `b` and `c`; `c` is borrowed mutably and so does not alias
    // `a` or `b`.
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

/// Panics unless the shapes agree and each matrix fits its slice; false
/// when `c` is empty (nothing to do).
fn fits(a: &[f32], la: Layout, b: &[f32], lb: Layout, c: &[f32], lc: Layout) -> bool {
    assert!(
        la.cols == lb.rows && la.rows == lc.rows && lb.cols == lc.cols,
        "gemm shapes"
    );
    assert!(
        la.span() <= a.len() && lb.span() <= b.len() && lc.span() <= c.len(),
        "gemm bounds"
    );
    lc.rows != 0 && lc.cols != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-0.5, 0.5) from a linear congruential generator started
    /// at `seed`: operands that are the same on every run.
    fn uniform(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    fn naive(a: &[f32], la: Layout, b: &[f32], lb: Layout, n: usize) -> Vec<f64> {
        let mut c = vec![0.0f64; la.rows * n];
        for i in 0..la.rows {
            for j in 0..n {
                c[i * n + j] = (0..la.cols)
                    .map(|p| {
                        a[i * la.row_stride + p * la.col_stride] as f64
                            * b[p * lb.row_stride + j * lb.col_stride] as f64
                    })
                    .sum();
            }
        }
        c
    }

    /// The product against an f64 one, on every path this CPU runs, on
    /// awkward shapes and every operand layout the layers use: the strides
    /// are passed the right way round.
    #[test]
    fn every_product_path_matches_a_naive_product() {
        let mut next = uniform(7);
        let mut paths: Vec<(&str, Option<Kernel>)> = vec![("sgemm", None)];
        for kernel in Kernel::ALL {
            match kernel.missing_feature() {
                None => paths.push((kernel.name(), Some(kernel))),
                Some(feature) => println!("{}: skipped: CPU lacks {feature}", kernel.name()),
            }
        }
        // Tile edges (rows not a multiple of 6 or 16, columns below, between and
        // past 8, 16 and 32) and depths past one 256-deep pass, some not a
        // multiple of 8.
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 17),
            (7, 31, 15),
            (6, 16, 16),
            (12, 16, 32),
            (11, 129, 31),
            (13, 300, 33),
            (16, 16, 9),
            (25, 127, 47),
            (24, 257, 64),
            (64, 513, 65),
            (256, 128, 7),
            (22, 9, 70),
            (31, 40, 20),
            (47, 260, 16),
        ] {
            let a: Vec<f32> = (0..2 * m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..2 * k * n).map(|_| next()).collect();
            let c0: Vec<f32> = (0..3 * m * n).map(|_| next()).collect();
            let (ar, at) = (Layout::row_major(m, k), Layout::transposed(m, k));
            let (br, bt) = (Layout::row_major(k, n), Layout::transposed(k, n));
            // Neither stride 1: every other element (a and b hold twice
            // the elements they need).
            let spaced = |rows: usize, cols: usize| Layout {
                rows,
                cols,
                row_stride: 2 * cols,
                col_stride: 2,
            };
            let (asp, bsp) = (spaced(m, k), spaced(k, n));
            // C row-major, with rows further apart than its width, and by
            // columns (which the own kernels hand to matrixmultiply).
            let wide = Layout {
                rows: m,
                cols: n,
                row_stride: n + 3,
                col_stride: 1,
            };
            let c_layouts = [Layout::row_major(m, n), wide, Layout::transposed(m, n)];
            let operands = [(ar, br), (ar, bt), (at, br), (at, bt), (asp, bsp)];
            let cases = operands
                .into_iter()
                .flat_map(|ab| c_layouts.map(|lc| (ab, lc)));
            for ((la, lb), lc) in cases {
                let want = naive(&a, la, &b, lb, n);
                for accumulate in [false, true] {
                    // What this crate's kernels wrote: the same bits.
                    let mut own_bits: Vec<Vec<u32>> = Vec::new();
                    for &(name, kernel) in &paths {
                        let mut c = c0.clone();
                        match kernel {
                            Some(kernel) => {
                                sgemm_with(kernel, &a, la, &b, lb, &mut c, lc, accumulate)
                            }
                            None => sgemm(&a, la, &b, lb, &mut c, lc, accumulate),
                        }
                        let mut touched = vec![false; c.len()];
                        for i in 0..m {
                            for j in 0..n {
                                let at = i * lc.row_stride + j * lc.col_stride;
                                touched[at] = true;
                                let before = if accumulate { c0[at] as f64 } else { 0.0 };
                                let expect = want[i * n + j] + before;
                                assert!(
                                    (c[at] as f64 - expect).abs() < 1e-5 * (1.0 + k as f64).sqrt(),
                                    "{name} {m}×{k}×{n} {la:?} {lb:?} {lc:?} acc={accumulate} \
                                     at ({i}, {j}): {} vs {expect}",
                                    c[at]
                                );
                            }
                        }
                        // Nothing outside C moves (the gaps between rows,
                        // the masked edges).
                        for (at, _) in touched.iter().enumerate().filter(|(_, t)| !**t) {
                            assert_eq!(c[at], c0[at], "{name} {m}×{k}×{n} {lc:?}: wrote {at}");
                        }
                        if matches!(kernel, Some(Kernel::Avx512 | Kernel::Avx2)) {
                            own_bits.push(c.iter().map(|x| x.to_bits()).collect());
                        }
                    }
                    assert!(
                        own_bits.windows(2).all(|w| w[0] == w[1]),
                        "avx512 and avx2 differ: {m}×{k}×{n} {la:?} {lb:?} {lc:?} acc={accumulate}"
                    );
                }
            }
        }
    }

    /// Attention's masks skip only zeros and unwanted elements: on every
    /// path, C's wanted elements keep the full product's bits, for squares
    /// with edges inside a tile and depths past one 256-deep pass, A and C
    /// in the layouts attention uses (A by rows and transposed).
    #[test]
    fn masked_products_keep_the_full_products_bits() {
        let mut next = uniform(11);
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            for &(t, n) in &[
                (1, 3),
                (5, 8),
                (16, 16),
                (23, 17),
                (64, 64),
                (100, 40),
                (300, 33),
            ] {
                let b: Vec<f32> = (0..t * n).map(|_| next()).collect();
                let lb = Layout::row_major(t, n);
                let lc = Layout::row_major(t, n);
                let c0: Vec<f32> = (0..t * n).map(|_| next()).collect();
                // A square, zero above (lower) or below (upper) its diagonal.
                let lower: Vec<f32> = (0..t * t)
                    .map(|at| if at % t <= at / t { next() } else { 0.0 })
                    .collect();
                let cases = [
                    (Layout::row_major(t, t), Mask::LowerA),
                    (Layout::transposed(t, t), Mask::UpperA),
                ];
                for (la, mask) in cases {
                    for accumulate in [false, true] {
                        let (mut full, mut masked) = (c0.clone(), c0.clone());
                        let f = Mask::Full;
                        product(kernel, &lower, la, &b, lb, &mut full, lc, accumulate, f);
                        product(
                            kernel,
                            &lower,
                            la,
                            &b,
                            lb,
                            &mut masked,
                            lc,
                            accumulate,
                            mask,
                        );
                        let bits = |c: &[f32]| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&full), bits(&masked), "{kernel:?} {t}×{n} {mask:?}");
                    }
                }
                // C = A·Bᵀ (t × t) wanted on and below the diagonal.
                let a: Vec<f32> = (0..t * n).map(|_| next()).collect();
                let (la, lbt) = (Layout::row_major(t, n), Layout::transposed(n, t));
                let square = Layout::row_major(t, t);
                let mut full = vec![0.0; t * t];
                product(
                    kernel,
                    &a,
                    la,
                    &b,
                    lbt,
                    &mut full,
                    square,
                    false,
                    Mask::Full,
                );
                let mut masked = vec![f32::NAN; t * t];
                product(
                    kernel,
                    &a,
                    la,
                    &b,
                    lbt,
                    &mut masked,
                    square,
                    false,
                    Mask::LowerC,
                );
                for i in 0..t {
                    for j in 0..=i {
                        let (x, y) = (full[i * t + j], masked[i * t + j]);
                        assert_eq!(x.to_bits(), y.to_bits(), "{kernel:?} {t} LowerC ({i}, {j})");
                    }
                }
            }
        }
    }

    /// A B copied beforehand gives the bits of the product that copies it
    /// as it goes, on every path, for the layouts the linear layers use
    /// (Wᵀ, W, x) and depths past one pass; the copy is reused.
    #[test]
    fn products_with_b_copied_beforehand_keep_their_bits() {
        let mut next = uniform(5);
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            for &(m, k, n) in &[(1, 1, 1), (7, 31, 15), (32, 300, 65), (48, 520, 40)] {
                let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
                let c0: Vec<f32> = (0..m * n).map(|_| next()).collect();
                let la = Layout::row_major(m, k);
                let lc = Layout::row_major(m, n);
                for lb in [Layout::row_major(k, n), Layout::transposed(k, n)] {
                    let packed = PackedB::with(kernel, &b, lb);
                    for accumulate in [false, true] {
                        let (mut want, mut got) = (c0.clone(), c0.clone());
                        sgemm_with(kernel, &a, la, &b, lb, &mut want, lc, accumulate);
                        sgemm_packed(&a, la, &packed, &mut got, lc, accumulate);
                        let bits = |c: &[f32]| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&want), bits(&got), "{kernel:?} {m}×{k}×{n} {lb:?}");
                    }
                }
            }
        }
    }

    /// `k = 0`: C is zeroed, or kept when accumulating.
    #[test]
    fn an_empty_sum_zeroes_or_keeps_c_on_every_path() {
        for kernel in Kernel::ALL {
            if let Some(feature) = kernel.missing_feature() {
                println!("{}: skipped: CPU lacks {feature}", kernel.name());
                continue;
            }
            for accumulate in [false, true] {
                let mut c = vec![1.5f32; 5 * 7];
                let (la, lb) = (Layout::row_major(5, 0), Layout::row_major(0, 7));
                sgemm_with(
                    kernel,
                    &[],
                    la,
                    &[],
                    lb,
                    &mut c,
                    Layout::row_major(5, 7),
                    accumulate,
                );
                let want = if accumulate { 1.5 } else { 0.0 };
                assert!(c.iter().all(|&x| x == want), "{kernel:?} acc={accumulate}");
            }
        }
    }
}
