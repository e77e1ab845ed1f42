//! Causal self-attention for one query row, in two named steps so they can be shown:
//! `scores` (scaled dot products, masked: keys after the query are never read) and
//! `pattern` (their softmax, the attention probabilities TransformerLens calls `hook_pattern`).
//!
//! ```text
//!   scores[j]  = q · k_j / √hd        for j ≤ p   (the causal mask: j > p does not exist yet)
//!   pattern    = softmax(scores)
//!   out        = Σ_j pattern[j] · v_j
//! ```
//! Grouped-query attention is not a copy: a query head reads the cache rows of its KV head in
//! place (`Config::kv_head_of`), so no K/V tensor is ever repeated.

/// Dot product written with eight independent accumulators, so the compiler can keep them in
/// SIMD lanes (float addition is not associative; one accumulator would force a serial chain).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

/// `scores[j] = q·k_j · scale` for the `n_keys` keys stored row by row in `keys` (n_keys × hd).
pub fn scores(q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) {
    let hd = q.len();
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
        *s = dot(q, k) * scale;
    }
}

/// In-place softmax: scores → attention pattern (a probability row).
pub fn pattern(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = libm::expf(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `out = Σ_j pattern[j] · v_j` over the value rows (n_keys × hd).
pub fn weighted_sum(pattern: &[f32], values: &[f32], out: &mut [f32]) {
    let hd = out.len();
    out.fill(0.0);
    for (&p, v) in pattern.iter().zip(values.chunks_exact(hd)) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += p * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum_for_any_length() {
        for n in [1, 7, 8, 9, 64, 70] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-5, "n={n}");
        }
    }

    #[test]
    fn pattern_is_a_probability_row_even_for_large_scores() {
        let mut row = vec![1000.0, 999.0, -1e30, 0.0];
        pattern(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[0] > row[1] && row[2] == 0.0);
    }
}
