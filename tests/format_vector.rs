//! The worked example of `docs/FORMAT.md`'s "Model semantics": a tiny .klt
//! file written in hex by an implementation independent of kinglet's writer,
//! and the logits that the section's steps give for a prompt, computed in
//! f64. The engine must open the bytes, verify them and reproduce the logits.

use kinglet::{session_floats, ModelFile, Session};

/// The lines of the fenced block of `docs/FORMAT.md` tagged `tag`.
fn block(doc: &str, tag: &str) -> Vec<String> {
    let start = format!("```{tag}");
    let mut lines = doc.lines().skip_while(|l| l.trim() != start).skip(1);
    let block: Vec<String> = lines
        .by_ref()
        .take_while(|l| l.trim() != "```")
        .map(str::to_string)
        .collect();
    assert!(!block.is_empty(), "docs/FORMAT.md has no {start} block");
    block
}

fn from_hex(line: &str) -> Vec<u8> {
    (0..line.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn the_worked_example_in_format_md_gives_its_logits() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    let bytes: Vec<u8> = block(&doc, "klt-hex")
        .iter()
        .flat_map(|l| from_hex(l.trim()))
        .collect();
    assert_eq!(bytes.len(), 1872);
    let file = ModelFile::new_checked(&bytes[..]).expect("the example opens");
    assert_eq!(file.verify(), Ok(()));
    let config = *file.config();
    assert_eq!((config.dim, config.n_heads, config.n_kv_heads), (4, 2, 1));

    // "position P (token T): L0 L1 L2"
    let expected: Vec<(u32, Vec<f32>)> = block(&doc, "klt-logits")
        .iter()
        .map(|l| {
            let (head, values) = l.split_once("):").expect("position line");
            let token = head.rsplit(' ').next().unwrap().parse().expect("token");
            let logits = values
                .split_whitespace()
                .map(|v| v.parse().expect("logit"))
                .collect();
            (token, logits)
        })
        .collect();
    assert_eq!(expected.len(), 3);

    let mut buffer = vec![0.0f32; session_floats(&config, config.max_seq_len)];
    let mut session = Session::new(&file, &mut buffer, config.max_seq_len).expect("session");
    for (pos, (token, want)) in expected.iter().enumerate() {
        let got = session.forward(*token).expect("forward");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "position {pos}: {got:?} vs {want:?}");
        }
    }
}
