//! Checked kernel arguments. Each type is built only by its `new`, which
//! checks every length against the others with checked arithmetic and
//! returns the error the reference has always reported; the kernels — the
//! reference and the architecture files alike — then rely on the facts each
//! type states and check nothing.
//!
//! A product with nothing to compute (no rows, no columns, no positions) is
//! not built: `new` fills the output with zeros and returns `Ok(None)`.
#![forbid(unsafe_code)]

use crate::error::Error;
use crate::quant::{self, BlockQ8};
use crate::tensor::{Dtype, Matrix, BLOCK_LEN, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES};

/// How a float row stores its elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Float {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
}

impl Float {
    /// Bytes per element.
    pub const fn bytes(self) -> usize {
        match self {
            Float::F32 => 4,
            Float::F16 | Float::BF16 => 2,
        }
    }

    fn of(dtype: Dtype) -> Option<Float> {
        match dtype {
            Dtype::F32 => Some(Float::F32),
            Dtype::F16 => Some(Float::F16),
            Dtype::BF16 => Some(Float::BF16),
            Dtype::Q8_0 | Dtype::Q4_0 => None,
        }
    }
}

/// Bytes of one Q8_0 (`q4` false) or Q4_0 (`q4` true) block.
pub const fn block_bytes(q4: bool) -> usize {
    if q4 {
        Q4_0_BLOCK_BYTES
    } else {
        Q8_0_BLOCK_BYTES
    }
}

const fn invalid(reason: &'static str) -> Error {
    Error::InvalidInput { reason }
}

/// `out[r] = Σ_c w[r][c] · x[c]` over float rows.
///
/// Facts: `x.len() ≥ 1`, `out.len() ≥ 1` and
/// `w.len() == out.len() · x.len() · dtype.bytes()`.
pub struct FloatRows<'a> {
    pub(super) out: &'a mut [f32],
    pub(super) w: &'a [u8],
    pub(super) x: &'a [f32],
    pub(super) dtype: Float,
}

impl<'a> FloatRows<'a> {
    /// Errors: [`Error::InvalidInput`] for a quantized matrix, a matrix whose
    /// bytes do not match its shape, or `x` / `out` of the wrong length.
    pub fn new(out: &'a mut [f32], w: &Matrix<'a>, x: &'a [f32]) -> Result<Option<Self>, Error> {
        let dtype = Float::of(w.dtype).ok_or(invalid("matvec needs an F32, F16 or BF16 matrix"))?;
        check_matrix_bytes(w)?;
        if x.len() != w.cols || out.len() != w.rows {
            return Err(invalid("matvec: input or output of the wrong length"));
        }
        if x.is_empty() || out.is_empty() {
            out.fill(0.0);
            return Ok(None);
        }
        Ok(Some(FloatRows {
            out,
            w: w.data,
            x,
            dtype,
        }))
    }
}

/// `out[t·rows + r] = Σ_c w[r][c] · x[t·cols + c]`: float rows times `n`
/// positions, `out` position-major.
///
/// Facts: `n ≥ 1`, `cols ≥ 1`, `rows ≥ 1`, `x.len() == n · cols`,
/// `out.len() == rows · n`, `w.len() == rows · cols · dtype.bytes()`.
pub struct FloatMatmul<'a> {
    pub(super) out: &'a mut [f32],
    pub(super) w: &'a [u8],
    pub(super) x: &'a [f32],
    pub(super) n: usize,
    pub(super) cols: usize,
    pub(super) dtype: Float,
}

