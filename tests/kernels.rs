//! Every accelerated kernel path against the reference (the portable path),
//! on random inputs of awkward sizes.
//!
//! The claim under test is the strong one: every path gives the reference's
//! result **bit for bit** (float kernels keep the reference's 16 lanes and
//! sum order, quantized kernels sum each block exactly in integers and then
//! accumulate the blocks in order). Paths this CPU lacks are reported
//! (`skipped: CPU lacks avx512vnni`) and skipped.

mod common;

use kinglet::kernels::{self, packed, reference, Path};
use kinglet::quant::{self, quantize_activations, quantize_row, BlockQ8};
use kinglet::tensor::BLOCK_LEN;
use kinglet::{Dtype, Error, Matrix};
use kinglet_tools::rng::Rng;

/// `n` values whose magnitudes vary by 2^-12 .. 2^12 from one stretch of 32
/// to the next, so that sums lose bits to rounding.
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut scale = 1.0;
    (0..n)
        .map(|i| {
            if i % BLOCK_LEN == 0 {
                scale = 2f32.powi((rng.next_u64() % 25) as i32 - 12);
            }
            rng.uniform() * scale
        })
        .collect()
}

const ROWS: [usize; 6] = [1, 3, 8, 16, 17, 35];
const FLOAT_COLS: [usize; 8] = [1, 15, 16, 31, 33, 64, 257, 1000];
const QUANT_COLS: [usize; 5] = [32, 96, 288, 1024, 2080];

/// The reference.
const REF: Path = Path::Portable;

/// The paths to test against the reference, announcing the ones skipped.
fn accelerated_paths() -> Vec<Path> {
    Path::ALL
        .into_iter()
        .filter(|&p| p != REF)
        .filter(|p| match p.missing_feature() {
            Some(feature) => {
                println!("skipped: the {} path: CPU lacks {feature}", p.name());
                false
            }
            None => true,
        })
        .collect()
}

fn encode(dtype: Dtype, values: &[f32], rows: usize) -> Vec<u8> {
    let cols = values.len() / rows;
    let row_bytes = dtype.row_bytes(cols).expect("test shape");
    let mut bytes = vec![0u8; row_bytes * rows];
    for (dst, src) in bytes
        .chunks_exact_mut(row_bytes)
        .zip(values.chunks_exact(cols))
    {
        quantize_row(dtype, src, dst).expect("finite test data");
    }
    bytes
}

fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

/// Runs `kernel` into NaN-filled outputs of `len` on the reference and on
/// `path`, asserts the two equal bit for bit, and returns the reference's.
fn same_bits(
    path: Path,
    len: usize,
    what: &str,
    kernel: impl Fn(Path, &mut [f32]) -> Result<(), Error>,
) -> Vec<f32> {
    let mut want = vec![f32::NAN; len];
    let mut got = vec![f32::NAN; len];
    kernel(REF, &mut want).expect("reference");
    kernel(path, &mut got).expect("path");
    assert_bits_eq(&got, &want, what);
    want
}

#[test]
fn float_matvec_equals_reference_bit_for_bit() {
    let mut rng = Rng::new(1);
    for path in accelerated_paths() {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for rows in ROWS {
                for cols in FLOAT_COLS {
                    let data = encode(dtype, &values(&mut rng, rows * cols), rows);
                    let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
                    let x = values(&mut rng, cols);
                    let what = format!("{} {dtype:?} {rows}x{cols}", path.name());
                    same_bits(path, rows, &what, |p, out| p.matvec(out, &w, &x));
                }
            }
        }
    }
}

#[test]
fn float_matvec_of_matrices_streamed_row_by_row_equals_reference() {
    // Over 64 KiB in every dtype: the paths stream such matrices one row
    // after another instead of in groups of rows. The widths put rows
    // below, at and past the part of `x` a path keeps in registers (on
    // Zen 4's AVX-512, 16 vectors of rows under 32 vectors, 24 of wider
    // ones), with and without a tail.
    let mut rng = Rng::new(12);
    for cols in [1001, 288, 256, 259, 250, 7] {
        let rows = (1 << 16) / cols + 3;
        for path in accelerated_paths() {
            for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
                let data = encode(dtype, &values(&mut rng, rows * cols), rows);
                assert!(data.len() > 64 << 10);
                let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
                let x = values(&mut rng, cols);
                same_bits(
                    path,
                    rows,
                    &format!("{} {dtype:?} {rows}x{cols} streamed", path.name()),
                    |p, out| p.matvec(out, &w, &x),
                );
            }
        }
    }
}

#[test]
fn float_matvec_is_close_to_exact_arithmetic() {
    // The reference itself, hence every path, within 1e-6 of Σ|w·x| of the
    // f64 result: guards against a path and the reference sharing a bug in
    // the test's own encoding.
    let mut rng = Rng::new(2);
    for path in Path::ALL.into_iter().filter(|p| p.is_supported()) {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let (rows, cols) = (17, 1000);
            let data = encode(dtype, &values(&mut rng, rows * cols), rows);
            let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
            let x = values(&mut rng, cols);
            let mut got = vec![0.0; rows];
            path.matvec(&mut got, &w, &x).expect("path");
            let mut row = vec![0.0; cols];
            for (r, &g) in got.iter().enumerate() {
                kernels::row_to_f32(&w, r, &mut row).expect("row");
                let exact: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let scale: f64 = row
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                assert!(
                    (g as f64 - exact).abs() <= 1e-6 * scale,
                    "{} {dtype:?} row {r}: {g} vs {exact}",
                    path.name()
                );
            }
        }
    }
}

