//! What attention capture records: `blocks.{L}.attn.hook_pattern`, the softmax probabilities
//! of every layer and head, laid out [layer][head][query][key] (TransformerLens' names, so a
//! learner can move between the tools).
//!
//! Stored per (layer, head) as the lower triangle only (row p has p + 1 entries; the causal mask
//! makes the rest zero), in f16: a probability needs three significant digits on screen, and
//! half the bytes doubles how much text fits. Memory is bounded by `window`: rows for query
//! positions ≥ window are not kept (heatmaps then show the first `window` tokens), so the store
//! never exceeds `layers · heads · window·(window+1)/2 · 2` bytes, e.g. 30·9·512·513/2·2 ≈ 71 MB,
//! plus the rotated queries of those positions (f32, 30·512·576·4 ≈ 35 MB) for the step view.
//! With capture off the model holds no `AttentionCapture` at all and pays nothing.

use half::f16;

pub struct AttentionCapture {
    n_layers: usize,
    n_heads: usize,
    window: usize,
    /// [layer * n_heads + head] → triangular rows, row p at offset p(p+1)/2.
    rows: Vec<Vec<f16>>,
    /// [layer] → the rotated query rows (h·hd f32 each) of positions < window, so a step view can
    /// recompute a row's dot products with the same function and inputs the model used.
    queries: Vec<Vec<f32>>,
}

/// The TransformerLens name of a layer's captured pattern.
pub fn hook_name(layer: usize) -> String {
    format!("blocks.{layer}.attn.hook_pattern")
}

impl AttentionCapture {
    pub fn new(n_layers: usize, n_heads: usize, window: usize) -> Self {
        AttentionCapture {
            n_layers,
            n_heads,
            window,
            rows: (0..n_layers * n_heads).map(|_| Vec::new()).collect(),
            queries: (0..n_layers).map(|_| Vec::new()).collect(),
        }
    }

