//! The one place the trainer calls an `unsafe` function: `matrixmultiply`'s
//! sgemm (runtime-dispatched AVX2/FMA kernels). Every call goes through
//! [`sgemm`], which checks that each strided matrix fits inside its slice.

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
