//! The C API from C: builds the static (and shared) library with cargo,
//! compiles `tests/c/generate.c` with the system C compiler against it, and
//! checks that the program prints exactly what the Rust `Generator` produces
//! for the same model, prompt and sampling settings, and that each error path
//! prints its `kinglet_strerror` message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kinglet::generate::Generator;
use kinglet::{session_floats, tokenizer, Dtype, ModelFile, Sampler, SamplerConfig, Session};
use kinglet_tools::import::llama2c;

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

/// A target directory of its own: the outer `cargo test` holds the lock on
/// the default one while tests run.
fn target_dir() -> PathBuf {
    Path::new(WORKSPACE).join("target/ffi-c")
}

/// Builds the libraries and the C program once: (static program, shared
/// program, library folder).
fn programs() -> &'static (PathBuf, PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "kinglet-ffi", "--target-dir"])
            .arg(&target)
            .current_dir(WORKSPACE)
            .status()
            .expect("runs cargo");
        assert!(status.success(), "cargo build -p kinglet-ffi failed");
        let lib_dir = target.join("debug");
        let source = Path::new(WORKSPACE).join("tests/c/generate.c");
        let include = Path::new(WORKSPACE).join("ffi/include");
        let warnings = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];
        let static_program = target.join("generate-static");
        let status = Command::new("cc")
            .args(warnings)
            .arg(&source)
            .arg("-I")
            .arg(&include)
            .arg(lib_dir.join("libkinglet_ffi.a"))
            .args(["-lm", "-lpthread", "-ldl", "-o"])
            .arg(&static_program)
            .status()
            .expect("runs cc");
        assert!(status.success(), "cc against the static library failed");
        let shared_program = target.join("generate-shared");
        let status = Command::new("cc")
            .args(warnings)
            .arg(&source)
            .arg("-I")
            .arg(&include)
            .arg("-L")
            .arg(&lib_dir)
            .args(["-lkinglet_ffi", "-lm", "-o"])
            .arg(&shared_program)
            .status()
            .expect("runs cc");
        assert!(status.success(), "cc against the shared library failed");
        (static_program, shared_program, lib_dir)
    })
}

/// stories260K as an f32 .klt file on disk, or `None` when the data is missing.
fn model_path() -> Option<&'static Path> {
    static MODEL: OnceLock<Option<PathBuf>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let checkpoint = std::fs::read(common::data_file("stories260K.bin")?).unwrap();
            let tokenizer = std::fs::read(common::data_file("tok512.bin")?).unwrap();
            let model = llama2c::import(&checkpoint, &tokenizer).expect("stories260K imports");
            let mut bytes = Vec::new();
            model.write_klt(Dtype::F32, &mut bytes).expect("writes");
            std::fs::create_dir_all(target_dir()).unwrap();
            let path = target_dir().join("stories260K.klt");
            std::fs::write(&path, bytes).unwrap();
            Some(path)
        })
        .as_deref()
}

/// Runs the C program; (exit code, stdout).
fn run_c(program: &Path, model: &Path, args: [&str; 4], mode: &str) -> (i32, String) {
    let (_, _, lib_dir) = programs();
    let output = Command::new(program)
        .arg(model)
        .args(args)
        .arg(mode)
        .env("LD_LIBRARY_PATH", lib_dir)
        .output()
        .expect("runs the C program");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    (output.status.code().unwrap_or(-1), stdout)
}

/// The Rust engine's text for the same settings, as a list of the pieces
/// the generator emits (prompt included).
fn rust_pieces(
    model: &Path,
    prompt: &str,
    tokens: u32,
    temperature: f32,
    seed: u64,
) -> Vec<String> {
    let bytes = std::fs::read(model).unwrap();
    let model = ModelFile::new_checked(&bytes[..]).unwrap();
    let mut prompt_ids = vec![0u32; tokenizer::max_tokens(prompt, true)];
    let n = tokenizer::encode(&model.vocab(), prompt, true, &mut prompt_ids).unwrap();
    let max_seq = model.config().max_seq_len;
    let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
    let mut session = Session::new(&model, &mut buffer, max_seq).unwrap();
    let sampling = SamplerConfig {
        temperature,
        top_k: 0,
        top_p: 1.0,
        seed,
    };
    let mut sampler = Sampler::new(model.config().vocab_size, sampling).unwrap();
    let mut generator =
        Generator::new(&mut session, &mut sampler, &prompt_ids[..n], tokens).unwrap();
    let mut pieces = Vec::new();
    while generator
        .step(|piece| {
            if !piece.is_empty() {
                pieces.push(piece.to_string())
            }
        })
        .unwrap()
        .is_some()
    {}
    pieces
}

