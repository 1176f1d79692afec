//! The `kinglet-train` binary: training, resume, eval, export, and one
//! readable error line for every kind of bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kinglet-train"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kinglet-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    std::fs::write(&path, common::tiny_text()).expect("write corpus");
    path
}

const TINY: [&str; 16] = [
    "--context",
    "8",
    "--dim",
    "16",
    "--layers",
    "2",
    "--heads",
    "2",
    "--hidden",
    "24",
    "--batch",
    "4",
    "--eval-windows",
    "8",
    "--threads",
    "2",
];

fn train(dir: &Path, data: &Path, out: &str, extra: &[&str]) -> Output {
    bin()
        .args(TINY)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(dir.join(out))
        .args(["--sample-len", "0", "--quiet"])
        .args(extra)
        .output()
        .expect("run kinglet-train")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with one readable `kinglet-train: ...` line containing `needle`.
fn assert_fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, stderr: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("kinglet-train: ") && last.contains(needle),
        "stderr: {err}"
    );
}

#[test]
fn resume_reproduces_an_uninterrupted_run_byte_for_byte() {
    let dir = scratch("resume");
    let data = corpus(&dir);
    let straight = train(
        &dir,
        &data,
        "straight",
        &["--steps", "6", "--eval-every", "3"],
    );
    assert!(straight.status.success(), "{}", stderr(&straight));
    let half = train(&dir, &data, "split", &["--steps", "3", "--eval-every", "3"]);
    assert!(half.status.success(), "{}", stderr(&half));
    let ckpt = dir.join("split/last.ckpt");
    let rest = train(
        &dir,
        &data,
        "split",
        &[
            "--steps",
            "6",
            "--eval-every",
            "3",
            "--resume",
            ckpt.to_str().unwrap_or(""),
        ],
    );
    assert!(rest.status.success(), "{}", stderr(&rest));
    let a = std::fs::read(dir.join("straight/last.ckpt")).expect("checkpoint");
    let b = std::fs::read(&ckpt).expect("checkpoint");
    assert!(
        a == b,
        "resumed checkpoint differs from the uninterrupted one"
    );
    let metrics = std::fs::read_to_string(dir.join("split/metrics.jsonl")).expect("metrics");
    let lines: Vec<&str> = metrics.lines().collect();
    assert_eq!(lines.len(), 2, "{metrics}");
    for key in [
        "\"step\":6",
        "\"train_loss\"",
        "\"val_loss\"",
        "\"lr\"",
        "\"tokens_per_s\"",
        "\"elapsed_s\"",
    ] {
        assert!(lines[1].contains(key), "{key} missing in {}", lines[1]);
    }
}