impl<'a> FloatMatmul<'a> {
    /// Errors: [`Error::InvalidInput`] as [`FloatRows::new`].
    pub fn new(
        out: &'a mut [f32],
        w: &Matrix<'a>,
        x: &'a [f32],
        n: usize,
    ) -> Result<Option<Self>, Error> {
        let dtype = Float::of(w.dtype).ok_or(invalid("matmul needs an F32, F16 or BF16 matrix"))?;
        check_matrix_bytes(w)?;
        if Some(x.len()) != n.checked_mul(w.cols) || Some(out.len()) != n.checked_mul(w.rows) {
            return Err(invalid("matmul: inputs or output of the wrong length"));
        }
        if out.is_empty() || x.is_empty() {
            out.fill(0.0);
            return Ok(None);
        }
        Ok(Some(FloatMatmul {
            out,
            w: w.data,
            x,
            n,
            cols: w.cols,
            dtype,
        }))
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the x86 kernels' only
    pub(super) fn rows(&self) -> usize {
        self.out.len() / self.n
    }
}

/// `out[r] = Σ_b d_w · d_x · isum(w[r] block b, x block b)` for Q8_0 or
/// Q4_0 rows and quantized activations.
///
/// Facts: `x.len() ≥ 1`, `out.len() ≥ 1` and
/// `w.len() == out.len() · x.len() · block_bytes(q4)`.
pub struct QuantRows<'a> {
    pub(super) out: &'a mut [f32],
    pub(super) w: &'a [u8],
    pub(super) x: &'a [BlockQ8],
    pub(super) q4: bool,
    /// Packed rows read from memory (`PackedMatrix::streamed`): a hint.
    pub(super) streamed: bool,
}

impl<'a> QuantRows<'a> {
    /// Errors: [`Error::InvalidInput`] for a float matrix, a matrix whose
    /// bytes do not match its shape, or `x` of the wrong length;
    /// [`Error::BufferTooSmall`] / [`Error::InvalidInput`] for `out` of the
    /// wrong length.
    pub fn new(
        out: &'a mut [f32],
        w: &Matrix<'a>,
        x: &'a [BlockQ8],
    ) -> Result<Option<Self>, Error> {
        let q4 = quantized_kind(w.dtype, "matvec_quantized needs a Q8_0 or Q4_0 matrix")?;
        let row_bytes = check_matrix_bytes(w)?;
        if x.len().checked_mul(block_bytes(q4)) != Some(row_bytes) {
            return Err(invalid("weight row and activation blocks differ in length"));
        }
        quant::check_output_len(w.rows, out.len())?;
        if x.is_empty() || out.is_empty() {
            out.fill(0.0);
            return Ok(None);
        }
        Ok(Some(QuantRows {
            out,
            w: w.data,
            x,
            q4,
            streamed: false,
        }))
    }
}

/// Q8_0 / Q4_0 rows times `n` positions of quantized activations
/// (`x`: `[n × blocks]`), `out` position-major `[n × rows]`.
///
/// Facts: `n ≥ 1`, `blocks ≥ 1`, `rows ≥ 1`, `x.len() == n · blocks`,
/// `out.len() == rows · n`, `w.len() == rows · blocks · block_bytes(q4)`.
pub struct QuantMatmul<'a> {
    pub(super) out: &'a mut [f32],
    pub(super) w: &'a [u8],
    pub(super) x: &'a [BlockQ8],
    pub(super) n: usize,
    pub(super) blocks: usize,
    pub(super) q4: bool,
}

impl<'a> QuantMatmul<'a> {
    /// Errors: [`Error::InvalidInput`] for a float matrix, a matrix whose
    /// bytes do not match its shape, or `x` / `out` of the wrong length.
    pub fn new(
        out: &'a mut [f32],
        w: &Matrix<'a>,
        x: &'a [BlockQ8],
        n: usize,
    ) -> Result<Option<Self>, Error> {
        let q4 = quantized_kind(w.dtype, "matmul_quantized needs a Q8_0 or Q4_0 matrix")?;
        check_matrix_bytes(w)?;
        let blocks = w.cols / BLOCK_LEN;
        if Some(x.len()) != n.checked_mul(blocks) || Some(out.len()) != n.checked_mul(w.rows) {
            return Err(invalid(
                "matmul_quantized: activations or output of the wrong length",
            ));
        }
        if out.is_empty() || x.is_empty() {
            out.fill(0.0);
            return Ok(None);
        }
        Ok(Some(QuantMatmul {
            out,
            w: w.data,
            x,
            n,
            blocks,
            q4,
        }))
    }
}

/// Rows of `stride` floats, each read at `offset .. offset + width`: the
/// cached keys or values of one attention head.
///
/// Facts: `offset + width ≤ stride` and `rows · stride ≤ data.len()`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub(super) data: &'a [f32],
    pub(super) rows: usize,
    pub(super) width: usize,
    pub(super) stride: usize,
    pub(super) offset: usize,
}

