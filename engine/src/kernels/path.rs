//! Which kernel implementation runs, and the one place that dispatches.
//!
//! Without the `std` feature the fastest path is fixed at compile time from
//! the enabled target features (build with `-C target-cpu=native`, or e.g.
//! `-C target-feature=+avx2,+fma,+f16c`). With `std` it is chosen once at
//! run time from the CPU, and the environment variable
//! `KINGLET_KERNELS=portable|avx2|avxvnni|avx512` can force another (a
//! request for a path the CPU lacks is ignored).
//!
//! Every path computes the reference's bits (see `reference.rs`), so the
//! choice changes speed only. Each kernel validates its arguments once into
//! a checked type (`shapes.rs`) and then names its function in one line;
//! [`run_on!`] maps that line to the path's architecture file.
#![allow(unsafe_code)]

use super::packed::PackedMatrix;
use super::reference::{self, NORM_ROWS};
use super::shapes::{
    Activations, FloatMatmul, FloatRows, HeadRun, HeadScores, HeadSums, QuantMatmul, QuantRows,
    QueryBlock, QueryScores, QuerySums, Strided,
};
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512, avxvnni};
use crate::error::Error;
use crate::quant::BlockQ8;
use crate::tensor::{Dtype, Matrix, BLOCK_LEN};

/// A kernel implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// Plain Rust, the reference: available everywhere, vectorized by the
    /// compiler for whatever target features the build enables.
    Portable,
    /// x86-64 with AVX2, FMA and F16C (and SSE 4.2, which every such CPU
    /// has, for the checksum).
    Avx2,
    /// AVX2 with AVX-VNNI (for CPUs that have it without AVX-512): the
    /// Q8_0 / Q4_0 block products in 256-bit `vpdpbusd`.
    AvxVnni,
    /// x86-64 with AVX-512 F, BW, VL and VNNI (besides AVX2, FMA and F16C):
    /// 16-lane float rows, `vpdpbusd` integer dot products.
    Avx512,
}

/// Runs `kernel` of the path's architecture file (the reference for the
/// portable path, or for a path this CPU lacks).
macro_rules! run_on {
    ($path:expr, $kernel:ident($($arg:expr),*)) => {
        match $path.usable() {
            // SAFETY: `usable` returns a path only when this CPU has its
            // features (detected at run time, or enabled at compile time);
            // the arguments are checked types carrying every length fact the
            // kernel relies on.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { avx512::$kernel($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Path::AvxVnni => unsafe { avxvnni::$kernel($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Path::Avx2 => unsafe { avx2::$kernel($($arg),*) },
            _ => reference::$kernel($($arg),*),
        }
    };
}

impl Path {
    /// Every path, slowest first.
    pub const ALL: [Path; 4] = [Path::Portable, Path::Avx2, Path::AvxVnni, Path::Avx512];