#[test]
fn eval_and_export_work_on_a_checkpoint() {
    let dir = scratch("export");
    let data = corpus(&dir);
    let o = train(&dir, &data, "run", &["--steps", "2", "--eval-every", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = dir.join("run/last.ckpt");
    let eval = bin()
        .arg("eval")
        .arg(&ckpt)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("eval");
    assert!(eval.status.success(), "{}", stderr(&eval));
    let out = String::from_utf8_lossy(&eval.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("tokens: ") && lines[0].contains(" windows of 8, "),
        "{out}"
    );
    let loss: f64 = lines[1]
        .strip_prefix("loss: ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected eval output {out:?}"));
    // Two steps from N(0, 0.02) weights: the logits are still nearly flat,
    // so the loss is close to ln(vocabulary size) (3.049 against 3.091).
    let vocab = {
        let mut chars: Vec<char> = common::tiny_text().chars().collect();
        chars.sort_unstable();
        chars.dedup();
        chars.len() as f64
    };
    assert!(
        (loss - vocab.ln()).abs() < 0.1,
        "{loss} vs ln {vocab} = {}",
        vocab.ln()
    );
    assert!(lines[2].starts_with("perplexity: "), "{out}");

    // Without --data: the corpus the checkpoint records, while it is
    // unchanged; then an error that says what to pass.
    let eval_recorded = || bin().arg("eval").arg(&ckpt).output().expect("eval");
    let recorded = eval_recorded();
    assert!(recorded.status.success(), "{}", stderr(&recorded));
    assert_eq!(String::from_utf8_lossy(&recorded.stdout), out);
    std::fs::write(&data, format!("{}x", common::tiny_text())).expect("change the corpus");
    assert_fails_with(
        &eval_recorded(),
        "has changed since the checkpoint was trained on it",
    );
    assert_fails_with(&eval_recorded(), "pass --data FILE");
    std::fs::remove_file(&data).expect("remove the corpus");
    assert_fails_with(&eval_recorded(), "cannot be read");
    let klt = dir.join("model.klt");
    let export = bin()
        .arg("export")
        .arg(&ckpt)
        .arg("-o")
        .arg(&klt)
        .args(["--dtype", "bf16"])
        .output()
        .expect("export");
    assert!(export.status.success(), "{}", stderr(&export));
    // The line `kinglet convert` prints.
    let said = String::from_utf8_lossy(&export.stdout).into_owned();
    let parameters = kinglet_trainer::params::ParamLayout::new(
        &kinglet_trainer::checkpoint::Checkpoint::load(&ckpt)
            .expect("checkpoint")
            .model,
    )
    .total;
    let bytes = std::fs::read(&klt).expect("model file");
    assert_eq!(
        said,
        format!(
            "wrote {}: 21 tensors, {} parameters, {} bytes, bf16 (norms f32)\n",
            klt.display(),
            kinglet_tools::cmd::grouped(parameters as u64),
            kinglet_tools::cmd::grouped(bytes.len() as u64)
        )
    );
    kinglet::ModelFile::new_checked(&bytes[..])
        .expect("opens")
        .verify()
        .expect("verifies");
    let bad = bin()
        .arg("export")
        .arg(&ckpt)
        .arg("-o")
        .arg(&klt)
        .args(["--dtype", "q3"])
        .output()
        .expect("export");
    assert_fails_with(&bad, "--dtype");
}

#[test]
fn bad_corpora_are_clear_errors() {
    let dir = scratch("corpora");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let empty = write("empty.txt", b"");
    assert_fails_with(&train(&dir, &empty, "o", &["--steps", "1"]), "empty");
    let short = write("short.txt", b"to be or not to be");
    assert_fails_with(&train(&dir, &short, "o", &["--steps", "1"]), "too short");
    let binary = write("binary.bin", &[b'a', b'b', 0xC3, 0x28, b'c']);
    assert_fails_with(&train(&dir, &binary, "o", &["--steps", "1"]), "not UTF-8");
    let missing = dir.join("missing.txt");
    assert_fails_with(
        &train(&dir, &missing, "o", &["--steps", "1"]),
        "cannot read corpus",
    );
    let none = bin().args(["--steps", "1"]).output().expect("run");
    assert_fails_with(&none, "--data");
}

#[test]
fn bad_shapes_and_settings_are_clear_errors() {
    let dir = scratch("shapes");
    let data = corpus(&dir);
    assert_fails_with(
        &train(&dir, &data, "o", &["--heads", "3"]),
        "not divisible by --heads",
    );
    assert_fails_with(&train(&dir, &data, "o", &["--batch", "0"]), "--batch");
    assert_fails_with(&train(&dir, &data, "o", &["--context", "0"]), "--context");
    assert_fails_with(
        &train(&dir, &data, "o", &["--preset", "huge"]),
        "unknown --preset",
    );
}

#[test]
fn damaged_or_foreign_checkpoints_are_refused() {
    let dir = scratch("foreign");
    let data = corpus(&dir);
    let o = train(&dir, &data, "run", &["--steps", "1", "--eval-every", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = dir.join("run/last.ckpt");
    let resume = ["--steps", "2", "--resume", ckpt.to_str().unwrap_or("")];
    let other = train(
        &dir,
        &data,
        "run2",
        &[&["--dim", "32"][..], &resume].concat(),
    );
    assert_fails_with(&other, "another config");
    let bytes = std::fs::read(&ckpt).expect("checkpoint");
    let cut = dir.join("cut.ckpt");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).expect("write");
    let truncated = bin()
        .arg("eval")
        .arg(&cut)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("eval");
    assert_fails_with(&truncated, "truncated");
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("nan");
    let data = corpus(&dir);
    let o = train(
        &dir,
        &data,
        "run",
        &[
            "--steps",
            "50",
            "--lr",
            "1e30",
            "--save-every",
            "1",
            "--eval-every",
            "0",
        ],
    );
    assert_fails_with(&o, "at step");
    let err = stderr(&o);
    assert!(err.contains("last good checkpoint"), "{err}");
    let kept = kinglet_trainer::checkpoint::Checkpoint::load(&dir.join("run/last.ckpt"))
        .expect("kept checkpoint loads");
    assert!(kept.step >= 1 && kept.step < 50);
    assert!(kept.params.iter().all(|p| p.is_finite()));
}

#[test]
fn check_reference_passes_on_the_shared_dump() {
    let data = std::env::var_os("KINGLET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"))
        });
    let dump = data.join("torch-ref/tiny_f64.json");
    if !dump.exists() {
        assert!(
            std::env::var("KINGLET_REQUIRE_DATA").as_deref() != Ok("1"),
            "{} missing",
            dump.display()
        );
        eprintln!("skipped: {} not found", dump.display());
        return;
    }
    let o = bin()
        .arg("check-reference")
        .arg(&dump)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("grad.layers.1.w2") && out.contains("step_losses") && out.contains("worst:"),
        "{out}"
    );
}