impl<'a> Strided<'a> {
    /// Errors: [`Error::InvalidInput`] when a row would reach past its
    /// stride or the last row past `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        width: usize,
        stride: usize,
        offset: usize,
    ) -> Result<Self, Error> {
        let fits_stride = offset.checked_add(width).is_some_and(|end| end <= stride);
        let fits_data = rows.checked_mul(stride).is_some_and(|n| n <= data.len());
        if !(fits_stride && fits_data) {
            return Err(invalid(
                "attention rows reach past their stride or the cache",
            ));
        }
        Ok(Strided {
            data,
            rows,
            width,
            stride,
            offset,
        })
    }

    /// Row `p`'s `width` elements. Facts make it in bounds for `p < rows`.
    pub(super) fn row(&self, p: usize) -> &'a [f32] {
        let start = p * self.stride + self.offset;
        &self.data[start..start + self.width]
    }

    /// Rows `first .. first + n` as a view of their own (`first + n ≤
    /// rows`, which keeps the facts).
    pub(super) fn rows_in(&self, first: usize, n: usize) -> Strided<'a> {
        debug_assert!(first + n <= self.rows, "rows_in: past the last row");
        Strided {
            data: &self.data[first * self.stride..],
            rows: n,
            ..*self
        }
    }
}

/// A run of consecutive query heads attending over the same cached
/// positions (one attention task's heads), and where their scores go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadRun {
    /// Cached positions each head attends over.
    pub positions: usize,
    /// Floats of one cached row: every KV head of a position (`kv_dim`).
    pub row_floats: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// The run's first query head.
    pub first_head: usize,
    /// Query heads in the run.
    pub heads: usize,
    /// Query heads per KV head: query head `h` reads the columns
    /// `(h / group)·head_dim ..` of each row (grouped-query attention).
    pub group: usize,
    /// Floats from one head's scores (or weights) to the next head's.
    pub score_stride: usize,
}

impl HeadRun {
    /// Where the run's head `i` keeps its scores or weights.
    pub fn score_range(&self, i: usize) -> core::ops::Range<usize> {
        let start = i * self.score_stride;
        start..start + self.positions
    }

    /// Where the run's head `i` sits in its queries and outputs.
    pub fn head_range(&self, i: usize) -> core::ops::Range<usize> {
        let start = i * self.head_dim;
        start..start + self.head_dim
    }

    /// The length a buffer of the run's scores or weights needs.
    fn scores_len(&self) -> Option<usize> {
        (self.heads - 1)
            .checked_mul(self.score_stride)?
            .checked_add(self.positions)
    }
}

/// The cached rows a [`HeadRun`] reads: keys or values.
///
/// Facts: `heads ≥ 1`, `positions ≥ 1`, `head_dim ≥ 1`, `group ≥ 1`,
/// `positions ≤ score_stride`, the last head's KV columns end within
/// `row_floats`, and `positions · row_floats ≤ data.len()`.
#[derive(Clone, Copy)]
pub struct HeadRows<'a> {
    pub(super) data: &'a [f32],
    pub(super) run: HeadRun,
}

impl<'a> HeadRows<'a> {
    /// `Ok(None)` when the run has no heads or no positions.
    ///
    /// Errors: [`Error::InvalidInput`] when a head has no width or no KV
    /// head, the heads' scores would overlap, or a row would reach past
    /// `row_floats` or the last row past `data`.
    fn new(data: &'a [f32], run: HeadRun) -> Result<Option<Self>, Error> {
        if run.heads == 0 || run.positions == 0 {
            return Ok(None);
        }
        let last_kv_end = run
            .first_head
            .checked_add(run.heads - 1)
            .map(|last| last / run.group.max(1) + 1)
            .and_then(|kv_heads| kv_heads.checked_mul(run.head_dim));
        let fits_row = last_kv_end.is_some_and(|end| end <= run.row_floats);
        let fits_data = run
            .positions
            .checked_mul(run.row_floats)
            .is_some_and(|n| n <= data.len());
        let sane = run.head_dim > 0 && run.group > 0 && run.positions <= run.score_stride;
        if !(sane && fits_row && fits_data) {
            return Err(invalid(
                "attention heads reach past their rows or the cache",
            ));
        }
        Ok(Some(HeadRows { data, run }))
    }

