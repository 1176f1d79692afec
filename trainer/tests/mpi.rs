//! `mpirun -np N kinglet-train` (the `mpi` feature) on this machine, over
//! TCP on the loopback interface: N ranks write the checkpoint one process
//! writes, byte for byte, also across a resume with another rank count;
//! disallowed rank counts and different corpora are refused in one line; a
//! rank killed mid-run ends the whole job with a failure instead of a hang.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kinglet-train");

/// Generous bounds that only catch a hang; nothing here measures speed.
const HANG: Duration = Duration::from_secs(300);

/// A model of about 40k parameters whose micro-batch (16 windows of 64
/// tokens) is cut into 4 shards, with accumulation, warmup, cosine decay
/// and clipping (the small preset), evaluations and samples.
const FLAGS: &str = "--preset small --context 64 --dim 32 --layers 2 --heads 2 --hidden 64 \
                     --batch 16 --accum 2 --warmup 2 --eval-every 2 --eval-windows 8 \
                     --sample-len 20 --save-every 2 --quiet --threads 1";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mpi-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    std::fs::write(&path, common::tiny_text()).expect("write corpus");
    path
}

/// kinglet-train's arguments: [`FLAGS`], the corpus, `--out`, `extra`.
fn args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = FLAGS.split_whitespace().map(String::from).collect();
    args.extend(["--data".into(), data.display().to_string()]);
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `mpirun` on this machine only, over TCP on the loopback interface,
/// allowed to run as root (CI containers) and more ranks than cores.
fn mpirun() -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "--mca", "btl", "self,tcp"])
        .args(["--mca", "btl_tcp_if_include", "lo"])
        .args(["--mca", "oob_tcp_if_include", "lo"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("KINGLET_TRAIN_PAUSE");
    c
}

/// Runs to the end, with a bound that catches a hang.
fn finish(command: &mut Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start (is Open MPI's mpirun installed?)");
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    wait.recv_timeout(HANG)
        .expect("the run hung")
        .expect("wait for the run")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeds(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// The log lines that hold numbers computed from the model.
fn log(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("step ") || l.starts_with("sample: "))
        .collect()
}

fn checkpoint(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("last.ckpt")).expect("read last.ckpt")
}

#[test]
fn ranks_write_the_checkpoint_one_process_writes() {
    let dir = scratch("identical");
    let data = corpus(&dir);
    let alone = dir.join("alone");
    let stdout = succeeds(finish(Command::new(BIN).args(args(
        &data,
        &alone,
        &["--steps", "4"],
    ))));
    let alone_log = log(&stdout);
    assert_eq!(alone_log.len(), 4, "two evaluations: {stdout}");

    for ranks in ["2", "4"] {
        let out = dir.join(format!("np{ranks}"));
        let stdout = succeeds(finish(mpirun().args(["-np", ranks, BIN]).args(args(
            &data,
            &out,
            &["--steps", "4"],
        ))));
        let cooperating = format!("ranks: {ranks} MPI processes, each running");
        assert_eq!(
            stdout.matches(&cooperating).count(),
            1,
            "one log, from rank 0, that says the ranks work together: {stdout}"
        );
        assert_eq!(log(&stdout), alone_log, "{ranks} ranks");
        assert!(
            checkpoint(&out) == checkpoint(&alone),
            "{ranks} ranks wrote another checkpoint than one process"
        );
    }

    // Two steps on 2 ranks, resumed on 4 to the same end.
    let out = dir.join("resumed");
    succeeds(finish(mpirun().args(["-np", "2", BIN]).args(args(
        &data,
        &out,
        &["--steps", "2"],
    ))));
    let ckpt = out.join("last.ckpt").display().to_string();
    succeeds(finish(mpirun().args(["-np", "4", BIN]).args(args(
        &data,
        &out,
        &["--steps", "4", "--resume", &ckpt],
    ))));
    assert!(
        checkpoint(&out) == checkpoint(&alone),
        "a resumed MPI run wrote another checkpoint than one process"
    );
}

/// Fails, with a `kinglet-train: error:` line holding `needle` on stderr.
fn assert_fails_with(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "expected a failure: {err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("kinglet-train: error: ") && l.contains(needle)),
        "no error line with {needle:?}: {err}"
    );
}

#[test]
fn rank_counts_that_do_not_divide_the_shards_are_refused() {
    let dir = scratch("three");
    let data = corpus(&dir);
    let o = finish(mpirun().args(["-np", "3", BIN]).args(args(
        &data,
        &dir.join("out"),
        &["--steps", "2"],
    )));
    assert_fails_with(
        &o,
        "3 ranks cannot share the 4 shards of a micro-batch (--batch 16, --context 64",
    );
    assert_fails_with(&o, "run with -np 1 or -np 2 or -np 4");
    assert!(!dir.join("out").exists(), "nothing is written");
}

#[test]
fn ranks_must_read_the_same_corpus() {
    let dir = scratch("corpora");
    let data = corpus(&dir);
    let other = dir.join("other.txt");
    std::fs::write(&other, common::tiny_text().replace("king", "kind")).expect("write");
    let out = dir.join("out");
    let o = finish(
        mpirun()
            .args(["-np", "1", BIN])
            .args(args(&data, &out, &["--steps", "2"]))
            .args([":", "-np", "1", BIN])
            .args(args(&other, &out, &["--steps", "2"])),
    );
    assert_fails_with(&o, "rank 1: the corpus");
    assert_fails_with(&o, "is not rank 0's (sha256");
}

/// Starts `command`, its stderr lines sent to the returned channel.
fn spawn_with_stderr(command: &mut Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun");
    let stderr = child.stderr.take().expect("piped stderr");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

#[test]
fn a_rank_killed_mid_run_ends_every_rank_with_an_error() {
    let dir = scratch("killed");
    let data = corpus(&dir);
    let out = dir.join("out");
    // Rank 1 says its process id, then stops for good after its third
    // step (kinglet-train's pause hook); rank 0 goes on and waits for it.
    let rank1 = "echo \"rank 1 is process $$\" >&2; \
                 KINGLET_TRAIN_PAUSE=after-step:3 exec \"$0\" \"$@\"";
    let (mut child, lines) = spawn_with_stderr(
        mpirun()
            .args(["-np", "1", BIN])
            .args(args(&data, &out, &["--steps", "1000000"]))
            .args([":", "-np", "1", "sh", "-c", rank1, BIN])
            .args(args(&data, &out, &["--steps", "1000000"])),
    );
    let deadline = Instant::now() + HANG;
    let (mut pid, mut paused, mut said) = (None, false, Vec::new());
    while pid.is_none() || !paused {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = child.kill();
            panic!("rank 1 did not pause: {}", said.join(" / "));
        };
        if let Some(p) = line.strip_prefix("rank 1 is process ") {
            pid = Some(p.trim().to_string());
        }
        paused |= line.starts_with("kinglet-train: paused at after-step");
        said.push(line);
    }
    let pid = pid.expect("rank 1's process id");
    let killed = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -KILL {pid}");
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll mpirun") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mpirun still runs after one rank was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "mpirun reported success");
}
