//! `group_scores` and `group_weighted_sum` written out four lanes at a time, for wasm: LLVM keeps
//! neither four keys' accumulators nor three heads' in registers on its own there, and `dot`'s
//! horizontal sum, once per key, was much of a 64-element dot product's work. The lanes are wasm's
//! `v128` in the browser and an array elsewhere, so this same code, with its order of additions,
//! is tested natively against the plain definitions, bit for bit.

#[cfg(target_feature = "simd128")]
use core::arch::wasm32::*;

/// Four f32 lanes.
#[derive(Clone, Copy)]
struct F4(#[cfg(target_feature = "simd128")] v128, #[cfg(not(target_feature = "simd128"))] [f32; 4]);

#[cfg(target_feature = "simd128")]
impl F4 {
    #[inline(always)]
    fn splat(x: f32) -> Self {
        F4(f32x4_splat(x))
    }
    /// SAFETY: p points at four floats.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F4(unsafe { v128_load(p as *const v128) })
    }
    /// SAFETY: p points at four floats.
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { v128_store(p as *mut v128, self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        F4(f32x4_add(self.0, o.0))
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        F4(f32x4_mul(self.0, o.0))
    }
    /// [a0+a1, b0+b1, a2+a3, b2+b3].
    #[inline(always)]
    fn pair_sums(a: Self, b: Self) -> Self {
        F4(f32x4_add(i32x4_shuffle::<0, 4, 2, 6>(a.0, b.0), i32x4_shuffle::<1, 5, 3, 7>(a.0, b.0)))
    }
    /// [a0+a2, a1+a3, b0+b2, b1+b3].
    #[inline(always)]
    fn half_sums(a: Self, b: Self) -> Self {
        F4(f32x4_add(i32x4_shuffle::<0, 1, 4, 5>(a.0, b.0), i32x4_shuffle::<2, 3, 6, 7>(a.0, b.0)))
    }
}

#[cfg(not(target_feature = "simd128"))]
impl F4 {
    fn splat(x: f32) -> Self {
        F4([x; 4])
    }
    unsafe fn load(p: *const f32) -> Self {
        F4(unsafe { *(p as *const [f32; 4]) })
    }
    unsafe fn store(self, p: *mut f32) {
        unsafe { *(p as *mut [f32; 4]) = self.0 }
    }
    fn add(self, o: Self) -> Self {
        F4(std::array::from_fn(|l| self.0[l] + o.0[l]))
    }
    fn mul(self, o: Self) -> Self {
        F4(std::array::from_fn(|l| self.0[l] * o.0[l]))
    }
    fn pair_sums(a: Self, b: Self) -> Self {
        let (a, b) = (a.0, b.0);
        F4([a[0] + a[1], b[0] + b[1], a[2] + a[3], b[2] + b[3]])
    }
    fn half_sums(a: Self, b: Self) -> Self {
        let (a, b) = (a.0, b.0);
        F4([a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]])
    }
}

/// `group_scores` for the keys in whole fours (hd a multiple of 8); returns how many keys it did.
/// Each query chunk is loaded once for four keys, and their sums are reduced together by
/// transposing them. Every score adds up exactly as `dot` adds it, so the bits are `dot`'s.
pub fn scores_by_four(queries: &[f32], keys: &[f32], hd: usize, scale: f32, rows: &mut [f32]) -> usize {
    let n = rows.len() / (queries.len() / hd);
    assert!(hd.is_multiple_of(8) && queries.len().is_multiple_of(hd) && keys.len() >= n * hd);
    let fours = n / 4;
    for b in 0..fours {
        let k = keys[b * 4 * hd..(b + 1) * 4 * hd].as_ptr();
        for (r, q) in queries.chunks_exact(hd).enumerate() {
            // acc[i] holds `dot`'s eight accumulators for key i, as lanes 0..4 and 4..8.
            let mut acc = [[F4::splat(0.0); 2]; 4];
            for c in (0..hd).step_by(8) {
                // SAFETY: c + 8 ≤ hd; q holds hd floats and k four rows of hd.
                unsafe {
                    let (q0, q1) = (F4::load(q.as_ptr().add(c)), F4::load(q.as_ptr().add(c + 4)));
                    for (i, a) in acc.iter_mut().enumerate() {
                        let kc = k.add(i * hd + c);
                        a[0] = a[0].add(q0.mul(F4::load(kc)));
                        a[1] = a[1].add(q1.mul(F4::load(kc.add(4))));
                    }
                }
            }
            // s_i = [acc0+acc4, acc1+acc5, acc2+acc6, acc3+acc7] of key i; `dot` = (s0+s1) + (s2+s3).
            let s = acc.map(|a| a[0].add(a[1]));
            let dots = F4::half_sums(F4::pair_sums(s[0], s[1]), F4::pair_sums(s[2], s[3]));
            let out = &mut rows[r * n + b * 4..r * n + b * 4 + 4];
            // SAFETY: out holds four floats.
            unsafe { dots.mul(F4::splat(scale)).store(out.as_mut_ptr()) };
        }
    }
    fours * 4
}