#[test]
fn dot_and_axpy_equal_reference_bit_for_bit() {
    let mut rng = Rng::new(3);
    for path in accelerated_paths() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 48, 64, 257, 1000] {
            let (a, b) = (values(&mut rng, n), values(&mut rng, n));
            let what = format!("{} n={n}", path.name());
            assert_eq!(
                path.dot(&a, &b).to_bits(),
                reference::dot(&a, &b).to_bits(),
                "dot {what}"
            );
            let factor = rng.uniform() * 3.0;
            let (mut want, mut got) = (b.clone(), b.clone());
            reference::axpy(&mut want, factor, &a);
            path.axpy(&mut got, factor, &a);
            assert_bits_eq(&got, &want, &format!("axpy {what}"));
        }
    }
}

#[test]
fn crc32c_equals_reference_at_every_length_and_alignment() {
    let mut rng = Rng::new(11);
    let bytes: Vec<u8> = (0..4096 + 64).map(|_| rng.below(256) as u8).collect();
    // The check value of "123456789" (RFC 3720's CRC32C), on every path.
    for path in Path::ALL.into_iter().filter(|p| p.is_supported()) {
        assert_eq!(
            !path.crc32c_update(!0, b"123456789"),
            0xE306_9283,
            "{}",
            path.name()
        );
    }
    for path in accelerated_paths() {
        for start in 0..9 {
            for len in (0..70).chain([1000, 4095, 4096]) {
                let part = &bytes[start..start + len];
                let crc = rng.next_u64() as u32;
                assert_eq!(
                    path.crc32c_update(crc, part),
                    reference::crc32c_update(crc, part),
                    "{}: {len} bytes from {start}, remainder {crc:#x}",
                    path.name()
                );
            }
        }
    }
}

/// Activation blocks for `x`, with the quantizer everybody uses.
fn activations(x: &[f32]) -> Vec<BlockQ8> {
    let mut blocks = vec![BlockQ8::ZERO; x.len() / BLOCK_LEN];
    quantize_activations(x, &mut blocks).expect("finite test data");
    blocks
}

fn quantized_case(path: Path, dtype: Dtype, rows: usize, data: &[u8], xq: &[BlockQ8], what: &str) {
    let cols = xq.len() * BLOCK_LEN;
    let w = Matrix::new(dtype, rows, cols, data).expect("shape");
    same_bits(path, rows, what, |p, out| p.matvec_quantized(out, &w, xq));
    for r in 0..rows {
        let row = w.row(r);
        let (reference, single) = if dtype == Dtype::Q8_0 {
            (quant::q8_0_dot(row, xq), path.q8_0_dot(row, xq))
        } else {
            (quant::q4_0_dot(row, xq), path.q4_0_dot(row, xq))
        };
        assert_eq!(
            single.expect("path").to_bits(),
            reference.expect("reference").to_bits(),
            "{what}: single row {r}"
        );
    }
}

#[test]
fn quantized_matvec_equals_reference_bit_for_bit() {
    let mut rng = Rng::new(4);
    for path in accelerated_paths() {
        for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
            for rows in ROWS {
                for cols in QUANT_COLS {
                    let data = encode(dtype, &values(&mut rng, rows * cols), rows);
                    let xq = activations(&values(&mut rng, cols));
                    let what = format!("{} {dtype:?} {rows}x{cols}", path.name());
                    quantized_case(path, dtype, rows, &data, &xq, &what);
                }
            }
        }
    }
}

/// Raw blocks the quantizer never writes (Q8_0 level −128) and the largest
/// activation levels: the integer sums must neither saturate nor wrap.
/// Scales are finite f16 values with random exponents. `rows` weight rows
/// and `n` positions of `cols` activations.
fn extreme_levels(
    rng: &mut Rng,
    dtype: Dtype,
    rows: usize,
    cols: usize,
    n: usize,
) -> (Vec<u8>, Vec<BlockQ8>) {
    let mut data = vec![0u8; rows * dtype.row_bytes(cols).expect("shape")];
    let block_bytes = if dtype == Dtype::Q8_0 { 34 } else { 18 };
    for (i, block) in data.chunks_exact_mut(block_bytes).enumerate() {
        let scale = half::f16::from_f32(rng.uniform() * 2f32.powi(i as i32 % 20 - 10));
        block[..2].copy_from_slice(&scale.to_le_bytes());
        for (j, byte) in block[2..].iter_mut().enumerate() {
            *byte = match (i + j) % 3 {
                0 => 0x80, // Q8_0: −128; Q4_0: levels −8 and 0
                1 => 0x7f, // Q8_0: 127; Q4_0: levels 7 and −1
                _ => rng.next_u64() as u8,
            };
        }
    }
    let mut xq = activations(&values(rng, n * cols));
    for (i, block) in xq.iter_mut().enumerate() {
        for (j, q) in block.qs.iter_mut().enumerate() {
            if (i + j) % 2 == 0 {
                *q = if j % 4 == 0 { -127 } else { 127 };
            }
        }
    }
    (data, xq)
}

#[test]
fn quantized_kernels_are_exact_at_the_extreme_levels() {
    let mut rng = Rng::new(5);
    for path in accelerated_paths() {
        for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
            let (rows, cols) = (5, 288);
            let (data, xq) = extreme_levels(&mut rng, dtype, rows, cols, 1);
            let what = format!("{} {dtype:?} extreme levels", path.name());
            quantized_case(path, dtype, rows, &data, &xq, &what);
        }
    }
}

/// The reference's `out[t·rows + r]`: row `r` of `w` times position `t`.
fn reference_matmul(w: &Matrix<'_>, xq: &[BlockQ8], n: usize) -> Vec<f32> {
    let mut want = vec![f32::NAN; w.rows * n];
    for (t, x_t) in xq.chunks_exact(w.cols / BLOCK_LEN).enumerate() {
        let mut column = vec![0.0; w.rows];
        REF.matvec_quantized(&mut column, w, x_t)
            .expect("reference");
        for (r, v) in column.into_iter().enumerate() {
            want[t * w.rows + r] = v;
        }
    }
    want
}

