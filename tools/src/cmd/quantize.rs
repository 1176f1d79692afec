//! `kinglet quantize`: `kinglet convert` with a quantized `--dtype` (q8_0 by
//! default), under the name users look for.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::{convert, Status, WeightDtype};

const EXAMPLES: &str = "\
Examples:
  kinglet quantize stories260K.klt -o stories260K-q8_0.klt
  kinglet quantize model.klt --dtype q4_0 --embedding-dtype f16 -o model-q4_0.klt
  # A llama2.c checkpoint straight to q8_0
  kinglet quantize stories260K.bin --tokenizer tok512.bin -o stories260K-q8_0.klt";

/// The quantized block types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantDtype {
    /// ggml Q8_0: blocks of 32 int8 with an f16 scale (8.5 bits a weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// ggml Q4_0: blocks of 32 4-bit values with an f16 scale (4.5 bits a weight).
    #[value(name = "q4_0")]
    Q4_0,
}

/// Quantize a model's matrices to ggml Q8_0 or Q4_0 blocks (as `convert --dtype`).
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// A .klt file, or a llama2.c checkpoint (with --tokenizer).
    pub input: PathBuf,
    /// Where to write the .klt file (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The block type of the weight matrices; norm gains stay f32, and
    /// matrices whose rows are not whole blocks of 32 stay f16 (with a note).
    #[arg(long, value_enum, default_value_t = QuantDtype::Q8_0)]
    pub dtype: QuantDtype,
    /// Element type of the token embedding and classifier, when it should
    /// differ from --dtype (small models lose the most there).
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub embedding_dtype: Option<WeightDtype>,
    /// The llama2.c tokenizer.bin (for llama2.c checkpoints only).
    #[arg(long, value_name = "TOK.bin")]
    pub tokenizer: Option<PathBuf>,
}

/// Runs `kinglet quantize` as the `kinglet convert` it stands for.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    let dtype = match args.dtype {
        QuantDtype::Q8_0 => WeightDtype::Q8_0,
        QuantDtype::Q4_0 => WeightDtype::Q4_0,
    };
    convert::run(
        convert::Args {
            input: args.input,
            output: args.output,
            tokenizer: args.tokenizer,
            dtype,
            embedding_dtype: args.embedding_dtype,
        },
        out,
    )
}