/// `group_weighted_sum` for hd a multiple of 8, up to three heads at a time, eight output
/// elements each: each chunk of a value row is loaded once for all of them. Every element adds
/// its terms in key order from 0, as `weighted_sum` does.
pub fn weighted_sum_by_eight(rows: &[f32], values: &[f32], hd: usize, out: &mut [f32]) {
    let group = out.len() / hd;
    let n = rows.len() / group;
    assert!(hd.is_multiple_of(8) && out.len().is_multiple_of(hd) && rows.len().is_multiple_of(group) && values.len() >= n * hd);
    let mut first = 0;
    while first < group {
        let heads = (group - first).min(3);
        let (rows, out) = (&rows[first * n..(first + heads) * n], &mut out[first * hd..(first + heads) * hd]);
        match heads {
            3 => heads_weighted_sum::<3>(rows, values, hd, out),
            2 => heads_weighted_sum::<2>(rows, values, hd, out),
            _ => heads_weighted_sum::<1>(rows, values, hd, out),
        }
        first += heads;
    }
}

#[inline(always)]
fn heads_weighted_sum<const H: usize>(rows: &[f32], values: &[f32], hd: usize, out: &mut [f32]) {
    let n = rows.len() / H;
    for c in (0..hd).step_by(8) {
        let mut acc = [[F4::splat(0.0); 2]; H];
        for j in 0..n {
            // SAFETY: j < n and c + 8 ≤ hd; values holds n rows of hd.
            let (v0, v1) = unsafe {
                let vc = values.as_ptr().add(j * hd + c);
                (F4::load(vc), F4::load(vc.add(4)))
            };
            for (h, a) in acc.iter_mut().enumerate() {
                let p = F4::splat(rows[h * n + j]);
                a[0] = a[0].add(p.mul(v0));
                a[1] = a[1].add(p.mul(v1));
            }
        }
        for (h, a) in acc.iter().enumerate() {
            // SAFETY: out holds H rows of hd, and c + 8 ≤ hd.
            unsafe {
                let oc = out.as_mut_ptr().add(h * hd + c);
                a[0].store(oc);
                a[1].store(oc.add(4));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{dot, weighted_sum};

    fn wave(len: usize, f: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * f).sin() * (1.0 + i as f32 * 1e-3)).collect()
    }

    #[test]
    fn scores_by_four_have_dots_bits_for_whole_fours_and_leave_the_rest() {
        for (heads, n) in [(1, 4), (3, 9), (2, 37), (3, 64)] {
            let hd = 64;
            let (queries, keys) = (wave(heads * hd, 0.7), wave(n * hd, 0.3));
            let mut rows = vec![f32::NAN; heads * n];
            let done = scores_by_four(&queries, &keys, hd, 0.125, &mut rows);
            assert_eq!(done, n / 4 * 4);
            for r in 0..heads {
                for j in 0..n {
                    let got = rows[r * n + j];
                    if j < done {
                        let want = dot(&queries[r * hd..(r + 1) * hd], &keys[j * hd..(j + 1) * hd]) * 0.125;
                        assert_eq!(got.to_bits(), want.to_bits(), "head {r} of {heads}, key {j} of {n}");
                    } else {
                        assert!(got.is_nan(), "key {j} is past the whole fours and must be left alone");
                    }
                }
            }
        }
    }

    #[test]
    fn weighted_sum_by_eight_has_weighted_sums_bits_for_any_number_of_heads() {
        for (heads, n, hd) in [(1, 1, 8), (3, 37, 64), (4, 5, 16), (9, 12, 64)] {
            let (rows, values) = (wave(heads * n, 0.4), wave(n * hd, 0.8));
            let mut out = vec![f32::NAN; heads * hd];
            weighted_sum_by_eight(&rows, &values, hd, &mut out);
            for r in 0..heads {
                let mut alone = vec![0.0; hd];
                weighted_sum(&rows[r * n..(r + 1) * n], &values, &mut alone);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out[r * hd..(r + 1) * hd]), bits(&alone), "head {r} of {heads}, n {n}, hd {hd}");
            }
        }
    }
}
