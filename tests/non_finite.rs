//! NaN and infinity in a model whose checksums are all valid: `verify`
//! names the tensor, the forward pass refuses to hand out non-finite
//! logits (float and quantized paths), the CLI says so in one line, and a
//! degenerate `rope_theta` does not pass validation.

mod common;

use std::path::Path;
use std::process::Command;

use common::binaries::binary;
use kinglet::{session_floats, Config, Dtype, Error, ModelFile, Session};
use kinglet_tools::OwnedModel;

/// Every matrix a whole number of 32-element blocks, so q8_0 and q4_0
/// apply everywhere; an untied classifier.
fn config() -> Config {
    Config {
        dim: 32,
        hidden_dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 40,
        max_seq_len: 16,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: false,
    }
}

/// The test model in `dtype` (norm gains stay f32).
fn model(dtype: Dtype) -> Vec<u8> {
    let f32_file = common::random_model(&config(), 11, &[]);
    let owned = OwnedModel::from_klt(&ModelFile::new_checked(&f32_file[..]).unwrap());
    let mut bytes = Vec::new();
    owned.write_klt(dtype, &mut bytes).unwrap();
    bytes
}

/// `file` with element `element` of tensor `name` (for quantized dtypes:
/// the scale of the block holding it) set to the raw bits `bits`; the
/// tensor's index; CRCs repaired.
fn poisoned(file: &[u8], name: &str, element: usize, bits: u32) -> (Vec<u8>, u32) {
    let model = ModelFile::new_checked(file).unwrap();
    let t = model.tensors().find(|t| t.name == name).unwrap();
    let (index, dtype) = (t.index, t.dtype);
    let patched = common::patch_tensor(file, index, |data| match dtype {
        Dtype::F32 => data[4 * element..4 * element + 4].copy_from_slice(&bits.to_le_bytes()),
        Dtype::F16 | Dtype::BF16 => {
            data[2 * element..2 * element + 2].copy_from_slice(&(bits as u16).to_le_bytes())
        }
        Dtype::Q8_0 | Dtype::Q4_0 => {
            let block = dtype.row_bytes(32).unwrap();
            let at = element / 32 * block;
            data[at..at + 2].copy_from_slice(&(bits as u16).to_le_bytes())
        }
    });
    (patched, index)
}

/// The poisonings of the issue: (dtype, tensor, element, bits).
const CASES: [(Dtype, &str, usize, u32); 9] = [
    (Dtype::F32, "tok_embedding", 5, 0x7FC0_0000), // NaN in the embedding
    (Dtype::F32, "layers.0.wq", 0, 0x7F80_0000),   // inf in wq
    (Dtype::F32, "layers.1.attn_norm", 3, 0xFFC0_0000), // NaN norm gain
    (Dtype::F16, "layers.0.w1", 2, 0x7E00),        // f16 NaN
    (Dtype::F16, "classifier", 7, 0xFC00),         // f16 -inf
    (Dtype::BF16, "layers.0.wo", 9, 0x7FC0),       // bf16 NaN
    (Dtype::BF16, "layers.1.w3", 1, 0x7F80),       // bf16 inf
    (Dtype::Q8_0, "layers.0.wk", 33, 0x7E00),      // q8_0 scale NaN
    (Dtype::Q4_0, "layers.1.w2", 64, 0x7C00),      // q4_0 scale inf
];

