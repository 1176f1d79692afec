//! The one place the trainer runs `unsafe` code: the matrix product. On
//! CPUs with AVX2 and FMA it is this crate's kernel (`gemm/avx2.rs`), shaped for
//! the trainer's small matrices; elsewhere `matrixmultiply`'s portable
//! sgemm. Every call goes through [`sgemm`], which checks that each strided
//! matrix fits inside its slice.

#[cfg(target_arch = "x86_64")]
mod avx2;

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
    if !fits(a, la, b, lb, c, lc) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if lc.col_stride == 1 && own_kernel() {
        // SAFETY: the CPU has AVX2 and FMA; `fits` guarantees that every
        // element the strides address lies inside `a`, `b` and `c`, and `c`,
        // borrowed mutably, aliases neither input.
        #[allow(unsafe_code)]
        unsafe {
            avx2::sgemm(a, la, b, lb, c, lc, accumulate)
        };
        return;
    }
    sgemm_portable(a, la, b, lb, c, lc, accumulate);
}

/// Whether [`sgemm`] runs this crate's AVX2 kernel: the CPU has AVX2 and
/// FMA, and `KINGLET_GEMM=portable` does not ask for `matrixmultiply`
/// (to compare the two inside a real training run). Decided once.
#[cfg(target_arch = "x86_64")]
fn own_kernel() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        let portable = std::env::var("KINGLET_GEMM").is_ok_and(|v| v == "portable");
        !portable && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    })
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

    type Gemm = fn(&[f32], Layout, &[f32], Layout, &mut [f32], Layout, bool);

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

    /// The product against an f64 one, on awkward shapes and every operand
    /// layout the layers use: the strides are passed the right way round.
    #[test]
    fn sgemm_matches_a_naive_product() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // Tile edges (rows not a multiple of 6, columns below 8, between 8
        // and 16, past 16) and depths past one 256-deep pass.
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 17),
            (7, 31, 15),
            (6, 16, 16),
            (13, 300, 33),
            (16, 16, 9),
            (64, 513, 65),
            (256, 128, 7),
        ] {
            let a: Vec<f32> = (0..2 * m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..2 * k * n).map(|_| next()).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| next()).collect();
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
            for (la, lb) in [(ar, br), (ar, bt), (at, br), (at, bt), (asp, bsp)] {
                let want = naive(&a, la, &b, lb, n);
                let backends: [(&str, Gemm); 2] = [("sgemm", sgemm), ("portable", sgemm_portable)];
                let runs = backends.iter().flat_map(|b| [(b, false), (b, true)]);
                for (&(name, gemm), accumulate) in runs {
                    let mut c = c0.clone();
                    let lc = Layout::row_major(m, n);
                    gemm(&a, la, &b, lb, &mut c, lc, accumulate);
                    for i in 0..m * n {
                        let expect = want[i] + if accumulate { c0[i] as f64 } else { 0.0 };
                        assert!(
                            (c[i] as f64 - expect).abs() < 1e-5 * (1.0 + k as f64).sqrt(),
                            "{name} {m}×{k}×{n} acc={accumulate} at {i}: {} vs {expect}",
                            c[i]
                        );
                    }
                }
            }
        }
    }
}
