//! The bare binary (`examples/bare`, no libc, no allocator, raw system
//! calls): builds it around the bundled model (models/shakespeare.klt, q8_0),
//! runs it, and checks that it prints exactly what `kinglet generate` prints
//! for the same model, prompt, seed and settings.

use std::path::{Path, PathBuf};
use std::process::Command;

use kinglet_tools::cmd::generate;

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

// The settings compiled into `examples/bare/src/main.rs`.
include!("../examples/bare/src/settings.rs");

/// A target directory of its own: the bare package is a workspace of its
/// own with its own profiles, and the outer `cargo test` holds the lock on
/// the default one.
fn target_dir() -> PathBuf {
    Path::new(WORKSPACE).join("target/bare-test")
}

/// The bundled model, which the bare binary embeds by default.
fn bundled_model() -> PathBuf {
    Path::new(WORKSPACE).join(kinglet_tools::bundled::PATH)
}

/// Builds the bare binary with `features` into `target_dir()/subdir`.
fn build_bare(model: &Path, features: &str, subdir: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = target_dir().join(subdir);
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--manifest-path",
            "examples/bare/Cargo.toml",
        ])
        .args(["--features", features, "--target-dir"])
        .arg(&target)
        .env("KINGLET_BARE_MODEL", model)
        .current_dir(WORKSPACE)
        .status()
        .expect("runs cargo");
    assert!(status.success(), "building examples/bare failed");
    target.join("release/kinglet-bare")
}

/// Size of the named section of a little-endian ELF64 file.
fn section_size(elf: &[u8], name: &str) -> Option<u64> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    // e_shoff, e_shentsize, e_shnum, e_shstrndx.
    let (table, entry, count, names) = (
        u64_at(0x28) as usize,
        u16_at(0x3a),
        u16_at(0x3c),
        u16_at(0x3e),
    );
    let header = |i: usize| table + i * entry;
    // sh_offset of the section-name string table.
    let strings = u64_at(header(names) + 0x18) as usize;
    (0..count).find_map(|i| {
        let start = strings + u32_at(header(i));
        let end = start + elf[start..].iter().position(|&b| b == 0)?;
        // sh_size.
        (&elf[start..end] == name.as_bytes()).then(|| u64_at(header(i) + 0x20))
    })
}

#[test]
fn bare_binary_prints_what_kinglet_generate_prints() {
    let model = bundled_model();
    let binary = build_bare(&model, "", "full");

    // A static executable (ELF type EXEC, not a PIE or shared object) that
    // needs no environment.
    let elf = std::fs::read(&binary).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([elf[16], elf[17]]), 2, "ET_EXEC");
    let output = Command::new(&binary)
        .env_clear()
        .output()
        .expect("runs kinglet-bare");
    assert!(output.status.success(), "exit status {:?}", output.status);
    assert!(output.stderr.is_empty());
    let bare = String::from_utf8(output.stdout).expect("UTF-8");

    let args = generate::Args {
        model: Some(model.to_path_buf()),
        prompt: PROMPT.into(),
        prompt_file: None,
        tokens: NEW_TOKENS,
        temperature: TEMPERATURE,
        top_k: 0,
        top_p: TOP_P,
        seed: Some(SEED),
        max_seq: Some(MAX_SEQ),
        max_memory: None,
        no_verify: false,
        threads: Some(2),
        no_pack: false,
    };
    let mut cli = Vec::new();
    generate::run(args, &mut cli).expect("kinglet generate runs");
    let cli = String::from_utf8(cli).expect("UTF-8");
    assert!(
        cli.starts_with("Once upon a time") && cli.len() > 48,
        "{cli}"
    );
    assert_eq!(bare, cli);
}

/// Issue 6 §3: the engine (scalar kernels) adds at most 64 KiB of `.text`,
/// measured as the difference between the bare binary and the same program
/// with the engine calls left out (feature `no-engine`).
#[test]
fn engine_adds_at_most_64_kib_of_text() {
    let model = bundled_model();
    let with = std::fs::read(build_bare(&model, "", "full")).unwrap();
    let without = std::fs::read(build_bare(&model, "no-engine", "no-engine")).unwrap();
    let text_with = section_size(&with, ".text").expect(".text");
    let text_without = section_size(&without, ".text").expect(".text");
    let engine = text_with - text_without;
    eprintln!("kinglet-bare .text: {text_with} bytes, without the engine {text_without}: engine {engine} bytes");
    assert!(engine > 10_000, "the engine build has the engine in it");
    assert!(engine <= 64 * 1024, "engine .text {engine} bytes > 64 KiB");
}
