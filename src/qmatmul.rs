//! The quantized matrix product, x · Wᵀ with W in 8- or 4-bit blocks of 32 and x rounded to 8 bits
//! per block of 32 (GGML's Q8_0 × Q8_0 and Q4_0 × Q8_0 dot products).
//!
//! Why our own rather than candle's: candle picks a different kernel per platform (AVX, simd128,
//! scalar), each summing the per-block products in its own order, so the browser and the native
//! CLI drift apart in the last bits and greedy decoding picks different tokens within a few dozen
//! steps. Here the integer part of each block (32 int8 products) is exact on every platform, SIMD
//! or not, and the float part is one fixed sequence, `acc += sumᵢ · (d_w · d_x)` block by block.
//! So every platform computes the same bits, and the browser's tokens equal the CLI's.
//!
//! Layout: block scales are converted from f16 to f32 once at load (wasm has no f16 instructions),
//! and quants are kept apart from scales so a row is a plain contiguous byte run. Q4_0 nibbles keep
//! GGML's order: byte j holds element j (low nibble) and element j + 16 (high nibble), each stored
//! +8.

pub const BLOCK: usize = 32;

/// Activations rounded to 8 bits: per block of 32, d = max|x| / 127 and q = round(x / d).
#[derive(Default)]
pub struct QActivations {
    pub rows: usize,
    pub cols: usize,
    pub scales: Vec<f32>, // (rows, cols/32)
    pub quants: Vec<i8>,  // (rows, cols)
}

impl QActivations {
    /// Quantizes x (rows × cols), reusing this buffer's allocation.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) {
        debug_assert_eq!(x.len(), rows * cols);
        debug_assert_eq!(cols % BLOCK, 0);
        self.rows = rows;
        self.cols = cols;
        self.scales.resize(rows * cols / BLOCK, 0.0);
        self.quants.resize(rows * cols, 0);
        for ((xb, qb), d_out) in x.chunks_exact(BLOCK).zip(self.quants.chunks_exact_mut(BLOCK)).zip(self.scales.iter_mut()) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v * id).round() as i8;
            }
            *d_out = d;
        }
    }
}

/// The weight side: `rows` rows of `cols` values in blocks of 32.
pub enum QWeights {
    /// Quants (rows, cols) as int8.
    Q8_0 { scales: Vec<f32>, quants: Vec<i8> },
    /// Quants (rows, cols/2) as GGML nibble pairs.
    Q4_0 { scales: Vec<f32>, nibbles: Vec<u8> },
}

/// out (m × rows) = x (m × cols) · Wᵀ.
pub fn matmul(w: &QWeights, rows: usize, cols: usize, x: &QActivations, out: &mut [f32]) {
    assert_eq!(x.cols, cols, "matmul: activation width does not match the weights");
    let m = x.rows;
    let out = &mut out[..m * rows];
    let blocks = cols / BLOCK;
    // One weight row at a time against every activation row: the row is read from memory once per
    // call, which is what makes a prefill of many tokens cheaper per token than single steps.
    let row_job = |r: usize, dst: &mut dyn FnMut(usize, f32)| {
        for i in 0..m {
            let xs = &x.scales[i * blocks..(i + 1) * blocks];
            let xq = &x.quants[i * cols..(i + 1) * cols];
            let v = match w {
                QWeights::Q8_0 { scales, quants } => {
                    dot_q8(&scales[r * blocks..(r + 1) * blocks], &quants[r * cols..(r + 1) * cols], xs, xq)
                }
                QWeights::Q4_0 { scales, nibbles } => {
                    dot_q4(&scales[r * blocks..(r + 1) * blocks], &nibbles[r * cols / 2..(r + 1) * cols / 2], xs, xq)
                }
            };
            dst(i, v);
        }
    };
    run_rows(rows, m, out, row_job);
}

