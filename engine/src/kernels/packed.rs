//! A Q8_0 / Q4_0 matrix repacked at load time for the x86 kernels (the
//! file keeps ggml's layout; this is a copy in a caller buffer). AVX-512
//! reads each 64-byte vector of levels at once, AVX2 and AVX-VNNI in two
//! halves of eight rows.
//!
//! Rows go in groups of [`GROUP_ROWS`]; each group's blocks follow one
//! another (block 0 of the group, then block 1, …), and one group-block of
//! 16 rows × 32 columns is:
//!
//! | bytes      | what |
//! |------------|------|
//! | `0 .. 32`  | the 16 rows' f16 scales, row `r` at `2r` |
//! | `32 ..`    | the levels, 64-byte vectors with row `r` in bytes `4r .. 4r + 4` |
//!
//! Q4_0: 4 vectors, vector `j` holding bytes `4j .. 4j + 4` of each row's
//! 16 packed bytes (their low nibbles are elements `4j ..`, their high
//! nibbles elements `16 + 4j ..`). Q8_0: 8 vectors, vector `k` holding
//! levels `4k .. 4k + 4` of each row as `w + 128` (unsigned, what
//! `vpdpbusd` multiplies). Either way a group-block is `16 ×` the ggml block
//! (288 or 544 bytes), so a packed matrix has the ggml matrix's size, and
//! row `16g` starts at the same byte offset. The rows past the last whole
//! group stay in ggml's row layout after the groups.
//!
//! A product of one group-block with an activation block's 4-byte words
//! broadcast leaves each row's total in its own 32-bit lane: no gathers and
//! no transposes per block, which is what the matrix-vector product spends
//! most of its time on in ggml's layout.
#![forbid(unsafe_code)]

use crate::error::Error;
use crate::tensor::{Dtype, Matrix, BLOCK_LEN, Q8_0_BLOCK_BYTES};

/// Rows packed together: one 32-bit lane of a 512-bit vector each.
pub const GROUP_ROWS: usize = 16;
/// Bytes of a group-block's scales.
pub(super) const GROUP_SCALE_BYTES: usize = 2 * GROUP_ROWS;
/// Bytes of one vector of levels (one 32-bit word per row).
pub(super) const VECTOR_BYTES: usize = 4 * GROUP_ROWS;
/// Bytes of the f16 scale in front of each ggml block.
const SCALE_BYTES: usize = 2;

/// A Q8_0 or Q4_0 matrix in the packed layout (see the module notes):
/// `rows × cols`, the same bytes count as the ggml matrix. Built by
/// [`pack_matrix`], or by [`row_range`](Self::row_range) of one.
#[derive(Clone, Copy, Debug)]
pub struct PackedMatrix<'a> {
    /// The same shape and dtype as the ggml matrix, its bytes repacked.
    pub(super) inner: Matrix<'a>,
    /// Whether the products should request its bytes ahead of reading
    /// them ([`streamed`](Self::streamed)).
    pub(super) streamed: bool,
}

impl<'a> PackedMatrix<'a> {
    /// Element type: Q8_0 or Q4_0.
    pub fn dtype(&self) -> Dtype {
        self.inner.dtype
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.inner.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.inner.cols
    }

