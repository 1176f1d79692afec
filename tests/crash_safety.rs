//! Crash safety of the trainer: `kinglet-train` is killed with SIGKILL at
//! random moments, many times — half of them aimed at checkpoint writes (the
//! kill lands while `last.ckpt.tmp` exists) — and resumed each time. After
//! every kill the newest checkpoint must load and never go backwards, and a
//! torn temporary file must not be taken for it. At the end the interrupted
//! run's checkpoint must equal an uninterrupted run's, byte for byte.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::binaries::binary;
use common::Rng;
use kinglet_trainer::checkpoint::{temp_path, Checkpoint};

/// Steps of the whole run.
const STEPS: u64 = 120;
/// Kills before the run may finish.
const KILLS: usize = 24;

/// A model of about 22k parameters (a 265 KB checkpoint, so each write
/// takes measurable time), checkpointed after every step.
const FLAGS: &str = "--context 16 --dim 32 --layers 2 --heads 2 --hidden 64 --batch 4 \
                     --eval-every 0 --eval-windows 4 --sample-len 0 --quiet --threads 1 \
                     --save-every 1 --log-every 1000 --seed 7";

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crash-safety");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Starts a training run into `out`, resuming from its checkpoint if any.
fn start(corpus: &Path, out: &Path) -> Child {
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
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if checkpoint.exists() {
        command.arg("--resume").arg(&checkpoint);
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

/// Sleeps until `path` exists or `child` has exited (then returns false).
fn wait_for(path: &Path, child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if path.exists() {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

#[test]
fn sigkill_at_random_moments_never_loses_the_last_checkpoint() {
    let started = Instant::now();
    let dir = scratch();
    let corpus = dir.join("corpus.txt");
    fs::write(&corpus, common::corpus_text()).expect("corpus");

    // The uninterrupted run.
    let reference = dir.join("reference");
    finish(start(&corpus, &reference));
    let want = fs::read(reference.join("last.ckpt")).expect("reference checkpoint");

    let out = dir.join("interrupted");
    let checkpoint = out.join("last.ckpt");
    let temp = temp_path(&checkpoint);
    let mut rng = Rng(0x5eed_c0ffee);
    let (mut kills, mut during_writes, mut torn_temps, mut last_step) = (0, 0, 0, 0u64);
    while kills < KILLS {
        let mut child = start(&corpus, &out);
        // Even kills: at a random moment up to ~4 steps in. Odd kills: just
        // after a checkpoint write has begun (its temporary file exists).
        if kills % 2 == 0 {
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 60_000));
        } else if wait_for(&temp, &mut child, Duration::from_secs(5)) {
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 3_000));
        }
        if child.try_wait().expect("poll").is_some() {
            // Ended by itself: it must have succeeded, i.e. finished the run early.
            finish(child);
            panic!("the run finished after only {kills} kills; raise STEPS");
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap");
        assert!(!status.success(), "killed run reported success");
        kills += 1;

        if temp.exists() {
            during_writes += 1;
            // A torn temporary file must not pass for a checkpoint.
            let bytes = fs::read(&temp).expect("read the temporary file");
            if Checkpoint::from_bytes(&bytes).is_err() {
                torn_temps += 1;
            }
        }
        if checkpoint.exists() {
            let c =
                Checkpoint::load(&checkpoint).unwrap_or_else(|e| panic!("after kill {kills}: {e}"));
            assert!(
                c.step >= last_step && c.step < STEPS,
                "after kill {kills}: step {} after step {last_step}",
                c.step
            );
            last_step = c.step;
        }
    }
    // A torn temporary file (as a kill in the middle of `write` leaves) must
    // not disturb the final resume, which removes it.
    let bytes = fs::read(&checkpoint).expect("checkpoint");
    fs::write(&temp, &bytes[..bytes.len() / 2]).expect("torn temporary file");
    finish(start(&corpus, &out));
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
    eprintln!(
        "{kills} kills, {during_writes} during a checkpoint write ({torn_temps} torn temporary \
         files), last step before the final resume {last_step}/{STEPS}, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        during_writes * 4 >= KILLS,
        "only {during_writes} of {kills} kills hit a checkpoint write"
    );
}
