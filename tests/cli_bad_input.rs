//! The bad-input catalog: every subcommand of `kinglet` and `kinglet-train`
//! against missing, unreadable and wrong-format files, absurd flags, output
//! paths that cannot be written and a full disk. Every case must end with
//!
//! - an exit code that is non-zero and not 101 (a panic), and no signal;
//! - exactly one line on stderr, `<program>: error: …`, naming the problem
//!   (the case's needle);
//! - no file left behind: the scratch directory lists the same files before
//!   and after (no output, no temporary file), except what a case allows.
//!
//! Simulations, since these tests run as root on this machine:
//! - *unreadable*: the files `locked.*` are `chmod 000`; when running as root
//!   (which ignores permissions), `@nobody` cases run the program as uid/gid
//!   65534 so the mode applies. `text.txt/x` (ENOTDIR) and `/proc/self/mem`
//!   (EIO on read) are unreadable for everyone.
//! - *full disk*: `@full` cases run under `sh -c 'trap "" XFSZ; ulimit -f 2'`:
//!   a 1 KiB file-size limit (RLIMIT_FSIZE) with SIGXFSZ ignored, so writes
//!   past it fail with EFBIG ("File too large") instead of killing the
//!   program — what a full disk looks like to a writer.
//! - *offline*: `@offline` cases point the TinyShakespeare download at a
//!   closed port on 127.0.0.1, with the scratch directory as the cache.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::binaries::{binary, run_in};

/// Flags for a tiny, fast training run.
const TINY: &str = "--context 8 --dim 16 --layers 1 --heads 2 --hidden 24 --batch 4 \
                    --eval-windows 4 --sample-len 0 --quiet --threads 1 --steps 1";