#[test]
fn quantized_matmul_is_exact_at_the_extreme_levels() {
    // Row groups of sixteen with rows left over, positions past a tile of
    // sixteen, and blocks past a stretch of 64 (2080 and 4128 columns).
    let mut rng = Rng::new(11);
    for path in accelerated_paths() {
        for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
            for (rows, cols, n) in [(16, 288, 16), (33, 2080, 17), (47, 4128, 3), (32, 64, 33)] {
                let (data, xq) = extreme_levels(&mut rng, dtype, rows, cols, n);
                let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
                let mut got = vec![f32::NAN; rows * n];
                path.matmul_quantized(&mut got, &w, &xq, n).expect("path");
                let what = format!(
                    "{} {dtype:?} {rows}x{cols} n={n} extreme levels",
                    path.name()
                );
                assert_bits_eq(&got, &reference_matmul(&w, &xq, n), &what);
            }
        }
    }
}

#[test]
fn quantized_paths_report_the_reference_errors() {
    let mut rng = Rng::new(6);
    let (rows, cols) = (3, 64);
    let data = encode(Dtype::Q8_0, &values(&mut rng, rows * cols), rows);
    let w = Matrix::new(Dtype::Q8_0, rows, cols, &data).expect("shape");
    let xq = activations(&values(&mut rng, cols));
    let float_data = encode(Dtype::F32, &values(&mut rng, rows * cols), rows);
    let float_w = Matrix::new(Dtype::F32, rows, cols, &float_data).expect("shape");
    for path in Path::ALL.into_iter().filter(|p| p.is_supported()) {
        let name = path.name();
        let mut out = vec![0.0; rows];
        let mut short = vec![0.0; rows - 1];
        let cases: [(Result<(), Error>, Result<(), Error>); 3] = [
            (
                path.matvec_quantized(&mut out, &w, &xq[..1]),
                quant::matvec_quantized(&mut out, &w, &xq[..1]),
            ),
            (
                path.matvec_quantized(&mut short, &w, &xq),
                quant::matvec_quantized(&mut short, &w, &xq),
            ),
            (
                path.matvec_quantized(&mut out, &float_w, &xq),
                quant::matvec_quantized(&mut out, &float_w, &xq),
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert!(want.is_err(), "{name} case {i}: the reference refuses");
            assert_eq!(got, want, "{name} case {i}");
        }
        assert_eq!(
            path.q4_0_dot(&data[..34], &xq),
            quant::q4_0_dot(&data[..34], &xq),
            "{name}: q4_0_dot length error"
        );
        assert_eq!(path.q8_0_dot(&[], &[]), Ok(0.0), "{name}: empty row");
    }
}

#[test]
fn dispatching_functions_use_the_active_path() {
    let active = Path::active();
    assert!(active.is_supported());
    assert_eq!(kernels::active_path(), active.name());
    // Without an override the active path is the fastest supported one.
    if std::env::var_os("KINGLET_KERNELS").is_none() {
        let best = Path::ALL.into_iter().rfind(|p| p.is_supported());
        assert_eq!(Some(active), best);
    }
    let mut rng = Rng::new(7);
    let (rows, cols) = (17, 257);
    let data = encode(Dtype::F16, &values(&mut rng, rows * cols), rows);
    let w = Matrix::new(Dtype::F16, rows, cols, &data).expect("shape");
    let x = values(&mut rng, cols);
    let (mut got, mut want) = (vec![0.0; rows], vec![0.0; rows]);
    kernels::matvec(&mut got, &w, &x).expect("active");
    REF.matvec(&mut want, &w, &x).expect("reference");
    assert_bits_eq(&got, &want, "kernels::matvec");
}

/// Prints the active path; the next test runs it in a child process.
#[test]
fn child_prints_active_path() {
    println!("active kernel path: {}", kernels::active_path());
}

#[test]
fn kinglet_kernels_env_forces_a_path() {
    for path in Path::ALL.into_iter().filter(|p| p.is_supported()) {
        let output = common::run_test_on_path("child_prints_active_path", path);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed: {stdout}");
        let line = format!("active kernel path: {}\n", path.name());
        assert!(stdout.contains(&line), "forcing {}: {stdout}", path.name());
    }
}

#[test]
fn float_matmul_equals_matvec_per_position_bit_for_bit() {
    let mut rng = Rng::new(8);
    for path in Path::ALL.into_iter().filter(|p| p.is_supported()) {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for rows in [1, 3, 5, 17] {
                for cols in [1, 31, 33, 257] {
                    for n in [1, 2, 3, 4, 7, 16] {
                        let data = encode(dtype, &values(&mut rng, rows * cols), rows);
                        let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
                        let x = values(&mut rng, n * cols);
                        let mut got = vec![f32::NAN; rows * n];
                        path.matmul(&mut got, &w, &x, n).expect("path");
                        let mut want = vec![f32::NAN; rows * n];
                        for (t, x_t) in x.chunks_exact(cols).enumerate() {
                            let mut column = vec![0.0; rows];
                            REF.matvec(&mut column, &w, x_t).expect("reference");
                            for (r, v) in column.into_iter().enumerate() {
                                want[t * w.rows + r] = v;
                            }
                        }
                        let what = format!("{} {dtype:?} {rows}x{cols} n={n}", path.name());
                        assert_bits_eq(&got, &want, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn quantized_matmul_equals_reference_dots_bit_for_bit() {
    let mut rng = Rng::new(9);
    for path in Path::ALL.into_iter().filter(|p| p.is_supported()) {
        for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
            for rows in [1, 3, 8, 17, 32, 35] {
                for cols in [32, 288, 2080] {
                    for n in [1, 2, 5, 16, 17] {
                        let data = encode(dtype, &values(&mut rng, rows * cols), rows);
                        let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
                        let xq: Vec<BlockQ8> = (0..n)
                            .flat_map(|_| activations(&values(&mut rng, cols)))
                            .collect();
                        let mut got = vec![f32::NAN; rows * n];
                        path.matmul_quantized(&mut got, &w, &xq, n).expect("path");
                        let what = format!("{} {dtype:?} {rows}x{cols} n={n}", path.name());
                        assert_bits_eq(&got, &reference_matmul(&w, &xq, n), &what);
                    }
                }
            }
        }
        let data = encode(Dtype::Q8_0, &values(&mut rng, 2 * 64), 2);
        let w = Matrix::new(Dtype::Q8_0, 2, 64, &data).expect("shape");
        let xq = activations(&values(&mut rng, 3 * 64));
        let mut out = vec![0.0; 6];
        assert!(path.matmul_quantized(&mut out[..5], &w, &xq, 3).is_err());
        assert!(path.matmul_quantized(&mut out, &w, &xq[..5], 3).is_err());
    }
}

/// A matrix past 32 MiB (the AVX-512 path then reads its rows as the AVX2
/// path does, from memory) gives the reference's bits too.
#[test]
fn float_matvec_over_32_mib_equals_reference_bit_for_bit() {
    let mut rng = Rng::new(14);
    let cols = 1000;
    for (dtype, rows) in [(Dtype::F32, 8_400), (Dtype::F16, 16_800)] {
        let data = encode(dtype, &values(&mut rng, rows * cols), rows);
        assert!(data.len() > 32 << 20);
        let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
        let x = values(&mut rng, cols);
        for path in accelerated_paths() {
            let what = format!("{} {dtype:?} {rows}x{cols}", path.name());
            same_bits(path, rows, &what, |p, out| p.matvec(out, &w, &x));
        }
    }
}

#[test]
fn attention_kernels_equal_reference_bit_for_bit() {
    let mut rng = Rng::new(10);
    for path in accelerated_paths() {
        for width in [1, 7, 8, 15, 16, 17, 31, 33, 48, 64, 257] {
            for positions in [1, 3, 4, 5, 9, 16, 33, 47] {
                let (offset, stride) = (width % 5, width + width % 5 + 3);
                let keys = values(&mut rng, positions * stride);
                let q = values(&mut rng, width);
                let what = format!("{} width {width} positions {positions}", path.name());
                let want = same_bits(path, positions, &format!("scores {what}"), |p, out| {
                    p.attention_scores(out, &q, &keys, stride, offset)
                });
                for (p, &s) in want.iter().enumerate() {
                    let k = &keys[p * stride + offset..][..width];
                    assert_eq!(s.to_bits(), reference::dot(&q, k).to_bits(), "{what}");
                }
                let weights = values(&mut rng, positions);
                same_bits(path, width, &format!("weighted sum {what}"), |p, out| {
                    p.weighted_sum(out, &weights, &keys, stride, offset)
                });
            }
        }
    }
}

/// Runs of query heads, as attention tasks split them: `(n_heads,
/// n_kv_heads, first_head, heads)`, with grouped-query layouts and runs
/// that start inside a group.
const HEAD_RUNS: [(usize, usize, usize, usize); 7] = [
    (1, 1, 0, 1),
    (3, 3, 0, 3),
    (3, 3, 1, 2),
    (6, 2, 0, 6),
    (6, 2, 2, 3),
    (8, 1, 3, 5),
    (12, 12, 6, 6),
];

#[test]
fn attention_head_run_kernels_equal_reference_and_per_head_bit_for_bit() {
    let mut rng = Rng::new(12);
    for path in accelerated_paths() {
        for width in [1, 7, 8, 15, 16, 17, 33, 48, 64] {
            for (n_heads, n_kv_heads, first_head, heads) in HEAD_RUNS {
                for positions in [1, 3, 15, 16, 17, 33, 47] {
                    let row_floats = n_kv_heads * width + 3; // rows padded past the heads
                    let run = kernels::HeadRun {
                        positions,
                        row_floats,
                        head_dim: width,
                        first_head,
                        heads,
                        group: n_heads / n_kv_heads,
                        score_stride: positions + 5,
                    };
                    let keys = values(&mut rng, positions * row_floats);
                    let q = values(&mut rng, heads * width);
                    let what = format!(
                        "{} width {width} heads {n_heads}/{n_kv_heads} run {first_head}+{heads} \
                         positions {positions}",
                        path.name()
                    );
                    let scores_len = heads * run.score_stride;
                    let want = same_bits(path, scores_len, &format!("scores {what}"), |p, out| {
                        p.attention_scores_heads(out, &q, &keys, run)
                    });
                    let weights = values(&mut rng, scores_len);
                    let sums = same_bits(path, heads * width, &format!("sums {what}"), |p, out| {
                        p.weighted_sum_heads(out, &weights, &keys, run)
                    });
                    // Each head's bits are those of the one-head kernels.
                    for i in 0..heads {
                        let kv_start = (first_head + i) / run.group * width;
                        let q_head = &q[run.head_range(i)];
                        let mut one = vec![f32::NAN; positions];
                        path.attention_scores(&mut one, q_head, &keys, row_floats, kv_start)
                            .expect("one head");
                        assert_bits_eq(
                            &want[run.score_range(i)],
                            &one,
                            &format!("head {i} {what}"),
                        );
                        let mut one = vec![f32::NAN; width];
                        let w = &weights[run.score_range(i)];
                        path.weighted_sum(&mut one, w, &keys, row_floats, kv_start)
                            .expect("one head");
                        assert_bits_eq(&sums[run.head_range(i)], &one, &format!("head {i} {what}"));
                    }
                }
            }
        }
        // Runs that do not fit their buffers or rows are errors, not panics.
        let run = kernels::HeadRun {
            positions: 4,
            row_floats: 16,
            head_dim: 8,
            first_head: 0,
            heads: 2,
            group: 1,
            score_stride: 4,
        };
        let (keys, q) = (vec![1.0; 64], vec![1.0; 16]);
        let mut scores = vec![0.0; 8];
        assert!(path
            .attention_scores_heads(&mut scores, &q, &keys, run)
            .is_ok());
        let past_row = kernels::HeadRun { heads: 3, ..run };
        let past_cache = kernels::HeadRun {
            positions: 5,
            ..run
        };
        let scores_overlap = kernels::HeadRun {
            score_stride: 3,
            ..run
        };
        let no_kv_head = kernels::HeadRun { group: 0, ..run };
        let overflow = kernels::HeadRun {
            first_head: usize::MAX,
            ..run
        };
        let no_width = kernels::HeadRun {
            head_dim: 0,
            row_floats: 0,
            ..run
        };
        let bad_runs = [
            past_row,
            past_cache,
            scores_overlap,
            no_kv_head,
            overflow,
            no_width,
        ];
        for bad in bad_runs {
            let mut scores = [0.0; 16];
            let mut out = [0.0; 16];
            let q = &q[..(bad.heads * bad.head_dim).min(16)];
            assert!(
                path.attention_scores_heads(&mut scores, q, &keys, bad)
                    .is_err(),
                "{bad:?}"
            );
            let out = &mut out[..q.len()];
            assert!(
                path.weighted_sum_heads(out, &scores, &keys, bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(path
            .attention_scores_heads(&mut scores[..7], &q, &keys, run)
            .is_err());
        assert!(path
            .attention_scores_heads(&mut scores, &q[..15], &keys, run)
            .is_err());
        let mut out = vec![0.0; 16];
        assert!(path
            .weighted_sum_heads(&mut out[..15], &scores, &keys, run)
            .is_err());
        assert!(path
            .weighted_sum_heads(&mut out, &scores[..7], &keys, run)
            .is_err());
        // No positions: no scores, zero sums.
        let empty = kernels::HeadRun {
            positions: 0,
            ..run
        };
        let mut out = vec![f32::NAN; 16];
        path.weighted_sum_heads(&mut out, &scores, &keys, empty)
            .expect("empty");
        assert!(out.iter().all(|&v| v == 0.0));
    }
}

#[test]
fn attention_query_block_kernels_equal_reference_and_one_query_bit_for_bit() {
    let mut rng = Rng::new(13);
    for path in accelerated_paths() {
        for width in [1, 7, 8, 16, 17, 48, 64, 80, 128, 144] {
            // Blocks short of, at and past sixteen rows (the AVX-512 batch),
            // and past the weighted sums' blocks of 32 in a prefill.
            for rows in [1, 5, 15, 16, 17, 40] {
                for (queries, visible) in [(1, 1), (3, 2), (16, 1), (5, 16), (20, 3)] {
                    let column = 3; // the KV head's columns start inside the row
                    let row_floats = width + 5;
                    let block = kernels::QueryBlock {
                        rows,
                        row_floats,
                        column,
                        head_dim: width,
                        queries,
                        visible,
                        query_stride: width + 2,
                        score_stride: rows + 1,
                    };
                    let keys = values(&mut rng, rows * row_floats);
                    let q = values(&mut rng, queries * block.query_stride);
                    let what = format!(
                        "{} width {width} rows {rows} queries {queries} visible {visible}",
                        path.name()
                    );
                    let scores_len = queries * block.score_stride;
                    let scores =
                        same_bits(path, scores_len, &format!("scores {what}"), |p, out| {
                            p.attention_scores_queries(out, &q, &keys, block)
                        });
                    let weights = values(&mut rng, scores_len);
                    let start = values(&mut rng, queries * block.query_stride);
                    let sums = same_bits(path, start.len(), &format!("sums {what}"), |p, out| {
                        out.copy_from_slice(&start);
                        p.add_weighted_queries(out, &weights, &keys, block)
                    });
                    // Each query's bits are those of the one-query kernels
                    // over the rows it sees; what lies between is untouched.
                    for t in 0..queries {
                        let seen = block.seen(t);
                        let mut one = vec![f32::NAN; seen];
                        let q_t = &q[t * block.query_stride..][..width];
                        path.attention_scores(&mut one, q_t, &keys, row_floats, column)
                            .expect("one query");
                        let at = t * block.score_stride;
                        assert_bits_eq(&scores[at..at + seen], &one, &format!("query {t} {what}"));
                        assert!(scores[at + seen..at + block.score_stride]
                            .iter()
                            .all(|v| v.is_nan()));
                        let mut one = start[t * block.query_stride..][..width].to_vec();
                        // From the output's start, the rows it sees added
                        // position after position.
                        for (p, &wp) in weights[at..at + seen].iter().enumerate() {
                            let row = &keys[p * row_floats + column..][..width];
                            reference::axpy(&mut one, wp, row);
                        }
                        let got = &sums[t * block.query_stride..][..width];
                        assert_bits_eq(got, &one, &format!("query {t} sums {what}"));
                    }
                }
            }
        }
        // Blocks that do not fit their buffers or rows are errors, not
        // panics; no queries or no rows leave everything alone.
        let block = kernels::QueryBlock {
            rows: 4,
            row_floats: 8,
            column: 0,
            head_dim: 8,
            queries: 2,
            visible: 1,
            query_stride: 8,
            score_stride: 4,
        };
        let (keys, q) = (vec![1.0; 32], vec![1.0; 16]);
        let mut scores = vec![0.0; 6];
        assert!(path
            .attention_scores_queries(&mut scores, &q, &keys, block)
            .is_ok());
        let bad_blocks = [
            kernels::QueryBlock { rows: 5, ..block },
            kernels::QueryBlock { column: 1, ..block },
            kernels::QueryBlock {
                visible: 0,
                ..block
            },
            kernels::QueryBlock {
                head_dim: 0,
                ..block
            },
            kernels::QueryBlock {
                query_stride: 7,
                ..block
            },
            kernels::QueryBlock {
                visible: 4,
                score_stride: 3,
                ..block
            },
            kernels::QueryBlock {
                queries: usize::MAX,
                ..block
            },
        ];
        for bad in bad_blocks {
            let mut scores = [0.0; 16];
            let mut out = [0.0; 16];
            assert!(
                path.attention_scores_queries(&mut scores, &q, &keys, bad)
                    .is_err(),
                "{bad:?}"
            );
            assert!(
                path.add_weighted_queries(&mut out, &scores, &keys, bad)
                    .is_err(),
                "{bad:?}"
            );
        }
        assert!(path
            .attention_scores_queries(&mut scores[..5], &q, &keys, block)
            .is_err());
        assert!(path
            .attention_scores_queries(&mut scores, &q[..15], &keys, block)
            .is_err());
        let mut out = vec![0.0; 16];
        assert!(path
            .add_weighted_queries(&mut out[..15], &scores, &keys, block)
            .is_err());
        assert!(path
            .add_weighted_queries(&mut out, &scores[..5], &keys, block)
            .is_err());
        for empty in [
            kernels::QueryBlock {
                queries: 0,
                ..block
            },
            kernels::QueryBlock { rows: 0, ..block },
        ] {
            let mut out = vec![f32::NAN; 16];
            path.add_weighted_queries(&mut out, &scores, &keys, empty)
                .expect("empty");
            assert!(out.iter().all(|v| v.is_nan()));
        }
    }
}

#[test]
fn activation_quantization_equals_reference_bit_for_bit() {
    let mut rng = Rng::new(11);
    for path in accelerated_paths() {
        // 16 and more: the AVX-512 quantizer's sixteen blocks at a time,
        // with the blocks left over (fewer than eight left run the AVX2
        // kernel, eight or more a zero-padded batch).
        for blocks in [1, 2, 7, 8, 9, 16, 23, 24, 48, 67] {
            let mut x = values(&mut rng, blocks * BLOCK_LEN);
            // Exact halves (the rounding's ties), zeros, a zero block, and
            // magnitudes whose inverse scale overflows.
            // Block 0: amax 127, so the scale is 1 and k + ½ are ties.
            for (j, v) in x[..BLOCK_LEN].iter_mut().enumerate() {
                *v = (j as f32 - 16.0) * 3.5 + 0.5 * (j % 2) as f32;
            }
            x[0] = 63.5;
            x[1] = -63.5;
            x[2] = 127.0;
            x[3] = 0.0;
            x[4] = -0.5;
            if blocks > 1 {
                x[BLOCK_LEN..2 * BLOCK_LEN].fill(0.0);
            }
            if blocks > 2 {
                for v in &mut x[2 * BLOCK_LEN..3 * BLOCK_LEN] {
                    *v *= 1e-39;
                }
            }
            let mut want = vec![BlockQ8::ZERO; blocks];
            let mut got = vec![BlockQ8::ZERO; blocks];
            quantize_activations(&x, &mut want).expect("reference");
            path.quantize_activations(&x, &mut got).expect("path");
            for (b, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.d.to_bits(),
                    w.d.to_bits(),
                    "{} block {b} scale",
                    path.name()
                );
                assert_eq!(g.qs, w.qs, "{} block {b} levels", path.name());
            }
        }
        // Errors are the reference's, and leave the output alone.
        let mut x = values(&mut rng, 64);
        x[40] = f32::INFINITY;
        let mut got = vec![BlockQ8::ZERO; 2];
        let mut want = vec![BlockQ8::ZERO; 2];
        assert_eq!(
            path.quantize_activations(&x, &mut got),
            quantize_activations(&x, &mut want)
        );
        assert!(got.iter().all(|b| *b == BlockQ8::ZERO));
        x[40] = f32::NAN;
        assert!(path.quantize_activations(&x, &mut got).is_err());
        assert!(got.iter().all(|b| *b == BlockQ8::ZERO));
        assert!(path.quantize_activations(&x[..63], &mut got).is_err());
    }
}

#[test]
fn sums_of_squares_of_sixteen_rows_equal_reference_bit_for_bit() {
    let mut rng = Rng::new(17);
    for path in accelerated_paths() {
        for dim in [1, 7, 16, 17, 48, 64, 288, 768] {
            let x = values(&mut rng, 16 * dim);
            let got = path.sum_of_squares_rows(&x, dim).expect("sixteen rows");
            let want = reference::sum_of_squares_rows(&x, dim);
            assert_bits_eq(&got, &want, &format!("{} dim {dim}", path.name()));
            // Each row's squares added in order.
            for (r, row) in x.chunks_exact(dim).enumerate() {
                let in_order = row.iter().fold(0.0f32, |s, v| s + v * v);
                assert_eq!(
                    got[r].to_bits(),
                    in_order.to_bits(),
                    "{} row {r}",
                    path.name()
                );
            }
        }
        let x = vec![1.0; 16 * 8];
        assert!(path.sum_of_squares_rows(&x[1..], 8).is_err());
        assert!(path.sum_of_squares_rows(&x, 9).is_err());
        assert!(path.sum_of_squares_rows(&x, usize::MAX).is_err());
    }
    // The reference itself, given fewer than sixteen rows, returns zeros
    // (no panic).
    let x = vec![1.0; 16 * 8];
    assert_eq!(reference::sum_of_squares_rows(&x[1..], 8), [0.0; 16]);
    assert_eq!(reference::sum_of_squares_rows(&x, usize::MAX), [0.0; 16]);
}

#[test]
fn rope_and_residual_adds_equal_reference_bit_for_bit() {
    let mut rng = Rng::new(23);
    for path in accelerated_paths() {
        for head_dim in [2, 6, 16, 48, 64, 66, 128] {
            for heads in [1, 3, 12] {
                let rotations = values(&mut rng, head_dim);
                // A partial head past the last whole one stays as it is.
                let v = values(&mut rng, heads * head_dim + 1);
                let (mut got, mut want) = (v.clone(), v.clone());
                path.rope(&mut got, &rotations);
                reference::rope(&mut want, &rotations);
                let what = format!("{} rope {heads} x {head_dim}", path.name());
                assert_bits_eq(&got, &want, &what);
                assert_eq!(got.last(), v.last(), "{what}: the partial head");
            }
        }
        let mut v = values(&mut rng, 8);
        let before = v.clone();
        path.rope(&mut v, &[]); // no pair: nothing
        assert_bits_eq(&v, &before, "rope without rotations");
        for len in (0..=40).chain([63, 64, 65, 768]) {
            let (x, y) = (values(&mut rng, len), values(&mut rng, len + 3));
            let (mut got, mut want) = (x.clone(), x.clone());
            path.add_assign(&mut got, &y);
            reference::add_assign(&mut want, &y);
            assert_bits_eq(&got, &want, &format!("{} add_assign {len}", path.name()));
        }
    }
}

#[test]
fn division_by_a_scalar_equals_element_by_element() {
    let mut rng = Rng::new(19);
    let specials = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        f32::MAX,
    ];
    for path in std::iter::once(REF).chain(accelerated_paths()) {
        for len in (0..=40).chain([63, 64, 65, 200]) {
            let mut x = values(&mut rng, len);
            for (v, &s) in x.iter_mut().step_by(7).zip(specials.iter().cycle()) {
                *v = s;
            }
            for d in [
                3.0f32,
                -0.1,
                8.0f32.sqrt(),
                1e-30,
                0.0,
                f32::INFINITY,
                f32::NAN,
            ] {
                let mut got = x.clone();
                path.divide(&mut got, d);
                let want: Vec<f32> = x.iter().map(|v| v / d).collect();
                assert_bits_eq(
                    &got,
                    &want,
                    &format!("{} length {len} over {d}", path.name()),
                );
            }
        }
    }
}

#[test]
fn finiteness_pass_finds_every_non_finite_value() {
    for path in std::iter::once(REF).chain(accelerated_paths()) {
        // Lengths around the vectors and the 64-float chunks of the pass;
        // each bad value at every position.
        for len in (0..=20).chain([63, 64, 65, 127, 128, 129, 200]) {
            let mut x = vec![1.5f32; len];
            assert!(path.all_finite(&x), "{} length {len}", path.name());
            for at in 0..len {
                for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
                    x[at] = bad;
                    assert!(
                        !path.all_finite(&x),
                        "{} {bad} at {at} of {len}",
                        path.name()
                    );
                }
                x[at] = f32::MAX; // finite, however large
                assert!(
                    path.all_finite(&x),
                    "{} f32::MAX at {at} of {len}",
                    path.name()
                );
            }
        }
    }
}

/// Bit for bit where the reference is not NaN; NaN where it is (a NaN's
/// payload is not part of the contract: see `reference.rs`).
fn assert_bits_eq_or_both_nan(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}: element {i}: {g} vs NaN");
        } else {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
        }
    }
}

/// `n` inputs for `exp`: mostly within ±24, some far beyond either end of
/// its range, and a few infinities, NaNs, zeros and subnormals.
fn exp_inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::from_bits(1),
        f32::MAX,
        f32::MIN,
        88.72,
        -87.4,
        -103.9,
        -150.0,
    ];
    (0..n)
        .map(|i| match rng.next_u64() % 8 {
            0 => specials[i % specials.len()],
            1 => rng.uniform() * 200.0,
            _ => rng.uniform() * 24.0,
        })
        .collect()
}

/// `x` with NaN as 0 and everything else clamped to ±200.
fn finite_copy(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            if v.is_nan() {
                0.0
            } else {
                v.clamp(-200.0, 200.0)
            }
        })
        .collect()
}

