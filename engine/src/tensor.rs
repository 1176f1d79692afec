//! Element types of weight tensors and the borrowed matrix view kernels take.
#![forbid(unsafe_code)]

/// Elements in one Q8_0 or Q4_0 block (ggml's QK8_0 / QK4_0).
pub const BLOCK_LEN: usize = 32;
/// Bytes of one Q8_0 block: an f16 scale and 32 signed bytes.
pub const Q8_0_BLOCK_BYTES: usize = 2 + BLOCK_LEN;
/// Bytes of one Q4_0 block: an f16 scale and 16 bytes of packed nibbles.
pub const Q4_0_BLOCK_BYTES: usize = 2 + BLOCK_LEN / 2;

/// Element type of a stored tensor. The discriminant is the on-disk code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Dtype {
    /// IEEE binary32, little-endian.
    F32 = 0,
    /// IEEE binary16, little-endian.
    F16 = 1,
    /// bfloat16 (the top half of an f32), little-endian.
    BF16 = 2,
    /// ggml Q8_0 blocks: f16 scale `d`, then 32 × i8 `q`; value = d·q.
    Q8_0 = 3,
    /// ggml Q4_0 blocks: f16 scale `d`, then 16 bytes; byte j holds element j
    /// in its low nibble and element j+16 in its high nibble; value = d·(q−8).
    Q4_0 = 4,
}

impl Dtype {
    /// Every dtype, in code order.
    pub const ALL: [Dtype; 5] = [
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::Q8_0,
        Dtype::Q4_0,
    ];

    /// The dtype with this on-disk code.
    pub const fn from_code(code: u32) -> Option<Dtype> {
        match code {
            0 => Some(Dtype::F32),
            1 => Some(Dtype::F16),
            2 => Some(Dtype::BF16),
            3 => Some(Dtype::Q8_0),
            4 => Some(Dtype::Q4_0),
            _ => None,
        }
    }

    /// Lower-case name, as the CLIs spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
            Dtype::Q8_0 => "q8_0",
            Dtype::Q4_0 => "q4_0",
        }
    }

    /// Whether this is a block-quantized type (rows must be whole blocks).
    pub const fn is_quantized(self) -> bool {
        matches!(self, Dtype::Q8_0 | Dtype::Q4_0)
    }

    /// Bytes of one row of `cols` elements, or `None` when a quantized row is
    /// not a whole number of blocks or the size overflows.
    pub const fn row_bytes(self, cols: usize) -> Option<usize> {
        match self {
            Dtype::F32 => cols.checked_mul(4),
            Dtype::F16 | Dtype::BF16 => cols.checked_mul(2),
            Dtype::Q8_0 | Dtype::Q4_0 => {
                if !cols.is_multiple_of(BLOCK_LEN) {
                    return None;
                }
                let block = if matches!(self, Dtype::Q8_0) {
                    Q8_0_BLOCK_BYTES
                } else {
                    Q4_0_BLOCK_BYTES
                };
                (cols / BLOCK_LEN).checked_mul(block)
            }
        }
    }
}

impl Dtype {
    /// The index of the first element of `data` (whole elements or blocks
    /// of this dtype) that is NaN or infinite, if any. Quantized blocks are
    /// finite exactly when their f16 scale is, so only scales are read:
    /// the answer is then the block's first element.
    pub fn first_non_finite(self, data: &[u8]) -> Option<usize> {
        // Exponent bits all ones: infinity or NaN.
        let f32_bad =
            |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000;
        let f16_bad = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00;
        let bf16_bad = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80;
        match self {
            Dtype::F32 => data.chunks_exact(4).position(f32_bad),
            Dtype::F16 => data.chunks_exact(2).position(f16_bad),
            Dtype::BF16 => data.chunks_exact(2).position(bf16_bad),
            Dtype::Q8_0 => data
                .chunks_exact(Q8_0_BLOCK_BYTES)
                .position(f16_bad)
                .map(|b| b * BLOCK_LEN),
            Dtype::Q4_0 => data
                .chunks_exact(Q4_0_BLOCK_BYTES)
                .position(f16_bad)
                .map(|b| b * BLOCK_LEN),
        }
    }
}

/// A borrowed, row-major `rows × cols` weight matrix (PyTorch's `(out, in)`
/// layout: `y = W x`). Built only by the model file reader, which has checked
/// that `data.len() == rows * dtype.row_bytes(cols)`.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
    /// The raw little-endian bytes.
    pub data: &'a [u8],
}

impl<'a> Matrix<'a> {
    /// Wraps bytes as a matrix, checking that the length matches exactly.
    pub fn new(dtype: Dtype, rows: usize, cols: usize, data: &'a [u8]) -> Option<Self> {
        let row = dtype.row_bytes(cols)?;
        (row.checked_mul(rows)? == data.len()).then_some(Matrix {
            dtype,
            rows,
            cols,
            data,
        })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// The raw bytes of row `r` (panics if `r >= rows`; callers index with
    /// values they have range-checked).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// The rows `range` as a matrix of their own (`range.len() × cols`, the
    /// same bytes), e.g. one thread's share of a matrix product; `None` when
    /// the range is reversed or runs past the last row.
    pub fn rows(&self, range: core::ops::Range<usize>) -> Option<Matrix<'a>> {
        if range.start > range.end || range.end > self.rows {
            return None;
        }
        let n = self.row_bytes();
        let data = self.data.get(range.start * n..range.end * n)?;
        Some(Matrix {
            dtype: self.dtype,
            rows: range.end - range.start,
            cols: self.cols,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_views_a_range_of_rows() {
        let data: [u8; 3 * Q8_0_BLOCK_BYTES] = core::array::from_fn(|i| i as u8);
        let w = Matrix::new(Dtype::Q8_0, 3, BLOCK_LEN, &data).unwrap();
        let middle = w.rows(1..3).unwrap();
        assert_eq!(
            (middle.rows, middle.cols, middle.dtype),
            (2, BLOCK_LEN, Dtype::Q8_0)
        );
        assert_eq!(middle.data, &data[Q8_0_BLOCK_BYTES..]);
        assert_eq!(middle.row(0), w.row(1));
        assert_eq!(w.rows(3..3).unwrap().data.len(), 0);
        assert!(w.rows(2..4).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = w.rows(2..1);
        assert!(reversed.is_none());
    }
}