/// Each case: a command line (split on spaces; `+tiny` expands to [`TINY`];
/// a leading `@nobody` or `@full` picks a simulation, see the top) and a
/// text the error line must contain. Paths are relative to the scratch
/// directory, which holds the fixtures of [`fixtures`]; outputs go to `out/`.
#[rustfmt::skip]
const CASES: &[(&str, &str)] = &[
    // kinglet verify / inspect / checksum / generate: the model argument.
    ("kinglet verify missing.klt", "missing.klt: no such file"),
    ("kinglet verify dir", "dir: is a directory"),
    ("kinglet verify empty", "empty: file is empty"),
    ("kinglet verify text.txt", "text.txt: not a .klt model file"),
    ("kinglet verify trunc.klt", "trunc.klt"),
    ("kinglet verify run.ckpt", "run.ckpt: not a .klt model file"),
    ("@nobody kinglet verify locked.klt", "locked.klt: permission denied"),
    ("kinglet verify text.txt/x", "text.txt/x: Not a directory"),
    ("kinglet verify /proc/self/mem", "/proc/self/mem"),
    ("kinglet verify", "<FILE>"),
    ("kinglet verify model.klt --fast", "--fast"),
    ("kinglet inspect missing.klt", "missing.klt: no such file"),
    ("kinglet inspect dir", "dir: is a directory"),
    ("kinglet inspect empty", "empty: file is empty"),
    ("kinglet inspect text.txt", "text.txt: not a .klt model file"),
    ("kinglet inspect trunc.klt", "trunc.klt"),
    ("kinglet inspect run.ckpt", "run.ckpt: not a .klt model file"),
    ("@nobody kinglet inspect locked.klt", "locked.klt: permission denied"),
    ("kinglet inspect model.klt --max-seq 0", "--max-seq 0"),
    ("kinglet inspect model.klt --max-seq 100000", "--max-seq 100000"),
    ("kinglet inspect model.klt --max-seq -1", "-1"),
    ("kinglet checksum missing.klt", "missing.klt: no such file"),
    ("kinglet checksum dir", "dir: is a directory"),
    ("kinglet checksum empty", "empty: file is empty"),
    ("kinglet checksum text.txt", "text.txt: not a .klt model file"),
    ("kinglet checksum trunc.klt", "trunc.klt"),
    ("kinglet checksum run.ckpt", "run.ckpt: not a .klt model file"),
    ("@nobody kinglet checksum locked.klt", "locked.klt: permission denied"),
    ("kinglet checksum --check missing.sha256", "missing.sha256"),
    ("kinglet checksum --check dir", "dir"),
    ("kinglet checksum --check empty", "empty"),
    ("kinglet checksum --check model.klt", "model.klt"),
    ("kinglet checksum model.klt --check text.txt", "--check"),
    ("kinglet generate missing.klt -n 4", "missing.klt: no such file"),
    ("kinglet generate dir -n 4", "dir: is a directory"),
    ("kinglet generate empty -n 4", "empty: file is empty"),
    ("kinglet generate text.txt -n 4", "text.txt: not a .klt model file"),
    ("kinglet generate trunc.klt -n 4", "trunc.klt"),
    ("kinglet generate run.ckpt -n 4", "run.ckpt: not a .klt model file"),
    ("@nobody kinglet generate locked.klt -n 4", "permission denied"),
    ("kinglet generate model.klt -n 0", "-n"),
    ("kinglet generate model.klt -n 99999999999", "99999999999"),
    ("kinglet generate model.klt -n 4 --temperature -1", "-1"),
    ("kinglet generate model.klt -n 4 --temperature=-1", "temperature"),
    ("kinglet generate model.klt -n 4 --temperature NaN", "temperature"),
    ("kinglet generate model.klt -n 4 --temperature inf", "temperature"),
    ("kinglet generate model.klt -n 4 --top-p 2", "top_p"),
    ("kinglet generate model.klt -n 4 --top-p=-0.5", "top_p"),
    ("kinglet generate model.klt -n 4 --top-p NaN", "top_p"),
    ("kinglet generate model.klt -n 4 --threads 0", "threads"),
    ("kinglet generate model.klt -n 4 --max-seq 0", "--max-seq"),
    ("kinglet generate model.klt -n 4 --max-seq 100000", "--max-seq"),
    ("kinglet generate model.klt -n 4 --seed x", "'x'"),
    ("kinglet generate model.klt -n 4 --prompt-file missing.txt", "missing.txt"),
    ("kinglet generate model.klt -n 4 --prompt-file dir", "dir: is a directory"),
    ("kinglet generate model.klt -n 4 --prompt-file binary.txt", "not UTF-8"),
    ("kinglet generate model.klt -n 4 --prompt x --prompt-file text.txt", "--prompt-file"),
    ("kinglet generate model.klt -n 4 --prompt ~", "prompt"),
    ("kinglet generate model.klt -n 4 --max-seq 2 --prompt abcdefghijklmnopq", "17 bytes, more than the 2 positions"),
    ("kinglet generate model.klt -n 4 --threads 100000", "--threads 100000"),
    ("kinglet generate model.klt -n 4 --max-memory 12X", "not a size"),
    ("kinglet generate model.klt -n 4 --max-memory 0", "not a usable memory size"),
    // Sizes that follow from a valid model (max_seq_len 1,048,576, 1,024
    // layers) and from flags: refused before they are allocated.
    ("kinglet generate hostile.klt -n 4 --max-seq 1048576 --max-memory 1G", "64.1 GiB, more than --max-memory 1.0 GiB; a smaller --max-seq"),
    ("kinglet generate hostile.klt -n 4 --max-memory 1K", "for the prompt needs"),
    // kinglet eval: model and text.
    ("kinglet eval missing.klt --text corpus.txt", "missing.klt: no such file"),
    ("kinglet eval run.ckpt --text corpus.txt", "not a .klt model file"),
    ("kinglet eval trunc.klt --text corpus.txt", "trunc.klt"),
    ("kinglet eval model.klt --text missing.txt", "missing.txt: no such file"),
    ("kinglet eval model.klt --text dir", "dir: is a directory"),
    ("kinglet eval model.klt --text empty", "empty"),
    ("kinglet eval model.klt --text binary.txt", "binary.txt"),
    ("kinglet eval model.klt --text text.txt", "text.txt"),
    ("@nobody kinglet eval model.klt --text locked.txt", "permission denied"),
    ("kinglet eval model.klt --text corpus.txt --tail 0", "--tail"),
    ("kinglet eval model.klt --text corpus.txt --tail 2", "--tail"),
    ("kinglet eval model.klt --text corpus.txt --tail NaN", "--tail"),
    ("kinglet eval model.klt --text corpus.txt --context 0", "--context"),
    ("kinglet eval model.klt --text corpus.txt --context 100000", "--context"),
    ("kinglet eval model.klt --text corpus.txt --context x", "'x'"),
    ("kinglet eval model.klt", "--text"),
    ("kinglet eval hostile.klt --text corpus.txt", "--context"),
    ("kinglet eval hostile.klt --text long.txt --context 100000 --max-memory 1G", "a smaller --context lowers it"),
    ("kinglet eval model.klt --text corpus.txt --max-memory 1K", "encoding the text needs"),
    // kinglet convert: input, tokenizer, output, disk.
    ("kinglet convert missing.klt -o out/m.klt", "missing.klt: no such file"),
    ("kinglet convert dir -o out/m.klt", "dir: is a directory"),
    ("kinglet convert empty -o out/m.klt", "empty: file is empty"),
    ("kinglet convert text.txt -o out/m.klt", "text.txt"),
    ("kinglet convert trunc.klt -o out/m.klt", "trunc.klt"),
    ("kinglet convert run.ckpt -o out/m.klt", "run.ckpt"),
    ("@nobody kinglet convert locked.klt -o out/m.klt", "permission denied"),
    ("kinglet convert text.txt/x -o out/m.klt", "Not a directory"),
    ("kinglet convert model.klt -o nodir/m.klt", "nodir"),
    ("kinglet convert model.klt -o dir", "dir: is a directory"),
    ("kinglet convert model.klt -o text.txt/m.klt", "text.txt/"),
    ("kinglet convert model.klt -o out/m.klt --dtype f8", "'f8'"),
    ("kinglet convert model.klt -o out/m.klt --tokenizer text.txt", "--tokenizer"),
    ("kinglet convert model.klt -o out/m.klt --tokenizer missing.bin", "missing.bin"),
    ("kinglet convert model.klt", "--output"),
    ("@full kinglet convert model.klt --dtype f16 -o out/m.klt", "File too large"),
    // kinglet quantize: convert with a block dtype.
    ("kinglet quantize missing.klt -o out/m.klt", "missing.klt: no such file"),
    ("kinglet quantize text.txt -o out/m.klt", "text.txt"),
    ("kinglet quantize model.klt -o out/m.klt --dtype f16", "'f16'"),
    ("kinglet quantize model.klt", "--output"),
    ("@full kinglet quantize model.klt -o out/m.klt", "File too large"),
    // kinglet synth: shapes, output, disk.
    ("kinglet synth --shape 7b -o out/m.klt", "7b"),
    ("kinglet synth --n-heads 7 -o out/m.klt", "n_heads"),
    ("kinglet synth --dim 0 -o out/m.klt", "dim"),
    ("kinglet synth --n-layers 0 -o out/m.klt", "n_layers"),
    ("kinglet synth --vocab-size 0 -o out/m.klt", "vocab_size"),
    ("kinglet synth --max-seq-len 0 -o out/m.klt", "max_seq_len"),
    ("kinglet synth --dtype nonsense -o out/m.klt", "'nonsense'"),
    ("kinglet synth -o nodir/m.klt", "nodir"),
    ("kinglet synth -o dir", "dir: is a directory"),
    ("kinglet synth", "--output"),
    ("@full kinglet synth -o out/m.klt", "File too large"),
    ("kinglet synth --dim 65536 --n-layers 1 --max-memory 8G -o out/m.klt", "--dim"),
    ("kinglet synth --dim 65536 --hidden-dim 262144 --n-layers 1024 -o out/m.klt", "480.0 TiB, more than the"),
    ("kinglet frobnicate", "frobnicate"),
    // kinglet-train (training): corpus.
    ("kinglet-train +tiny --data missing.txt --out out/r", "missing.txt"),
    ("kinglet-train +tiny --data dir --out out/r", "dir"),
    ("kinglet-train +tiny --data empty --out out/r", "empty"),
    ("kinglet-train +tiny --data binary.txt --out out/r", "not UTF-8"),
    ("kinglet-train +tiny --data model.klt --out out/r", "not UTF-8"),
    ("@nobody kinglet-train +tiny --data locked.txt --out out/r", "ermission denied"),
    ("kinglet-train +tiny --data text.txt/x --out out/r", "Not a directory"),
    ("kinglet-train +tiny --data text.txt --out out/r", "too short"),
    // kinglet-train: absurd and contradictory flags.
    ("kinglet-train +tiny --data corpus.txt --out out/r --steps 0", "--steps"),
    ("@offline kinglet-train +tiny --out out/r --steps 2", "--data"),
    ("kinglet-train eval gone.ckpt", "cannot be read"),
    ("kinglet-train eval changed.ckpt", "has changed"),
    ("kinglet-train +tiny --resume gone.ckpt --out out/r", "--data"),
    ("kinglet-train +tiny --data corpus.txt --out taken", "--force"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --batch 0", "--batch"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --accum 0", "--accum"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --heads 3", "--heads 3"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --kv-heads 3", "--kv-heads 3"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --context 0", "--context"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --dim 0", "--dim"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --layers 0", "--layers"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --threads 0", "--threads"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --lr=-1", "--lr"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --lr NaN", "--lr"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --beta1 1", "--beta1"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --steps -5", "-5"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --preset huge", "--preset"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --decay steep", "--decay"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --qat q3", "q3"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --qat-activations x", "'x'"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --bogus", "--bogus"),
    ("kinglet-train +tiny --data corpus.txt --out text.txt", "text.txt"),
    ("kinglet-train +tiny --data corpus.txt --out text.txt/r", "text.txt/r"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --metrics dir", "dir"),
    ("kinglet-train +tiny --data corpus.txt --out out/r/deeper --metrics nodir/m.jsonl", "nodir/m.jsonl"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --init-std 1e30", "stopped without updating; no checkpoint was written"),
    ("@full kinglet-train +tiny --data corpus.txt --out out/r", "File too large"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --threads 100000", "--threads 100000"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --temperature NaN", "--temperature"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --temperature inf", "--temperature"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --sample-len 1000000", "--sample-len"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --rope-theta NaN", "--rope-theta"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --rope-theta 1e-45", "--rope-theta"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --norm-eps 0", "--norm-eps"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --adam-eps inf", "--adam-eps"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --steps 2000000000", "--steps"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --accum 100000", "--accum"),
    // kinglet-train: memory. None of these allocates what it asks for.
    ("kinglet-train +tiny --data corpus.txt --out out/r --batch 1000000000000", "--batch 1,000,000,000,000"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --batch 2305843009213693952", "more than 16 EiB"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --eval-windows 1000000000000", "--eval-windows"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --dim 65536 --heads 8 --layers 1 --hidden 32 --max-memory 8G", "--dim"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --dim 65536 --heads 8 --layers 1024 --hidden 32", "--dim"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --max-memory 100K", "more than --max-memory 100.0 KiB"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --max-memory lots", "not a size"),
    ("kinglet-train +tiny --data unicode.txt --out out/r", "1,112,064 distinct characters, more than --max-vocab 65,536"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --max-vocab 10", "--max-vocab 10"),
    // kinglet-train --resume: the checkpoint.
    ("kinglet-train +tiny --data corpus.txt --out out/r --resume missing.ckpt", "missing.ckpt"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --resume dir", "dir"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --resume empty", "truncated"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --resume text.txt", "not a kinglet-train checkpoint"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --resume model.klt", "not a kinglet-train checkpoint"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --resume trunc.ckpt", "truncated"),
    ("@nobody kinglet-train +tiny --data corpus.txt --out out/r --resume locked.ckpt", "ermission denied"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --resume run.ckpt --dim 32", "another config"),
    ("kinglet-train +tiny --data corpus.txt --out out/r --resume nan.ckpt", "non-finite parameter (NaN)"),
    // kinglet-train eval.
    ("kinglet-train eval nan.ckpt --data corpus.txt", "non-finite parameter (NaN)"),
    ("kinglet-train eval missing.ckpt --data corpus.txt", "missing.ckpt"),
    ("kinglet-train eval dir --data corpus.txt", "dir"),
    ("kinglet-train eval empty --data corpus.txt", "truncated"),
    ("kinglet-train eval text.txt --data corpus.txt", "not a kinglet-train checkpoint"),
    ("kinglet-train eval model.klt --data corpus.txt", "not a kinglet-train checkpoint"),
    ("kinglet-train eval trunc.ckpt --data corpus.txt", "truncated"),
    ("@nobody kinglet-train eval locked.ckpt --data corpus.txt", "ermission denied"),
    ("kinglet-train eval run.ckpt --data missing.txt", "missing.txt"),
    ("kinglet-train eval run.ckpt --data empty", "empty"),
    ("kinglet-train eval run.ckpt --data dir", "dir"),
    ("kinglet-train eval run.ckpt --data binary.txt", "not UTF-8"),
    ("kinglet-train eval run.ckpt --data text.txt", "text.txt"),
    ("kinglet-train eval run.ckpt --data corpus.txt --batch 0", "--batch"),
    ("kinglet-train eval run.ckpt --data corpus.txt --threads 0", "--threads"),
    ("kinglet-train eval run.ckpt --data corpus.txt --max-memory 1K", "--max-memory 1.0 KiB"),
    ("kinglet-train eval", "<CHECKPOINT>"),
    // kinglet-train export.
    ("kinglet-train export missing.ckpt -o out/m.klt", "missing.ckpt"),
    ("kinglet-train export dir -o out/m.klt", "dir"),
    ("kinglet-train export empty -o out/m.klt", "truncated"),
    ("kinglet-train export model.klt -o out/m.klt", "not a kinglet-train checkpoint"),
    ("kinglet-train export trunc.ckpt -o out/m.klt", "truncated"),
    ("@nobody kinglet-train export locked.ckpt -o out/m.klt", "ermission denied"),
    ("kinglet-train export run.ckpt -o out/m.klt --dtype nonsense", "nonsense"),
    ("kinglet-train export run.ckpt -o nodir/m.klt", "nodir/m.klt"),
    ("kinglet-train export run.ckpt -o dir", "dir"),
    ("kinglet-train export run.ckpt -o text.txt/m.klt", "text.txt/m.klt"),
    ("kinglet-train export run.ckpt", "--output"),
    ("kinglet-train export nan.ckpt -o out/m.klt", "non-finite parameter (NaN)"),
    ("@full kinglet-train export run.ckpt -o out/m.klt", "File too large"),
    // kinglet-train check-reference.
    ("kinglet-train check-reference missing.json", "missing.json"),
    ("kinglet-train check-reference dir", "dir"),
    ("kinglet-train check-reference empty", "empty"),
    ("kinglet-train check-reference text.txt", "text.txt"),
    ("kinglet-train check-reference model.klt", "model.klt"),
    ("kinglet-train check-reference ref.json", "ref.json"),
    // batch 2^61 + 4: times block_size 8, it wraps around to the 32 tokens held.
    ("kinglet-train check-reference wrap.json", "batch × block_size"),
    ("kinglet-train frobnicate", "frobnicate"),
];

/// Files a case may leave behind, by case (none: a failed training run
/// removes what it created, as every other command leaves nothing).
const ALLOWED_LEFTOVERS: &[(&str, &[&str])] = &[];

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-bad-input");
    if dir.exists() {
        // An earlier run's chmod 000 files are removable (the directory is writable).
        fs::remove_dir_all(&dir).expect("clear the scratch directory");
    }
    fs::create_dir_all(&dir).expect("scratch directory");
    // `nobody` must be able to enter it.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Writes the fixtures every case refers to.
fn fixtures(dir: &Path) {
    let write = |name: &str, bytes: &[u8]| fs::write(dir.join(name), bytes).expect("fixture");
    write("corpus.txt", common::corpus_text().as_bytes());
    write("empty", b"");
    write("text.txt", b"hello, this is not a model\n");
    write("binary.txt", &[b'a', b'b', 0xC3, 0x28, b'c']);
    write("ref.json", b"{}\n");
    fs::create_dir(dir.join("dir")).expect("fixture dir");
    fs::create_dir(dir.join("out")).expect("out dir");

    let tiny: Vec<&str> = TINY.split_whitespace().collect();
    // A checkpoint trained on `corpus`, saved as `name`.
    let checkpoint = |corpus: &str, name: &str| {
        let o = run_in(
            dir,
            "kinglet-train",
            &[&tiny[..], &["--data", corpus, "--out", "train"]].concat(),
        );
        assert!(o.status.success(), "training the fixture: {o:?}");
        fs::rename(dir.join("train/last.ckpt"), dir.join(name)).expect("move checkpoint");
        fs::remove_dir_all(dir.join("train")).expect("remove the run directory");
    };
    checkpoint("corpus.txt", "run.ckpt");
    // Checkpoints whose recorded corpus is gone, or has changed.
    write("gone.txt", common::corpus_text().as_bytes());
    checkpoint("gone.txt", "gone.ckpt");
    fs::remove_file(dir.join("gone.txt")).expect("remove the corpus");
    write("changed.txt", common::corpus_text().as_bytes());
    checkpoint("changed.txt", "changed.ckpt");
    write(
        "changed.txt",
        format!("{}!", common::corpus_text()).as_bytes(),
    );
    // An output directory that holds a run.
    fs::create_dir(dir.join("taken")).expect("taken dir");
    fs::copy(dir.join("run.ckpt"), dir.join("taken/last.ckpt")).expect("taken run");
    let o = run_in(
        dir,
        "kinglet-train",
        &["export", "run.ckpt", "-o", "model.klt"],
    );
    assert!(o.status.success(), "exporting the fixture: {o:?}");

    hostile_fixtures(dir);

    let model = fs::read(dir.join("model.klt")).expect("model");
    write("trunc.klt", &model[..model.len() / 2]);
    let ckpt = fs::read(dir.join("run.ckpt")).expect("checkpoint");
    // A checkpoint whose checksum holds but whose first parameter is NaN.
    let mut nan = kinglet_trainer::checkpoint::Checkpoint::from_bytes(&ckpt).expect("loads");
    nan.params[0] = f32::NAN;
    write("nan.ckpt", &nan.to_bytes());
    write("trunc.ckpt", &ckpt[..ckpt.len() - 100]);
    for (name, bytes) in [
        ("locked.klt", &model[..]),
        ("locked.ckpt", &ckpt[..]),
        ("locked.txt", common::corpus_text().as_bytes()),
    ] {
        write(name, bytes);
        fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o000)).expect("chmod");
    }
}

/// Valid inputs whose sizes are hostile: `hostile.klt` (3.5 MB: dim 8,
/// 1,024 layers, max_seq_len 1,048,576), `long.txt` for it, `unicode.txt`
/// (every Unicode scalar value twice), and `wrap.json`, the reference dump
/// with a batch that wraps around.
fn hostile_fixtures(dir: &Path) {
    let args: Vec<&str> = common::HOSTILE_SYNTH
        .split_whitespace()
        .chain(["-o", "hostile.klt"])
        .collect();
    let o = run_in(dir, "kinglet", &args);
    assert!(o.status.success(), "synthesizing the hostile model: {o:?}");
    fs::write(dir.join("long.txt"), "ab cd ".repeat(100_000)).expect("fixture");
    let scalars: String = (0..=u32::from(char::MAX))
        .filter_map(char::from_u32)
        .collect();
    fs::write(dir.join("unicode.txt"), scalars.repeat(2)).expect("fixture");
    let reference = common::data_file("torch-ref/tiny_f64.json")
        .unwrap_or_else(|| panic!("the wrapping dump needs ../shared/data/torch-ref"));
    let json = fs::read_to_string(&reference).expect("dump");
    assert!(json.contains("\"batch\": 4"), "the dump's batch is 4");
    let wrapping = json.replace("\"batch\": 4", "\"batch\": 2305843009213693956");
    fs::write(dir.join("wrap.json"), wrapping).expect("fixture");
    fs::copy(reference.with_extension("bin"), dir.join("wrap.bin")).expect("fixture");
}

/// Every path under `dir`, relative to it.
fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("inside root");
            out.insert(rel.to_string_lossy().into_owned());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Runs one case; returns what was wrong with it, if anything.
fn check(dir: &Path, line: &str, needle: &str, as_root: bool) -> Option<String> {
    let mut words: Vec<&str> = Vec::new();
    for w in line.split(' ') {
        match w {
            "+tiny" => words.extend(TINY.split_whitespace()),
            w => words.push(w),
        }
    }
    let mode = words.first().copied().filter(|w| w.starts_with('@'));
    if mode.is_some() {
        words.remove(0);
    }
    let (program, args) = words.split_first().expect("a program");
    let program_path = binary(program);
    let mut command = match mode {
        Some("@full") => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("trap '' XFSZ; ulimit -f 2; exec \"$0\" \"$@\"")
                .arg(&program_path);
            c
        }
        _ => Command::new(&program_path),
    };
    if mode == Some("@nobody") && as_root {
        command.uid(65534).gid(65534);
    }
    if mode == Some("@offline") {
        // Nothing listens on the discard port: the download fails at once.
        command
            .env(
                "KINGLET_TINYSHAKESPEARE_URL",
                "http://127.0.0.1:9/input.txt",
            )
            .env("KINGLET_CACHE_DIR", dir);
    }
    let before = listing(dir);
    let started = std::time::Instant::now();
    let o = command
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run the program");
    let after = listing(dir);
    let seconds = started.elapsed().as_secs_f64();

    let mut wrong = Vec::new();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let text = stderr.strip_suffix('\n').unwrap_or(&stderr);
    match o.status.code() {
        None => wrong.push(format!("killed by signal {:?}", o.status.signal())),
        Some(0) => wrong.push("exit code 0".into()),
        Some(101) => wrong.push("exit code 101 (panic)".into()),
        Some(_) => {}
    }
    let prefix = format!("{program}: error: ");
    if text.contains('\n') || !text.starts_with(&prefix) || text.len() > 400 {
        wrong.push("stderr is not one `program: error:` line".into());
    }
    // Not a speed test: far above any healthy case on any load, this bound
    // only names a case that waits (on the network, a retry) instead of
    // failing at once.
    if seconds > 120.0 {
        wrong.push(format!("took {seconds:.1} s"));
    }
    if !text.contains(needle) {
        wrong.push(format!("stderr does not contain {needle:?}"));
    }
    let allowed: BTreeSet<String> = ALLOWED_LEFTOVERS
        .iter()
        .filter(|(l, _)| *l == line)
        .flat_map(|(_, files)| files.iter().map(|f| f.to_string()))
        .collect();
    let left: Vec<&String> = after
        .difference(&before)
        .filter(|p| !allowed.contains(*p))
        .collect();
    if !left.is_empty() {
        wrong.push(format!("left behind {left:?}"));
    }
    let gone: Vec<&String> = before.difference(&after).collect();
    if !gone.is_empty() {
        wrong.push(format!("removed {gone:?}"));
    }
    // The next case starts from an empty out/.
    for p in after.difference(&before) {
        let path = dir.join(p);
        let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "`{line}`: {} (exit {:?}, stderr {stderr:?})",
            wrong.join("; "),
            o.status.code()
        )
    })
}

#[test]
fn every_command_refuses_bad_input_with_one_line_and_no_leftovers() {
    let dir = scratch();
    fixtures(&dir);
    // Root reads chmod 000 files; `nobody` does not.
    let as_root = fs::metadata(dir.join("corpus.txt"))
        .expect("metadata")
        .uid()
        == 0;
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|(line, needle)| check(&dir, line, needle, as_root))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
