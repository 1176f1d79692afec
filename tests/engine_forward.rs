//! The engine's forward pass against an independent, naive f64 forward pass
//! on small random models, plus the session's error contract.

use kinglet::format::{sort_pieces, write_model, IoSink, TensorSpec, TokenizerKind, TokenizerSpec};
use kinglet::{session_floats, Config, Dtype, Error, ModelFile, Session, TensorRole};
use kinglet_tools::rng::Rng;

/// One tensor of a test model: its values exactly as the file stores them.
struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<u32>,
    bytes: Vec<u8>,
    values: Vec<f64>,
}

impl Tensor {
    /// Random values of `scale` magnitude (around 1 for a norm gain), rounded
    /// to `dtype`.
    fn random(
        rng: &mut Rng,
        name: String,
        dtype: Dtype,
        shape: &[u32],
        scale: f64,
        norm: bool,
    ) -> Self {
        let n = shape.iter().product::<u32>() as usize;
        let mut bytes = Vec::new();
        let mut values = Vec::new();
        for _ in 0..n {
            let v = if norm {
                1.0 + 0.2 * f64::from(rng.uniform())
            } else {
                scale * f64::from(rng.uniform())
            };
            let stored = match dtype {
                Dtype::F32 => {
                    bytes.extend((v as f32).to_le_bytes());
                    v as f32 as f64
                }
                Dtype::F16 => {
                    let h = half::f16::from_f64(v);
                    bytes.extend(h.to_bits().to_le_bytes());
                    h.to_f64()
                }
                Dtype::BF16 => {
                    let h = half::bf16::from_f64(v);
                    bytes.extend(h.to_bits().to_le_bytes());
                    h.to_f64()
                }
                Dtype::Q8_0 | Dtype::Q4_0 => unreachable!("test models use float weights"),
            };
            values.push(stored);
        }
        Tensor {
            name,
            dtype,
            shape: shape.to_vec(),
            bytes,
            values,
        }
    }
}

/// A random model in canonical tensor order; matrices in `dtype`, norms F32.
fn random_model(config: &Config, dtype: Dtype, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    kinglet::canonical_tensors(config)
        .map(|t| {
            let name = t.role.to_string();
            if t.role.is_norm() {
                Tensor::random(&mut rng, name, Dtype::F32, t.dims(), 0.0, true)
            } else {
                // The embedding at unit scale; projections at 1/sqrt(fan-in).
                let scale = match t.role {
                    TensorRole::TokEmbedding => 1.0,
                    _ => 1.0 / (t.shape[1] as f64).sqrt(),
                };
                Tensor::random(&mut rng, name, dtype, t.dims(), scale, false)
            }
        })
        .collect()
}

/// Writes `tensors` as a .klt file with a placeholder BPE vocabulary.
fn write_klt(config: &Config, tensors: &[Tensor]) -> Vec<u8> {
    let names: Vec<Vec<u8>> = (0..config.vocab_size)
        .map(|i| format!("<{i}>").into_bytes())
        .collect();
    let pieces: Vec<&[u8]> = names.iter().map(|p| p.as_slice()).collect();
    let scores = vec![0.0f32; pieces.len()];
    let mut sorted = vec![0u32; pieces.len()];
    sort_pieces(&pieces, &mut sorted);
    let tokenizer = TokenizerSpec {
        kind: TokenizerKind::Bpe,
        bos: Some(1),
        eos: Some(2),
        pieces: &pieces,
        scores: &scores,
        sorted: &sorted,
    };
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|t| TensorSpec {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            data: &t.bytes,
        })
        .collect();
    let mut sink = IoSink(Vec::new());
    if let Err(e) = write_model(&mut sink, config, &tokenizer, &specs, &[]) {
        panic!("write_model: {e}");
    }
    sink.0
}

