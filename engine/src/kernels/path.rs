//! Which kernel implementation runs, and the safe entry points of each one.
//!
//! Without the `std` feature the fastest path is fixed at compile time from
//! the enabled target features (build with `-C target-cpu=native` or
//! `-C target-feature=+avx2,+fma,+f16c` to get AVX2). With `std` it is chosen
//! once at run time from the CPU, and the environment variable
//! `KINGLET_KERNELS=scalar|avx2` can force a slower path (a request for a
//! path the CPU lacks is ignored).
//!
//! Every path computes the same bits as the scalar reference (see the notes
//! in `x86.rs`), so the choice changes speed only.
#![allow(unsafe_code)]

use crate::error::Error;
use crate::quant::{self, BlockQ8};
use crate::tensor::{Dtype, Matrix};

use super::scalar;

/// A kernel implementation. More may be added (an AVX-512 path needs a CPU
/// to test it on), hence `non_exhaustive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// Plain Rust: the reference, available everywhere.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
}

impl Path {
    /// Every path, slowest first.
    pub const ALL: [Path; 2] = [Path::Scalar, Path::Avx2];

    /// The name used in reports and in `KINGLET_KERNELS`.
    pub const fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Avx2 => "avx2",
        }
    }

    /// Whether this CPU (with `std`) or this build (without) can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Path::Scalar => true,
            Path::Avx2 => avx2_supported(),
        }
    }

    /// The path the dispatching functions in [`crate::kernels`] use: the
    /// fastest supported one, unless `KINGLET_KERNELS` asks for another.
    pub fn active() -> Path {
        active()
    }

    /// `out[r] = Σ_c w[r][c] · x[c]` for F32, F16 and BF16 weights; see
    /// [`scalar::matvec`] for the preconditions. An unsupported path runs
    /// the scalar kernel.
    pub fn matvec(self, out: &mut [f32], w: &Matrix<'_>, x: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2 && avx2_supported() {
            if let Some(rows) = float_rows(out.len(), w, x.len()) {
                let (out, data) = (&mut out[..rows], w.data);
                // SAFETY: AVX2, FMA and F16C were detected just above (or are
                // enabled at compile time); `float_rows` checked that `x` is
                // non-empty and `data` holds `rows` rows of `x.len()` elements.
                unsafe {
                    match w.dtype {
                        Dtype::F32 => x86::matvec_float::<{ x86::F32 }>(out, data, x),
                        Dtype::F16 => x86::matvec_float::<{ x86::F16 }>(out, data, x),
                        _ => x86::matvec_float::<{ x86::BF16 }>(out, data, x),
                    }
                }
                return;
            }
        }
        scalar::matvec(out, w, x)
    }

    /// Dot product of two equal-length slices; see [`scalar::dot`].
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2 && avx2_supported() {
            // SAFETY: the features were detected; the kernel reads only the
            // common length of the two slices.
            return unsafe { x86::dot(a, b) };
        }
        scalar::dot(a, b)
    }

    /// `y += a · x`; see [`scalar::axpy`].
    pub fn axpy(self, y: &mut [f32], a: f32, x: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2 && avx2_supported() {
            // SAFETY: the features were detected; the kernel touches only the
            // common length of the two slices.
            unsafe { x86::axpy(y, a, x) };
            return;
        }
        scalar::axpy(y, a, x)
    }

    /// [`quant::q8_0_dot`] on this path: the same result, bit for bit, and the
    /// same errors.
    pub fn q8_0_dot(self, w_row: &[u8], x: &[BlockQ8]) -> Result<f32, Error> {
        self.quantized_dot(Dtype::Q8_0, w_row, x)
    }

    /// [`quant::q4_0_dot`] on this path: the same result, bit for bit, and the
    /// same errors.
    pub fn q4_0_dot(self, w_row: &[u8], x: &[BlockQ8]) -> Result<f32, Error> {
        self.quantized_dot(Dtype::Q4_0, w_row, x)
    }

    fn quantized_dot(self, dtype: Dtype, w_row: &[u8], x: &[BlockQ8]) -> Result<f32, Error> {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2
            && avx2_supported()
            && !x.is_empty()
            && dtype.row_bytes(x.len() * crate::tensor::BLOCK_LEN) == Some(w_row.len())
        {
            // SAFETY: the features were detected, and `w_row` holds exactly
            // `x.len()` blocks of `dtype` (x.len() · 32 cannot overflow: a
            // block is 36 bytes).
            return Ok(unsafe {
                if dtype == Dtype::Q8_0 {
                    x86::quantized_dot::<false>(w_row, x)
                } else {
                    x86::quantized_dot::<true>(w_row, x)
                }
            });
        }
        // The reference also reports every error, and handles empty rows.
        if dtype == Dtype::Q8_0 {
            quant::q8_0_dot(w_row, x)
        } else {
            quant::q4_0_dot(w_row, x)
        }
    }

    /// [`quant::matvec_quantized`] on this path: `out = W · x` for a Q8_0 or
    /// Q4_0 matrix and quantized activations, the same bits and errors.
    pub fn matvec_quantized(
        self,
        out: &mut [f32],
        w: &Matrix<'_>,
        xq: &[BlockQ8],
    ) -> Result<(), Error> {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2 && avx2_supported() && quantized_shapes_ok(out.len(), w, xq.len()) {
            // SAFETY: the features were detected; `quantized_shapes_ok`
            // checked that `xq` is non-empty, `w.data` holds `out.len()` rows
            // of `xq.len()` blocks.
            unsafe {
                if w.dtype == Dtype::Q8_0 {
                    x86::matvec_quantized::<false>(out, w.data, xq)
                } else {
                    x86::matvec_quantized::<true>(out, w.data, xq)
                }
            }
            return Ok(());
        }
        // The reference validates and reports every error.
        quant::matvec_quantized(out, w, xq)
    }

    /// [`quant::quantize_activations`] on this path: the same blocks, bit
    /// for bit, and the same errors (left to the reference to report, with
    /// `dst` untouched).
    pub fn quantize_activations(self, x: &[f32], dst: &mut [BlockQ8]) -> Result<(), Error> {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2
            && avx2_supported()
            && x.len().is_multiple_of(crate::tensor::BLOCK_LEN)
            && dst.len() == x.len() / crate::tensor::BLOCK_LEN
        {
            // SAFETY: the features were detected.
            if unsafe { x86::all_finite(x) } {
                // SAFETY: the features were detected, `x` is finite and
                // holds exactly dst.len() blocks.
                unsafe { x86::quantize_activations(x, dst) };
                return Ok(());
            }
        }
        quant::quantize_activations(x, dst)
    }

    /// [`scalar::attention_scores`] on this path: the same bits.
    pub fn attention_scores(
        self,
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        stride: usize,
        offset: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2
            && avx2_supported()
            && rows_fit(scores.len(), q.len(), keys.len(), stride, offset)
        {
            // SAFETY: the features were detected; `rows_fit` checked that
            // every key row holds `offset + q.len() <= stride` elements.
            unsafe { x86::attention_scores(scores, q, keys, stride, offset) };
            return;
        }
        scalar::attention_scores(scores, q, keys, stride, offset)
    }

    /// [`scalar::weighted_sum`] on this path: the same bits.
    pub fn weighted_sum(
        self,
        out: &mut [f32],
        weights: &[f32],
        values: &[f32],
        stride: usize,
        offset: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2
            && avx2_supported()
            && rows_fit(weights.len(), out.len(), values.len(), stride, offset)
        {
            // SAFETY: the features were detected; `rows_fit` checked that
            // every value row holds `offset + out.len() <= stride` elements.
            unsafe { x86::weighted_sum(out, weights, values, stride, offset) };
            return;
        }
        scalar::weighted_sum(out, weights, values, stride, offset)
    }

    /// `out[r·n + t] = Σ_c w[r][c] · x[t·cols + c]` for F32, F16 and BF16
    /// weights: [`matmul::matmul`](super::matmul::matmul) on this path, the
    /// same bits (each element is the one-vector kernel's).
    pub fn matmul(self, out: &mut [f32], w: &Matrix<'_>, x: &[f32], n: usize) {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2 && avx2_supported() && float_matmul_ok(out.len(), w, x.len(), n) {
            // SAFETY: the features were detected; `float_matmul_ok` checked
            // n > 0, cols > 0, x = n × cols, out = rows × n and that `w.data`
            // holds rows × cols elements.
            unsafe {
                match w.dtype {
                    Dtype::F32 => x86::matmul_float::<{ x86::F32 }>(out, w.data, x, n, w.cols),
                    Dtype::F16 => x86::matmul_float::<{ x86::F16 }>(out, w.data, x, n, w.cols),
                    _ => x86::matmul_float::<{ x86::BF16 }>(out, w.data, x, n, w.cols),
                }
            }
            return;
        }
        super::matmul::matmul(out, w, x, n)
    }

    /// [`matmul::matmul_quantized`](super::matmul::matmul_quantized) on
    /// this path: the same bits and errors.
    pub fn matmul_quantized(
        self,
        out: &mut [f32],
        w: &Matrix<'_>,
        xq: &[BlockQ8],
        n: usize,
    ) -> Result<(), Error> {
        #[cfg(target_arch = "x86_64")]
        if self == Path::Avx2
            && avx2_supported()
            && n > 0
            && quantized_shapes_ok(w.rows, w, w.cols / crate::tensor::BLOCK_LEN)
            && Some(xq.len()) == n.checked_mul(w.cols / crate::tensor::BLOCK_LEN)
            && Some(out.len()) == n.checked_mul(w.rows)
        {
            let blocks = w.cols / crate::tensor::BLOCK_LEN;
            // SAFETY: the features were detected; the checks above give
            // n > 0, blocks > 0, xq = n × blocks, out = rows × n, and
            // `w.data` = rows rows of `blocks` blocks.
            unsafe {
                if w.dtype == Dtype::Q8_0 {
                    x86::matmul_quantized::<false>(out, w.data, xq, n, blocks)
                } else {
                    x86::matmul_quantized::<true>(out, w.data, xq, n, blocks)
                }
            }
            return Ok(());
        }
        super::matmul::matmul_quantized(out, w, xq, n)
    }
}

