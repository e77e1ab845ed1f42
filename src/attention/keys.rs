//! One KV head's cached keys, rounded to 8 bits per block of 32 as Q8_0 weights are, so that a
//! query's scores are the quantized matrix product's own dot products (`qmatmul::grouped_rows`):
//!
//! ```text
//!   q · k_j  ≈  Σ_b (d_q,b · d_k,b) · Σ_{e in block b} q8_e · k8_e      (integers summed exactly)
//! ```
//!
//! Why: at long context the scores were the largest part of attention, and in bf16 each four-lane
//! multiply-add of them took a multiply and an add of its own. In 8 bits, relaxed SIMD multiplies
//! and adds sixteen pairs in one instruction, and a key takes 64 + 8 bytes instead of 128. The
//! query is rounded the same way. Values stay bf16: each weighted-sum term needs its float value
//! widened anyway.
//!
//! Layout: positions in groups of four, each group's blocks interleaved (block b of its four
//! positions side by side), as a weight matrix's rows are kept, the scales beside as f32. A head
//! width that is not a whole number of blocks is padded with zeros, which change neither a
//! block's scale nor its sum. Groups are added as their first position is written, so nothing is
//! zeroed ahead of use (see `KvCache`).

use crate::qmatmul::{self, BLOCK, QActivations, ROWS};
use std::ops::Range;

pub struct Keys {
    /// Blocks per key: the head width in whole blocks.
    blocks: usize,
    quants: Vec<[[i8; BLOCK]; ROWS]>, // (groups, blocks): block b of the group's four positions
    scales: Vec<[f32; ROWS]>,         // (groups, blocks)
}

impl Keys {
    /// Room for `max_context` keys of width hd, reserved, not yet written.
    pub fn with_room(hd: usize, max_context: usize) -> Self {
        let (blocks, groups) = (blocks(hd), max_context.div_ceil(ROWS));
        Keys { blocks, quants: Vec::with_capacity(groups * blocks), scales: Vec::with_capacity(groups * blocks) }
    }

    /// Bytes `with_room` reserves: whole groups of four positions.
    pub fn bytes(hd: usize, max_context: usize) -> u64 {
        (max_context.div_ceil(ROWS) * blocks(hd) * ROWS * (BLOCK + size_of::<f32>())) as u64
    }

    /// Stores k (hd) at position p: over an earlier sequence's position, or as the next one.
    pub fn write(&mut self, p: usize, k: &[f32]) {
        let (at, lane) = (p / ROWS * self.blocks, p % ROWS);
        assert!(at <= self.quants.len(), "positions are written in order");
        if at == self.quants.len() {
            assert_eq!(lane, 0, "positions are written in order");
            self.quants.resize(at + self.blocks, [[0; BLOCK]; ROWS]);
            self.scales.resize(at + self.blocks, [0.0; ROWS]);
        }
        for (b, part) in k.chunks(BLOCK).enumerate() {
            let mut x = [0f32; BLOCK];
            x[..part.len()].copy_from_slice(part);
            let mut q = [0i8; BLOCK];
            self.scales[at + b][lane] = qmatmul::quantize_block(&x, &mut q);
            let mut bytes = q.map(|v| v as u8);
            qmatmul::to_kernel_order(&mut bytes);
            self.quants[at + b][lane] = bytes.map(|v| v as i8);
        }
    }

    /// `rows[r][j] = scale · (q_r · k_j)` for keys j < n and the query heads `heads` of `queries`
    /// (`quantize_queries`), rows side by side (heads × n).
    pub fn scores(&self, queries: &QActivations, heads: Range<usize>, n: usize, scale: f32, rows: &mut [f32]) {
        qmatmul::grouped_rows(&self.quants, &self.scales, n, queries, heads, scale, rows);
    }
}

fn blocks(hd: usize) -> usize {
    hd.div_ceil(BLOCK)
}

