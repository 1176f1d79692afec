//! The one quantizer: how every f32 becomes a stored element (weights) or an
//! 8-bit block (activations), and the scalar integer dot products that the
//! SIMD kernels must reproduce.
//!
//! The exporter, the converter and quantization-aware training all call the
//! functions here, so the trainer's fake-quantized forward and the engine's
//! integer forward see the same numbers.
//!
//! # Rounding (ggml's reference quantizers, bit for bit)
//!
//! Per block of 32 elements `x`:
//!
//! - **Q8_0** (ggml `quantize_row_q8_0_ref`): `amax = max |x|`, `d = amax / 127`,
//!   `id = d ≠ 0 ? 1/d : 0`, `q = roundf(x·id)` (halves away from zero); the
//!   stored scale is `f16(d)` (round to nearest even). Value = `f16(d) · q`.
//! - **Q4_0** (ggml `quantize_row_q4_0_ref`): `max` = the element of largest
//!   magnitude, keeping its sign (the first one on ties), `d = max / −8`,
//!   `id = d ≠ 0 ? 1/d : 0`, `q = min(15, trunc(x·id + 8.5))`; byte `j` holds
//!   `q[j] | q[j+16] << 4`; the stored scale is `f16(d)`. Value = `f16(d) · (q − 8)`.
//!   The element `max` itself lands on level 0 (−8 after the offset) and an
//!   element of the opposite sign and equal magnitude is clamped from 16 to 15.
//!   An all-zero block has `d = 0 / −8 = −0.0`, stored as `0x8000`, as in ggml.
//!
//! Note that `q` is computed with the f32 scale, while dequantization uses the
//! f16 one; that is what ggml does, and what makes GGUF blocks copyable as is.
//!
//! One deliberate departure: where `1/d` overflows (`|d| < 2⁻¹²⁸`, so the f16
//! scale is 0 anyway) ggml converts ±∞ or NaN to an integer, which is undefined
//! behaviour in C; here `id` is 0 and the block quantizes to zeros.
//!
//! # Activations
//!
//! Activations are quantized on the fly into [`BlockQ8`]: the Q8_0 rounding
//! above, with the block scale kept as f32 (not rounded to f16), which costs
//! nothing in the dot product and removes the f16 scale error (up to 2⁻¹¹
//! relative) from every activation. [`fake_quantize_activations`] applies the
//! very same rounding in place, for training.
//!
//! # Integer dot products
//!
//! [`q8_0_dot`] and [`q4_0_dot`] (defined with the other reference kernels in
//! `kernels/reference.rs`) fix the result every faster kernel must reproduce
//! bit for bit: per block an exact i32 sum of level products, then
//! `sum += d_w * d_x * isum` in f32 (left to right, `d_w` the f16 weight scale
//! as f32), blocks in order, starting from 0.
//!
//! # Errors
//!
//! NaN and ±∞ are refused ([`Error::Unrepresentable`]), as are values whose
//! f16/bf16 encoding, or whose block's f16 scale, would overflow (a Q8_0 block
//! with max |x| ≥ 65520·127 ≈ 8.3e6, a Q4_0 block with max |x| ≥ 524160). Every function
//! validates its whole input before writing, so on error the output is untouched.
#![forbid(unsafe_code)]

use half::{bf16, f16};

use crate::error::Error;
use crate::kernels::reference;
use crate::tensor::{Dtype, Matrix, BLOCK_LEN, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES};

/// Q8_0 levels run from −127 to 127.
const Q8_LEVELS: f32 = 127.0;
/// Q4_0 puts the block's signed extreme on level −8.
const Q4_EXTREME_LEVEL: f32 = -8.0;
/// Q4_0 stores `q − 8` as an unsigned nibble `q`.
const Q4_OFFSET: i32 = 8;
/// Bytes of packed nibbles in a Q4_0 block.
const Q4_PACKED_BYTES: usize = BLOCK_LEN / 2;
/// Bytes of the f16 scale at the start of a Q8_0 / Q4_0 block.
const SCALE_BYTES: usize = 2;

const _: () = assert!(Q8_0_BLOCK_BYTES == SCALE_BYTES + BLOCK_LEN);
const _: () = assert!(Q4_0_BLOCK_BYTES == SCALE_BYTES + Q4_PACKED_BYTES);