#[test]
fn exp_and_sum_equals_reference_bit_for_bit() {
    let mut rng = Rng::new(13);
    for path in accelerated_paths() {
        for n in 0..=257 {
            let x = exp_inputs(&mut rng, n);
            // Softmax's shift (the finite maximum), none, and a large one.
            let finite_max = x
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(0.0f32, f32::max);
            for shift in [finite_max, 0.0, -50.0] {
                let (mut want, mut got) = (x.clone(), x.clone());
                let want_sum = reference::exp_and_sum(&mut want, shift);
                let got_sum = path.exp_and_sum(&mut got, shift);
                let what = format!("{} n={n} shift {shift}", path.name());
                assert_bits_eq_or_both_nan(&got, &want, &what);
                assert_bits_eq_or_both_nan(&[got_sum], &[want_sum], &format!("sum {what}"));
            }
            // Finite inputs at softmax's shift: the sum is finite, bit for bit.
            let finite = finite_copy(&x);
            let max = finite.iter().copied().fold(f32::MIN, f32::max);
            let (mut want, mut got) = (finite.clone(), finite.clone());
            let want_sum = reference::exp_and_sum(&mut want, max);
            let got_sum = path.exp_and_sum(&mut got, max);
            assert_bits_eq(&got, &want, &format!("{} n={n} finite", path.name()));
            assert_eq!(
                got_sum.to_bits(),
                want_sum.to_bits(),
                "{} n={n}",
                path.name()
            );
        }
    }
}