    /// The packed bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.inner.data
    }

    /// The same matrix, marked as read from memory (`true`: e.g. one of a
    /// model larger than the CPU's caches) or from cache (`false`, what
    /// [`pack_matrix`] gives). A hint, never a change of results: the
    /// Q4_0 products, and AVX2's Q8_0 ones, then request each group-block's
    /// bytes a few KB ahead, which lifts them to the memory's rate but costs
    /// 10–25% of their speed on a matrix already in cache.
    pub fn streamed(self, streamed: bool) -> Self {
        PackedMatrix { streamed, ..self }
    }

    /// Bytes already in the packed layout, as a matrix of that shape (the
    /// caller packed them with [`pack_matrix`]); `None` when the length
    /// does not match or the dtype is not quantized.
    pub(crate) fn from_packed_bytes(
        dtype: Dtype,
        rows: usize,
        cols: usize,
        bytes: &'a [u8],
    ) -> Option<Self> {
        if !dtype.is_quantized() {
            return None;
        }
        Matrix::new(dtype, rows, cols, bytes).map(|inner| PackedMatrix {
            inner,
            streamed: false,
        })
    }

    /// The rows `range` as a packed matrix of their own, e.g. one thread's
    /// share of a product: `None` unless the range starts at a whole group
    /// and ends at one or at the last row (a group cut in two is not in
    /// either part's layout), or when it is reversed or runs past the end.
    pub fn row_range(&self, range: core::ops::Range<usize>) -> Option<PackedMatrix<'a>> {
        let whole_groups = range.start.is_multiple_of(GROUP_ROWS)
            && (range.end.is_multiple_of(GROUP_ROWS) || range.end == self.inner.rows);
        if !whole_groups {
            return None;
        }
        // Row 16g starts at the same byte in both layouts.
        self.inner
            .rows(range)
            .map(|inner| PackedMatrix { inner, ..*self })
    }
}

/// Bytes a packed copy of `w` takes: its own size for Q8_0 and Q4_0, zero
/// for the float dtypes (which are not packed).
pub fn packed_bytes(w: &Matrix<'_>) -> usize {
    if w.dtype.is_quantized() {
        w.data.len()
    } else {
        0
    }
}

/// Bytes of one ggml block of `dtype` (Q8_0 or Q4_0).
fn block_bytes(dtype: Dtype) -> usize {
    SCALE_BYTES + level_bytes(dtype)
}

/// Bytes of levels in one block: 16 packed for Q4_0, 32 for Q8_0.
fn level_bytes(dtype: Dtype) -> usize {
    if dtype == Dtype::Q4_0 {
        BLOCK_LEN / 2
    } else {
        BLOCK_LEN
    }
}

/// Where level byte `i` (`i < level_bytes`) of row `r` goes inside its
/// group-block, and the transform applied to it.
#[inline(always)]
fn level_position(r: usize, i: usize) -> usize {
    GROUP_SCALE_BYTES + (i / 4) * VECTOR_BYTES + 4 * r + i % 4
}

/// Q8_0 levels are stored as `w + 128`, an unsigned byte: the sign bit
/// flipped (its own inverse).
const Q8_UNSIGNED: u8 = 0x80;

