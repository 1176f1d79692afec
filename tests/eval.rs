//! `kinglet eval`'s window protocol, checked against a direct computation.

mod common;

use common::{random_model, tiny_config, Rng};
use kinglet::{session_floats, ModelFile, Session};
use kinglet_tools::cmd::eval::score;

#[test]
fn score_is_the_mean_loss_of_whole_context_windows() {
    let config = tiny_config(); // context 32, vocabulary of 6 characters
    let file = random_model(&config, 11, &[]);
    let model = ModelFile::new_checked(&file[..]).unwrap();
    let mut rng = Rng(3);
    let tokens: Vec<u32> = (0..100).map(|_| (rng.next_u64() % 6) as u32).collect();

    // 99 predictions fit three windows of 32; the last 3 tokens are not scored.
    let s = score(&model, &tokens).unwrap();
    assert_eq!((s.windows, s.tokens), (3, 96));

    let mut sum = 0.0f64;
    for k in 0..3 {
        let mut buffer = vec![0.0f32; session_floats(&config, 32)];
        let mut session = Session::new(&model, &mut buffer, 32).unwrap();
        for t in k * 32..(k + 1) * 32 {
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
    assert!(
        (s.loss - sum / 96.0).abs() < 1e-9,
        "{} vs {}",
        s.loss,
        sum / 96.0
    );

    // Too few tokens for one window: nothing scored, no panic.
    assert_eq!(score(&model, &tokens[..32]).unwrap().windows, 0);
}