/// Query heads (heads × hd, side by side) rounded to 8 bits per block of 32 as the keys are, each
/// head padded with zeros to whole blocks in `padded` when hd is not a whole number of them.
pub fn quantize_queries(q: &[f32], hd: usize, padded: &mut Vec<f32>, out: &mut QActivations) {
    let (heads, width) = (q.len() / hd, blocks(hd) * BLOCK);
    if width == hd {
        return out.quantize(q, heads, hd);
    }
    padded.clear();
    for head in q.chunks_exact(hd) {
        padded.extend_from_slice(head);
        padded.resize(padded.len() + width - hd, 0.0);
    }
    out.quantize(padded, heads, width);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(len: usize, f: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * f).sin() * (1.0 + i as f32 * 1e-2)).collect()
    }

    /// A block rounded as the cache rounds it: (d, q).
    fn rounded(x: &[f32]) -> (f32, [i8; BLOCK]) {
        let mut block = [0f32; BLOCK];
        block[..x.len()].copy_from_slice(x);
        let mut q = [0i8; BLOCK];
        (qmatmul::quantize_block(&block, &mut q), q)
    }

    /// The plain definition: Σ_b (Σ_e q8·k8 as an integer) as f32 · (d_k · d_q), block by block
    /// from 0, then times the scale.
    fn plain_score(q: &[f32], k: &[f32], scale: f32) -> f32 {
        let sum = q.chunks(BLOCK).zip(k.chunks(BLOCK)).fold(0f32, |acc, (qb, kb)| {
            let ((dq, q8), (dk, k8)) = (rounded(qb), rounded(kb));
            let ints: i32 = q8.iter().zip(k8).map(|(&a, b)| a as i32 * b as i32).sum();
            acc + ints as f32 * (dk * dq)
        });
        sum * scale
    }

    #[test]
    fn every_score_is_the_plain_8_bit_dot_product_for_any_head_width_and_length() {
        for (hd, heads, n) in [(64, 3, 1), (64, 3, 9), (64, 2, 37), (16, 2, 5), (80, 1, 12), (32, 4, 4)] {
            let queries = wave(heads * hd, 0.7);
            let keys: Vec<Vec<f32>> = (0..n).map(|j| wave(hd, 0.3 + j as f32 * 0.01)).collect();
            let mut cache = Keys::with_room(hd, n);
            for (p, k) in keys.iter().enumerate() {
                cache.write(p, k);
            }
            let (mut padded, mut xq) = (Vec::new(), QActivations::default());
            quantize_queries(&queries, hd, &mut padded, &mut xq);
            for first in 0..heads {
                let mut rows = vec![f32::NAN; (heads - first) * n];
                cache.scores(&xq, first..heads, n, 0.125, &mut rows);
                for (r, row) in rows.chunks_exact(n).enumerate() {
                    let h = first + r;
                    for (j, &got) in row.iter().enumerate() {
                        let want = plain_score(&queries[h * hd..(h + 1) * hd], &keys[j], 0.125);
                        assert_eq!(got.to_bits(), want.to_bits(), "hd {hd}, head {h}, key {j} of {n}: {got} against {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_position_written_again_replaces_the_earlier_sequences_key() {
        let hd = 64;
        let mut cache = Keys::with_room(hd, 8);
        for p in 0..6 {
            cache.write(p, &wave(hd, 0.1 * (p + 1) as f32));
        }
        let (first, second) = (wave(hd, 0.9), wave(hd, 0.2));
        cache.write(0, &first);
        cache.write(1, &second);
        let q = wave(hd, 0.5);
        let (mut padded, mut xq) = (Vec::new(), QActivations::default());
        quantize_queries(&q, hd, &mut padded, &mut xq);
        let mut rows = [0f32; 2];
        cache.scores(&xq, 0..1, 2, 1.0, &mut rows);
        assert_eq!(rows, [plain_score(&q, &first, 1.0), plain_score(&q, &second, 1.0)]);
    }
}
