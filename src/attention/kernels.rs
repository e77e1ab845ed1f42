//! `group_scores` written out four lanes at a time, for wasm: four keys at a time, each query chunk
//! loaded once for the four. Written portably, that was slower in wasm than one key at a time
//! (LLVM did not keep the four keys' accumulators in registers); written out, it is faster. The
//! lanes are wasm's `v128` in the browser and an array elsewhere, so this same code, with its
//! order of additions, runs natively too (as fast there as the plain loop: decode after 992
//! tokens 45–48 against 44–47 tokens/s, prefill 175–182 against 180–184) and is tested against
//! `dot`, bit for bit.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::dot;

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
}