    /// The most bytes this store can hold: the f16 patterns plus the f32 query rows.
    pub fn bound_bytes(n_layers: usize, n_heads: usize, head_dim: usize, window: usize) -> u64 {
        let tri = window as u64 * (window as u64 + 1) / 2;
        n_layers as u64 * n_heads as u64 * (tri * 2 + window as u64 * head_dim as u64 * 4)
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Forgets the sequence; keeps the allocations for the next one.
    pub fn clear(&mut self) {
        self.rows.iter_mut().for_each(Vec::clear);
        self.queries.iter_mut().for_each(Vec::clear);
    }

    /// Records the rotated query row (all heads) of position `query` in `layer`.
    pub fn record_query(&mut self, layer: usize, query: usize, q: &[f32]) {
        if query >= self.window {
            return;
        }
        let store = &mut self.queries[layer];
        debug_assert_eq!(store.len(), query * q.len());
        grow_within(store, q.len(), self.window * q.len());
        store.extend_from_slice(q);
    }

    /// The rotated query of one head at one position, if captured.
    pub fn query(&self, layer: usize, head: usize, query: usize, head_dim: usize) -> Option<&[f32]> {
        let width = self.n_heads * head_dim;
        self.queries[layer].get(query * width + head * head_dim..query * width + (head + 1) * head_dim)
    }

    /// Records the pattern row of query position `query` (its `query + 1` probabilities).
    /// Rows arrive in order: the model visits queries in increasing position within a layer.
    pub fn record(&mut self, layer: usize, head: usize, query: usize, probs: &[f32]) {
        if query >= self.window {
            return;
        }
        let store = &mut self.rows[layer * self.n_heads + head];
        debug_assert_eq!(store.len(), query * (query + 1) / 2, "capture rows must arrive in order");
        debug_assert_eq!(probs.len(), query + 1);
        grow_within(store, probs.len(), self.window * (self.window + 1) / 2);
        extend_f16(store, probs);
    }

    /// Captured query rows (= tokens covered) for this layer and head.
    pub fn len(&self, layer: usize, head: usize) -> usize {
        let n = self.rows[layer * self.n_heads + head].len();
        // Invert n = t(t+1)/2.
        let mut t = ((2.0 * n as f64).sqrt()) as usize;
        while t * (t + 1) / 2 > n {
            t -= 1;
        }
        while (t + 1) * (t + 2) / 2 <= n {
            t += 1;
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.rows.iter().all(Vec::is_empty)
    }

    /// The pattern as a full t × t row-major matrix, zeros above the diagonal.
    pub fn pattern(&self, layer: usize, head: usize) -> (usize, Vec<f32>) {
        assert!(layer < self.n_layers && head < self.n_heads, "layer/head checked by the caller");
        let t = self.len(layer, head);
        let store = &self.rows[layer * self.n_heads + head];
        let mut out = vec![0f32; t * t];
        for q in 0..t {
            let row = &store[q * (q + 1) / 2..q * (q + 1) / 2 + q + 1];
            for (o, p) in out[q * t..q * t + q + 1].iter_mut().zip(row) {
                *o = p.to_f32();
            }
        }
        (t, out)
    }

    /// The pattern max-pooled into size × size cells (or, when t < size, its entries repeated):
    /// the all-heads overview. Read from the stored triangle, without the full t × t matrix, and
    /// compared as f16 bit patterns, which for probabilities (non-negative) order as the values
    /// do: at 512 tokens, building the 270 full matrices first took ~160 ms of the worker's time,
    /// every overview. Writes size² values into `out`.
    pub fn thumbnail(&self, layer: usize, head: usize, size: usize, out: &mut [f32]) {
        let t = self.len(layer, head);
        let store = &self.rows[layer * self.n_heads + head];
        let cell = |o: usize| (o * t / size, ((o + 1) * t).div_ceil(size).max(o * t / size + 1).min(t));
        for oy in 0..size {
            let (y0, y1) = cell(oy);
            for ox in 0..size {
                let (x0, x1) = cell(ox);
                let mut most = 0u16; // +0.0: as f32::max over the cell starting from 0
                for y in y0.max(x0)..y1 {
                    let row = &store[y * (y + 1) / 2..y * (y + 1) / 2 + y + 1];
                    for p in &row[x0..x1.min(y + 1)] {
                        // Negative values (none) and NaN (none) count as 0, as f32::max(0, v) would.
                        let bits = p.to_bits();
                        if bits <= 0x7c00 {
                            most = most.max(bits);
                        }
                    }
                }
                out[oy * size + ox] = f16::from_bits(most).to_f32();
            }
        }
    }

    /// One row: how query `query` spread its attention over keys 0..=query.
    pub fn row(&self, layer: usize, head: usize, query: usize) -> Option<Vec<f32>> {
        let store = &self.rows[layer * self.n_heads + head];
        let start = query * (query + 1) / 2;
        store.get(start..start + query + 1).map(|r| r.iter().map(|p| p.to_f32()).collect())
    }
}

/// Makes room for `more` elements, doubling as `Vec` does but never past `bound` (the store's
/// size once the window is full). Plain doubling would leave each store up to twice its bound
/// allocated: for SmolLM2's 512-position window, 195 MiB instead of `bound_bytes`' 100 MiB, and
/// the last doubling (at position 512) 69 MiB of wasm memory at once. Growing on demand, not up
/// front, keeps a short run (most of the page's) from paying for the whole window.
/// Appends `values` rounded to f16, as `f16::from_f32` rounds them (to nearest, ties to even).
#[cfg(not(target_feature = "simd128"))]
fn extend_f16(store: &mut Vec<f16>, values: &[f32]) {
    store.extend(values.iter().map(|&v| f16::from_f32(v)));
}

/// The same, eight at a time: the half crate converts one value in about thirty scalar
/// operations, which in Chromium took 13–14% of `Transformer::forward`'s time, in decode steps
/// and in a long prefill alike (a profile, PERFORMANCE.md). Each lane
/// follows `tests::f16_bits` (the same operations; a test checks those against the half crate
/// natively, and the browser tests compare the page's patterns with the CLI's to the bit).
#[cfg(target_feature = "simd128")]
fn extend_f16(store: &mut Vec<f16>, values: &[f32]) {
    use core::arch::wasm32::*;
    /// Four f32 lanes as f16 bits in the low half of each, or None when one is out of f16's
    /// finite range or NaN (rare: the half crate takes those).
    #[inline]
    fn four(v: v128) -> Option<v128> {
        let sign = v128_and(v, u32x4_splat(0x8000_0000));
        let abs = v128_xor(v, sign);
        if v128_any_true(u32x4_ge(abs, u32x4_splat(0x4780_0000))) {
            return None;
        }
        let subnormal = i32x4_sub(f32x4_add(abs, f32x4_splat(0.5)), u32x4_splat(0x3F00_0000));
        let odd = v128_and(u32x4_shr(abs, 13), u32x4_splat(1));
        let normal = u32x4_shr(i32x4_add(i32x4_add(abs, u32x4_splat(0xC800_0FFF)), odd), 13);
        let h = v128_bitselect(subnormal, normal, u32x4_lt(abs, u32x4_splat(0x3880_0000)));
        Some(v128_or(h, u32x4_shr(sign, 16)))
    }
    let (eights, rest) = values.as_chunks::<8>();
    for e in eights {
        // SAFETY: e holds 8 floats; unaligned loads are allowed.
        let (lo, hi) = unsafe { (v128_load(e.as_ptr() as *const v128), v128_load(e.as_ptr().add(4) as *const v128)) };
        match (four(lo), four(hi)) {
            (Some(lo), Some(hi)) => {
                let mut bits = [0u16; 8];
                // SAFETY: bits has room for 16 bytes.
                unsafe { v128_store(bits.as_mut_ptr() as *mut v128, u16x8_narrow_i32x4(lo, hi)) };
                store.extend(bits.map(f16::from_bits));
            }
            _ => store.extend(e.iter().map(|&v| f16::from_f32(v))),
        }
    }
    store.extend(rest.iter().map(|&v| f16::from_f32(v)));
}

fn grow_within<T>(store: &mut Vec<T>, more: usize, bound: usize) {
    let needed = store.len() + more;
    if needed > store.capacity() {
        let target = (2 * store.capacity()).clamp(needed, bound.max(needed));
        store.reserve_exact(target - store.len());
    }
}

/// Floats per head in `head_stats`.
pub const HEAD_STATS: usize = 5;

/// One head's pattern (t × t, row-major, rows sum to 1) summarised as the mean over the query
/// rows 1..t (row 0 can only attend to itself, so it says nothing about the head) of:
/// [entropy in nats, weight on the first token, on the previous token, on itself, on every key
/// whose token id equals the query's (itself included)]. `ids` are the sequence's token ids
/// (a query beyond them matches nothing). All zeros when t < 2.
pub fn head_stats(m: &[f32], t: usize, ids: &[u32]) -> [f32; HEAD_STATS] {
    if t < 2 {
        return [0.0; HEAD_STATS];
    }
    let mut acc = [0f64; HEAD_STATS];
    for i in 1..t {
        let row = &m[i * t..i * t + i + 1]; // keys 0..=i; the rest is masked
        let entropy: f64 = row.iter().filter(|&&p| p > 0.0).map(|&p| -(p as f64) * (p as f64).ln()).sum();
        let same: f64 = match ids.get(i) {
            Some(&query) => row.iter().zip(ids).filter(|&(_, &id)| id == query).map(|(&p, _)| p as f64).sum(),
            None => 0.0,
        };
        acc[0] += entropy;
        acc[1] += row[0] as f64;
        acc[2] += row[i - 1] as f64;
        acc[3] += row[i] as f64;
        acc[4] += same;
    }
    acc.map(|v| (v / (t - 1) as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_stats_of_a_previous_token_head_and_a_first_token_head() {
        // t = 3, tokens [7, 8, 7]. Row 0 is skipped; rows 1 and 2 are averaged.
        let ids = [7, 8, 7];
        let previous = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let [entropy, first, prev, itself, same] = head_stats(&previous, 3, &ids);
        assert_eq!((entropy, prev, itself, same), (0.0, 1.0, 0.0, 0.0));
        assert_eq!(first, 0.5, "row 1's previous token is the first token");
        let first_token = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let [_, first, _, _, same] = head_stats(&first_token, 3, &ids);
        assert_eq!(first, 1.0);
        assert_eq!(same, 0.5, "row 2 (token 7) puts all its weight on token 0, also a 7");
        let even = [1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.25, 0.25, 0.5];
        let [entropy, ..] = head_stats(&even, 3, &ids);
        let expected = (2.0f64.ln() + (2.0 * 0.25 * 4.0f64.ln() + 0.5 * 2.0f64.ln())) / 2.0;
        assert!((entropy as f64 - expected).abs() < 1e-6, "{entropy} vs {expected}");
        assert_eq!(head_stats(&[1.0], 1, &ids), [0.0; HEAD_STATS], "one token says nothing");
    }

    /// What each lane of the wasm `extend_f16` computes, for an f32 within f16's finite range
    /// (|x| < 65536; the wasm code hands the rest to the half crate). F. Giesen's method: a
    /// subnormal result is the f32 sum |x| + 0.5, whose rounding puts the 10 kept bits at the
    /// bottom, to nearest even; a normal one rebiases the exponent and adds half an f16 ulp less
    /// one, plus the kept mantissa's last bit, so that ties go to even.
    fn f16_bits(x: f32) -> Option<u16> {
        let (bits, sign) = (x.to_bits() & 0x7FFF_FFFF, x.to_bits() & 0x8000_0000);
        if bits >= 0x4780_0000 {
            return None;
        }
        let subnormal = (f32::from_bits(bits) + 0.5).to_bits().wrapping_sub(0x3F00_0000);
        let normal = bits.wrapping_add(0xC800_0FFF).wrapping_add((bits >> 13) & 1) >> 13;
        let h = if bits < 0x3880_0000 { subnormal } else { normal };
        Some((h | sign >> 16) as u16)
    }

    #[test]
    fn the_eight_lane_f16_rounding_is_the_half_crates_wherever_it_applies() {
        // Every 97th bit pattern of the range it takes, both signs, and every f32 near the f16
        // subnormal/normal boundary and the top (ties included).
        let sampled = (0..0x4780_0000u32).step_by(97);
        let edges = (0x3870_0000..0x3890_0000u32).chain(0x477F_0000..0x4780_0000);
        for bits in sampled.chain(edges) {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                assert_eq!(f16_bits(x), Some(f16::from_f32(x).to_bits()), "{x:e} ({:#x})", x.to_bits());
            }
        }
        for x in [65536.0, f32::INFINITY, f32::NAN, -1e9] {
            assert_eq!(f16_bits(x), None, "{x}: left to the half crate");
        }
    }

    #[test]
    fn rows_fill_a_lower_triangle_and_nothing_beyond_the_window() {
        let mut c = AttentionCapture::new(1, 1, 3);
        for q in 0..5 {
            let row = vec![1.0 / (q + 1) as f32; q + 1];
            c.record(0, 0, q, &row);
        }
        let (t, m) = c.pattern(0, 0);
        assert_eq!(t, 3);
        assert_eq!(m[0 * 3 + 1], 0.0, "above the diagonal is zero");
        assert!((m[2 * 3..3 * 3].iter().sum::<f32>() - 1.0).abs() < 1e-3);
        assert_eq!(AttentionCapture::bound_bytes(30, 9, 64, 512), 30 * 9 * (512 * 513 / 2 * 2 + 512 * 64 * 4));
    }

    /// The overview's definition: each cell is the largest entry of the full matrix within it.
    fn pooled(m: &[f32], t: usize, size: usize) -> Vec<f32> {
        let cell = |o: usize| (o * t / size, ((o + 1) * t).div_ceil(size).max(o * t / size + 1).min(t));
        let mut out = vec![0f32; size * size];
        for oy in 0..size {
            for ox in 0..size {
                let ((y0, y1), (x0, x1)) = (cell(oy), cell(ox));
                out[oy * size + ox] = (y0..y1).flat_map(|y| (x0..x1).map(move |x| (y, x))).fold(0f32, |v, (y, x)| v.max(m[y * t + x]));
            }
        }
        out
    }

    #[test]
    fn a_thumbnail_is_the_largest_probability_in_each_cell_of_the_pattern() {
        for (t, size) in [(1, 4), (3, 8), (7, 3), (24, 24), (50, 24), (61, 24), (100, 7)] {
            let mut c = AttentionCapture::new(1, 1, 128);
            for q in 0..t {
                let raw: Vec<f32> = (0..=q).map(|k| ((q * 31 + k * 17) % 23) as f32 + 0.5).collect();
                let sum: f32 = raw.iter().sum();
                c.record(0, 0, q, &raw.iter().map(|r| r / sum).collect::<Vec<_>>());
            }
            let (t, m) = c.pattern(0, 0);
            let mut thumb = vec![f32::NAN; size * size];
            c.thumbnail(0, 0, size, &mut thumb);
            assert_eq!(thumb, pooled(&m, t, size), "{t} tokens into {size} × {size}");
        }
        let empty = AttentionCapture::new(1, 1, 8);
        let mut thumb = vec![f32::NAN; 4];
        empty.thumbnail(0, 0, 2, &mut thumb);
        assert_eq!(thumb, [0.0; 4], "nothing captured yet");
    }

    #[test]
    fn a_full_window_holds_no_more_than_its_bound() {
        // 100·101/2 = 5,050 pattern entries and 100 query rows: plain doubling would end at
        // 8,192 and 128 rows' worth.
        let (window, width) = (100, 2 * 4);
        let mut c = AttentionCapture::new(1, 2, window);
        for q in 0..window + 20 {
            c.record_query(0, q, &vec![0.5; width]);
            for h in 0..2 {
                c.record(0, h, q, &vec![1.0 / (q + 1) as f32; q + 1]);
            }
        }
        for store in &c.rows {
            assert_eq!(store.len(), window * (window + 1) / 2);
            assert!(store.capacity() <= store.len(), "pattern store: capacity {} for {} entries", store.capacity(), store.len());
        }
        assert!(c.queries[0].capacity() <= window * width, "query store: capacity {}", c.queries[0].capacity());
        let bytes: usize = c.rows.iter().map(|r| r.capacity() * 2).sum::<usize>() + c.queries[0].capacity() * 4;
        assert!(bytes as u64 <= AttentionCapture::bound_bytes(1, 2, width / 2, window), "{bytes} bytes held");
    }
}
