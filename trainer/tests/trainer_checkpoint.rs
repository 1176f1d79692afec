//! Checkpoints: resuming is bit-identical, damaged files are refused, and
//! results do not depend on the thread count.

mod common;

use kinglet_trainer::checkpoint::Checkpoint;
use kinglet_trainer::data::Corpus;
use kinglet_trainer::trainer::Trainer;
use kinglet_trainer::TrainError;

fn fresh() -> (Trainer, Corpus) {
    let (model, train, corpus) = common::tiny_setup(16, 24);
    let t = Trainer::for_corpus(model, train, &corpus).expect("trainer");
    (t, corpus)
}

#[test]
fn resume_continues_bit_identically() {
    let (mut straight, corpus) = fresh();
    for _ in 0..8 {
        straight.step(&corpus.train).expect("step");
    }
    let (mut first_half, _) = fresh();
    for _ in 0..4 {
        first_half.step(&corpus.train).expect("step");
    }
    let bytes = first_half.checkpoint().to_bytes();
    drop(first_half);
    let loaded = Checkpoint::from_bytes(&bytes).expect("checkpoint reads back");
    let train = loaded.train;
    let mut resumed = Trainer::from_checkpoint(loaded, train).expect("resume");
    for _ in 0..4 {
        resumed.step(&corpus.train).expect("step");
    }
    assert_eq!(resumed.step, 8);
    let same_bits = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(
        same_bits(&straight.params, &resumed.params),
        "parameters differ"
    );
    assert!(
        same_bits(&straight.adamw.m, &resumed.adamw.m),
        "first moments differ"
    );
    assert!(
        same_bits(&straight.adamw.v, &resumed.adamw.v),
        "second moments differ"
    );
    assert_eq!(straight.data_rng, resumed.data_rng);
    assert_eq!(
        straight.checkpoint().to_bytes(),
        resumed.checkpoint().to_bytes()
    );
}

#[test]
fn damaged_checkpoints_are_refused() {
    let (t, _) = fresh();
    let bytes = t.checkpoint().to_bytes();
    for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
        let e = Checkpoint::from_bytes(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(e, TrainError::CheckpointDamaged(_)),
            "cut at {cut}: {e:?}"
        );
    }
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 1;
    let e = Checkpoint::from_bytes(&flipped).unwrap_err();
    assert!(matches!(e, TrainError::CheckpointDamaged(_)), "{e:?}");
    let mut other = bytes.clone();
    other[0] = b'X';
    let e = Checkpoint::from_bytes(&other).unwrap_err();
    assert!(matches!(e, TrainError::NotACheckpoint(_)), "{e:?}");
    assert_eq!(
        Checkpoint::from_bytes(&bytes).expect("intact").params,
        t.params
    );
}

#[test]
fn non_finite_values_are_refused_by_name() {
    let (t, _) = fresh();
    let slot = t.layout.slot("layers.0.wq").expect("wq").offset;
    // Which array of the checkpoint, the value put in it, the message.
    type Array = fn(&mut Checkpoint) -> &mut Vec<f32>;
    let cases: [(Array, f32, &str); 4] = [
        (
            |c| &mut c.params,
            f32::NAN,
            "a non-finite parameter (NaN) in layers.0.wq",
        ),
        (
            |c| &mut c.params,
            f32::INFINITY,
            "a non-finite parameter (inf) in layers.0.wq",
        ),
        (
            |c| &mut c.m,
            f32::NEG_INFINITY,
            "AdamW first moment (-inf) in layers.0.wq",
        ),
        (
            |c| &mut c.v,
            -1.0,
            "negative AdamW second moment (-1) in layers.0.wq",
        ),
    ];
    for (array, value, needle) in cases {
        let mut c = t.checkpoint();
        array(&mut c)[slot] = value;
        let e = Checkpoint::from_bytes(&c.to_bytes()).unwrap_err();
        assert!(matches!(e, TrainError::BadCheckpoint(_)), "{e:?}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn same_results_with_any_thread_count() {
    let run = |threads: usize| {
        let pool = kinglet_tools::threads::Threads::new(threads).expect("pool");
        pool.install(|| {
            let (mut t, corpus) = fresh();
            for _ in 0..3 {
                t.step(&corpus.train).expect("step");
            }
            t.params
        })
    };
    let one = run(1);
    // 3 and 5 threads: fewer and more threads than the batch has shards.
    for threads in [2, 3, 5] {
        let other = run(threads);
        assert!(
            one.iter()
                .zip(&other)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{threads} threads differ from 1"
        );
    }
}

#[test]
fn training_lowers_the_loss() {
    let (model, mut train, corpus) = common::tiny_setup(16, 24);
    train.steps = 60;
    train.lr = 1e-2;
    let mut t = Trainer::for_corpus(model, train, &corpus).expect("trainer");
    let first = t.step(&corpus.train).expect("step").loss;
    let mut last = first;
    for _ in 1..60 {
        last = t.step(&corpus.train).expect("step").loss;
    }
    // ln(vocab) ≈ 3.2 at the start; the word structure is easy to learn.
    assert!(first > 2.8, "{first}");
    assert!(last < first - 0.8, "loss went from {first} to {last}");
}
