//! `kinglet inspect`: a readable description of a .klt file — config,
//! tokenizer, tensor table, sizes, metadata, and the session memory needed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use kinglet::format::TokenizerKind;
use kinglet::printable::Printable;
use kinglet::session::PREFILL_CHUNK;
use kinglet::{session_bytes, session_bytes_for_chunk, Dtype};

use super::{grouped, Status};
use crate::io::open_model;

const EXAMPLES: &str = "\
Examples:
  kinglet inspect stories260K.klt
  kinglet inspect stories260K.klt --max-seq 256   # session memory for 256 positions";

/// Describe a .klt file: config, tokenizer, tensors, memory needs.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The .klt file.
    pub file: PathBuf,
    /// Positions to size the session buffer for (default: the model's max_seq_len).
    #[arg(long, value_name = "N")]
    pub max_seq: Option<u32>,
}

/// Bytes shown with their exact count; large ones also in MiB.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!(
            "{} bytes ({:.1} MiB)",
            grouped(bytes),
            bytes as f64 / 1048576.0
        )
    } else {
        format!("{} bytes", grouped(bytes))
    }
}

/// A piece shown as a quoted, escaped byte string: `"\n<s>\n"`.
fn quoted(piece: &[u8]) -> String {
    let escaped: String = piece
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    format!("\"{escaped}\"")
}

fn special(id: Option<u32>) -> String {
    id.map_or("none".to_string(), |i| i.to_string())
}

/// Runs `kinglet inspect`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<Status> {
    let file = open_model(&args.file)?;
    let c = *file.config();
    let max_seq = args.max_seq.unwrap_or(c.max_seq_len);
    if max_seq == 0 || max_seq > c.max_seq_len {
        bail!(
            "--max-seq {max_seq} is outside 1..={} (the model's max_seq_len)",
            c.max_seq_len
        );
    }

    writeln!(out, "file       {}", args.file.display())?;
    writeln!(
        out,
        "size       {}, header {}",
        size(file.as_bytes().len() as u64),
        size(file.header_bytes() as u64)
    )?;

    writeln!(out, "\nconfig")?;
    writeln!(
        out,
        "  dim {}  hidden_dim {}  n_layers {}  n_heads {}  n_kv_heads {}  (head_dim {}, kv_dim {})",
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim(),
        c.kv_dim()
    )?;
    writeln!(
        out,
        "  vocab_size {}  max_seq_len {}  rope_theta {}  norm_eps {:e}  classifier {}",
        c.vocab_size,
        c.max_seq_len,
        c.rope_theta,
        c.norm_eps,
        if c.tied_classifier {
            "tied to the embedding"
        } else {
            "separate"
        }
    )?;

    let v = file.vocab();
    writeln!(out, "\ntokenizer")?;
    writeln!(
        out,
        "  kind {}  pieces {}  bos {}  eos {}  longest piece {} bytes",
        match v.kind() {
            TokenizerKind::Char => "char",
            TokenizerKind::Bpe => "bpe",
        },
        v.len(),
        special(v.bos()),
        special(v.eos()),
        v.max_piece_len()
    )?;
    let n = v.len();
    let mut samples: Vec<u32> = vec![0, 1, 2, 3, n / 4, n / 2, 3 * n / 4, n - 1];
    samples.retain(|&id| id < n);
    samples.dedup();
    let shown: Vec<String> = samples
        .iter()
        .map(|&id| format!("{id} {} ({})", quoted(v.piece(id)), v.score(id)))
        .collect();
    writeln!(out, "  samples  {}", shown.join(", "))?;

    writeln!(out, "\ntensors")?;
    let width = file.tensors().map(|t| t.name.len()).max().unwrap_or(6);
    writeln!(
        out,
        "  {:>5}  {:width$}  {:5}  {:>11}  {:>12}  {:>12}  crc32c",
        "index", "name", "dtype", "shape", "offset", "bytes"
    )?;
    let mut per_dtype: BTreeMap<u32, (Dtype, u64, u32)> = BTreeMap::new();
    let mut params = 0u64;
    for t in file.tensors() {
        let shape = if t.ndim == 1 {
            t.shape[1].to_string()
        } else {
            format!("{}x{}", t.shape[0], t.shape[1])
        };
        writeln!(
            out,
            "  {:>5}  {:width$}  {:5}  {:>11}  {:>12}  {:>12}  {:08x}",
            t.index,
            t.name,
            t.dtype.name(),
            shape,
            t.offset,
            t.data.len(),
            t.crc32c
        )?;
        params += t.elements();
        let e = per_dtype.entry(t.dtype as u32).or_insert((t.dtype, 0, 0));
        e.1 += t.data.len() as u64;
        e.2 += 1;
    }
    writeln!(out, "\nparameters {}", grouped(params))?;
    for (dtype, bytes, count) in per_dtype.values() {
        writeln!(
            out,
            "  {:5} {} tensors, {}",
            dtype.name(),
            count,
            size(*bytes)
        )?;
    }

    writeln!(out, "\nmetadata")?;
    let mut any = false;
    for (k, val) in file.metadata() {
        writeln!(out, "  {} = {}", Printable(k), Printable(val))?;
        any = true;
    }
    if !any {
        writeln!(out, "  (none)")?;
    }

    writeln!(out, "\nsession")?;
    let kv_cache = 2 * c.n_layers as u64 * max_seq as u64 * c.kv_dim() as u64 * 4;
    writeln!(
        out,
        "  {max_seq} positions need {} with prompt chunks of {PREFILL_CHUNK} (of which KV cache {})",
        size(session_bytes(&c, max_seq) as u64),
        size(kv_cache)
    )?;
    // The engine's smallest session: activations one position wide, for a
    // program that decodes token by token (a prompt then runs as slowly).
    writeln!(
        out,
        "  {max_seq} positions need {} with prompt chunks of 1 (decode only)",
        size(session_bytes_for_chunk(&c, max_seq, 1) as u64),
    )?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_pieces() {
        assert_eq!(quoted(b"\n<s>\n"), "\"\\n<s>\\n\"");
        assert_eq!(quoted(&[0xE2, b'a']), "\"\\xe2a\"");
    }
}