/// `KINGLET_GEMM` picks the matrix product path (`portable` is
/// `matrixmultiply`, `avx2` and `avx512` this crate's kernels, or the
/// fastest this CPU has where it lacks theirs): the same model up to rounding.
#[test]
fn every_matrix_product_path_trains_the_same_model() {
    let dir = scratch("gemm");
    let data = corpus(&dir);
    let last_loss = |out: &str| -> f64 {
        let metrics =
            std::fs::read_to_string(dir.join(out).join("metrics.jsonl")).expect("metrics");
        let last = metrics.lines().last().expect("a metrics line");
        let value: serde_json::Value = serde_json::from_str(last).expect("json");
        value["train_loss"].as_f64().expect("train_loss")
    };
    let steps = ["--steps", "6", "--log-every", "6", "--eval-every", "0"];
    let own = train(&dir, &data, "own", &steps);
    assert!(own.status.success(), "{}", stderr(&own));
    let a = last_loss("own");
    for path in ["portable", "avx2", "avx512"] {
        let run = bin()
            .env("KINGLET_GEMM", path)
            .args(TINY)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(dir.join(path))
            .args(["--sample-len", "0", "--quiet"])
            .args(steps)
            .output()
            .expect("run kinglet-train");
        assert!(run.status.success(), "{}", stderr(&run));
        let b = last_loss(path);
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "{path}: losses {a} and {b}"
        );
    }
}

#[test]
fn an_out_directory_holding_a_run_is_refused_without_resume_or_force() {
    let dir = scratch("out-taken");
    let data = corpus(&dir);
    let steps = ["--steps", "2", "--eval-every", "0"];
    let first = train(&dir, &data, "run", &steps);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = std::fs::read(dir.join("run/last.ckpt")).expect("checkpoint");
    let metrics = std::fs::read(dir.join("run/metrics.jsonl")).expect("metrics");

    let again = train(&dir, &data, "run", &["--steps", "3", "--eval-every", "0"]);
    assert_fails_with(&again, "already holds a run");
    assert_fails_with(&again, "--force");
    assert_eq!(std::fs::read(dir.join("run/last.ckpt")).unwrap(), before);
    assert_eq!(
        std::fs::read(dir.join("run/metrics.jsonl")).unwrap(),
        metrics
    );

    // --resume continues it (on the corpus the checkpoint records when
    // --data is left out), --force replaces it.
    let resumed = bin()
        .args(TINY)
        .args([
            "--sample-len",
            "0",
            "--quiet",
            "--steps",
            "3",
            "--eval-every",
            "0",
        ])
        .arg("--out")
        .arg(dir.join("run"))
        .arg("--resume")
        .arg(dir.join("run/last.ckpt"))
        .output()
        .expect("resume");
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let forced = train(
        &dir,
        &data,
        "run",
        &["--steps", "1", "--eval-every", "0", "--force"],
    );
    assert!(forced.status.success(), "{}", stderr(&forced));
    let c = kinglet_trainer::checkpoint::Checkpoint::load(&dir.join("run/last.ckpt")).unwrap();
    assert_eq!(c.step, 1);
}

#[test]
fn on_a_terminal_the_finished_progress_bar_ends_its_line() {
    // `script` (util-linux) runs the trainer on a pseudo-terminal, where
    // the progress bar is drawn.
    let dir = scratch("terminal");
    let data = corpus(&dir);
    let command: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_kinglet-train").to_string())
        .chain(TINY.iter().map(|s| s.to_string()))
        .chain(["--sample-len", "0", "--steps", "3", "--eval-every", "0"].map(String::from))
        .chain(["--data".into(), data.display().to_string()])
        .chain(["--out".into(), dir.join("run").display().to_string()])
        .collect();
    let o = Command::new("script")
        .args(["-qec", &command.join(" "), "/dev/null"])
        .output()
        .expect("this test needs `script` (util-linux) to run a terminal");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("step 3/3"),
        "no progress bar was drawn: {text:?}"
    );
    let (before, _) = text.split_once("done: ").expect("the summary line");
    assert!(
        before.ends_with('\n'),
        "`done:` shares the bar's line: {text:?}"
    );
}