#[cfg(target_arch = "x86_64")]
use super::x86;

/// Rows a float matvec can run on, or `None` when the shapes are not exactly
/// as the kernels need (the scalar kernel then handles them its own way).
#[cfg(target_arch = "x86_64")]
fn float_rows(out_len: usize, w: &Matrix<'_>, x_len: usize) -> Option<usize> {
    let float = matches!(w.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16);
    let row_bytes = w.dtype.row_bytes(x_len)?;
    let exact = x_len == w.cols && out_len == w.rows;
    let fits = row_bytes.checked_mul(out_len)? <= w.data.len();
    (float && x_len > 0 && exact && fits).then_some(out_len)
}

/// Whether `rows` rows of `stride` floats, each read at `offset ..
/// offset + width`, lie inside a slice of `len` floats.
#[cfg(target_arch = "x86_64")]
fn rows_fit(rows: usize, width: usize, len: usize, stride: usize, offset: usize) -> bool {
    offset.checked_add(width).is_some_and(|end| end <= stride)
        && rows.checked_mul(stride).is_some_and(|n| n <= len)
}

/// Whether a float matmul has exactly the shapes the kernels need.
#[cfg(target_arch = "x86_64")]
fn float_matmul_ok(out_len: usize, w: &Matrix<'_>, x_len: usize, n: usize) -> bool {
    let float = matches!(w.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16);
    let fits = w
        .dtype
        .row_bytes(w.cols)
        .and_then(|b| b.checked_mul(w.rows))
        .is_some_and(|bytes| bytes <= w.data.len());
    float
        && n > 0
        && w.cols > 0
        && fits
        && Some(x_len) == n.checked_mul(w.cols)
        && Some(out_len) == n.checked_mul(w.rows)
}

