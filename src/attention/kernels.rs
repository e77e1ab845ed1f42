//! `sum_columns`, the weighted sum's inner loop, written out four lanes at a time for the cache's
//! bf16: eight values at a time are widened in registers, the even ones by a shift and the odd
//! ones by a mask, and the even and odd columns are summed apart, then put back in order once at
//! the end. The lanes are wasm's `v128` in the browser and an array elsewhere, so this same
//! code, with its order of additions, runs natively too and is tested against the plain sum, bit
//! for bit.

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
}

#[cfg(not(target_feature = "simd128"))]
impl F4 {
    fn splat(x: f32) -> Self {
        F4([x; 4])
    }
    // The wasm lanes' operations, on 32-bit words of the same bytes (little-endian, as wasm's).
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

    /// The native lanes do what the wasm lanes do (a shift, a mask, on the same words), so this
    /// checks those operations; the browser tests check the wasm build against the CLI's bits.
    #[cfg(not(target_feature = "simd128"))]
    #[test]
    fn the_lanes_widen_every_bf16_as_the_half_crate_does_and_in_order() {
        let all: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).filter(|b| !b.is_nan()).collect();
        for eight in all.chunks_exact(8) {
            // SAFETY: eight holds eight bf16.
            let [even, odd] = unsafe { F4::load_bf16_split(eight.as_ptr()) };
            for l in 0..4 {
                assert_eq!(even.0[l].to_bits(), eight[2 * l].to_f32().to_bits(), "{:#06x}", eight[2 * l].to_bits());
                assert_eq!(odd.0[l].to_bits(), eight[2 * l + 1].to_f32().to_bits(), "{:#06x}", eight[2 * l + 1].to_bits());
            }
            let [low, high] = F4::interleave(even, odd);
            assert_eq!([low.0, high.0].concat(), eight.iter().map(|b| b.to_f32()).collect::<Vec<_>>());
        }
    }
}