/// The naive forward pass, in f64, over every position of `tokens`; returns
/// the logits of each position.
fn reference_forward(config: &Config, tensors: &[Tensor], tokens: &[u32]) -> Vec<Vec<f64>> {
    let dim = config.dim as usize;
    let hidden = config.hidden_dim as usize;
    let (n_heads, n_kv) = (config.n_heads as usize, config.n_kv_heads as usize);
    let hd = dim / n_heads;
    let kv_dim = hd * n_kv;
    let vocab = config.vocab_size as usize;
    let eps = config.norm_eps as f64;
    let theta = config.rope_theta as f64;
    let w = |i: usize| &tensors[i].values;
    let matvec = |m: &[f64], x: &[f64], rows: usize| -> Vec<f64> {
        (0..rows)
            .map(|r| (0..x.len()).map(|c| m[r * x.len() + c] * x[c]).sum())
            .collect()
    };
    let rmsnorm = |x: &[f64], g: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        x.iter()
            .zip(g)
            .map(|(v, g)| v / (ms + eps).sqrt() * g)
            .collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        for head in v.chunks_mut(hd) {
            for i in (0..hd).step_by(2) {
                let angle = pos as f64 * theta.powf(-(i as f64) / hd as f64);
                let (a, b) = (head[i], head[i + 1]);
                head[i] = a * angle.cos() - b * angle.sin();
                head[i + 1] = a * angle.sin() + b * angle.cos();
            }
        }
    };
    let layers = config.n_layers as usize;
    let mut keys = vec![Vec::<Vec<f64>>::new(); layers];
    let mut values = vec![Vec::<Vec<f64>>::new(); layers];
    let mut all_logits = Vec::new();
    for (pos, &token) in tokens.iter().enumerate() {
        let mut x: Vec<f64> = w(0)[token as usize * dim..][..dim].to_vec();
        for l in 0..layers {
            let base = 1 + 9 * l;
            let xn = rmsnorm(&x, w(base));
            let mut q = matvec(w(base + 1), &xn, dim);
            let mut k = matvec(w(base + 2), &xn, kv_dim);
            let v = matvec(w(base + 3), &xn, kv_dim);
            rope(&mut q, pos);
            rope(&mut k, pos);
            keys[l].push(k);
            values[l].push(v);
            let mut att_out = vec![0.0; dim];
            for h in 0..n_heads {
                let kvh = h * n_kv / n_heads;
                let qh = &q[h * hd..][..hd];
                let scores: Vec<f64> = keys[l]
                    .iter()
                    .map(|k| {
                        qh.iter()
                            .zip(&k[kvh * hd..][..hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (t, s) in scores.iter().enumerate() {
                    let a = (s - max).exp() / z;
                    for i in 0..hd {
                        att_out[h * hd + i] += a * values[l][t][kvh * hd + i];
                    }
                }
            }
            let o = matvec(w(base + 4), &att_out, dim);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = rmsnorm(&x, w(base + 5));
            let gate = matvec(w(base + 6), &xn, hidden);
            let up = matvec(w(base + 8), &xn, hidden);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(w(base + 7), &act, dim);
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        let xn = rmsnorm(&x, w(1 + 9 * layers));
        let classifier = if config.tied_classifier {
            w(0)
        } else {
            w(2 + 9 * layers)
        };
        all_logits.push(matvec(classifier, &xn, vocab));
    }
    all_logits
}

fn tiny_config(tied: bool) -> Config {
    Config {
        dim: 24,
        hidden_dim: 40,
        n_layers: 3,
        n_heads: 6,
        n_kv_heads: 2,
        vocab_size: 37,
        max_seq_len: 16,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: tied,
    }
}

fn tokens(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7 + 3) % vocab).collect()
}

/// Runs the engine and the reference on the same model and tokens; every
/// logit must agree within 1e-4 of the largest logit's magnitude.
fn check_against_reference(config: &Config, dtype: Dtype, seed: u64) {
    let tensors = random_model(config, dtype, seed);
    let bytes = write_klt(config, &tensors);
    let model = ModelFile::new_checked(bytes.as_slice()).expect("the writer's output opens");
    let max_seq = config.max_seq_len;
    let mut buffer = vec![0.0f32; session_floats(config, max_seq)];
    let mut session = Session::new(&model, &mut buffer, max_seq).expect("session");
    let tokens = tokens(max_seq as usize, config.vocab_size);
    let want = reference_forward(config, &tensors, &tokens);
    for (pos, (&token, want)) in tokens.iter().zip(&want).enumerate() {
        let got = session.forward(token).expect("forward");
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-4 * scale,
                "{dtype:?} tied={} pos {pos} logit {i}: engine {g}, reference {w}",
                config.tied_classifier
            );
        }
    }
    assert_eq!(session.pos(), max_seq);
}

#[test]
fn forward_matches_naive_f64_reference_tied_and_untied() {
    check_against_reference(&tiny_config(true), Dtype::F32, 1);
    check_against_reference(&tiny_config(false), Dtype::F32, 2);
}

#[test]
fn half_precision_models_match_reference_on_their_stored_values() {
    check_against_reference(&tiny_config(false), Dtype::F16, 3);
    check_against_reference(&tiny_config(true), Dtype::BF16, 4);
}

#[test]
fn multi_query_attention_matches_reference() {
    let config = Config {
        n_kv_heads: 1,
        n_heads: 4,
        dim: 16,
        ..tiny_config(true)
    };
    check_against_reference(&config, Dtype::F32, 5);
}

