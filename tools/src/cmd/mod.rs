//! The `kinglet` command line: one file per subcommand, each with an `Args`
//! struct (clap derive) and a `run(args, out)` function. Adding a subcommand
//! is a file here, a `mod` line and one variant + match arm in [`Command`].

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{Parser, Subcommand, ValueEnum};
use kinglet::printable::Printable;
use kinglet::Dtype;

pub mod checksum;
pub mod convert;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod quantize;
pub mod synth;
pub mod verify;

/// Parses the command line of `program` (`kinglet`, `kinglet-train`). When
/// it does not parse, prints clap's help where that was asked for (or is the
/// useful answer), and otherwise one `program: error: …` line, and returns
/// the exit code: clap's for help, 2 for a usage error.
pub fn parse_args<C: Parser>(program: &str) -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(e.exit_code().clamp(0, 255) as u8)
        }
        _ => {
            eprintln!(
                "{program}: error: {} (see '{program} --help')",
                Printable(&one_line(&e))
            );
            ExitCode::from(2)
        }
    })
}

/// Clap's multi-line usage error as one line: its message lines, without
/// the usage block and the "For more information" hint.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let joined = message.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

const EXAMPLES: &str = "\
Examples:
  kinglet convert stories260K.bin --tokenizer tok512.bin -o stories260K.klt
  kinglet convert stories260K.klt --dtype bf16 -o stories260K-bf16.klt
  kinglet quantize stories260K.klt --dtype q4_0 -o stories260K-q4_0.klt
  kinglet generate stories260K.klt --prompt \"Once upon a time\" --temperature 0
  kinglet eval shakespeare.klt --text tinyshakespeare.txt --tail 0.1
  kinglet verify stories260K.klt
  kinglet checksum stories260K.klt > stories260K.sha256
  kinglet checksum --check stories260K.sha256
  kinglet inspect stories260K.klt --max-seq 256
  kinglet synth --shape 15m --dtype f16 --seed 7 -o synth15m.klt";

/// Run, convert, quantize, verify, checksum and inspect .klt model files.
#[derive(Debug, Parser)]
#[command(name = "kinglet", version, after_help = EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a model between .klt, GGUF, Hugging Face and llama2.c, or re-encode it.
    Convert(convert::Args),
    /// Quantize a model to ggml Q8_0 or Q4_0 blocks (convert --dtype q8_0|q4_0).
    Quantize(quantize::Args),
    /// Generate text from a model, streaming it as it comes.
    Generate(generate::Args),
    /// Measure a model's mean cross-entropy on a text.
    Eval(eval::Args),
    /// Check a .klt file's layout and every tensor checksum.
    Verify(verify::Args),
    /// Print a file's SHA-256 and its tensors' CRC32C, or check a manifest.
    Checksum(checksum::Args),
    /// Describe a .klt file: config, tokenizer, tensors, memory needs.
    Inspect(inspect::Args),
    /// Write a model with random weights and a synthetic vocabulary.
    Synth(synth::Args),
}

/// How a command that ran to completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Everything checked out.
    Ok,
    /// The command ran but found problems (already printed); exit code 1.
    Failed,
}

impl Command {
    /// Runs the subcommand, writing its report to `out`. An `Err` is a
    /// problem that stopped the command (missing file, wrong format, …).
    pub fn run(self, out: &mut dyn Write) -> Result<Status> {
        match self {
            Command::Convert(a) => convert::run(a, out),
            Command::Quantize(a) => quantize::run(a, out),
            Command::Generate(a) => generate::run(a, out),
            Command::Eval(a) => eval::run(a, out),
            Command::Verify(a) => verify::run(a, out),
            Command::Checksum(a) => checksum::run(a, out),
            Command::Inspect(a) => inspect::run(a, out),
            Command::Synth(a) => synth::run(a, out),
        }
    }
}

/// The dtypes a model's matrices can be written in (norm gains stay f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeightDtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16, rounded to nearest even.
    F16,
    /// bfloat16, rounded to nearest even.
    Bf16,
    /// ggml Q8_0: blocks of 32 int8 with an f16 scale (8.5 bits a weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// ggml Q4_0: blocks of 32 4-bit values with an f16 scale (4.5 bits a weight).
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<WeightDtype> for Dtype {
    fn from(d: WeightDtype) -> Dtype {
        match d {
            WeightDtype::F32 => Dtype::F32,
            WeightDtype::F16 => Dtype::F16,
            WeightDtype::Bf16 => Dtype::BF16,
            WeightDtype::Q8_0 => Dtype::Q8_0,
            WeightDtype::Q4_0 => Dtype::Q4_0,
        }
    }
}

/// Thousands separators for byte and parameter counts: `1,056,540`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_056_540), "1,056,540");
    }
}