    /// The rows of the run's head `i` (`i < heads`), its KV head's columns.
    pub(super) fn head(&self, i: usize) -> Strided<'a> {
        let run = self.run;
        Strided {
            data: self.data,
            rows: run.positions,
            width: run.head_dim,
            stride: run.row_floats,
            offset: (run.first_head + i) / run.group * run.head_dim,
        }
    }
}

/// A run's attention scores: each head's query against its cached keys.
///
/// Facts: those of [`HeadRows`], `q.len() = heads · head_dim`, and
/// `scores` holds every head's [`HeadRun::score_range`].
pub struct HeadScores<'a> {
    pub(super) scores: &'a mut [f32],
    pub(super) q: &'a [f32],
    pub(super) keys: HeadRows<'a>,
}

impl<'a> HeadScores<'a> {
    /// `Ok(None)` when there is nothing to compute.
    ///
    /// Errors: those of [`HeadRows`], and [`Error::InvalidInput`] when `q`
    /// or `scores` do not fit the run.
    pub fn new(
        scores: &'a mut [f32],
        q: &'a [f32],
        keys: &'a [f32],
        run: HeadRun,
    ) -> Result<Option<Self>, Error> {
        let Some(keys) = HeadRows::new(keys, run)? else {
            return Ok(None);
        };
        let fits_q = run.heads.checked_mul(run.head_dim) == Some(q.len());
        let fits_scores = run.scores_len().is_some_and(|n| n <= scores.len());
        if !(fits_q && fits_scores) {
            return Err(invalid(
                "attention_scores_heads: queries or scores do not fit the heads",
            ));
        }
        Ok(Some(HeadScores { scores, q, keys }))
    }
}

/// A run's attention-weighted sums: each head's weights over its cached
/// values.
///
/// Facts: those of [`HeadRows`], `out.len() = heads · head_dim`, and
/// `weights` holds every head's [`HeadRun::score_range`].
pub struct HeadSums<'a> {
    pub(super) out: &'a mut [f32],
    pub(super) weights: &'a [f32],
    pub(super) values: HeadRows<'a>,
}

impl<'a> HeadSums<'a> {
    /// `Ok(None)` when there is nothing to sum (`out` untouched).
    ///
    /// Errors: those of [`HeadRows`], and [`Error::InvalidInput`] when `out`
    /// or `weights` do not fit the run.
    pub fn new(
        out: &'a mut [f32],
        weights: &'a [f32],
        values: &'a [f32],
        run: HeadRun,
    ) -> Result<Option<Self>, Error> {
        let Some(values) = HeadRows::new(values, run)? else {
            return Ok(None);
        };
        let fits_out = run.heads.checked_mul(run.head_dim) == Some(out.len());
        let fits_weights = run.scores_len().is_some_and(|n| n <= weights.len());
        if !(fits_out && fits_weights) {
            return Err(invalid(
                "weighted_sum_heads: outputs or weights do not fit the heads",
            ));
        }
        Ok(Some(HeadSums {
            out,
            weights,
            values,
        }))
    }
}

/// A chunk's queries against one KV head's block of cached rows, as
/// prefill attends ([`crate::ops::attend_queries`]): query `t` sees the
/// block's first [`seen(t)`](Self::seen) rows, and keeps its head at
/// `t · query_stride` of the queries (or outputs) and its scores (or
/// weights) at `t · score_stride`. Every query of a chunk reads the same
/// few kilobytes of the block from the L1 cache, in one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryBlock {
    /// Cached rows in the block.
    pub rows: usize,
    /// Floats of one cached row (`kv_dim`).
    pub row_floats: usize,
    /// The KV head's first column in each row.
    pub column: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Queries.
    pub queries: usize,
    /// Rows query 0 sees (at least 1); each later query sees one more, up
    /// to every row.
    pub visible: usize,
    /// Floats from one query's head (or output) to the next query's.
    pub query_stride: usize,
    /// Floats from one query's scores (or weights) to the next query's.
    pub score_stride: usize,
}

impl QueryBlock {
    /// Rows query `t` sees.
    pub fn seen(&self, t: usize) -> usize {
        self.rows.min(self.visible.saturating_add(t))
    }