#[test]
fn vector_exp_equals_reference_exp_over_its_whole_range() {
    // Every 2⁻¹⁰ from −105 to 90, through each path's exponentials (shift
    // 0), element by element against the scalar definition.
    let x: Vec<f32> = (-105 * 1024..=90 * 1024)
        .map(|i| i as f32 / 1024.0)
        .collect();
    let want: Vec<f32> = x.iter().map(|&v| reference::exp(v)).collect();
    for path in accelerated_paths() {
        let mut got = x.clone();
        path.exp_and_sum(&mut got, 0.0);
        assert_bits_eq(&got, &want, path.name());
    }
}

#[test]
fn silu_mul_equals_reference_bit_for_bit() {
    let mut rng = Rng::new(14);
    for path in accelerated_paths() {
        for n in 0..=257 {
            let gate = exp_inputs(&mut rng, n);
            let up = exp_inputs(&mut rng, n);
            let what = format!("{} n={n}", path.name());
            let (mut want, mut got) = (gate.clone(), gate.clone());
            reference::silu_mul(&mut want, &up);
            path.silu_mul(&mut got, &up);
            assert_bits_eq_or_both_nan(&got, &want, &what);
            // Finite gates and ups: no NaN anywhere, bit for bit.
            let gate = finite_copy(&gate);
            let up = values(&mut rng, n);
            let (mut want, mut got) = (gate.clone(), gate.clone());
            reference::silu_mul(&mut want, &up);
            path.silu_mul(&mut got, &up);
            assert_bits_eq(&got, &want, &format!("{what} finite"));
            // Unequal lengths: the common length only.
            let mut short = gate.clone();
            short.push(1.5);
            path.silu_mul(&mut short, &up);
            assert_bits_eq(&short[..n], &want, &format!("{what} longer gate"));
            assert_eq!(short[n], 1.5, "{what}: past the common length");
        }
    }
}

