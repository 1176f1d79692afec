//! `kinglet quantize`: `kinglet convert` with a quantized `--dtype` (q8_0 by
//! default), under the name users look for.

use anyhow::Result;
use kinglet::Dtype;
use std::io::Write;

use super::{convert, Status};

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
    /// The input, output and embedding dtype, as for `convert`.
    #[command(flatten)]
    pub files: convert::Files,
    /// The block type of the weight matrices; norm gains stay f32, and
    /// matrices whose rows are not whole blocks of 32 stay f16 (with a note).
    #[arg(long, value_enum, default_value_t = QuantDtype::Q8_0)]
    pub dtype: QuantDtype,
}

/// Runs `kinglet quantize` as the `kinglet convert` it stands for.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    let dtype = match args.dtype {
        QuantDtype::Q8_0 => Dtype::Q8_0,
        QuantDtype::Q4_0 => Dtype::Q4_0,
    };
    convert::convert(args.files, Some(dtype), out)
}