#[test]
fn c_program_generates_what_the_rust_generator_does() {
    let Some(model) = model_path() else { return };
    let (static_program, shared_program, _) = programs();
    let want = rust_pieces(model, "Once upon a time", 40, 0.0, 1).concat();
    assert!(want.starts_with("Once upon a time, there was a little girl named Lily."));
    for program in [static_program, shared_program] {
        let (code, text) = run_c(program, model, ["Once upon a time", "40", "0", "1"], "run");
        assert_eq!(code, 0, "{}: {text}", program.display());
        assert_eq!(text, want, "{}", program.display());
    }
    // An arena at an odd address works the same.
    let (code, text) = run_c(
        static_program,
        model,
        ["Once upon a time", "40", "0", "1"],
        "misaligned",
    );
    assert_eq!((code, text), (0, want));
}

#[test]
fn length_taking_generate_reads_exactly_the_bytes_it_is_given() {
    let Some(model) = model_path() else { return };
    let (program, _, _) = programs();
    let args = ["Once upon a time", "40", "0", "1"];
    let want = rust_pieces(model, "Once upon a time", 40, 0.0, 1).concat();
    assert_eq!(run_c(program, model, args, "run-n"), (0, want));
    // A NUL byte inside the length is a character like any other.
    let nul = rust_pieces(model, "Once upon a time\0Once upon a time", 40, 0.0, 1).concat();
    assert_eq!(run_c(program, model, args, "run-n-nul"), (0, nul));
    // NULL with length 0 is the empty prompt: BOS alone.
    let empty = rust_pieces(model, "", 40, 0.0, 1).concat();
    assert_eq!(run_c(program, model, args, "empty-n"), (0, empty));
    let (code, text) = run_c(program, model, args, "null-n");
    assert_eq!(
        (code, text.trim_end()),
        (2, "error -1: a required pointer argument is NULL")
    );
    // Neither entry point reads past what it may: both prompts end right
    // before an unreadable page (a read past it would kill the program).
    for mode in ["no-nul", "long-n"] {
        let (code, text) = run_c(program, model, args, mode);
        assert_eq!(
            (code, text.trim_end()),
            (2, "error -5: the prompt is longer than 4 * max_seq bytes"),
            "mode {mode}"
        );
    }
}

#[test]
fn sampling_with_a_seed_matches_too() {
    let Some(model) = model_path() else { return };
    let (program, _, _) = programs();
    let want = rust_pieces(model, "The cat", 60, 0.8, 42).concat();
    let (code, text) = run_c(program, model, ["The cat", "60", "0.8", "42"], "run");
    assert_eq!((code, text), (0, want.clone()));
    let other = rust_pieces(model, "The cat", 60, 0.8, 43).concat();
    assert_ne!(want, other, "the seed changes the text");
}

#[test]
fn emit_returning_non_zero_stops_generation() {
    let Some(model) = model_path() else { return };
    let (program, _, _) = programs();
    let pieces = rust_pieces(model, "Once upon a time", 40, 0.0, 1);
    let (code, text) = run_c(
        program,
        model,
        ["Once upon a time", "40", "0", "1"],
        "stop-after-3",
    );
    assert_eq!((code, text), (0, pieces[..3].concat()));
}