fn tiny_model() -> (Config, Vec<u8>) {
    let config = tiny_config(true);
    let bytes = write_klt(&config, &random_model(&config, Dtype::F32, 9));
    (config, bytes)
}

#[test]
fn session_floats_is_exact() {
    let (config, bytes) = tiny_model();
    let model = ModelFile::new_checked(bytes.as_slice()).unwrap();
    for max_seq in [1, 5, 16] {
        let needed = session_floats(&config, max_seq);
        let mut buffer = vec![0.0f32; needed];
        assert!(Session::new(&model, &mut buffer, max_seq).is_ok());
        assert_eq!(
            Session::new(&model, &mut buffer[..needed - 1], max_seq).err(),
            Some(Error::BufferTooSmall {
                needed,
                available: needed - 1
            })
        );
        let mut larger = vec![0.0f32; needed + 100];
        assert!(Session::new(&model, &mut larger, max_seq).is_ok());
    }
}

#[test]
fn max_seq_must_be_within_the_model() {
    let (config, bytes) = tiny_model();
    let model = ModelFile::new_checked(bytes.as_slice()).unwrap();
    let mut buffer = vec![0.0f32; session_floats(&config, 17)];
    for bad in [0, 17] {
        assert!(matches!(
            Session::new(&model, &mut buffer, bad),
            Err(Error::InvalidInput { .. })
        ));
    }
}

#[test]
fn token_out_of_range_and_sequence_full_are_errors_that_change_nothing() {
    let (config, bytes) = tiny_model();
    let model = ModelFile::new_checked(bytes.as_slice()).unwrap();
    let mut buffer = vec![0.0f32; session_floats(&config, 3)];
    let mut session = Session::new(&model, &mut buffer, 3).unwrap();
    assert_eq!(
        session.forward(37).err(),
        Some(Error::TokenOutOfRange {
            token: 37,
            vocab_size: 37
        })
    );
    assert_eq!(session.pos(), 0);
    let first = session.forward(5).unwrap().to_vec();
    session.forward(6).unwrap();
    session.forward(u32::MAX).unwrap_err();
    session.forward(7).unwrap();
    assert_eq!(session.pos(), 3);
    assert_eq!(
        session.forward(8).err(),
        Some(Error::SequenceFull { max_seq_len: 3 })
    );
    assert_eq!(session.pos(), 3);
    // After a reset the same token gives bit-identical logits.
    session.reset();
    assert_eq!(session.pos(), 0);
    assert_eq!(session.forward(5).unwrap(), first.as_slice());
    assert_eq!(session.logits(), first.as_slice());
    assert_eq!(session.max_seq(), 3);
}

/// Quantized models run with integer dot products against activations
/// quantized on the fly, so they differ from the float reference (computed on
/// the dequantized weights) by the activation rounding only: a few percent of
/// the largest logit at most.
#[test]
fn quantized_weights_run_close_to_their_dequantized_values() {
    let config = Config {
        dim: 64,
        hidden_dim: 96,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 16,
        max_seq_len: 8,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: false,
    };
    // Over seeds 1..60 the worst gap was 2.2% (q8_0) and 1.7% (q4_0).
    for (dtype, tolerance) in [(Dtype::Q8_0, 0.03), (Dtype::Q4_0, 0.03)] {
        let mut tensors = random_model(&config, Dtype::F32, 10);
        for t in tensors.iter_mut().filter(|t| t.shape.len() == 2) {
            let floats: Vec<f32> = t.values.iter().map(|&v| v as f32).collect();
            let mut bytes = vec![0u8; dtype.row_bytes(floats.len()).unwrap()];
            kinglet::quant::quantize_row(dtype, &floats, &mut bytes).unwrap();
            let mut back = vec![0.0f32; floats.len()];
            kinglet::quant::dequantize_row(dtype, &bytes, &mut back).unwrap();
            t.dtype = dtype;
            t.bytes = bytes;
            t.values = back.iter().map(|&v| v as f64).collect();
        }
        let bytes = write_klt(&config, &tensors);
        let model = ModelFile::new_checked(bytes.as_slice()).unwrap();
        let mut buffer = vec![0.0f32; session_floats(&config, 8)];
        let mut session = Session::new(&model, &mut buffer, 8).unwrap();
        let tokens = tokens(8, config.vocab_size);
        let want = reference_forward(&config, &tensors, &tokens);
        for (pos, (&token, want)) in tokens.iter().zip(&want).enumerate() {
            let got = session.forward(token).unwrap();
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (&g, &w) in got.iter().zip(want) {
                assert!(
                    (g as f64 - w).abs() <= tolerance * scale,
                    "{dtype:?} pos {pos}: {g} vs {w}"
                );
            }
        }
    }
}