// ---------------------------------------------------------------------------
// The packed layout (kernels/packed.rs)
// ---------------------------------------------------------------------------

/// `w` packed into a fresh buffer.
fn packed_copy(w: &Matrix<'_>) -> Vec<u8> {
    let mut bytes = vec![0u8; packed::packed_bytes(w)];
    packed::pack_matrix(w, &mut bytes).expect("packs");
    bytes
}

/// Every path's packed matvec (one position) and packed matmul (`n`
/// positions, and one position at a time) against the reference's products
/// of the ggml matrix, bit for bit.
fn packed_case(path: Path, w: &Matrix<'_>, xq: &[BlockQ8], n: usize, what: &str) {
    let bytes = packed_copy(w);
    // Only pack_matrix builds a PackedMatrix: pack into `bytes` again to
    // borrow it as one.
    let mut again = bytes.clone();
    let p = packed::pack_matrix(w, &mut again).expect("packs");
    assert_eq!(p.bytes(), &bytes[..]);
    let blocks = w.cols / BLOCK_LEN;
    let want = reference_matmul(w, xq, n);
    let mut got = vec![f32::NAN; w.rows * n];
    path.matmul_packed(&mut got, &p, xq, n).expect("path");
    assert_bits_eq(&got, &want, &format!("{what}: matmul_packed n={n}"));
    for (t, x_t) in xq.chunks_exact(blocks).enumerate() {
        let want_t: Vec<f32> = want[t * w.rows..][..w.rows].to_vec();
        // Marked streamed, the kernels request bytes ahead: the same bits.
        for streamed in [false, true] {
            let mut column = vec![f32::NAN; w.rows];
            path.matvec_packed(&mut column, &p.streamed(streamed), x_t)
                .expect("path");
            let what = format!("{what}: matvec_packed t={t} streamed={streamed}");
            assert_bits_eq(&column, &want_t, &what);
        }
    }
}