/// Copies the Q8_0 or Q4_0 matrix `w` into `dst` (exactly
/// [`packed_bytes`]`(w)` long) in the packed layout.
///
/// Errors: [`Error::InvalidInput`] for a float matrix, a matrix whose bytes
/// do not match its shape, or `dst` of another length.
pub fn pack_matrix<'d>(w: &Matrix<'_>, dst: &'d mut [u8]) -> Result<PackedMatrix<'d>, Error> {
    if !w.dtype.is_quantized() {
        return Err(Error::InvalidInput {
            reason: "only Q8_0 and Q4_0 matrices are packed",
        });
    }
    let row_bytes = w.dtype.row_bytes(w.cols);
    if row_bytes.and_then(|b| b.checked_mul(w.rows)) != Some(w.data.len()) {
        return Err(Error::InvalidInput {
            reason: "matrix bytes do not match its shape",
        });
    }
    if dst.len() != w.data.len() {
        return Err(Error::InvalidInput {
            reason: "packed matrix buffer of the wrong length",
        });
    }
    let bb = block_bytes(w.dtype);
    // Q8_0's levels flipped to unsigned, four at a time.
    let flip = if w.dtype == Dtype::Q8_0 {
        u32::from_ne_bytes([Q8_UNSIGNED; 4])
    } else {
        0
    };
    let row_bytes = w.data.len() / w.rows.max(1);
    let group_bytes = GROUP_ROWS * row_bytes;
    let mut src_groups = w.data.chunks_exact(group_bytes.max(1));
    let mut dst_groups = dst.chunks_exact_mut(group_bytes.max(1));
    // Row after row, so that the matrix is read in order (16 rows' blocks
    // side by side were 16 streams 34 bytes a step: a third of the speed
    // from memory for 768-column Q8_0 matrices); a group's packed bytes
    // stay in cache until it is done.
    for (src, dst) in (&mut src_groups).zip(&mut dst_groups) {
        for (r, row) in src.chunks_exact(row_bytes).enumerate() {
            for (block, group_block) in row
                .chunks_exact(bb)
                .zip(dst.chunks_exact_mut(GROUP_ROWS * bb))
            {
                let (scales, vectors) = group_block.split_at_mut(GROUP_SCALE_BYTES);
                let (scale, levels) = block.split_at(SCALE_BYTES);
                scales[2 * r..2 * r + 2].copy_from_slice(scale);
                // Row r's word k (levels 4k .. 4k + 4) into vector k.
                for (k, word) in levels.chunks_exact(4).enumerate() {
                    let word = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]) ^ flip;
                    vectors[k * VECTOR_BYTES + 4 * r..][..4].copy_from_slice(&word.to_ne_bytes());
                }
            }
        }
    }
    // The rows past the last whole group, as they are.
    dst_groups
        .into_remainder()
        .copy_from_slice(src_groups.remainder());
    Ok(PackedMatrix {
        inner: Matrix {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            data: dst,
        },
        streamed: false,
    })
}

/// Row `r`'s ggml block (scale, then levels: the first 18 bytes for Q4_0,
/// all 34 for Q8_0) out of a packed group-block of `dtype`: the inverse of
/// [`pack_matrix`] for one block, for the reference kernels and tests.
/// `group_block` is one whole group-block and `r < 16` (crate callers
/// only: both come from a packed matrix of checked shape).
pub(crate) fn unpack_block(dtype: Dtype, group_block: &[u8], r: usize) -> [u8; Q8_0_BLOCK_BYTES] {
    let mut block = [0u8; Q8_0_BLOCK_BYTES];
    block[..SCALE_BYTES].copy_from_slice(&group_block[2 * r..2 * r + 2]);
    let q8 = dtype == Dtype::Q8_0;
    for (i, level) in block[SCALE_BYTES..]
        .iter_mut()
        .enumerate()
        .take(level_bytes(dtype))
    {
        let byte = group_block[level_position(r, i)];
        *level = if q8 { byte ^ Q8_UNSIGNED } else { byte };
    }
    block
}

