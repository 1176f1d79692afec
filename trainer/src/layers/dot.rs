//! Dot product with eight independent partial sums, so the compiler can keep
//! them in vector registers (a single running sum forces scalar code, since
//! float addition may not be reordered). The order is fixed, so the result
//! is still deterministic.

/// `Σ a[i]·b[i]` over the common length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    #[test]
    fn equals_the_plain_sum_on_awkward_lengths() {
        for n in [0, 1, 7, 8, 9, 16, 33] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(
                (super::dot(&a, &b) - plain).abs() <= 1e-4 * (1.0 + plain.abs()),
                "n = {n}"
            );
        }
    }
}