/// The reference and every accelerated path the CPU has (each has packed
/// kernels), announcing the ones skipped.
fn packing_paths() -> Vec<Path> {
    let paths: Vec<Path> = [REF].into_iter().chain(accelerated_paths()).collect();
    assert!(paths.iter().skip(1).all(|p| p.packs_weights()));
    paths
}

#[test]
fn packed_products_equal_the_reference_on_ggml_rows_bit_for_bit() {
    let mut rng = Rng::new(21);
    for path in packing_paths() {
        for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
            for rows in [1, 16, 17, 35, 48] {
                for cols in [32, 96, 288, 2080, 4128] {
                    for n in [1, 3, 11, 17] {
                        let data = encode(dtype, &values(&mut rng, rows * cols), rows);
                        let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
                        let xq: Vec<BlockQ8> = (0..n)
                            .flat_map(|_| activations(&values(&mut rng, cols)))
                            .collect();
                        let what = format!("{} {dtype:?} {rows}x{cols}", path.name());
                        packed_case(path, &w, &xq, n, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn packed_products_are_exact_at_the_extreme_levels() {
    // Q8_0 levels −128 and 127, Q4_0 levels −8 and 7, activations ±127;
    // rows left over after the groups; stretches past 64 blocks.
    let mut rng = Rng::new(22);
    for path in packing_paths() {
        for dtype in [Dtype::Q8_0, Dtype::Q4_0] {
            for (rows, cols, n) in [(16, 288, 16), (33, 2080, 17), (47, 4128, 3), (32, 64, 2)] {
                let (data, xq) = extreme_levels(&mut rng, dtype, rows, cols, n);
                let w = Matrix::new(dtype, rows, cols, &data).expect("shape");
                let what = format!("{} {dtype:?} {rows}x{cols} extreme levels", path.name());
                packed_case(path, &w, &xq, n, &what);
            }
        }
    }
}

#[test]
fn packed_products_report_the_reference_errors_and_split_by_groups() {
    let mut rng = Rng::new(23);
    let data = encode(Dtype::Q4_0, &values(&mut rng, 40 * 64), 40);
    let w = Matrix::new(Dtype::Q4_0, 40, 64, &data).expect("shape");
    let mut bytes = packed_copy(&w);
    let p = packed::pack_matrix(&w, &mut bytes).expect("packs");
    let xq = activations(&values(&mut rng, 64));
    for path in packing_paths() {
        let mut out = vec![0.0; 40];
        assert!(path.matvec_packed(&mut out[..39], &p, &xq).is_err());
        assert!(path.matvec_packed(&mut out, &p, &xq[..1]).is_err());
        assert!(path.matmul_packed(&mut out, &p, &xq, 2).is_err());
        // Two tasks' shares, split at a group boundary, give the whole.
        path.matvec_packed(&mut out, &p, &xq).expect("whole");
        let mut parts = vec![0.0; 40];
        let (a, b) = parts.split_at_mut(16);
        let first = p.row_range(0..16).expect("whole group");
        let second = p.row_range(16..40).expect("groups and the rest");
        path.matvec_packed(a, &first, &xq).expect("first");
        path.matvec_packed(b, &second, &xq).expect("second");
        assert_bits_eq(&parts, &out, &format!("{}: split", path.name()));
    }
}