/// Spreads weight rows over threads natively; one thread in the browser (for now).
#[cfg(not(target_arch = "wasm32"))]
fn run_rows(rows: usize, m: usize, out: &mut [f32], job: impl Fn(usize, &mut dyn FnMut(usize, f32)) + Sync) {
    use rayon::prelude::*;
    const ROWS_PER_TASK: usize = 64;
    // Columns of `out` are weight rows; collect per task, then scatter (tasks own disjoint rows).
    let chunks: Vec<(usize, Vec<f32>)> = (0..rows.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|c| {
            let r0 = c * ROWS_PER_TASK;
            let r1 = (r0 + ROWS_PER_TASK).min(rows);
            let mut local = vec![0f32; (r1 - r0) * m];
            for r in r0..r1 {
                job(r, &mut |i, v| local[(r - r0) * m + i] = v);
            }
            (r0, local)
        })
        .collect();
    for (r0, local) in chunks {
        let n = local.len() / m.max(1);
        for k in 0..n {
            for i in 0..m {
                out[i * rows + r0 + k] = local[k * m + i];
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn run_rows(rows: usize, _m: usize, out: &mut [f32], job: impl Fn(usize, &mut dyn FnMut(usize, f32))) {
    for r in 0..rows {
        job(r, &mut |i, v| out[i * rows + r] = v);
    }
}

/// Σ_blocks (Σ_j w_j·x_j) · (d_w · d_x), blocks in order.
#[inline]
fn dot_q8(ws: &[f32], wq: &[i8], xs: &[f32], xq: &[i8]) -> f32 {
    let mut acc = 0f32;
    for (b, (dw, dx)) in ws.iter().zip(xs).enumerate() {
        let sum = dot_i8_32(&wq[b * BLOCK..(b + 1) * BLOCK], &xq[b * BLOCK..(b + 1) * BLOCK]);
        acc += sum as f32 * (dw * dx);
    }
    acc
}

#[inline]
fn dot_q4(ws: &[f32], wn: &[u8], xs: &[f32], xq: &[i8]) -> f32 {
    let mut acc = 0f32;
    for (b, (dw, dx)) in ws.iter().zip(xs).enumerate() {
        let sum = dot_nibbles_32(&wn[b * 16..(b + 1) * 16], &xq[b * BLOCK..(b + 1) * BLOCK]);
        acc += sum as f32 * (dw * dx);
    }
    acc
}

#[cfg(not(target_feature = "simd128"))]
#[inline]
fn dot_i8_32(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

#[cfg(not(target_feature = "simd128"))]
#[inline]
fn dot_nibbles_32(n: &[u8], x: &[i8]) -> i32 {
    let (lo, hi) = x.split_at(16);
    n.iter().zip(lo).zip(hi).map(|((&q, &l), &h)| ((q & 0x0F) as i32 - 8) * l as i32 + ((q >> 4) as i32 - 8) * h as i32).sum()
}

#[cfg(target_feature = "simd128")]
#[inline]
fn dot_i8_32(a: &[i8], b: &[i8]) -> i32 {
    use core::arch::wasm32::*;
    debug_assert!(a.len() >= 32 && b.len() >= 32);
    // SAFETY: both slices hold 32 bytes (one block); v128_load has no alignment requirement.
    unsafe {
        let a0 = v128_load(a.as_ptr() as *const v128);
        let a1 = v128_load(a.as_ptr().add(16) as *const v128);
        let b0 = v128_load(b.as_ptr() as *const v128);
        let b1 = v128_load(b.as_ptr().add(16) as *const v128);
        hsum(i32x4_add(dot16(a0, b0), dot16(a1, b1)))
    }
}

#[cfg(target_feature = "simd128")]
#[inline]
fn dot_nibbles_32(n: &[u8], x: &[i8]) -> i32 {
    use core::arch::wasm32::*;
    debug_assert!(n.len() >= 16 && x.len() >= 32);
    // SAFETY: n holds 16 bytes and x 32 (one block); unaligned loads are allowed.
    unsafe {
        let packed = v128_load(n.as_ptr() as *const v128);
        let lo = i8x16_sub(v128_and(packed, u8x16_splat(0x0F)), i8x16_splat(8));
        let hi = i8x16_sub(u8x16_shr(packed, 4), i8x16_splat(8));
        let x0 = v128_load(x.as_ptr() as *const v128);
        let x1 = v128_load(x.as_ptr().add(16) as *const v128);
        hsum(i32x4_add(dot16(lo, x0), dot16(hi, x1)))
    }
}

/// 16 int8 × int8 products summed into four int32 lanes (exact: |product| ≤ 2¹⁴).
#[cfg(target_feature = "simd128")]
#[inline]
fn dot16(a: core::arch::wasm32::v128, b: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    let lo = i32x4_dot_i16x8(i16x8_extend_low_i8x16(a), i16x8_extend_low_i8x16(b));
    let hi = i32x4_dot_i16x8(i16x8_extend_high_i8x16(a), i16x8_extend_high_i8x16(b));
    i32x4_add(lo, hi)
}

#[cfg(target_feature = "simd128")]
#[inline]
fn hsum(v: core::arch::wasm32::v128) -> i32 {
    use core::arch::wasm32::*;
    i32x4_extract_lane::<0>(v) + i32x4_extract_lane::<1>(v) + i32x4_extract_lane::<2>(v) + i32x4_extract_lane::<3>(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ8_0, GgmlType};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    /// Plain f64: Σ w·x̂ with both sides dequantized.
    fn scalar_reference(w: &[f32], xq: &QActivations, rows: usize, cols: usize) -> Vec<f64> {
        let x: Vec<f64> = xq.quants.iter().enumerate().map(|(j, &q)| q as f64 * xq.scales[j / BLOCK] as f64).collect();
        (0..rows).map(|r| (0..cols).map(|k| w[r * cols + k] as f64 * x[k]).sum()).collect()
    }

    fn blocks_of<T: GgmlType>(bytes: &[u8]) -> Vec<T> {
        let n = bytes.len() / std::mem::size_of::<T>();
        let mut blocks = vec![T::zeros(); n];
        // SAFETY: GGML blocks are repr(C) plain data; the regions have the same length.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), blocks.as_mut_ptr() as *mut u8, bytes.len()) };
        blocks
    }

    fn check(kind: crate::format::GgmlKind) {
        let (rows, cols) = (37, 128);
        let w = values(rows * cols, 7);
        let m = crate::weights::QMatrix::quantize(kind, rows, cols, &w);
        let wd = m.dequantize();
        let mut xq = QActivations::default();
        xq.quantize(&values(cols, 3), 1, cols);
        let mut ours = vec![0f32; rows];
        m.matmul_q(&xq, &mut ours);
        for (r, (a, b)) in ours.iter().zip(scalar_reference(&wd, &xq, rows, cols)).enumerate() {
            assert!((*a as f64 - b).abs() < 1e-4, "{kind:?} row {r}: {a} vs {b}");
        }
        // And against candle's own kernel on the GGML blocks (its activation scale is f16, so it
        // differs by that rounding only).
        let mut candle_out = vec![0f32; rows];
        let x = values(cols, 3);
        // Candle gets the very same blocks (our Q4_0 quantizer differs from candle's).
        let bytes = m.to_bytes();
        match kind {
            crate::format::GgmlKind::Q8_0 => {
                let blocks: Vec<BlockQ8_0> = blocks_of(&bytes);
                candle_core::quantized::k_quants::matmul((1, cols, rows), &x, &blocks, &mut candle_out).unwrap();
            }
            crate::format::GgmlKind::Q4_0 => {
                let blocks: Vec<BlockQ4_0> = blocks_of(&bytes);
                candle_core::quantized::k_quants::matmul((1, cols, rows), &x, &blocks, &mut candle_out).unwrap();
            }
        }
        for (r, (a, b)) in ours.iter().zip(&candle_out).enumerate() {
            assert!((a - b).abs() < 1e-2 * (1.0 + b.abs()), "{kind:?} row {r}: ours {a}, candle {b}");
        }
    }

    #[test]
    fn q8_0_matches_a_scalar_reference_and_candle() {
        check(crate::format::GgmlKind::Q8_0);
    }

    #[test]
    fn q4_0_matches_a_scalar_reference_and_candle() {
        check(crate::format::GgmlKind::Q4_0);
    }

    #[test]
    fn many_activation_rows_equal_one_row_at_a_time() {
        let (rows, cols, m) = (70, 64, 5);
        let qm = crate::weights::QMatrix::quantize(crate::format::GgmlKind::Q4_0, rows, cols, &values(rows * cols, 1));
        let x = values(m * cols, 9);
        let mut all = QActivations::default();
        all.quantize(&x, m, cols);
        let mut out = vec![0f32; m * rows];
        qm.matmul_q(&all, &mut out);
        for i in 0..m {
            let mut one = QActivations::default();
            one.quantize(&x[i * cols..(i + 1) * cols], 1, cols);
            let mut o = vec![0f32; rows];
            qm.matmul_q(&one, &mut o);
            assert_eq!(o, out[i * rows..(i + 1) * rows], "row {i}");
        }
    }
}
