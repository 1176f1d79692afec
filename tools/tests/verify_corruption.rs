//! `kinglet verify` against damaged files, run as a user would run it: bit
//! flips sampled from every region of a small model file (the fixed header,
//! the tokenizer, the directory, the metadata, the header CRC, every
//! tensor's data and every run of padding), and truncation at every region
//! boundary (±1) and at random points. Each must end in a non-zero exit and
//! one line naming the problem. (`tests/format.rs` flips every bit of a
//! smaller file through the library; this is the same promise at the CLI.)

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use kinglet::{Config, Dtype, ModelFile};
use kinglet_tools::rng::Rng;
use kinglet_tools::synth::synth_model;
use kinglet_tools::DtypePlan;

const BIN: &str = env!("CARGO_BIN_EXE_kinglet");

/// Two layers, an untied classifier, f16 matrices beside f32 norms and an
/// f32 embedding, five tokens: tensors of sizes that leave padding between
/// some of them and none between others.
fn small_model() -> Vec<u8> {
    let config = Config {
        dim: 40,
        hidden_dim: 24,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 5,
        max_seq_len: 16,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tied_classifier: false,
    };
    let mut model = synth_model(&config, 11).unwrap();
    model
        .metadata
        .push(("training.steps".into(), "1000".into()));
    let plan = DtypePlan {
        matrices: Dtype::F16,
        embedding: Some(Dtype::F32),
    };
    let mut file = Vec::new();
    model.write_klt(plan, &mut file).unwrap();
    file
}

/// What a flip in a region must be reported as.
#[derive(Clone, Debug)]
enum Expect {
    /// Refused at open: one `kinglet: error:` line on stderr, which for
    /// regions behind the header CRC names that checksum.
    Open { header_crc: bool },
    /// The tensor's CRC: one stdout line naming the tensor.
    Tensor(String),
    /// Non-zero padding: one stdout line naming the tensor after it.
    Padding(String),
}

/// Every region of `file`, in file order, covering every byte.
fn regions(file: &[u8]) -> Vec<(String, Range<usize>, Expect)> {
    let model = ModelFile::new_checked(file).unwrap();
    let header = model.header_bytes();
    let directory = file
        .windows(13)
        .position(|w| w == b"tok_embedding")
        .unwrap();
    let tensors = model.tensor_count() as usize;
    let metadata = directory + tensors * kinglet::format::DIR_ENTRY_BYTES;
    let behind_crc = Expect::Open { header_crc: true };
    let mut out = vec![
        (
            "fixed header".to_string(),
            0..72,
            Expect::Open { header_crc: false },
        ),
        ("tokenizer".into(), 72..directory, behind_crc.clone()),
        ("directory".into(), directory..metadata, behind_crc.clone()),
        ("metadata".into(), metadata..header - 4, behind_crc.clone()),
        ("header CRC".into(), header - 4..header, behind_crc),
    ];
    let mut end = header;
    for t in model.tensors() {
        let start = t.offset as usize;
        if start > end {
            out.push((
                format!("padding before {}", t.name),
                end..start,
                Expect::Padding(t.name.to_string()),
            ));
        }
        end = start + t.data.len();
        out.push((
            t.name.to_string(),
            start..end,
            Expect::Tensor(t.name.to_string()),
        ));
    }
    assert_eq!(end, file.len());
    out
}

/// Runs `kinglet verify path` and returns (exit code, stdout lines, stderr lines).
fn verify(path: &Path) -> (i32, Vec<String>, Vec<String>) {
    let out = Command::new(BIN).arg("verify").arg(path).output().unwrap();
    let lines = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let code = out.status.code().expect("exits, not killed by a signal");
    (code, lines(&out.stdout), lines(&out.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("verify-corruption");
    fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Checks that `kinglet verify` refused the file at open with one line.
fn assert_refused_at_open(what: &str, (code, stdout, stderr): &(i32, Vec<String>, Vec<String>)) {
    assert_eq!(*code, 1, "{what}: exit code; stderr {stderr:?}");
    assert!(stdout.is_empty(), "{what}: stdout {stdout:?}");
    assert_eq!(stderr.len(), 1, "{what}: one line, got {stderr:?}");
    assert!(
        stderr[0].starts_with("kinglet: error: ") && stderr[0].len() > 40,
        "{what}: {stderr:?}"
    );
}

#[test]
fn every_region_reports_a_flipped_bit() {
    let file = small_model();
    let path = scratch("flipped.klt");
    fs::write(&path, &file).unwrap();
    assert_eq!(verify(&path), (0, vec!["OK".to_string()], vec![]));

    let regions = regions(&file);
    let paddings = regions
        .iter()
        .filter(|(_, _, e)| matches!(e, Expect::Padding(_)))
        .count();
    assert!(paddings >= 2, "the model has padding between tensors");
    let mut rng = Rng::new(0x00c0_ffee);
    let mut flips = 0;
    for (name, range, expect) in &regions {
        // The region's first and last bytes and a few in between.
        let mut bytes = vec![range.start, range.end - 1];
        bytes.extend((0..4).map(|_| range.start + rng.below(range.len())));
        for byte in bytes {
            let bit = rng.below(8);
            let mut damaged = file.clone();
            damaged[byte] ^= 1 << bit;
            fs::write(&path, &damaged).unwrap();
            let what = format!("{name}: bit {bit} of byte {byte}");
            let result = verify(&path);
            match expect {
                Expect::Open { header_crc } => {
                    assert_refused_at_open(&what, &result);
                    if *header_crc {
                        assert!(
                            result.2[0].contains("header checksum mismatch"),
                            "{what}: {:?}",
                            result.2
                        );
                    }
                }
                Expect::Tensor(tensor) | Expect::Padding(tensor) => {
                    let (code, stdout, stderr) = &result;
                    assert_eq!(*code, 1, "{what}: exit code");
                    assert!(stderr.is_empty(), "{what}: stderr {stderr:?}");
                    assert_eq!(stdout.len(), 1, "{what}: one line, got {stdout:?}");
                    let named = match expect {
                        Expect::Tensor(_) => format!(": {tensor}: tensor "),
                        _ => format!(": padding before {tensor}: "),
                    };
                    assert!(stdout[0].contains(&named), "{what}: {stdout:?}");
                }
            }
            flips += 1;
        }
    }
    assert!(flips >= 6 * 30, "{flips} flips");
}

#[test]
fn truncation_anywhere_is_a_clear_error() {
    let file = small_model();
    let path = scratch("truncated.klt");
    let mut cuts: Vec<usize> = regions(&file)
        .iter()
        .flat_map(|(_, r, _)| [r.start, r.end])
        .flat_map(|b| [b.saturating_sub(1), b, b + 1])
        .filter(|&b| b < file.len())
        .collect();
    let mut rng = Rng::new(0xbad_5eed);
    cuts.extend((0..20).map(|_| rng.below(file.len())));
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        fs::write(&path, &file[..cut]).unwrap();
        let what = format!("truncated to {cut} of {} bytes", file.len());
        let result = verify(&path);
        assert_refused_at_open(&what, &result);
        let line = &result.2[0];
        assert!(
            line.contains("truncated") || line.contains("disagrees with the header"),
            "{what}: {line}"
        );
    }
}