    /// The block's rows in `data` (their first row at its start); `None`
    /// when there are no queries or no rows.
    ///
    /// Errors: [`Error::InvalidInput`] when a query sees no row, a head has
    /// no width, a row reaches past `row_floats` or the last row past
    /// `data`, or two queries' heads or scores would overlap.
    fn rows_of<'a>(&self, data: &'a [f32]) -> Result<Option<Strided<'a>>, Error> {
        if self.queries == 0 || self.rows == 0 {
            return Ok(None);
        }
        let apart = self.queries == 1
            || (self.head_dim <= self.query_stride
                && self.seen(self.queries - 1) <= self.score_stride);
        if self.visible == 0 || self.head_dim == 0 || !apart {
            return Err(invalid("attention queries overlap or see no row"));
        }
        Strided::new(data, self.rows, self.head_dim, self.row_floats, self.column).map(Some)
    }

    /// Each query's floats of `data`, `stride` apart: its `width` first
    /// ones (the checks made them in bounds; the last query's may be all
    /// there is).
    fn each<'d>(
        &self,
        data: &'d [f32],
        stride: usize,
        width: impl Fn(usize) -> usize,
    ) -> impl Iterator<Item = &'d [f32]> {
        let apart = stride.max(width(self.queries - 1));
        data.chunks(apart)
            .take(self.queries)
            .enumerate()
            .map(move |(t, d)| &d[..width(t)])
    }

    /// [`each`](Self::each) for a `&mut` slice.
    fn each_mut<'d>(
        &self,
        data: &'d mut [f32],
        stride: usize,
        width: impl Fn(usize) -> usize,
    ) -> impl Iterator<Item = &'d mut [f32]> {
        let apart = stride.max(width(self.queries - 1));
        data.chunks_mut(apart)
            .take(self.queries)
            .enumerate()
            .map(move |(t, d)| &mut d[..width(t)])
    }

    /// The block's rows in `rows` once every query's head (`heads`: its
    /// queries or outputs) and scores (or weights) are checked to be in
    /// bounds; `None` as [`rows_of`](Self::rows_of).
    ///
    /// Errors: those of `rows_of`, and [`Error::InvalidInput`] (`misfit`)
    /// when `heads` or `scores` do not fit the queries.
    fn check<'a>(
        &self,
        rows: &'a [f32],
        heads: usize,
        scores: usize,
        misfit: &'static str,
    ) -> Result<Option<Strided<'a>>, Error> {
        let Some(rows) = self.rows_of(rows)? else {
            return Ok(None);
        };
        // Whether `len` floats hold the last query's `width` floats at
        // `(queries − 1) · stride` (so every query's).
        let fits = |len: usize, stride: usize, width: usize| {
            (self.queries - 1)
                .checked_mul(stride)
                .and_then(|start| start.checked_add(width))
                .is_some_and(|end| end <= len)
        };
        let last_seen = self.seen(self.queries - 1);
        if fits(heads, self.query_stride, self.head_dim)
            && fits(scores, self.score_stride, last_seen)
        {
            Ok(Some(rows))
        } else {
            Err(invalid(misfit))
        }
    }
}

/// Queries' attention scores against one head's block of keys.
///
/// Facts: those of [`Strided`] for `keys` (`block.rows` rows of
/// `block.head_dim` floats); `block.queries`, `block.visible` and
/// `block.head_dim` are at least 1; query `t`'s head
/// `q[t · query_stride ..][.. head_dim]` and scores
/// `scores[t · score_stride ..][.. seen(t)]` are in bounds.
pub struct QueryScores<'a> {
    pub(super) scores: &'a mut [f32],
    pub(super) q: &'a [f32],
    pub(super) keys: Strided<'a>,
    pub(super) block: QueryBlock,
}

impl<'a> QueryScores<'a> {
    /// `Ok(None)` when there is nothing to compute.
    ///
    /// Errors: those of the block's rows (see [`QueryBlock`]), and
    /// [`Error::InvalidInput`] when `q` or `scores` do not fit the queries.
    pub fn new(
        scores: &'a mut [f32],
        q: &'a [f32],
        keys: &'a [f32],
        block: QueryBlock,
    ) -> Result<Option<Self>, Error> {
        let misfit = "attention_scores_queries: queries or scores do not fit the block";
        let Some(keys) = block.check(keys, q.len(), scores.len(), misfit)? else {
            return Ok(None);
        };
        Ok(Some(QueryScores {
            scores,
            q,
            keys,
            block,
        }))
    }

