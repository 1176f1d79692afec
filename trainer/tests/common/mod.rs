// Shared by the trainer's integration tests (included with `mod`).

/// A few thousand characters of varied text over a small alphabet.
#[allow(dead_code)]
pub fn tiny_text() -> String {
    let words = [
        "the", "king", "is", "dead", "long", "live", "queen", "and", "so", "we", "sing", "of",
        "wrens", "little", "birds", "flying", "north",
    ];
    let mut state = 12345u32;
    let mut text = String::new();
    for i in 0..900 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        text.push_str(words[(state >> 16) as usize % words.len()]);
        text.push(if i % 11 == 10 { '\n' } else { ' ' });
    }
    text
}