/// Bytes of one group-block of `dtype` (Q8_0 or Q4_0): 16 ggml blocks.
pub(crate) fn group_block_bytes(dtype: Dtype) -> usize {
    GROUP_ROWS * block_bytes(dtype)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::tensor::Q4_0_BLOCK_BYTES;
    use std::vec;
    use std::vec::Vec;

    fn matrix_bytes(dtype: Dtype, rows: usize, cols: usize) -> Vec<u8> {
        let n = rows * dtype.row_bytes(cols).unwrap();
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn group_blocks_are_sixteen_ggml_blocks() {
        assert_eq!(group_block_bytes(Dtype::Q4_0), 288);
        assert_eq!(group_block_bytes(Dtype::Q8_0), 544);
        assert_eq!(
            GROUP_SCALE_BYTES + 4 * VECTOR_BYTES,
            GROUP_ROWS * Q4_0_BLOCK_BYTES
        );
        assert_eq!(
            GROUP_SCALE_BYTES + 8 * VECTOR_BYTES,
            GROUP_ROWS * Q8_0_BLOCK_BYTES
        );
    }

    #[test]
    fn unpacking_every_block_gives_the_ggml_rows_back() {
        for dtype in [Dtype::Q4_0, Dtype::Q8_0] {
            for (rows, cols) in [(16, 32), (35, 96), (5, 64), (48, 288)] {
                let data = matrix_bytes(dtype, rows, cols);
                let w = Matrix::new(dtype, rows, cols, &data).unwrap();
                let mut dst = vec![0u8; packed_bytes(&w)];
                let p = pack_matrix(&w, &mut dst).unwrap();
                assert_eq!((p.rows(), p.cols(), p.dtype()), (rows, cols, dtype));
                let (bb, gb) = (block_bytes(dtype), group_block_bytes(dtype));
                let blocks = cols / BLOCK_LEN;
                let grouped = rows - rows % GROUP_ROWS;
                for r in 0..grouped {
                    for b in 0..blocks {
                        let at = (r / 16) * 16 * blocks * bb + b * gb;
                        let got = unpack_block(dtype, &p.bytes()[at..at + gb], r % 16);
                        assert_eq!(&got[..bb], &w.row(r)[b * bb..][..bb], "{dtype:?} row {r}");
                    }
                }
                let at = grouped * blocks * bb;
                assert_eq!(&p.bytes()[at..], &data[at..], "{dtype:?} leftover rows");
            }
        }
    }

    #[test]
    fn q4_0_levels_sit_four_bytes_per_row_lane() {
        // Row r's packed byte i = 16r + i: vector j, lane r holds 4j .. 4j+4.
        let mut data = vec![0u8; 16 * Q4_0_BLOCK_BYTES];
        for (r, block) in data.chunks_exact_mut(Q4_0_BLOCK_BYTES).enumerate() {
            for (i, b) in block[2..].iter_mut().enumerate() {
                *b = (16 * r + i) as u8;
            }
        }
        let w = Matrix::new(Dtype::Q4_0, 16, 32, &data).unwrap();
        let mut dst = vec![0u8; data.len()];
        let p = pack_matrix(&w, &mut dst).unwrap();
        let levels = &p.bytes()[32..];
        assert_eq!(&levels[..8], &[0, 1, 2, 3, 16, 17, 18, 19]);
        assert_eq!(&levels[64..68], &[4, 5, 6, 7]);
        assert_eq!(&levels[3 * 64 + 60..], &[252, 253, 254, 255]);
    }

    #[test]
    fn row_ranges_must_be_whole_groups() {
        let data = matrix_bytes(Dtype::Q4_0, 40, 64);
        let w = Matrix::new(Dtype::Q4_0, 40, 64, &data).unwrap();
        let mut dst = vec![0u8; data.len()];
        let p = pack_matrix(&w, &mut dst).unwrap();
        let part = p.row_range(16..40).unwrap();
        assert_eq!(part.rows(), 24);
        assert_eq!(part.bytes(), &p.bytes()[16 * 36..]);
        assert!(p.row_range(0..16).is_some());
        assert!(p.row_range(0..20).is_none());
        assert!(p.row_range(8..16).is_none());
        assert!(p.row_range(32..48).is_none());
    }

    #[test]
    fn packing_refuses_floats_and_wrong_lengths() {
        let floats = [0u8; 4 * 32];
        let w = Matrix::new(Dtype::F32, 1, 32, &floats).unwrap();
        assert_eq!(packed_bytes(&w), 0);
        assert!(pack_matrix(&w, &mut []).is_err());
        let data = matrix_bytes(Dtype::Q8_0, 2, 32);
        let w = Matrix::new(Dtype::Q8_0, 2, 32, &data).unwrap();
        assert!(pack_matrix(&w, &mut vec![0u8; data.len() - 1]).is_err());
        let mut dst = vec![0u8; data.len()];
        // Two rows: no whole group, the rows as they are.
        assert_eq!(pack_matrix(&w, &mut dst).unwrap().bytes(), &data[..]);
    }
}
