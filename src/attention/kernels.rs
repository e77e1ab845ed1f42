//! `group_scores` written out four lanes at a time, for wasm. Written portably, that was slower in
//! wasm than one key at a time (LLVM did not keep the keys' accumulators in registers); written
//! out, it is faster. First it took four keys at a time, each query chunk loaded once for the
//! four but each key chunk once per head. Now it takes three heads × two keys, each key chunk
//! loaded once for the three heads: 5 loads per 6 four-lane multiply-adds instead of 10 per 8.
//! On one thread, q8_0 decoded 1.089× as fast at 992 tokens of context (a paired A/B, ahead in 5
//! of 6). The lanes are wasm's `v128` in the browser and an array elsewhere, so this same code,
//! with its order of additions, runs natively too and is tested against `dot`, bit for bit.
//!
//! `sum_columns`, the weighted sum's, is written out the same way, for the cache's bf16: eight
//! values at a time are widened in registers, the even ones by a shift and the odd ones by a
//! mask, and the even and odd columns are summed apart, then put back in order once at the end.

#[cfg(target_feature = "simd128")]
use core::arch::wasm32::*;
use half::bf16;

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
    /// Four bf16 widened to f32: each zero-extended as it is loaded, then moved to the high half.
    /// SAFETY: p points at four bf16.
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> Self {
        F4(i32x4_shl(unsafe { u32x4_load_extend_u16x4(p as *const u16) }, 16))
    }
    /// Eight bf16 widened to f32, as [the even ones, the odd ones]: a lane holds an even one in
    /// its low half and the next odd one in its high half, so a shift and a mask widen them (a
    /// shuffle that interleaves with zeros instead made `sum_columns` take twice as long in a
    /// Chromium profile).
    /// SAFETY: p points at eight bf16.
    #[inline(always)]
    unsafe fn load_bf16_split(p: *const bf16) -> [Self; 2] {
        let h = unsafe { v128_load(p as *const v128) };
        [F4(i32x4_shl(h, 16)), F4(v128_and(h, u32x4_splat(0xFFFF_0000)))]
    }
    /// [e0, o0, e1, o1] and [e2, o2, e3, o3]: the even and odd columns in order again.
    #[inline(always)]
    fn interleave(e: Self, o: Self) -> [Self; 2] {
        [F4(i32x4_shuffle::<0, 4, 1, 5>(e.0, o.0)), F4(i32x4_shuffle::<2, 6, 3, 7>(e.0, o.0))]
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
    // The wasm lanes' operations, on 32-bit words of the same bytes (little-endian, as wasm's).
    unsafe fn load_bf16(p: *const bf16) -> Self {
        F4(std::array::from_fn(|l| f32::from_bits(((unsafe { *p.add(l) }).to_bits() as u32) << 16)))
    }
    unsafe fn load_bf16_split(p: *const bf16) -> [Self; 2] {
        let words: [u32; 4] = std::array::from_fn(|l| unsafe { (*p.add(2 * l)).to_bits() as u32 | ((*p.add(2 * l + 1)).to_bits() as u32) << 16 });
        [F4(words.map(|w| f32::from_bits(w << 16))), F4(words.map(|w| f32::from_bits(w & 0xFFFF_0000)))]
    }
    fn interleave(e: Self, o: Self) -> [Self; 2] {
        let (e, o) = (e.0, o.0);
        [F4([e[0], o[0], e[1], o[1]]), F4([e[2], o[2], e[3], o[3]])]
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
/// Up to three heads at a time, two keys at a time: each key chunk is loaded once for the heads
/// and each query chunk once for the two keys. `dot`'s eight accumulators are summed as two runs
/// of four lanes, lanes 0..4 over the whole row and then lanes 4..8, so that three heads × two
/// keys fit in registers. Each score adds up exactly as `dot` adds it, so the bits are `dot`'s.
pub fn scores_by_four(queries: &[f32], keys: &[bf16], hd: usize, scale: f32, rows: &mut [f32]) -> usize {
    let heads = queries.len() / hd;
    let n = rows.len() / heads;
    assert!(hd.is_multiple_of(8) && queries.len().is_multiple_of(hd) && keys.len() >= n * hd);
    let mut h = 0;
    while h < heads {
        let (q, r) = (&queries[h * hd..], &mut rows[h * n..]);
        h += match heads - h {
            1 => heads_by_four::<1>(q, keys, hd, scale, n, r),
            2 => heads_by_four::<2>(q, keys, hd, scale, n, r),
            _ => heads_by_four::<3>(q, keys, hd, scale, n, r),
        };
    }
    n / 4 * 4
}

/// The scores of H heads (the first H of `queries`, rows of n in `rows`) for the keys in whole
/// fours. Returns H.
#[inline(always)]
fn heads_by_four<const H: usize>(queries: &[f32], keys: &[bf16], hd: usize, scale: f32, n: usize, rows: &mut [f32]) -> usize {
    assert!(queries.len() >= H * hd && rows.len() >= H * n);
    let q = queries.as_ptr();
    for b in 0..n / 4 {
        // pairs[p][h] = [s0+s1 of key 2p, of key 2p+1, s2+s3 of key 2p, of key 2p+1], where
        // s_l = acc_l + acc_(l+4) of `dot`'s accumulators.
        let mut pairs = [[F4::splat(0.0); H]; 2];
        for (p, pair) in pairs.iter_mut().enumerate() {
            let k = keys[(b * 4 + p * 2) * hd..(b * 4 + p * 2 + 2) * hd].as_ptr();
            let lanes = |first: usize| {
                // acc[h][i]: four of `dot`'s accumulators for head h and key i.
                let mut acc = [[F4::splat(0.0); 2]; H];
                for c in (first..hd).step_by(8) {
                    // SAFETY: c + 4 ≤ hd; k holds two rows of hd and q H rows of hd.
                    unsafe {
                        let (k0, k1) = (F4::load_bf16(k.add(c)), F4::load_bf16(k.add(hd + c)));
                        for (h, a) in acc.iter_mut().enumerate() {
                            let qc = F4::load(q.add(h * hd + c));
                            a[0] = a[0].add(qc.mul(k0));
                            a[1] = a[1].add(qc.mul(k1));
                        }
                    }
                }
                acc
            };
            let (low, high) = (lanes(0), lanes(4));
            for h in 0..H {
                pair[h] = F4::pair_sums(low[h][0].add(high[h][0]), low[h][1].add(high[h][1]));
            }
        }
        for h in 0..H {
            // `dot` = (s0+s1) + (s2+s3), for the four keys in order.
            let dots = F4::half_sums(pairs[0][h], pairs[1][h]);
            let out = &mut rows[h * n + b * 4..h * n + b * 4 + 4];
            // SAFETY: out holds four floats.
            unsafe { dots.mul(F4::splat(scale)).store(out.as_mut_ptr()) };
        }
    }
    H
}

/// `group_weighted_sum` for one head (`p`, its weights; `out`, its output row of hd), 4·C
/// columns at a time from column `first` (C even): each chunk's C accumulators, even columns and
/// odd ones, summed over every key in registers, each element's terms added in key order from 0.
/// Returns the first column after them.
#[inline(always)]
pub fn sum_columns<const C: usize>(p: &[f32], values: &[bf16], out: &mut [f32], first: usize) -> usize {
    let (hd, width) = (out.len(), 4 * C);
    let chunks = (hd - first) / width;
    assert!(C.is_multiple_of(2) && values.len() >= p.len() * hd);
    for (ch, oc) in out[first..].chunks_exact_mut(width).enumerate() {
        let at = first + ch * width;
        let mut acc = [F4::splat(0.0); C];
        for (j, &pj) in p.iter().enumerate() {
            let pj = F4::splat(pj);
            // SAFETY: at + 4·C ≤ hd, and row j of hd values is in `values`.
            let v = unsafe { values.as_ptr().add(j * hd + at) };
            for e in 0..C / 2 {
                let [even, odd] = unsafe { F4::load_bf16_split(v.add(8 * e)) };
                acc[2 * e] = acc[2 * e].add(pj.mul(even));
                acc[2 * e + 1] = acc[2 * e + 1].add(pj.mul(odd));
            }
        }
        for e in 0..C / 2 {
            let [low, high] = F4::interleave(acc[2 * e], acc[2 * e + 1]);
            // SAFETY: oc holds 4·C floats.
            unsafe { (low.store(oc.as_mut_ptr().add(8 * e)), high.store(oc.as_mut_ptr().add(8 * e + 4))) };
        }
    }
    first + chunks * width
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::dot;

    fn wave(len: usize, f: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * f).sin() * (1.0 + i as f32 * 1e-3)).collect()
    }

    /// The native lanes do what the wasm lanes do (a shift, a mask, on the same words), so this
    /// checks those operations; the browser tests check the wasm build against the CLI's bits.
    #[cfg(not(target_feature = "simd128"))]
    #[test]
    fn the_lanes_widen_every_bf16_as_the_half_crate_does_and_in_order() {
        let all: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).filter(|b| !b.is_nan()).collect();
        for eight in all.chunks_exact(8) {
            // SAFETY: eight holds eight bf16.
            let ([even, odd], four) = unsafe { (F4::load_bf16_split(eight.as_ptr()), F4::load_bf16(eight.as_ptr())) };
            for l in 0..4 {
                assert_eq!(even.0[l].to_bits(), eight[2 * l].to_f32().to_bits(), "{:#06x}", eight[2 * l].to_bits());
                assert_eq!(odd.0[l].to_bits(), eight[2 * l + 1].to_f32().to_bits(), "{:#06x}", eight[2 * l + 1].to_bits());
                assert_eq!(four.0[l].to_bits(), eight[l].to_f32().to_bits(), "{:#06x}", eight[l].to_bits());
            }
            let [low, high] = F4::interleave(even, odd);
            assert_eq!([low.0, high.0].concat(), eight.iter().map(|b| b.to_f32()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn scores_by_four_have_dots_bits_for_whole_fours_and_leave_the_rest() {
        for (heads, n) in [(1, 4), (3, 9), (2, 37), (3, 64), (4, 13), (5, 8), (9, 21)] {
            let hd = 64;
            let queries = wave(heads * hd, 0.7);
            let keys: Vec<bf16> = wave(n * hd, 0.3).into_iter().map(bf16::from_f32).collect();
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