    /// The name used in reports and in `KINGLET_KERNELS`.
    pub const fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            Path::Avx2 => "avx2",
            Path::AvxVnni => "avxvnni",
            Path::Avx512 => "avx512",
        }
    }

    /// Whether this CPU (with `std`) or this build (without) can run the path.
    pub fn is_supported(self) -> bool {
        self.missing_feature().is_none()
    }

    /// The first CPU feature the path needs that this CPU (or, without
    /// `std`, this build) lacks, e.g. `"avx512vnni"`; `None` when it can run.
    pub fn missing_feature(self) -> Option<&'static str> {
        self.features().iter().copied().find(|f| !has_feature(f))
    }

    /// The CPU features the path needs.
    pub const fn features(self) -> &'static [&'static str] {
        match self {
            Path::Portable => &[],
            Path::Avx2 => &AVX2,
            Path::AvxVnni => &AVX_VNNI,
            Path::Avx512 => &AVX512,
        }
    }

    /// The path the dispatching functions in [`crate::kernels`] use: the
    /// fastest supported one, unless `KINGLET_KERNELS` asks for another.
    pub fn active() -> Path {
        active()
    }

    /// This path if the CPU can run it, else the portable one. (The active
    /// path is supported by construction: one atomic load decides.)
    fn usable(self) -> Path {
        if self == active() || self.is_supported() {
            self
        } else {
            Path::Portable
        }
    }

    /// `out[r] = Σ_c w[r][c] · x[c]` for F32, F16 and BF16 weights;
    /// `out`: `[w.rows]`, `x`: `[w.cols]`.
    ///
    /// Errors: [`Error::InvalidInput`] for a quantized matrix or lengths that
    /// disagree with its shape.
    pub fn matvec(self, out: &mut [f32], w: &Matrix<'_>, x: &[f32]) -> Result<(), Error> {
        if let Some(a) = FloatRows::new(out, w, x)? {
            run_on!(self, matvec(a));
        }
        Ok(())
    }

    /// `out[t·rows + r] = Σ_c w[r][c] · x[t·cols + c]` for F32, F16 and BF16
    /// weights and `n` positions; `out`: `[n × w.rows]` (position-major, as
    /// `x`), `x`: `[n × w.cols]`.
    /// Each element is the bits of [`matvec`](Self::matvec) for its row and
    /// position.
    ///
    /// Errors: as [`matvec`](Self::matvec).
    pub fn matmul(self, out: &mut [f32], w: &Matrix<'_>, x: &[f32], n: usize) -> Result<(), Error> {
        if let Some(a) = FloatMatmul::new(out, w, x, n)? {
            run_on!(self, matmul(a));
        }
        Ok(())
    }

    /// `out = W · x` for a Q8_0 or Q4_0 matrix and activations quantized
    /// with [`crate::quant::quantize_activations`] (`w.cols / 32` blocks).
    ///
    /// Errors: see [`crate::quant::matvec_quantized`].
    pub fn matvec_quantized(
        self,
        out: &mut [f32],
        w: &Matrix<'_>,
        xq: &[BlockQ8],
    ) -> Result<(), Error> {
        if let Some(a) = QuantRows::new(out, w, xq)? {
            run_on!(self, matvec_quantized(a));
        }
        Ok(())
    }

    /// Q8_0 / Q4_0 weights times `n` positions of quantized activations
    /// (`xq`: `[n × w.cols / 32]`); `out`: `[n × w.rows]`, each element the
    /// bits of [`matvec_quantized`](Self::matvec_quantized).
    ///
    /// Errors: [`Error::InvalidInput`] for a float matrix or lengths that
    /// disagree with its shape.
    pub fn matmul_quantized(
        self,
        out: &mut [f32],
        w: &Matrix<'_>,
        xq: &[BlockQ8],
        n: usize,
    ) -> Result<(), Error> {
        if let Some(a) = QuantMatmul::new(out, w, xq, n)? {
            run_on!(self, matmul_quantized(a));
        }
        Ok(())
    }

    /// Whether this path has kernels for the packed layout of
    /// [`super::packed`] (every x86 path does); the portable path runs the
    /// packed products in the reference's plain Rust, correct but slower
    /// than on ggml's layout, so packing is not worth it there.
    pub fn packs_weights(self) -> bool {
        self.usable() != Path::Portable
    }

    /// Whether the packed products, on this CPU, should request a streamed
    /// matrix's bytes ahead ([`PackedMatrix::streamed`]). They should except
    /// on an AMD family 19h CPU (Zen 3, Zen 4), whatever the path: on Zen 4
    /// the hardware prefetcher alone kept the kernels nearer the memory's
    /// rate, and with the requests a 110M q4_0 decode ran 10–28% slower on
    /// AVX-512, and the AVX2 Q8_0 products read 19.3–20.1 GB/s against
    /// 25.0–27.8 without (on Zen 5 the requests gained 13–27%;
    /// docs/PERFORMANCE.md, 2026-12-04 and 2026-12-05).
    pub fn requests_ahead() -> bool {
        !amd_family_19h()
    }

    /// [`matvec_quantized`](Self::matvec_quantized) for a matrix in the
    /// packed layout: the same bits and errors as on the ggml matrix it was
    /// packed from.
    pub fn matvec_packed(
        self,
        out: &mut [f32],
        w: &PackedMatrix<'_>,
        xq: &[BlockQ8],
    ) -> Result<(), Error> {
        // `w`'s bytes are in the packed layout: `PackedMatrix` is built
        // only by packing.
        if let Some(mut a) = QuantRows::new(out, &w.inner, xq)? {
            a.streamed = w.streamed;
            run_on!(self, matvec_packed(a));
        }
        Ok(())
    }

    /// [`matmul_quantized`](Self::matmul_quantized) for a matrix in the
    /// packed layout: the same bits and errors as on the ggml matrix.
    pub fn matmul_packed(
        self,
        out: &mut [f32],
        w: &PackedMatrix<'_>,
        xq: &[BlockQ8],
        n: usize,
    ) -> Result<(), Error> {
        // As in `matvec_packed`.
        if let Some(a) = QuantMatmul::new(out, &w.inner, xq, n)? {
            run_on!(self, matmul_packed(a));
        }
        Ok(())
    }

    /// [`crate::quant::q8_0_dot`] on this path: the same bits and errors.
    pub fn q8_0_dot(self, w_row: &[u8], x: &[BlockQ8]) -> Result<f32, Error> {
        self.row_dot(Dtype::Q8_0, w_row, x)
    }

    /// [`crate::quant::q4_0_dot`] on this path: the same bits and errors.
    pub fn q4_0_dot(self, w_row: &[u8], x: &[BlockQ8]) -> Result<f32, Error> {
        self.row_dot(Dtype::Q4_0, w_row, x)
    }

    fn row_dot(self, dtype: Dtype, w_row: &[u8], x: &[BlockQ8]) -> Result<f32, Error> {
        reference::check_dot_lengths(dtype, w_row.len(), x.len())?;
        let w = Matrix {
            dtype,
            rows: 1,
            cols: x.len() * BLOCK_LEN,
            data: w_row,
        };
        let mut out = [0.0f32];
        self.matvec_quantized(&mut out, &w, x)?;
        Ok(out[0])
    }

    /// Dot product over the common length of `a` and `b`.
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        run_on!(self, dot(a, b))
    }

    /// `y += a · x` over the common length.
    pub fn axpy(self, y: &mut [f32], a: f32, x: &[f32]) {
        run_on!(self, axpy(y, a, x))
    }

    /// `x[i] = exp(x[i] − shift)` for every element, returning the sum of the
    /// results in the order of a dot product (softmax's numerator and
    /// denominator); `exp` is [`reference::exp`].
    pub fn exp_and_sum(self, x: &mut [f32], shift: f32) -> f32 {
        run_on!(self, exp_and_sum(x, shift))
    }

    /// SwiGLU's gate over the common length: `gate[i] = silu(gate[i]) ·
    /// up[i]`; see [`reference::silu_mul`].
    pub fn silu_mul(self, gate: &mut [f32], up: &[f32]) {
        run_on!(self, silu_mul(gate, up))
    }

    /// Attention scores of one query head against `scores.len()` cached
    /// positions: `scores[p] = dot(q, keys[p·stride + offset ..][..q.len()])`.
    ///
    /// Errors: [`Error::InvalidInput`] when a key row would reach past its
    /// stride or past `keys`.
    pub fn attention_scores(
        self,
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        stride: usize,
        offset: usize,
    ) -> Result<(), Error> {
        let keys = Strided::new(keys, scores.len(), q.len(), stride, offset)?;
        run_on!(self, attention_scores(scores, q, keys));
        Ok(())
    }

    /// Attention-weighted sum of cached values: `out = 0`, then for each
    /// position `p` in order `out += weights[p] · values[p·stride + offset
    /// ..][..out.len()]`.
    ///
    /// Errors: [`Error::InvalidInput`] when a value row would reach past its
    /// stride or past `values`.
    pub fn weighted_sum(
        self,
        out: &mut [f32],
        weights: &[f32],
        values: &[f32],
        stride: usize,
        offset: usize,
    ) -> Result<(), Error> {
        let values = Strided::new(values, weights.len(), out.len(), stride, offset)?;
        run_on!(self, weighted_sum(out, weights, values));
        Ok(())
    }

    /// [`attention_scores`](Self::attention_scores) of each query head `i`
    /// of a run (`q[run.head_range(i)]` against its KV head's columns of
    /// `keys`, rows of `run.row_floats`), into `scores[run.score_range(i)]`;
    /// the scores of one position for all the heads before the next
    /// positions, since a position's heads share a row.
    ///
    /// Errors: [`Error::InvalidInput`] when a head has no width or no KV
    /// head, a row would reach past `row_floats` or `keys`, or `q` or
    /// `scores` do not fit the run.
    pub fn attention_scores_heads(
        self,
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        run: HeadRun,
    ) -> Result<(), Error> {
        if let Some(a) = HeadScores::new(scores, q, keys, run)? {
            run_on!(self, attention_scores_heads(a));
        }
        Ok(())
    }

    /// [`weighted_sum`](Self::weighted_sum) of each query head `i` of a run
    /// (`weights[run.score_range(i)]` over its KV head's columns of
    /// `values`), into `out[run.head_range(i)]`, the heads' sums taken a few
    /// positions at a time across the heads.
    ///
    /// Errors: as [`attention_scores_heads`](Self::attention_scores_heads),
    /// for `out` and `weights`.
    pub fn weighted_sum_heads(
        self,
        out: &mut [f32],
        weights: &[f32],
        values: &[f32],
        run: HeadRun,
    ) -> Result<(), Error> {
        out.fill(0.0);
        self.add_weighted_heads(out, weights, values, run)
    }

    /// [`weighted_sum_heads`](Self::weighted_sum_heads) added to what `out`
    /// holds: each element continues its sum position after position, so
    /// sums over consecutive stretches of positions, each started where the
    /// last one ended, give the bits of one sum over all of them.
    ///
    /// Errors: as [`weighted_sum_heads`](Self::weighted_sum_heads).
    pub fn add_weighted_heads(
        self,
        out: &mut [f32],
        weights: &[f32],
        values: &[f32],
        run: HeadRun,
    ) -> Result<(), Error> {
        if let Some(a) = HeadSums::new(out, weights, values, run)? {
            run_on!(self, add_weighted_heads(a));
        }
        Ok(())
    }

    /// [`attention_scores`](Self::attention_scores) of each query `t` of a
    /// block (its head `q[t · query_stride ..][.. head_dim]` against the
    /// first [`seen(t)`](QueryBlock::seen) rows of `keys`, the head's
    /// columns `column ..`) into `scores[t · score_stride ..]`.
    ///
    /// Errors: [`Error::InvalidInput`] when a query sees no row, a head has
    /// no width, the rows reach past `row_floats` or `keys`, two queries
    /// overlap, or `q` or `scores` do not fit the queries.
    pub fn attention_scores_queries(
        self,
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        block: QueryBlock,
    ) -> Result<(), Error> {
        if let Some(a) = QueryScores::new(scores, q, keys, block)? {
            run_on!(self, attention_scores_queries(a));
        }
        Ok(())
    }

    /// Each query `t` of a block's weights `weights[t · score_stride ..]`
    /// over the first [`seen(t)`](QueryBlock::seen) rows of `values`, added
    /// position after position to its output `out[t · query_stride ..][..
    /// head_dim]`, as [`add_weighted_heads`](Self::add_weighted_heads) adds.
    ///
    /// Errors: as [`attention_scores_queries`](Self::attention_scores_queries),
    /// for `out` and `weights`.
    pub fn add_weighted_queries(
        self,
        out: &mut [f32],
        weights: &[f32],
        values: &[f32],
        block: QueryBlock,
    ) -> Result<(), Error> {
        if let Some(a) = QuerySums::new(out, weights, values, block)? {
            run_on!(self, add_weighted_queries(a));
        }
        Ok(())
    }

    /// RMSNorm's sums of squares of 16 rows of `dim` floats, each added in
    /// order; see [`reference::sum_of_squares_rows`].
    ///
    /// Errors: [`Error::InvalidInput`] when `x` is not 16 rows of `dim`.
    pub fn sum_of_squares_rows(self, x: &[f32], dim: usize) -> Result<[f32; NORM_ROWS], Error> {
        if dim.checked_mul(NORM_ROWS) != Some(x.len()) {
            return Err(Error::InvalidInput {
                reason: "sum_of_squares_rows: x is not 16 rows of dim",
            });
        }
        Ok(run_on!(self, sum_of_squares_rows(x, dim)))
    }

    /// RoPE on every head of `v`; see [`reference::rope`].
    pub fn rope(self, v: &mut [f32], rotations: &[f32]) {
        run_on!(self, rope(v, rotations))
    }

    /// `x += y` over the common length; see [`reference::add_assign`].
    pub fn add_assign(self, x: &mut [f32], y: &[f32]) {
        run_on!(self, add_assign(x, y))
    }

    /// `x[i] /= d` for every element; see [`reference::divide`].
    pub fn divide(self, x: &mut [f32], d: f32) {
        run_on!(self, divide(x, d))
    }

    /// CRC32C's running remainder after `bytes`, the reference's value.
    pub fn crc32c_update(self, crc: u32, bytes: &[u8]) -> u32 {
        run_on!(self, crc32c_update(crc, bytes))
    }

    /// Whether every element of `x` is finite.
    pub fn all_finite(self, x: &[f32]) -> bool {
        run_on!(self, all_finite(x))
    }

    /// [`crate::quant::quantize_activations`] on this path: the same blocks,
    /// bit for bit, and the same errors (with `dst` untouched).
    pub fn quantize_activations(self, x: &[f32], dst: &mut [BlockQ8]) -> Result<(), Error> {
        let a = Activations::new(x, dst, |x| self.all_finite(x))?;
        run_on!(self, quantize_activations(a));
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Detection and choice
// ---------------------------------------------------------------------------

const AVX2: [&str; 4] = ["avx2", "fma", "f16c", "sse4.2"];
const AVX_VNNI: [&str; 5] = ["avx2", "fma", "f16c", "sse4.2", "avxvnni"];
const AVX512: [&str; 8] = [
    "avx2",
    "sse4.2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512vnni",
];

/// Whether the CPU has `feature` (one of the names above).
#[cfg(all(target_arch = "x86_64", feature = "std"))]
fn has_feature(feature: &str) -> bool {
    // std caches the CPUID answers: an atomic load and a bit test each.
    match feature {
        "avx2" => std::is_x86_feature_detected!("avx2"),
        "fma" => std::is_x86_feature_detected!("fma"),
        "f16c" => std::is_x86_feature_detected!("f16c"),
        "sse4.2" => std::is_x86_feature_detected!("sse4.2"),
        "avxvnni" => std::is_x86_feature_detected!("avxvnni"),
        "avx512f" => std::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
        "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
        _ => false,
    }
}

/// Whether this build enables `feature` (one of the names above).
#[cfg(not(all(target_arch = "x86_64", feature = "std")))]
fn has_feature(feature: &str) -> bool {
    match feature.as_bytes() {
        b"avx2" => cfg!(all(target_arch = "x86_64", target_feature = "avx2")),
        b"fma" => cfg!(all(target_arch = "x86_64", target_feature = "fma")),
        b"f16c" => cfg!(all(target_arch = "x86_64", target_feature = "f16c")),
        b"sse4.2" => cfg!(all(target_arch = "x86_64", target_feature = "sse4.2")),
        b"avxvnni" => cfg!(all(target_arch = "x86_64", target_feature = "avxvnni")),
        b"avx512f" => cfg!(all(target_arch = "x86_64", target_feature = "avx512f")),
        b"avx512bw" => cfg!(all(target_arch = "x86_64", target_feature = "avx512bw")),
        b"avx512vl" => cfg!(all(target_arch = "x86_64", target_feature = "avx512vl")),
        b"avx512vnni" => cfg!(all(target_arch = "x86_64", target_feature = "avx512vnni")),
        _ => false,
    }
}

/// The CPU's family if its vendor is AMD (CPUID leaves 0 and 1).
#[cfg(target_arch = "x86_64")]
fn amd_family() -> Option<u32> {
    use core::arch::x86_64::__cpuid;
    let vendor = __cpuid(0);
    amd_family_of([vendor.ebx, vendor.edx, vendor.ecx], __cpuid(1).eax)
}

#[cfg(not(target_arch = "x86_64"))]
fn amd_family() -> Option<u32> {
    None
}

/// Whether this CPU is an AMD family 19h one (Zen 3, Zen 4), read once:
/// CPUID is a VM exit, and the float kernels ask per matrix.
pub(super) fn amd_family_19h() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    /// 0: not read yet; 1: no; 2: yes.
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        0 => {
            let yes = amd_family() == Some(0x19);
            KNOWN.store(1 + u8::from(yes), Ordering::Relaxed);
            yes
        }
        known => known == 2,
    }
}

