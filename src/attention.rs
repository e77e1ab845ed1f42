//! Causal self-attention for one query row, in named steps so they can be shown: the scores
//! (`keys::Keys::scores`, scaled dot products, masked: keys after the query are never read),
//! `pattern` (their softmax, the attention probabilities TransformerLens calls `hook_pattern`)
//! and the weighted sum of the values.
//!
//! ```text
//!   scores[j]  = q · k_j / √hd        for j ≤ p   (the causal mask: j > p does not exist yet)
//!   pattern    = softmax(scores)
//!   out        = Σ_j pattern[j] · v_j
//! ```
//! Grouped-query attention is not a copy: the query heads that share a KV head (a *group*) read
//! its cache rows in place (`Config::kv_head_of`), and they read them together — each key and
//! value row is loaded once for the whole group, not once per query head. At long context the
//! cache, not the weights, is what a step streams through memory, so this divides that traffic
//! by the group size. Every head still sums in the same order as it would alone.
//!
//! The cache holds keys rounded to 8 bits (keys.rs says why) and values as bf16: f32's sign and
//! exponent and the top 7 bits of its mantissa. At 992 tokens of context the f32 cache was 46 MB
//! read per step (the weights are 91 or 143 MB); bf16 halved it, and 8-bit keys take it to 18 MB.
//! Widening a bf16 back is exact, the f32's bits being the bf16's with sixteen zero bits below: a
//! shift or a mask per four, where f16 needs a shift, a mask and a multiply. Three f16 caches,
//! widened per element, per four keys and per tile, were each no faster than f32
//! (PERFORMANCE.md). With bf16, one-thread q4_0 decode at 992 tokens of context was 1.104× as
//! fast (a paired A/B, ahead in 6 of 6).

pub mod keys;
mod kernels;

