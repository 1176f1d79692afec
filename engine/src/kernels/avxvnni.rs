//! x86-64 with AVX-VNNI and without AVX-512 (Intel's cores since Alder
//! Lake, for one): the AVX2 path, but each Q8_0 / Q4_0 block's integer dot
//! product is one 256-bit `vpdpbusd` instead of `maddubs` and `madd`. The
//! integers are the same (see `avx2::quad_products`), so are the bits.
//!
//! Every other kernel is the AVX2 path's. The two quantized kernels here are
//! `avx2.rs`'s, compiled again with AVX-VNNI enabled: their inner functions
//! carry no features of their own and are inlined into these.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use super::shapes::{QuantMatmul, QuantRows};
use super::{avx2, avx2_packed};

pub use super::avx2::{
    add_assign, add_weighted_heads, add_weighted_queries, all_finite, attention_scores,
    attention_scores_heads, attention_scores_queries, axpy, crc32c_update, divide, dot,
    exp_and_sum, matmul, matvec, quantize_activations, rope, silu_mul, sum_of_squares_rows,
    weighted_sum,
};

/// The AVX2 path's `matvec_quantized`, with `vpdpbusd`.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-VNNI are available.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub unsafe fn matvec_quantized(a: QuantRows<'_>) {
    // SAFETY: the features are available.
    unsafe { avx2::quant_rows_of::<true>(a) }
}

/// The AVX2 path's `matmul_quantized`, with `vpdpbusd`.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-VNNI are available.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub unsafe fn matmul_quantized(a: QuantMatmul<'_>) {
    // SAFETY: the features are available.
    unsafe { avx2::quant_matmul_of::<true>(a) }
}

/// The AVX2 path's `matvec_packed`, with `vpdpbusd`.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-VNNI are available; `a.w` is in the packed
/// layout.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub unsafe fn matvec_packed(a: QuantRows<'_>) {
    // SAFETY: the features are available; forwarded precondition.
    unsafe { avx2_packed::matvec_packed_of::<true>(a) }
}

/// The AVX2 path's `matmul_packed`, with `vpdpbusd`.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-VNNI are available; `a.w` is in the packed
/// layout.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub unsafe fn matmul_packed(a: QuantMatmul<'_>) {
    // SAFETY: the features are available; forwarded precondition.
    unsafe { avx2_packed::matmul_packed_of::<true>(a) }
}
