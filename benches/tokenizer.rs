//! BPE encoding speed: MB of text per second through
//! `kinglet::tokenizer::encode` with stories260K's tok512 vocabulary on
//! TinyShakespeare, on growing prefixes up to the whole file, beside the
//! quadratic encoder it replaced (`tests/common/quadratic_bpe.rs`) on the
//! prefixes that one finishes in seconds. The two alternate run by run, and
//! each figure is the median of its runs; the token streams must agree.
//!
//! `cargo bench --bench tokenizer` (needs `../shared/data` or `KINGLET_DATA`;
//! `KINGLET_BENCH_QUADRATIC=0` leaves the old encoder out, e.g. to profile).

use std::time::Instant;

use kinglet::tokenizer::{encode, max_tokens};
use kinglet::ModelFile;
use kinglet_tools::import::llama2c;

#[path = "../tests/common/quadratic_bpe.rs"]
mod quadratic_bpe;

const RUNS: usize = 5;
/// Prefix sizes in bytes (0: the whole file), and whether the quadratic
/// encoder runs on them too.
const PREFIXES: [(usize, bool); 5] = [
    (4 << 10, true),
    (16 << 10, true),
    (128 << 10, false),
    (512 << 10, false),
    (0, false),
];

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn main() {
    let dir = std::env::var("KINGLET_DATA").unwrap_or_else(|_| "../shared/data".into());
    let read = |name: &str| {
        std::fs::read(format!("{dir}/{name}"))
            .unwrap_or_else(|e| panic!("{dir}/{name}: {e} (set KINGLET_DATA)"))
    };
    let model =
        llama2c::import(&read("stories260K.bin"), &read("tok512.bin")).expect("import stories260K");
    let mut bytes = Vec::new();
    model
        .write_klt(kinglet::Dtype::F32, &mut bytes)
        .expect("write stories260K");
    let model = ModelFile::new_checked(bytes).expect("open stories260K");
    let vocab = model.vocab();
    let text = String::from_utf8(read("tinyshakespeare.txt")).expect("UTF-8");
    let quadratic = std::env::var("KINGLET_BENCH_QUADRATIC").as_deref() != Ok("0");

    println!("tok512 on TinyShakespeare, median of {RUNS} runs (quadratic: fewer on 16 KB)");
    println!(
        "{:>10} {:>9} {:>12} {:>16} {:>8}",
        "bytes", "tokens", "heap MB/s", "quadratic MB/s", "ratio"
    );
    for (size, with_old) in PREFIXES {
        let end = if size == 0 { text.len() } else { size };
        let end = (end..=text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap();
        let prefix = &text[..end];
        let mut out = vec![0u32; max_tokens(prefix, true)];
        let old_runs = if end > 8 << 10 { 1 } else { RUNS };
        let (mut new_times, mut old_times) = (Vec::new(), Vec::new());
        let mut tokens = 0;
        for run in 0..RUNS {
            let started = Instant::now();
            tokens = encode(&vocab, prefix, true, &mut out).expect("encode");
            new_times.push(started.elapsed().as_secs_f64());
            if quadratic && with_old && run < old_runs {
                let started = Instant::now();
                let old = quadratic_bpe::quadratic_encode(&vocab, prefix, true).expect("encode");
                old_times.push(started.elapsed().as_secs_f64());
                assert_eq!(old, out[..tokens], "the encoders disagree");
            }
        }
        let mb = end as f64 / 1e6;
        let new_rate = mb / median(new_times);
        let (old_rate, ratio) = if old_times.is_empty() {
            ("—".to_string(), "—".to_string())
        } else {
            let old_rate = mb / median(old_times);
            (
                format!("{old_rate:.3}"),
                format!("{:.0}×", new_rate / old_rate),
            )
        };
        println!("{end:>10} {tokens:>9} {new_rate:>12.2} {old_rate:>16} {ratio:>8}");
    }
}