    /// Each query's scores, head and the rows it sees, query after query.
    pub(super) fn queries(self) -> impl Iterator<Item = (&'a mut [f32], &'a [f32], Strided<'a>)> {
        let QueryScores {
            scores,
            q,
            keys,
            block,
        } = self;
        let scores = block.each_mut(scores, block.score_stride, move |t| block.seen(t));
        let heads = block.each(q, block.query_stride, move |_| block.head_dim);
        scores
            .zip(heads)
            .enumerate()
            .map(move |(t, (s, q))| (s, q, keys.rows_in(0, block.seen(t))))
    }
}

/// Queries' attention-weighted sums over one head's block of values, added
/// to what their outputs hold.
///
/// Facts: those of [`QueryScores`], with `out` for `q` and `weights` for
/// `scores`.
pub struct QuerySums<'a> {
    pub(super) out: &'a mut [f32],
    pub(super) weights: &'a [f32],
    pub(super) values: Strided<'a>,
    pub(super) block: QueryBlock,
}

impl<'a> QuerySums<'a> {
    /// `Ok(None)` when there is nothing to sum (`out` untouched).
    ///
    /// Errors: those of the block's rows (see [`QueryBlock`]), and
    /// [`Error::InvalidInput`] when `out` or `weights` do not fit the
    /// queries.
    pub fn new(
        out: &'a mut [f32],
        weights: &'a [f32],
        values: &'a [f32],
        block: QueryBlock,
    ) -> Result<Option<Self>, Error> {
        let misfit = "add_weighted_queries: outputs or weights do not fit the block";
        let Some(values) = block.check(values, out.len(), weights.len(), misfit)? else {
            return Ok(None);
        };
        Ok(Some(QuerySums {
            out,
            weights,
            values,
            block,
        }))
    }

    /// Each query's output, weights and the rows it sees, query after
    /// query.
    pub(super) fn queries(self) -> impl Iterator<Item = (&'a mut [f32], &'a [f32], Strided<'a>)> {
        let QuerySums {
            out,
            weights,
            values,
            block,
        } = self;
        let outs = block.each_mut(out, block.query_stride, move |_| block.head_dim);
        let weights = block.each(weights, block.score_stride, move |t| block.seen(t));
        outs.zip(weights)
            .enumerate()
            .map(move |(t, (o, w))| (o, w, values.rows_in(0, block.seen(t))))
    }
}

/// Activations to quantize into Q8 blocks.
///
/// Facts: `x.len() == 32 · dst.len()` and every element of `x` is finite.
pub struct Activations<'a> {
    pub(super) x: &'a [f32],
    pub(super) dst: &'a mut [BlockQ8],
}

impl<'a> Activations<'a> {
    /// The errors of [`quant::quantize_activations`], with `dst` untouched;
    /// `all_finite` makes the check's pass over `x` (a path's
    /// [`all_finite`](super::Path::all_finite)).
    pub fn new(
        x: &'a [f32],
        dst: &'a mut [BlockQ8],
        all_finite: impl Fn(&[f32]) -> bool,
    ) -> Result<Self, Error> {
        quant::check_activations(x, dst.len(), all_finite)?;
        Ok(Activations { x, dst })
    }
}

/// Whether a quantized dtype is Q4_0 (`true`) or Q8_0 (`false`).
fn quantized_kind(dtype: Dtype, reason: &'static str) -> Result<bool, Error> {
    match dtype {
        Dtype::Q8_0 => Ok(false),
        Dtype::Q4_0 => Ok(true),
        _ => Err(invalid(reason)),
    }
}

/// Checks that `w.data` holds exactly `rows` rows of `cols` elements and
/// returns the bytes of one row.
fn check_matrix_bytes(w: &Matrix<'_>) -> Result<usize, Error> {
    let row_bytes = quant::row_bytes(w.dtype, w.cols)?;
    if row_bytes.checked_mul(w.rows) != Some(w.data.len()) {
        return Err(invalid("matrix bytes do not match its shape"));
    }
    Ok(row_bytes)
}