/// Whether a quantized matvec has exactly the shapes the reference accepts,
/// with at least one block per row.
#[cfg(target_arch = "x86_64")]
fn quantized_shapes_ok(out_len: usize, w: &Matrix<'_>, x_blocks: usize) -> bool {
    let Some(row_bytes) = w.dtype.row_bytes(w.cols) else {
        return false;
    };
    w.dtype.is_quantized()
        && x_blocks > 0
        && w.cols == x_blocks * crate::tensor::BLOCK_LEN
        && out_len == w.rows
        && row_bytes.checked_mul(w.rows) == Some(w.data.len())
}

// ---------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------

#[cfg(all(target_arch = "x86_64", feature = "std"))]
fn avx2_supported() -> bool {
    // std caches the CPUID answers; this is an atomic load and a bit test.
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

#[cfg(not(all(target_arch = "x86_64", feature = "std")))]
const fn avx2_supported() -> bool {
    cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))
}

/// The fastest path this CPU or build supports.
fn best_supported() -> Path {
    let mut best = Path::Scalar;
    for path in Path::ALL {
        if path.is_supported() {
            best = path;
        }
    }
    best
}

#[cfg(feature = "std")]
fn active() -> Path {
    use core::sync::atomic::{AtomicU8, Ordering};
    /// 0: not chosen yet; otherwise 1 + the index in `Path::ALL`.
    static CHOSEN: AtomicU8 = AtomicU8::new(0);
    match CHOSEN.load(Ordering::Relaxed) {
        0 => {
            let path = choose_at_run_time();
            let index = Path::ALL.iter().position(|&p| p == path).unwrap_or(0);
            // Racing threads compute the same answer; any store wins.
            CHOSEN.store(index as u8 + 1, Ordering::Relaxed);
            path
        }
        n => Path::ALL
            .get(usize::from(n) - 1)
            .copied()
            .unwrap_or(Path::Scalar),
    }
}

/// The best supported path, or the one `KINGLET_KERNELS` names if supported.
#[cfg(feature = "std")]
fn choose_at_run_time() -> Path {
    let requested = std::env::var("KINGLET_KERNELS").ok().and_then(|name| {
        Path::ALL
            .into_iter()
            .find(|p| p.name() == name.trim().to_ascii_lowercase())
    });
    match requested {
        Some(path) if path.is_supported() => path,
        _ => best_supported(),
    }
}

#[cfg(not(feature = "std"))]
fn active() -> Path {
    best_supported()
}

/// The name of the active path, for reports: `"avx2"` or `"scalar"`.
pub fn active_path() -> &'static str {
    active().name()
}