/// The family in CPUID leaf 1's `eax` (`signature`): the base family,
/// plus the extended family when the base is 0xF, as AMD defines it;
/// `None` unless `vendor` (leaf 0's `ebx`, `edx`, `ecx`) spells
/// "AuthenticAMD".
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // no CPUID elsewhere
fn amd_family_of(vendor: [u32; 3], signature: u32) -> Option<u32> {
    let mut name = [0u8; 12];
    for (bytes, word) in name.chunks_exact_mut(4).zip(vendor) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    if &name != b"AuthenticAMD" {
        return None;
    }
    let base = (signature >> 8) & 0xF;
    let extended = (signature >> 20) & 0xFF;
    Some(if base == 0xF { base + extended } else { base })
}

/// The fastest path this CPU or build supports.
fn best_supported() -> Path {
    Path::ALL
        .into_iter()
        .rfind(|p| p.is_supported())
        .unwrap_or(Path::Portable)
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
            .unwrap_or(Path::Portable),
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

/// The name of the active path, for reports: `"avx512"`, `"avxvnni"`,
/// `"avx2"` or `"portable"`.
pub fn active_path() -> &'static str {
    active().name()
}

#[cfg(test)]
mod tests {
    use super::amd_family_of;

    /// CPUID leaf 0's `ebx`, `edx`, `ecx` for a vendor name.
    fn vendor(name: &[u8; 12]) -> [u32; 3] {
        core::array::from_fn(|i| u32::from_le_bytes(name[4 * i..4 * i + 4].try_into().unwrap()))
    }

    #[test]
    fn amd_family_reads_base_and_extended_family() {
        let amd = vendor(b"AuthenticAMD");
        // EPYC Zen 4 (family 25, model 17), Zen 5 (26, model 2), Zen 3
        // (25, model 1), and a family below 0xF, which has no extension.
        assert_eq!(amd_family_of(amd, 0x00A1_0F11), Some(0x19));
        assert_eq!(amd_family_of(amd, 0x00B0_0F20), Some(0x1A));
        assert_eq!(amd_family_of(amd, 0x00A0_0F11), Some(0x19));
        assert_eq!(amd_family_of(amd, 0x0010_0610), Some(0x6));
        // An Intel Xeon's signature (family 6) is not AMD's.
        assert_eq!(amd_family_of(vendor(b"GenuineIntel"), 0x0008_06F8), None);
    }
}
