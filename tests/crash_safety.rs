//! Crash safety of the trainer: `kinglet-train` is killed with SIGKILL 24
//! times and resumed each time. Every kill is aimed, not timed:
//! `KINGLET_TRAIN_PAUSE=POINT:N` makes the trainer stop for good the Nth
//! time it reaches POINT and say so on stderr, and the test kills it then —
//! between steps, with a checkpoint's temporary file just created (empty),
//! fully written but not renamed, and just renamed. After every kill the
//! checkpoint on disk must be exactly the one that point implies, and a
//! torn temporary file must not pass for one. At the end the interrupted
//! run's checkpoint must equal an uninterrupted run's, byte for byte. No
//! timer decides anything, so the outcome does not depend on the load.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::binaries::binary;
use common::Rng;
use kinglet_trainer::checkpoint::{temp_path, Checkpoint};
use kinglet_trainer::pause::{self, Point};

/// Steps of the whole run: more than the 24 kills can reach (each process
/// is stopped within its first 4 steps).
const STEPS: u64 = 120;
/// Kills before the final resume.
const KILLS: usize = 24;

/// A model of about 22k parameters, checkpointed after every step.
const FLAGS: &str = "--context 16 --dim 32 --layers 2 --heads 2 --hidden 64 --batch 4 \
                     --eval-every 0 --eval-windows 4 --sample-len 0 --quiet --threads 1 \
                     --save-every 1 --log-every 1000 --seed 7";

fn scratch() -> PathBuf {
    // Of this process: two copies of the test can run at once.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-safety-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Starts a training run into `out`, resuming from its checkpoint if any,
/// stopping at `pause` (`POINT:N`) if given.
fn start(corpus: &Path, out: &Path, pause: Option<String>) -> Child {
    let checkpoint = out.join("last.ckpt");
    let mut command = Command::new(binary("kinglet-train"));
    command
        .args(FLAGS.split_whitespace())
        .arg("--steps")
        .arg(STEPS.to_string())
        .arg("--data")
        .arg(corpus)
        .arg("--out")
        .arg(out)
        .env_remove(pause::VAR)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if checkpoint.exists() {
        command.arg("--resume").arg(&checkpoint);
    } else if out.exists() {
        // Killed before its first save: start that run over.
        command.arg("--force");
    }
    if let Some(p) = pause {
        command.env(pause::VAR, p);
    }
    command.spawn().expect("start kinglet-train")
}

/// Waits for `child` to end; panics unless it succeeded.
fn finish(child: Child) {
    let o = child.wait_with_output().expect("wait for kinglet-train");
    assert!(
        o.status.success(),
        "kinglet-train failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Reads `child`'s stderr until it announces the pause at `point`, then
/// kills it. Panics if it ends without pausing.
fn kill_when_paused(mut child: Child, point: Point) {
    let announcement = pause::announcement(point);
    let stderr = child.stderr.take().expect("piped stderr");
    let mut said = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("read stderr");
        if line == announcement {
            child.kill().expect("SIGKILL");
            let status = child.wait().expect("reap");
            assert!(!status.success(), "killed run reported success");
            return;
        }
        said.push(line);
    }
    let status = child.wait().expect("reap");
    panic!(
        "kinglet-train ended ({status}) without pausing at {}: {}",
        point.name(),
        said.join(" / ")
    );
}

/// The step of the checkpoint at `path`, 0 if there is none yet.
fn step_on_disk(path: &Path) -> u64 {
    if !path.exists() {
        return 0;
    }
    Checkpoint::load(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .step
}

#[test]
fn sigkill_at_every_point_of_a_save_never_loses_the_last_checkpoint() {
    let dir = scratch();
    let corpus = dir.join("corpus.txt");
    fs::write(&corpus, common::corpus_text()).expect("corpus");

    // The uninterrupted run.
    let reference = dir.join("reference");
    finish(start(&corpus, &reference, None));
    let want = fs::read(reference.join("last.ckpt")).expect("reference checkpoint");

    let out = dir.join("interrupted");
    let checkpoint = out.join("last.ckpt");
    let temp = temp_path(&checkpoint);
    let mut rng = Rng::new(0x5eed_c0ffee);
    for kill in 0..KILLS {
        let point = Point::ALL[kill % Point::ALL.len()];
        let hit = 1 + rng.next_u64() % 4;
        let before = step_on_disk(&checkpoint);
        let child = start(&corpus, &out, Some(format!("{}:{hit}", point.name())));
        kill_when_paused(child, point);

        // Saves run after every step: at the Nth hit of a point, N - 1
        // saves are complete, and the Nth is where the point says.
        let context = format!("kill {kill} at {}:{hit} from step {before}", point.name());
        let saved = step_on_disk(&checkpoint);
        match point {
            Point::AfterStep => {
                assert_eq!(saved, before + hit - 1, "{context}");
                assert!(!temp.exists(), "{context}: a temporary file between saves");
            }
            Point::TempCreated => {
                assert_eq!(saved, before + hit - 1, "{context}");
                let torn = fs::read(&temp).expect("the temporary file exists");
                assert!(
                    Checkpoint::from_bytes(&torn).is_err(),
                    "{context}: an empty temporary file passed for a checkpoint"
                );
            }
            Point::TempWritten => {
                assert_eq!(saved, before + hit - 1, "{context}");
                let written = Checkpoint::load(&temp).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(written.step, before + hit, "{context}");
            }
            Point::Renamed => {
                assert_eq!(saved, before + hit, "{context}");
                assert!(
                    !temp.exists(),
                    "{context}: the temporary file outlived its rename"
                );
            }
        }
        assert!(saved < STEPS, "{context}: the run finished; raise STEPS");
    }
    // A torn temporary file (as a kill in the middle of `write` leaves) must
    // not disturb the final resume, which removes it.
    let bytes = fs::read(&checkpoint).expect("checkpoint");
    fs::write(&temp, &bytes[..bytes.len() / 2]).expect("torn temporary file");
    finish(start(&corpus, &out, None));
    assert!(!temp.exists(), "temporary file left after a finished run");
    let got = fs::read(&checkpoint).expect("final checkpoint");
    assert!(
        got == want,
        "the interrupted run differs from the uninterrupted one"
    );

    // The checkpoint also evaluates through the command line.
    let o = Command::new(binary("kinglet-train"))
        .arg("eval")
        .arg(&checkpoint)
        .arg("--data")
        .arg(&corpus)
        .output()
        .expect("run kinglet-train eval");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::remove_dir_all(&dir).expect("remove the scratch directory");
}