#[test]
fn verify_names_the_tensor_and_forward_refuses_non_finite_logits() {
    for (dtype, name, element, bits) in CASES {
        let (file, index) = poisoned(&model(dtype), name, element, bits);
        let model = ModelFile::new_checked(&file[..]).expect("the layout is valid");
        let block_start = if dtype.is_quantized() {
            element / 32 * 32
        } else {
            element
        };
        assert_eq!(
            model.verify(),
            Err(Error::NonFiniteWeight {
                index,
                element: block_start as u64
            }),
            "{name} ({dtype:?})"
        );
        let mut buffer = vec![0.0f32; session_floats(model.config(), 16)];
        let mut session = Session::new(&model, &mut buffer, 16).unwrap();
        // Token 0 reads embedding row 0, which holds element 5.
        assert_eq!(
            session.forward(0).map(|_| ()),
            Err(Error::ActivationsOverflowed),
            "{name} ({dtype:?})"
        );
        assert_eq!(session.pos(), 0, "the failed position is not kept");
        assert_eq!(
            session.prefill(&[0, 1, 2]).map(|_| ()),
            Err(Error::ActivationsOverflowed),
            "{name} ({dtype:?})"
        );
    }
    // The same models, unpoisoned, verify and run.
    for dtype in Dtype::ALL {
        let file = model(dtype);
        let model = ModelFile::new_checked(&file[..]).unwrap();
        assert_eq!(model.verify(), Ok(()));
        let mut buffer = vec![0.0f32; session_floats(model.config(), 16)];
        let mut session = Session::new(&model, &mut buffer, 16).unwrap();
        assert!(session.forward(0).is_ok(), "{dtype:?}");
    }
}

fn kinglet(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(binary("kinglet"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (o.status.code(), text(o.stdout), text(o.stderr))
}

#[test]
fn the_cli_refuses_non_finite_models_in_one_line() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("non-finite");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (file, _) = poisoned(&model(Dtype::F32), "layers.0.wq", 0, 0x7F80_0000);
    std::fs::write(dir.join("inf.klt"), file).unwrap();
    let (q8, _) = poisoned(&model(Dtype::Q8_0), "layers.0.wk", 33, 0x7E00);
    std::fs::write(dir.join("nan-q8.klt"), q8).unwrap();
    std::fs::write(dir.join("text.txt"), "abcdefghijklmnopqrstuvwxyz".repeat(4)).unwrap();
    let one_error = |(code, _, err): (Option<i32>, String, String), needle: &str| {
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("kinglet: error: "), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
    };

    let (code, out, _) = kinglet(&dir, &["verify", "inf.klt"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        out,
        "inf.klt: layers.0.wq: tensor 2 holds a NaN or infinite value (element 0)\n"
    );
    let (code, out, _) = kinglet(&dir, &["verify", "nan-q8.klt"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("layers.0.wk: tensor 3 holds a NaN or infinite value (element 32)"));
    for file in ["inf.klt", "nan-q8.klt"] {
        one_error(
            kinglet(&dir, &["generate", file, "-p", "abc", "-n", "4", "-t", "0"]),
            "holds a NaN or infinite value",
        );
        one_error(
            kinglet(
                &dir,
                &[
                    "generate",
                    file,
                    "-p",
                    "abc",
                    "-n",
                    "4",
                    "-t",
                    "0",
                    "--no-verify",
                ],
            ),
            "activations overflowed",
        );
        one_error(
            kinglet(&dir, &["eval", file, "--text", "text.txt"]),
            "holds a NaN or infinite value",
        );
    }
}

#[test]
fn degenerate_config_scalars_are_refused_at_open() {
    let file = model(Dtype::F32);
    let set = |at: usize, v: f32| {
        common::patch_header(&file, |b| b[at..at + 4].copy_from_slice(&v.to_le_bytes()))
    };
    for (at, value, field) in [
        (52, 1e-45, "rope_theta"),
        (52, 0.5, "rope_theta"),
        (52, f32::NAN, "rope_theta"),
        (52, f32::INFINITY, "rope_theta"),
        (56, 0.0, "norm_eps"),
        (56, 1.0, "norm_eps"),
        (56, f32::NAN, "norm_eps"),
        (56, -1e-5, "norm_eps"),
    ] {
        match ModelFile::new_checked(set(at, value)) {
            Err(Error::BadConfig { field: f, .. }) => assert_eq!(f, field, "{value}"),
            other => panic!("{field} = {value}: {:?}", other.map(|_| ())),
        }
    }
    assert!(
        ModelFile::new_checked(set(52, 1.0)).is_ok(),
        "rope_theta 1 is allowed"
    );
}