use half::bf16;

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
    let mut sum = lanes_sum(acc);
    for (&x, &y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

/// Eight lanes' sums added up, in the one order `dot` and `sum_by_lanes` share.
#[inline(always)]
fn lanes_sum(acc: [f32; 8]) -> f32 {
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// The largest of `init` and `values` (NaNs are passed over). By comparison, not `f32::max`:
/// wasm's `f32.max` treats NaN differently from Rust's, so `f32::max` becomes a libm `fmaxf`
/// call per element there, on the softmax and activation-rounding paths of every step.
#[inline]
pub fn max(init: f32, values: impl IntoIterator<Item = f32>) -> f32 {
    values.into_iter().fold(init, |m, x| if x > m { x } else { m })
}

/// For each query head r of a group, or of a run of its heads (any number; a thread may take
/// part of a group): `out[r] = Σ_j rows[r][j] · v_j`,
/// with the rows side by side (heads × n), the values row by row (n × hd, the cache's bf16) and
/// the outputs side by side (heads × hd).
///
/// Thirty-two output elements at a time (eight SIMD accumulators) are summed over all the keys in
/// registers, then stored once: summing key by key over the whole output row kept it in memory, a
/// load and a store per multiply-add. Eight at a time, each value row was read and each weight
/// broadcast four times as often. With 32, q8_0 decoded 1.013–1.072× as fast at 992 tokens of
/// context on one thread (four paired A/Bs, ahead in 33 pairs of 44); 64 (sixteen accumulators)
/// was no faster than 32. Each element still adds its terms in key order from 0, as
/// `weighted_sum` does.
pub fn group_weighted_sum(rows: &[f32], values: &[bf16], hd: usize, out: &mut [f32]) {
    let group = out.len() / hd;
    let n = rows.len() / group;
    for (o, p) in out.chunks_exact_mut(hd).zip(rows.chunks_exact(n.max(1))) {
        let done = kernels::sum_columns::<8>(p, values, o, 0);
        let done = kernels::sum_columns::<2>(p, values, o, done);
        for (d, od) in o[done..].iter_mut().enumerate() {
            *od = p.iter().zip(values.chunks_exact(hd)).fold(0.0, |acc, (&pj, v)| acc + pj * f32::from(v[done + d]));
        }
    }
}

/// In-place softmax: scores → attention pattern (a probability row).
pub fn pattern(row: &mut [f32]) {
    let max = max_by_lanes(row);
    // The exponentials in a loop of their own, which the compiler vectorizes.
    for x in row.iter_mut() {
        *x = exp_nonpositive(*x - max);
    }
    let sum = sum_by_lanes(row);
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `max(-∞, row)` kept in eight lanes, as `dot` keeps its sums: one running maximum is a chain of
/// compares, each waiting for the last. The maximum is the same whatever the order.
pub fn max_by_lanes(row: &[f32]) -> f32 {
    let (r8, rest) = row.as_chunks::<8>();
    let mut m = [f32::NEG_INFINITY; 8];
    for x in r8 {
        for l in 0..8 {
            m[l] = if x[l] > m[l] { x[l] } else { m[l] };
        }
    }
    max(max(f32::NEG_INFINITY, m), rest.iter().copied())
}

/// The sum of a row in eight lanes, in `dot`'s order.
pub fn sum_by_lanes(row: &[f32]) -> f32 {
    let (r8, rest) = row.as_chunks::<8>();
    let mut sum = LaneSum::default();
    sum.add(r8);
    sum.total(rest)
}

/// `sum_by_lanes` fed a piece at a time, for a row never held whole: element i goes to lane
/// i mod 8, so every piece but the last must be a whole number of eights.
#[derive(Default)]
pub struct LaneSum([f32; 8]);

impl LaneSum {
    #[inline]
    pub fn add(&mut self, eights: &[[f32; 8]]) {
        for x in eights {
            for l in 0..8 {
                self.0[l] += x[l];
            }
        }
    }

    /// The lanes added up, then the row's last `len mod 8` elements in order.
    #[inline]
    pub fn total(&self, rest: &[f32]) -> f32 {
        rest.iter().fold(lanes_sum(self.0), |s, &x| s + x)
    }
}

/// e^x for x ≤ 0 (a softmax's x − max), within 2 ulp, in plain f32 operations: libm's `expf` is a
/// call per element, which at 1,024 positions × 270 heads was a tenth of a step in wasm. Same
/// operations, same rounding, so every platform gets the same bits. Below −87, where e^x is under
/// f32's smallest normal number, it is 0.
#[inline]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two, so n · LN2_HI is exact for the n that occur (Cody–Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 · 2²³ rounds to the nearest integer (no `roundf` call).
    const ROUND: f32 = 12_582_912.0;
    let tiny = x < -87.0;
    let x = if tiny { -87.0 } else { x };
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO; // |r| ≤ ln2 / 2
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ from n's bits in the shifted sum (its low mantissa bits hold n, −126 ≤ n ≤ 0, offset
    // by ROUND's own): integer operations only. With `n as i32`, a saturating conversion, the
    // sampler's softmax over the vocabulary ran at half the speed natively.
    let two_n = f32::from_bits((shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23);
    let e = p * two_n;
    if tiny { 0.0 } else { e }
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
    fn exp_nonpositive_is_within_two_ulp_of_exp() {
        let mut x = 0f32;
        while x > -87.0 {
            let (ours, exact) = (exp_nonpositive(x), (x as f64).exp());
            assert!(((ours as f64 - exact) / exact).abs() < 2.5e-7, "e^{x}: {ours} vs {exact}");
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1000.0), 0.0);
    }

    /// 2ⁿ read from the rounding sum's bits is 2ⁿ built from `n as i32`, so every platform's
    /// exponential (and every softmax and silu built on it) has the bits it had with the
    /// conversion. Every 101st f32 from −0 to −∞ here; all of them were checked once
    /// (PERFORMANCE.md, 2026-11-28, morning).
    #[test]
    fn two_to_the_n_from_the_sums_bits_is_two_to_the_n_from_n_as_an_integer() {
        fn with_conversion(x: f32) -> f32 {
            let tiny = x < -87.0;
            let x = if tiny { -87.0 } else { x };
            let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
            let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
            let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
            if tiny { 0.0 } else { p * f32::from_bits(((n as i32 + 127) << 23) as u32) }
        }
        for bits in (0x8000_0000u32..=0xFF80_0000).step_by(101).chain([0x8000_0000, 0xC2AE_0000, 0xFF80_0000]) {
            let x = f32::from_bits(bits);
            assert_eq!(exp_nonpositive(x).to_bits(), with_conversion(x).to_bits(), "e^{x:e}");
        }
    }

    #[test]
    fn dot_matches_the_plain_sum_for_any_length() {
        for n in [1, 7, 8, 9, 64, 70] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-5, "n={n}");
        }
    }

    fn wave(len: usize, f: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * f).sin()).collect()
    }

    /// Rounded to bf16 as the cache stores them, and those bf16 widened back.
    fn as_stored(v: &[f32]) -> (Vec<bf16>, Vec<f32>) {
        let stored: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        let widened = stored.iter().map(|&x| x.to_f32()).collect();
        (stored, widened)
    }

    #[test]
    fn a_groups_weighted_sum_is_what_its_heads_compute_alone_on_the_widened_cache() {
        let (hd, n, group) = (8, 5, 3);
        let (rows, (values, values_f32)) = (wave(group * n, 0.7), as_stored(&wave(n * hd, 0.9)));
        let mut out = vec![0.0; group * hd];
        group_weighted_sum(&rows, &values, hd, &mut out);
        for r in 0..group {
            let mut alone = vec![0.0; hd];
            weighted_sum(&rows[r * n..(r + 1) * n], &values_f32, &mut alone);
            assert_eq!(alone, out[r * hd..(r + 1) * hd], "output of head {r}");
        }
    }

    #[test]
    fn a_group_sums_every_element_in_key_order_whatever_the_head_size() {
        // 44 and 80 take every path: 32 columns at a time, then 8, then one.
        for (hd, n) in [(8, 1), (64, 37), (12, 5), (44, 9), (80, 3)] {
            let (rows, (values, values_f32)) = (wave(2 * n, 0.4), as_stored(&wave(n * hd, 0.8)));
            let mut out = vec![f32::NAN; 2 * hd];
            group_weighted_sum(&rows, &values, hd, &mut out);
            let values = values_f32;
            for r in 0..2 {
                for d in 0..hd {
                    let in_order = (0..n).fold(0.0f32, |acc, j| acc + rows[r * n + j] * values[j * hd + d]);
                    assert_eq!(out[r * hd + d], in_order, "hd {hd}, head {r}, element {d}");
                }
            }
        }
    }

    #[test]
    fn a_rows_maximum_and_sum_by_lanes_are_the_plain_maximum_and_dots_sum() {
        for n in [1, 7, 8, 9, 64, 70, 993] {
            let mut row: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 10.0).collect();
            assert_eq!(max_by_lanes(&row), max(f32::NEG_INFINITY, row.iter().copied()), "n={n}");
            assert_eq!(sum_by_lanes(&row).to_bits(), dot(&row, &vec![1f32; n]).to_bits(), "n={n}");
            row[n / 2] = f32::NAN;
            assert_eq!(max_by_lanes(&row), max(f32::NEG_INFINITY, row.iter().copied()), "n={n}, a NaN is passed over");
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