/// One block of 32 activations quantized for integer dot products:
/// element `j` ≈ `d · qs[j]`. `repr(C)`: the scale at byte 0, the levels at
/// bytes 4..36, so SIMD kernels and foreign code can rely on the layout.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    /// Block scale, `max |x| / 127`, kept in f32.
    pub d: f32,
    /// Levels, in −127..=127.
    pub qs: [i8; BLOCK_LEN],
}

const _: () = assert!(core::mem::size_of::<BlockQ8>() == 4 + BLOCK_LEN);

impl BlockQ8 {
    /// An all-zero block, for initialising scratch buffers.
    pub const ZERO: BlockQ8 = BlockQ8 {
        d: 0.0,
        qs: [0; BLOCK_LEN],
    };
}

// ---------------------------------------------------------------------------
// Public row functions
// ---------------------------------------------------------------------------

/// Encodes `src` (one row of `n` elements) as `dtype` into `dst`, which must be
/// exactly `dtype.row_bytes(n)` bytes.
///
/// Errors: `n` not a multiple of 32 for Q8_0/Q4_0 ([`Error::PartialBlock`]);
/// `dst` shorter ([`Error::BufferTooSmall`]) or longer ([`Error::InvalidInput`])
/// than the row; a NaN, an infinity, or a value too large for the dtype or its
/// block scale ([`Error::Unrepresentable`]). On error `dst` is untouched.
pub fn quantize_row(dtype: Dtype, src: &[f32], dst: &mut [u8]) -> Result<(), Error> {
    let needed = row_bytes(dtype, src.len())?;
    check_output_len(needed, dst.len())?;
    check_representable(dtype, src)?;
    match dtype {
        Dtype::F32 => {
            for (out, &v) in dst.chunks_exact_mut(4).zip(src) {
                out.copy_from_slice(&v.to_le_bytes());
            }
        }
        Dtype::F16 => {
            for (out, &v) in dst.chunks_exact_mut(2).zip(src) {
                out.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        Dtype::BF16 => {
            for (out, &v) in dst.chunks_exact_mut(2).zip(src) {
                out.copy_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        Dtype::Q8_0 => {
            for (out, x) in q8_0_blocks_mut(dst).zip(f32_blocks(src)) {
                *out = encode_q8_0(x);
            }
        }
        Dtype::Q4_0 => {
            for (out, x) in q4_0_blocks_mut(dst).zip(f32_blocks(src)) {
                *out = encode_q4_0(x);
            }
        }
    }
    Ok(())
}

/// Decodes one row of `dtype` elements from `src` into `dst` (`n` elements);
/// `src` must be exactly `dtype.row_bytes(n)` bytes.
///
/// Stored values are not checked: a NaN scale in the bytes decodes to NaNs.
/// Errors: `n` not a multiple of 32 for Q8_0/Q4_0 ([`Error::PartialBlock`]),
/// `src` of the wrong length ([`Error::InvalidInput`]).
pub fn dequantize_row(dtype: Dtype, src: &[u8], dst: &mut [f32]) -> Result<(), Error> {
    let needed = row_bytes(dtype, dst.len())?;
    if src.len() != needed {
        return Err(Error::InvalidInput {
            reason: "encoded row length does not match the output length",
        });
    }
    match dtype {
        Dtype::F32 => {
            for (out, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *out = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (out, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *out = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        Dtype::BF16 => {
            for (out, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *out = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        Dtype::Q8_0 => {
            for (out, block) in f32_blocks_mut(dst).zip(q8_0_blocks(src)) {
                decode_q8_0(block, out);
            }
        }
        Dtype::Q4_0 => {
            for (out, block) in f32_blocks_mut(dst).zip(q4_0_blocks(src)) {
                decode_q4_0(block, out);
            }
        }
    }
    Ok(())
}

/// Replaces `x` by what storing it as `dtype` and reading it back gives:
/// bit for bit `dequantize_row(dtype, quantize_row(dtype, x))`, without a
/// buffer. This is the forward of quantization-aware training.
///
/// Errors as [`quantize_row`]; on error `x` is untouched.
pub fn fake_quantize(dtype: Dtype, x: &mut [f32]) -> Result<(), Error> {
    row_bytes(dtype, x.len())?;
    check_representable(dtype, x)?;
    match dtype {
        Dtype::F32 => {}
        Dtype::F16 => x
            .iter_mut()
            .for_each(|v| *v = f16::from_bits(f16::from_f32(*v).to_bits()).to_f32()),
        Dtype::BF16 => x
            .iter_mut()
            .for_each(|v| *v = bf16::from_bits(bf16::from_f32(*v).to_bits()).to_f32()),
        Dtype::Q8_0 => {
            for block in f32_blocks_mut(x) {
                let encoded = encode_q8_0(block);
                decode_q8_0(&encoded, block);
            }
        }
        Dtype::Q4_0 => {
            for block in f32_blocks_mut(x) {
                let encoded = encode_q4_0(block);
                decode_q4_0(&encoded, block);
            }
        }
    }
    Ok(())
}

/// Quantizes activations `x` (`n` elements, `n` a multiple of 32) into
/// `dst` (exactly `n / 32` blocks) with Q8_0 rounding and f32 block scales.
///
/// Errors: [`Error::PartialBlock`], [`Error::BufferTooSmall`] /
/// [`Error::InvalidInput`] for a wrong `dst` length, [`Error::Unrepresentable`]
/// for NaN or ±∞. On error `dst` is untouched.
pub fn quantize_activations(x: &[f32], dst: &mut [BlockQ8]) -> Result<(), Error> {
    check_activations(x, dst.len(), reference::all_finite)?;
    for (out, block) in dst.iter_mut().zip(f32_blocks(x)) {
        *out = quantize_block_q8(block);
    }
    Ok(())
}

/// Expands activation blocks into `dst`, which must hold exactly
/// `32 · src.len()` elements: element `j` of a block is `qs[j] as f32 · d`.
///
/// Errors: [`Error::BufferTooSmall`] / [`Error::InvalidInput`] for a wrong
/// `dst` length.
pub fn dequantize_activations(src: &[BlockQ8], dst: &mut [f32]) -> Result<(), Error> {
    let needed = src
        .len()
        .checked_mul(BLOCK_LEN)
        .ok_or(Error::InvalidInput {
            reason: "activation row too long",
        })?;
    check_output_len(needed, dst.len())?;
    for (out, block) in f32_blocks_mut(dst).zip(src) {
        expand_block_q8(block, out);
    }
    Ok(())
}

/// Replaces activations `x` by what the engine's integer kernels see:
/// bit for bit `dequantize_activations(quantize_activations(x))`.
///
/// Errors as [`quantize_activations`]; on error `x` is untouched.
pub fn fake_quantize_activations(x: &mut [f32]) -> Result<(), Error> {
    whole_blocks(x.len())?;
    check_finite(Dtype::Q8_0, x)?;
    for block in f32_blocks_mut(x) {
        let quantized = quantize_block_q8(block);
        expand_block_q8(&quantized, block);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Integer dot products: defined with the other kernels' reference
// ---------------------------------------------------------------------------

pub use crate::kernels::reference::{q4_0_dot, q8_0_dot};

/// `out = W · x` for a Q8_0 or Q4_0 matrix `w` (`rows × cols`) and activations
/// `xq` quantized with [`quantize_activations`] (`cols / 32` blocks);
/// `out` holds `rows` elements. Row `r` is exactly `q8_0_dot` / `q4_0_dot` of
/// row `r`, so splitting the rows among threads changes no bit. The
/// reference kernel; [`crate::kernels::matvec_quantized`] runs the fastest
/// path, with the same bits.
///
/// Errors: [`Error::InvalidInput`] for a float matrix, a matrix whose bytes do
/// not match its shape, or `xq` of the wrong length; [`Error::BufferTooSmall`]
/// / [`Error::InvalidInput`] for `out` of the wrong length.
pub fn matvec_quantized(out: &mut [f32], w: &Matrix<'_>, xq: &[BlockQ8]) -> Result<(), Error> {
    crate::kernels::Path::Portable.matvec_quantized(out, w, xq)
}

// ---------------------------------------------------------------------------
// One block
// ---------------------------------------------------------------------------

/// ggml's `id = d ? 1/d : 0`; also 0 where `1/d` overflows (see the module
/// notes), so that no infinity or NaN reaches the float-to-int conversion.
fn inverse_scale(d: f32) -> f32 {
    if d == 0.0 {
        return 0.0;
    }
    let id = 1.0 / d;
    if id.is_finite() {
        id
    } else {
        0.0
    }
}

/// Q8 rounding of one block, with the scale in f32.
pub(crate) fn quantize_block_q8(x: &[f32; BLOCK_LEN]) -> BlockQ8 {
    let amax = x.iter().fold(0.0f32, |amax, &v| {
        let a = libm::fabsf(v);
        // ggml's MAX(amax, a).
        if amax > a {
            amax
        } else {
            a
        }
    });
    let d = amax / Q8_LEVELS;
    let id = inverse_scale(d);
    let mut qs = [0i8; BLOCK_LEN];
    for (q, &v) in qs.iter_mut().zip(x) {
        // |v·id| ≤ 127 (plus rounding), so the saturating cast never saturates.
        *q = libm::roundf(v * id) as i8;
    }
    BlockQ8 { d, qs }
}

/// The Q4_0 signed extreme of a block: the first element of largest magnitude,
/// and its index.
fn q4_0_extreme(x: &[f32; BLOCK_LEN]) -> (f32, usize) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    let mut at = 0;
    for (i, &v) in x.iter().enumerate() {
        let a = libm::fabsf(v);
        if amax < a {
            amax = a;
            max = v;
            at = i;
        }
    }
    (max, at)
}

fn encode_q8_0(x: &[f32; BLOCK_LEN]) -> [u8; Q8_0_BLOCK_BYTES] {
    let block = quantize_block_q8(x);
    let mut out = [0u8; Q8_0_BLOCK_BYTES];
    out[..SCALE_BYTES].copy_from_slice(&f16::from_f32(block.d).to_bits().to_le_bytes());
    for (o, &q) in out[SCALE_BYTES..].iter_mut().zip(&block.qs) {
        *o = q as u8;
    }
    out
}

fn encode_q4_0(x: &[f32; BLOCK_LEN]) -> [u8; Q4_0_BLOCK_BYTES] {
    let (max, _) = q4_0_extreme(x);
    let d = max / Q4_EXTREME_LEVEL;
    let id = inverse_scale(d);
    // ggml: MIN(15, (int8_t)(x·id + 8.5f)); the cast truncates toward zero and
    // x·id + 8.5 ≥ 0.5 − rounding, so the lower clamp never changes a value.
    let level = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
    let mut out = [0u8; Q4_0_BLOCK_BYTES];
    out[..SCALE_BYTES].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
    let (low, high) = x.split_at(Q4_PACKED_BYTES);
    for ((o, &a), &b) in out[SCALE_BYTES..].iter_mut().zip(low).zip(high) {
        *o = level(a) | (level(b) << 4);
    }
    out
}

/// The f16 scale at the start of a Q8_0 / Q4_0 block.
fn scale_of(block: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
}

fn decode_q8_0(block: &[u8; Q8_0_BLOCK_BYTES], out: &mut [f32; BLOCK_LEN]) {
    let d = scale_of(block);
    for (o, &q) in out.iter_mut().zip(&block[SCALE_BYTES..]) {
        *o = f32::from(q as i8) * d;
    }
}

fn decode_q4_0(block: &[u8; Q4_0_BLOCK_BYTES], out: &mut [f32; BLOCK_LEN]) {
    let d = scale_of(block);
    let (low, high) = out.split_at_mut(Q4_PACKED_BYTES);
    for ((lo, hi), &byte) in low.iter_mut().zip(high).zip(&block[SCALE_BYTES..]) {
        *lo = (i32::from(byte & 0x0f) - Q4_OFFSET) as f32 * d;
        *hi = (i32::from(byte >> 4) - Q4_OFFSET) as f32 * d;
    }
}

fn expand_block_q8(block: &BlockQ8, out: &mut [f32; BLOCK_LEN]) {
    for (o, &q) in out.iter_mut().zip(&block.qs) {
        *o = f32::from(q) * block.d;
    }
}

// ---------------------------------------------------------------------------
// Checks and block views
// ---------------------------------------------------------------------------

/// Number of 32-element blocks in `len` elements.
fn whole_blocks(len: usize) -> Result<usize, Error> {
    if len.is_multiple_of(BLOCK_LEN) {
        Ok(len / BLOCK_LEN)
    } else {
        Err(Error::PartialBlock { len })
    }
}

/// Bytes of a row of `len` elements of `dtype`.
pub(crate) fn row_bytes(dtype: Dtype, len: usize) -> Result<usize, Error> {
    if dtype.is_quantized() {
        whole_blocks(len)?;
    }
    dtype.row_bytes(len).ok_or(Error::InvalidInput {
        reason: "row too long to address",
    })
}

/// An output must be exactly as long as the result, so that a shape mistake
/// is an error rather than a half-written buffer.
pub(crate) fn check_output_len(needed: usize, available: usize) -> Result<(), Error> {
    if available < needed {
        Err(Error::BufferTooSmall { needed, available })
    } else if available > needed {
        Err(Error::InvalidInput {
            reason: "output buffer is longer than the result",
        })
    } else {
        Ok(())
    }
}

/// What [`quantize_activations`] refuses: `x` not whole blocks, `blocks`
/// not exactly its number of blocks, a NaN or an infinity.
/// `all_finite` makes the pass over `x` (a kernel path's, or
/// [`reference::all_finite`]).
pub(crate) fn check_activations(
    x: &[f32],
    blocks: usize,
    all_finite: impl Fn(&[f32]) -> bool,
) -> Result<(), Error> {
    check_output_len(whole_blocks(x.len())?, blocks)?;
    if all_finite(x) {
        return Ok(());
    }
    first_non_finite(Dtype::Q8_0, x)
}

fn check_finite(dtype: Dtype, x: &[f32]) -> Result<(), Error> {
    // A branch-free pass first; the position only on failure.
    if reference::all_finite(x) {
        return Ok(());
    }
    first_non_finite(dtype, x)
}

/// The error naming `x`'s first NaN or infinity, once a pass found one.
fn first_non_finite(dtype: Dtype, x: &[f32]) -> Result<(), Error> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::Unrepresentable {
            index,
            value: x[index],
            dtype,
            reason: "not finite",
        }),
    }
}

/// Everything that makes [`quantize_row`] fail on values: non-finite input,
/// and results (an element, or a block's scale) that overflow f16/bf16.
fn check_representable(dtype: Dtype, x: &[f32]) -> Result<(), Error> {
    check_finite(dtype, x)?;
    let too_large = |index: usize, reason| Error::Unrepresentable {
        index,
        value: x[index],
        dtype,
        reason,
    };
    match dtype {
        Dtype::F32 => Ok(()),
        Dtype::F16 => match x
            .iter()
            .position(|&v| f16::from_bits(f16::from_f32(v).to_bits()).is_infinite())
        {
            None => Ok(()),
            Some(index) => Err(too_large(index, "overflows f16")),
        },
        Dtype::BF16 => match x
            .iter()
            .position(|&v| bf16::from_bits(bf16::from_f32(v).to_bits()).is_infinite())
        {
            None => Ok(()),
            Some(index) => Err(too_large(index, "overflows bf16")),
        },
        Dtype::Q8_0 | Dtype::Q4_0 => {
            for (b, block) in f32_blocks(x).enumerate() {
                // The Q4_0 extreme also has the largest |x|, so it serves both.
                let (max, at) = q4_0_extreme(block);
                let d = if matches!(dtype, Dtype::Q8_0) {
                    libm::fabsf(max) / Q8_LEVELS
                } else {
                    max / Q4_EXTREME_LEVEL
                };
                if f16::from_bits(f16::from_f32(d).to_bits()).is_infinite() {
                    return Err(too_large(
                        b * BLOCK_LEN + at,
                        "its block's scale overflows f16",
                    ));
                }
            }
            Ok(())
        }
    }
}

fn f32_blocks(x: &[f32]) -> impl Iterator<Item = &[f32; BLOCK_LEN]> {
    x.chunks_exact(BLOCK_LEN).filter_map(|c| c.try_into().ok())
}

fn f32_blocks_mut(x: &mut [f32]) -> impl Iterator<Item = &mut [f32; BLOCK_LEN]> {
    x.chunks_exact_mut(BLOCK_LEN)
        .filter_map(|c| c.try_into().ok())
}

fn q8_0_blocks(bytes: &[u8]) -> impl Iterator<Item = &[u8; Q8_0_BLOCK_BYTES]> {
    bytes
        .chunks_exact(Q8_0_BLOCK_BYTES)
        .filter_map(|c| c.try_into().ok())
}

fn q8_0_blocks_mut(bytes: &mut [u8]) -> impl Iterator<Item = &mut [u8; Q8_0_BLOCK_BYTES]> {
    bytes
        .chunks_exact_mut(Q8_0_BLOCK_BYTES)
        .filter_map(|c| c.try_into().ok())
}

fn q4_0_blocks(bytes: &[u8]) -> impl Iterator<Item = &[u8; Q4_0_BLOCK_BYTES]> {
    bytes
        .chunks_exact(Q4_0_BLOCK_BYTES)
        .filter_map(|c| c.try_into().ok())
}

fn q4_0_blocks_mut(bytes: &mut [u8]) -> impl Iterator<Item = &mut [u8; Q4_0_BLOCK_BYTES]> {
    bytes
        .chunks_exact_mut(Q4_0_BLOCK_BYTES)
        .filter_map(|c| c.try_into().ok())
}
