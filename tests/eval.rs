//! `kinglet eval`'s window protocol, checked against a direct computation.

mod common;

use common::{random_model, tiny_config, Rng};
use kinglet::{session_floats, ModelFile, Session};
use kinglet_tools::cmd::eval::{score, Windows};
use kinglet_tools::threads::Threads;

#[test]
fn score_is_the_mean_loss_of_whole_context_windows() {
    let config = tiny_config(); // context 32, vocabulary of 6 characters
    let file = random_model(&config, 11, &[]);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let mut rng = Rng::new(3);
    let tokens: Vec<u32> = (0..100).map(|_| (rng.next_u64() % 6) as u32).collect();
    let threads = Threads::new(0).unwrap();

    // 99 predictions: three windows of 32 and 3 left over, or nine of 11
    // and none left over.
    for (context, windows, left_over) in [(32, 3, 3), (11, 9, 0)] {
        let s = score(&model, &tokens, context, &threads).unwrap();
        assert_eq!(
            s.windows,
            Windows {
                context,
                count: windows,
                left_over
            }
        );
        let scored = windows * context;
        let mut sum = 0.0f64;
        for k in 0..windows {
            let mut buffer = vec![0.0f32; session_floats(&config, context as u32)];
            let mut session = Session::new(&model, &mut buffer, context as u32).unwrap();
            for t in k * context..(k + 1) * context {
                let logits: Vec<f64> = session
                    .forward(tokens[t])
                    .unwrap()
                    .iter()
                    .map(|&z| z as f64)
                    .collect();
                let log_z = logits.iter().map(|z| z.exp()).sum::<f64>().ln();
                sum += log_z - logits[tokens[t + 1] as usize];
            }
        }
        let want = sum / scored as f64;
        // `score` adds each position's exponentials in f32 (the kernels'
        // `exp_and_sum`, the same bits on every CPU), this loop in f64:
        // 5e-9 apart here, where scoring each position against its own
        // input instead moves the mean by 0.045.
        assert!((s.loss - want).abs() < 1e-7, "{} vs {want}", s.loss);
    }

    // Too few tokens for one window: nothing scored, no panic.
    let s = score(&model, &tokens[..32], 32, &threads).unwrap();
    assert_eq!((s.windows.count, s.windows.left_over), (0, 31));

    let mut report = Vec::new();
    score(&model, &tokens, 32, &threads)
        .unwrap()
        .write_report(&mut report)
        .unwrap();
    let report = String::from_utf8(report).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[0],
        "tokens: 96 scored in 3 windows of 32, 3 left over"
    );
    assert!(lines[1].starts_with("loss: ") && lines[2].starts_with("perplexity: "));
}

/// Fewer windows than threads: the windows run one after another, each
/// session's work split over every thread. The loss has the bits of one
/// thread's, and a lone window's report says "window".
#[test]
fn few_windows_share_the_threads_and_keep_the_bits() {
    let config = tiny_config();
    let file = random_model(&config, 5, &[]);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let mut rng = Rng::new(8);
    let tokens: Vec<u32> = (0..70).map(|_| (rng.next_u64() % 6) as u32).collect();
    let on = |threads: usize, tokens: &[u32]| {
        score(&model, tokens, 32, &Threads::new(threads).unwrap()).unwrap()
    };
    for n in [40, 70] {
        let one = on(1, &tokens[..n]);
        for threads in [2, 3] {
            let shared = on(threads, &tokens[..n]);
            assert_eq!(shared.windows, one.windows);
            assert_eq!(
                shared.loss.to_bits(),
                one.loss.to_bits(),
                "{n} tokens, {threads} threads"
            );
        }
    }
    let mut report = Vec::new();
    on(3, &tokens[..40]).write_report(&mut report).unwrap();
    let first = String::from_utf8(report).unwrap();
    assert!(
        first.starts_with("tokens: 32 scored in 1 window of 32, 7 left over"),
        "{first}"
    );
}