#[test]
fn each_error_path_prints_its_message() {
    let Some(model) = model_path() else { return };
    let (program, _, _) = programs();
    let cases = [
        (
            "null-model",
            "error -1: a required pointer argument is NULL",
        ),
        ("null-emit", "error -1: a required pointer argument is NULL"),
        (
            "short-arena",
            "error -2: the arena is smaller than kinglet_session_bytes() says",
        ),
        (
            "max-seq-0",
            "error -3: max_seq must be between 1 and the model's max_seq_len",
        ),
        ("bad-utf8", "error -4: the prompt is not valid UTF-8"),
        (
            "bad-temperature",
            "error -9: temperature must be finite and non-negative",
        ),
        (
            "truncated",
            "error -20: the model bytes are truncated or their length disagrees with the header",
        ),
    ];
    for (mode, want) in cases {
        let (code, text) = run_c(program, model, ["Once upon a time", "5", "0", "1"], mode);
        assert_eq!((code, text.trim_end()), (2, want), "mode {mode}");
    }
    // A prompt longer than 4 × max_seq bytes (512 positions: 2048 bytes).
    let long = "a".repeat(2049);
    let (code, text) = run_c(program, model, [&long, "5", "0", "1"], "run");
    assert_eq!(
        (code, text.trim_end()),
        (2, "error -5: the prompt is longer than 4 * max_seq bytes")
    );
    // A prompt that fits the bytes but not the positions.
    let words = "a b ".repeat(300);
    let (code, text) = run_c(program, model, [&words, "5", "0", "1"], "run");
    assert_eq!(
        (code, text.trim_end()),
        (
            2,
            "error -8: the prompt does not fit in the session's max_seq positions"
        )
    );
}

/// Weights holding inf (with valid checksums) are a bad model to
/// kinglet_check, and to kinglet_generate when the check is skipped: never
/// success with `<unk>` text.
#[test]
fn non_finite_weights_are_a_bad_model() {
    let Some(model) = model_path() else { return };
    let (program, _, _) = programs();
    let bytes = std::fs::read(model).unwrap();
    let inf = common::patch_tensor(&bytes, 2, |wq| {
        wq[..4].copy_from_slice(&f32::INFINITY.to_le_bytes())
    });
    let path = target_dir().join("stories260K-inf.klt");
    std::fs::write(&path, inf).unwrap();
    for mode in ["run", "skip-check"] {
        let (code, text) = run_c(program, &path, ["Once upon a time", "5", "0", "1"], mode);
        assert_eq!(
            (code, text.trim_end()),
            (2, "error -29: the model file is malformed"),
            "mode {mode}"
        );
    }
}

/// The `no_std` flavor for C firmware (`--no-default-features`, built with
/// `-C panic=abort`) links with nothing but the C library's memcpy, memmove,
/// memset, memcmp, bcmp, strlen and abort — no -lm, -lpthread or -ldl — and
/// generates the same text.
#[test]
fn no_std_static_library_links_without_std_and_generates_the_same_text() {
    let Some(model) = model_path() else { return };
    let target = Path::new(WORKSPACE).join("target/ffi-c-nostd");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-p",
            "kinglet-ffi",
            "--no-default-features",
            "--target-dir",
        ])
        .arg(&target)
        .env("RUSTFLAGS", "-C panic=abort")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(WORKSPACE)
        .status()
        .expect("runs cargo");
    assert!(status.success(), "no_std build of kinglet-ffi failed");
    let program = target.join("generate-nostd");
    let status = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(Path::new(WORKSPACE).join("tests/c/generate.c"))
        .arg("-I")
        .arg(Path::new(WORKSPACE).join("ffi/include"))
        .arg(target.join("debug/libkinglet_ffi.a"))
        .arg("-o")
        .arg(&program)
        .status()
        .expect("runs cc");
    assert!(status.success(), "cc against the no_std library failed");
    let want = rust_pieces(model, "Once upon a time", 40, 0.0, 1).concat();
    let (code, text) = run_c(&program, model, ["Once upon a time", "40", "0", "1"], "run");
    assert_eq!((code, text), (0, want));
    let (code, text) = run_c(
        &program,
        model,
        ["Once upon a time", "5", "0", "1"],
        "bad-utf8",
    );
    assert_eq!(
        (code, text.trim_end()),
        (2, "error -4: the prompt is not valid UTF-8")
    );
}
