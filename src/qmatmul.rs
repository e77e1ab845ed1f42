//! The quantized matrix product, x · Wᵀ with W in 8- or 4-bit blocks of 32 and x rounded to 8 bits
//! per block of 32 (GGML's Q8_0 × Q8_0 and Q4_0 × Q8_0 dot products).
//!
//! Why our own rather than candle's: candle picks a different kernel per platform (AVX, simd128,
//! scalar), each summing the per-block products in its own order, so the browser and the native
//! CLI drift apart in the last bits and greedy decoding picks different tokens within a few dozen
//! steps. Here the integer part of each block (32 int8 products) is exact on every platform, SIMD
//! or not, and the float part is one fixed sequence (per row, one accumulator adding
//! `block sum · (d_w · d_x)` block by block, as GGML's scalar reference does; see the dot products).
//! So every platform computes the same bits, and the browser's tokens equal the CLI's.
//!
//! Layout: quants are kept apart from scales, and both in the order the kernel reads them: rows
//! in groups of four (the rows it computes together), the group's blocks interleaved, block b of
//! each row side by side (`block_index`). Q4_0 nibbles keep GGML's order inside a block: byte j
//! holds element j (low nibble) and element j + 16 (high nibble), each stored +8. Block scales
//! stay the file's f16. Wasm has no f16 instructions, so a decode step converts a block's four
//! scales with one short run of integer SIMD (`scales_times`), exactly; a prefill converts a
//! group's scales once for all its prompt rows. Held as f32 instead, the scales took 13 MiB more
//! (a fifth of a q4_0 file's size), and decode and prefill were no faster (A/B in Chromium,
//! PERFORMANCE.md).
//!
//! Memory: a decode step reads every weight once, and the kernel waits on memory more than it
//! computes (in Chromium on the development VM, a 1536 × 576 Q8_0 product ran at 18 GMAC/s from
//! cache and 4–5 from memory). Interleaved, a product is one stream of memory read front to back,
//! which the CPU's own prefetcher follows; with the four rows of a group apart (four streams),
//! the kernel had to read a byte of each row a few cache lines ahead to start their fetch early
//! (wasm has no prefetch instruction), and still decoded more slowly: Q8_0 through the app's
//! worker on one thread 26.3 → 29.9 tokens/s (A/B in Chromium, docs/PERFORMANCE.md).

pub const BLOCK: usize = 32;

/// Activations rounded to 8 bits: per block of 32, d = max|x| / 127 and q = round(x / d).
#[derive(Default)]
pub struct QActivations {
    pub rows: usize,
    pub cols: usize,
    pub scales: Vec<f32>, // (rows, cols/32)
    pub quants: Vec<i8>,  // (rows, cols)
    /// Every row prepared once for the kernel, block by block (rows, cols/32): every row group of
    /// every product of this input uses it. Prepared again for each row group instead, a prefill
    /// of ~256 tokens ran up to a quarter slower (A/B in Chromium, docs/PERFORMANCE.md).
    widened: Vec<lanes::Widened>,
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
        for ((xb, qb), d_out) in x.as_chunks::<BLOCK>().0.iter().zip(self.quants.as_chunks_mut::<BLOCK>().0).zip(self.scales.iter_mut()) {
            *d_out = quantize_block(xb, qb);
        }
        self.widened.clear();
        self.widened.extend(self.quants.as_chunks::<BLOCK>().0.iter().map(lanes::Widened::of));
    }
}

/// One block: returns d = max|x| / 127 and writes q = round(x · (1/d)), halves away from zero.
#[cfg_attr(target_feature = "simd128", allow(dead_code))]
pub(crate) fn quantize_block_scalar(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> f32 {
    let d = abs_max(x.as_chunks::<4>().0) / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_half_away(v * id);
    }
    d
}

#[cfg(not(target_feature = "simd128"))]
pub(crate) use quantize_block_scalar as quantize_block;
#[cfg(target_feature = "simd128")]
pub(crate) use wasm_acc::quantize_block;

/// max |x| (NaN ignored), in four lanes so the compiler can keep them in one SIMD register (a
/// maximum is the same in any order).
#[inline]
fn abs_max(x: &[[f32; 4]]) -> f32 {
    let mut m = [0f32; 4];
    for c in x {
        for k in 0..4 {
            let a = c[k].abs();
            m[k] = if a > m[k] { a } else { m[k] };
        }
    }
    crate::attention::max(0.0, m)
}

/// `r.round() as i8` (halves away from zero, saturating; NaN → 0) without a call to `roundf` per
/// element, which wasm has no instruction for: r's integer part and the remainder are exact, and
/// the remainder says whether to round away.
#[inline]
fn round_half_away(r: f32) -> i8 {
    let r = r.clamp(-1e6, 1e6);
    let t = r as i32;
    let rest = r - t as f32;
    (t + (rest >= 0.5) as i32 - (rest <= -0.5) as i32).clamp(-128, 127) as i8
}

/// The weight side, borrowed from wherever the matrix lives: `rows` rows of `cols` values in
/// blocks of 32.
#[derive(Clone, Copy)]
pub enum QWeights<'a> {
    /// Quants (rows · cols) as int8, 32 a block; scales (rows · cols/32) as little-endian f16; both
    /// in blocks in the order of `block_index`.
    Q8_0 { scales: &'a [[u8; 2]], quants: &'a [i8] },
    /// Quants (rows · cols/2) as GGML nibble pairs, 16 bytes a block; scales as for Q8_0.
    Q4_0 { scales: &'a [[u8; 2]], nibbles: &'a [u8] },
}

/// An f16 (little-endian bytes) as f32, exactly, for finite values (the loader refuses others):
/// the magnitude's bits shifted into an f32's places scale it by 2⁻¹¹², normal or subnormal
/// alike, and the multiply undoes that exactly.
#[inline]
pub fn f16_to_f32(h: [u8; 2]) -> f32 {
    let h = u16::from_le_bytes(h) as u32;
    let magnitude = f32::from_bits((h & 0x7FFF) << 13) * TWO_POW_112;
    f32::from_bits(magnitude.to_bits() | (h & 0x8000) << 16)
}

const TWO_POW_112: f32 = f32::from_bits((127 + 112) << 23);

/// Where row r's block b is kept, its quants and its scale alike: the blocks of a group of four
/// rows (the rows the kernel computes together) are interleaved, block b of each row side by
/// side, so the kernel reads one stream of memory, front to back, and one 8-byte load gives a
/// block's four scales. A last group of fewer rows is interleaved the same way over the rows it
/// has.
pub fn block_index(rows: usize, blocks: usize, r: usize, b: usize) -> usize {
    let first_row = r / ROWS * ROWS;
    first_row * blocks + in_group(group_size(rows, first_row), r - first_row, b)
}

/// Rows in the group that starts at `first_row`: ROWS, or fewer for the last.
fn group_size(rows: usize, first_row: usize) -> usize {
    ROWS.min(rows - first_row)
}

/// Where block b of the group's row k is kept among the blocks of a group of `n` rows.
#[inline]
pub fn in_group(n: usize, k: usize, b: usize) -> usize {
    b * n + k
}

/// A matrix's row groups, in order: (first row, rows in the group).
pub fn row_groups(rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows).step_by(ROWS).map(move |first| (first, group_size(rows, first)))
}

/// out (m × rows) = x (m × cols) · Wᵀ.
pub fn matmul(w: QWeights, rows: usize, cols: usize, x: &QActivations, out: &mut [f32]) {
    matmuls([Product { w, rows, out }], cols, x);
}

/// One of the products `matmuls` computes: out (m × rows) = x · Wᵀ.
pub struct Product<'a> {
    pub w: QWeights<'a>,
    pub rows: usize,
    pub out: &'a mut [f32],
}

/// Several products of the same input (say h · W_qᵀ, h · W_kᵀ, h · W_vᵀ) as one job for the pass's
/// team: their row parts are shared out together, so the threads wait for each other once for
/// all of them, not once each.
pub fn matmuls<const N: usize>(products: [Product; N], cols: usize, x: &QActivations) {
    assert_eq!(x.cols, cols, "matmul: activation width does not match the weights");
    let m = x.rows;
    let jobs = products.map(|Product { w, rows, out }| (rows_job(w, cols, x, rows, crate::team::Disjoint::new(out.split_at_mut(m * rows).0)), rows));
    let parts = jobs.each_ref().map(|(_, rows)| rows.div_ceil(ROWS_PER_PART));
    let work = m * cols * jobs.iter().map(|(_, rows)| rows).sum::<usize>();
    crate::team::for_each_part(parts.iter().sum(), work, &|part| {
        let (mut p, mut part) = (0, part);
        while part >= parts[p] {
            part -= parts[p];
            p += 1;
        }
        let (job, rows) = &jobs[p];
        // No other part is given these rows (`rows_job`'s contract).
        job(part * ROWS_PER_PART, ((part + 1) * ROWS_PER_PART).min(*rows));
    });
}

/// Weight rows against every activation row into `out` (m × rows): `job(from, to)` computes rows
/// from..to (`from` a multiple of ROWS) in groups of ROWS, and no other call running at the same
/// time may be given any of those rows. A group's rows are read from memory once per group (what
/// makes a prefill of many tokens cheaper per token than single steps), and each activation
/// block is widened once for the whole group. The groups of a call are one loop, not a call
/// each: a call per group and a copy of its values of run-time length (a `memory.copy`, which V8
/// hands to the C library's memmove) took about 2% of the worker's samples in a two-thread
/// decode; one loop storing four values as an array, about 1%.
fn rows_job<'a>(w: QWeights<'a>, cols: usize, x: &'a QActivations, rows: usize, out: crate::team::Disjoint<'a, f32>) -> impl Fn(usize, usize) + Sync + 'a {
    let (m, blocks) = (x.rows, cols / BLOCK);
    move |from: usize, to: usize| for r0 in (from..to).step_by(ROWS) {
        let n = ROWS.min(to - r0);
        let (QWeights::Q8_0 { scales, .. } | QWeights::Q4_0 { scales, .. }) = w;
        let scales = &scales[r0 * blocks..(r0 + n) * blocks];
        // A short last group repeats its last row (and its scales); the repeats are computed and
        // dropped.
        let padded: Vec<[[u8; 2]; ROWS]>;
        let group_scales = match n {
            ROWS => scales.as_chunks::<ROWS>().0,
            _ => {
                padded = scales.chunks_exact(n).map(|s| std::array::from_fn(|k| s[k.min(n - 1)])).collect();
                &padded
            }
        };
        // `row(i)`: activation row i as the dot products take it. `unpacked`: for Q4_0 with many
        // activation rows, the group's nibbles unpacked once (as a whole group).
        let run = |row: &RowOf<'_>, unpacked: &[[[u8; BLOCK]; ROWS]]| {
            for i in 0..m {
                let xs = &x.scales[i * blocks..(i + 1) * blocks];
                let sums = match w {
                    QWeights::Q8_0 { quants, .. } => dot(row(i), xs, Group::of(quants[r0 * cols..(r0 + n) * cols].as_chunks::<BLOCK>().0, n), lanes::i8_32_widened),
                    QWeights::Q4_0 { .. } if !unpacked.is_empty() => dot(row(i), xs, Group::Whole(unpacked), lanes::unpacked_32_widened),
                    QWeights::Q4_0 { nibbles, .. } => dot(row(i), xs, Group::of(nibbles[r0 * cols / 2..(r0 + n) * cols / 2].as_chunks::<16>().0, n), lanes::nibbles_32_widened),
                };
                // SAFETY: rows r0..r0+n are this call's alone (the contract above).
                let values = unsafe { out.part(i * rows + r0, n) };
                match values.first_chunk_mut::<ROWS>() {
                    Some(values) => *values = sums,
                    None => values.copy_from_slice(&sums[..n]),
                }
            }
        };
        // One activation row uses each scale once: converted in the loop. Many reuse them:
        // converted once (converted in the loop for a 256-token prefill, it lost 7%), into
        // buffers this thread keeps (allocated per group, a short prompt's prefill on two threads
        // lost a third to the allocator).
        if m == 1 {
            run(&|_| Row::Decode { scales: group_scales, x: &x.widened }, &[]);
            continue;
        }
        PREFILL_SCRATCH.with_borrow_mut(|(converted, unpacked)| {
            converted.clear();
            converted.extend(group_scales.iter().map(|h| lanes::to_f32s(lanes::scales_times(h, 1.0))));
            unpacked.clear();
            if let QWeights::Q4_0 { nibbles, .. } = w {
                let group = nibbles[r0 * cols / 2..(r0 + n) * cols / 2].as_chunks::<16>().0;
                unpacked.extend((0..blocks).map(|b| std::array::from_fn(|k| unpack(&group[b * n + k.min(n - 1)]))));
            }
            let row = |i: usize| Row::Prefill { scales: converted, x: &x.widened[i * blocks..(i + 1) * blocks] };
            run(&row, unpacked);
        });
    }
}

/// Weight rows computed together by one call of the dot products.
pub const ROWS: usize = 4;

/// Activation rows `xs` of x against the first n of some Q8_0 rows kept in groups of four, as a
/// whole group of a weight matrix is kept (block b of the four rows side by side), with their
/// block scales as f32: `out[i·n + r] = times · (x_i · row r)`, the dot products `rows_job` takes
/// for a prefill, so with the same bits. A last group's missing rows are computed and dropped.
/// The attention's key cache is such rows (`attention::keys`).
pub fn grouped_rows(quants: &[[[i8; BLOCK]; ROWS]], scales: &[[f32; ROWS]], n: usize, x: &QActivations, xs: std::ops::Range<usize>, times: f32, out: &mut [f32]) {
    let blocks = x.cols / BLOCK;
    let groups = n.div_ceil(ROWS);
    assert!(quants.len() >= groups * blocks && scales.len() >= groups * blocks && out.len() >= xs.len() * n);
    for (g, (q, s)) in quants.chunks_exact(blocks).zip(scales.chunks_exact(blocks)).take(groups).enumerate() {
        let (first, k) = (g * ROWS, ROWS.min(n - g * ROWS));
        for (o, i) in xs.clone().enumerate() {
            let (x_scales, widened) = (&x.scales[i * blocks..(i + 1) * blocks], &x.widened[i * blocks..(i + 1) * blocks]);
            let sums = dot(Row::Prefill { scales: s, x: widened }, x_scales, Group::Whole(q), lanes::i8_32_widened);
            out[o * n + first..o * n + first + k].iter_mut().zip(sums).for_each(|(v, s)| *v = s * times);
        }
    }
}

thread_local! {
    /// A row group's scales as f32 and (Q4_0) its unpacked nibbles, for a product with many
    /// activation rows (see `rows_job`).
    static PREFILL_SCRATCH: std::cell::RefCell<(Vec<[f32; ROWS]>, Vec<[[u8; BLOCK]; ROWS]>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A Q4_0 block's nibbles as they are stored (element + 8), one a byte: elements 0..16 from the
/// low nibbles, 16..32 from the high ones (in the kernel's order, as the nibble bytes were).
#[inline]
fn unpack(n: &[u8; 16]) -> [u8; BLOCK] {
    let mut out = [0u8; BLOCK];
    for (j, &b) in n.iter().enumerate() {
        out[j] = b & 0x0F;
        out[16 + j] = b >> 4;
    }
    out
}

/// Weight rows per part of a product handed to a thread (see `team`). Rows are split, never the
/// sum inside a row, so every thread count computes the same bits.
const ROWS_PER_PART: usize = 32;

/// Whether quants are stored in lane order (the relaxed-SIMD kernel; see its `lanes`) rather than
/// GGML's. Every 16-byte run of quants (half a Q8_0 block, or a Q4_0 block's nibble bytes, whose
/// low and high nibbles then move together) is rearranged the same way.
pub const LANE_ORDER: bool = cfg!(target_feature = "relaxed-simd");

/// Where element e of a 16-byte run sits in lane order: lane k holds {2k, 2k+1, 2k+8, 2k+9}.
const fn lane_position(e: usize) -> usize {
    4 * ((e % 8) / 2) + 2 * (e / 8) + e % 2
}

/// GGML's order → the order this build's kernel reads (in place; nothing to do without LANE_ORDER).
#[inline]
pub fn to_kernel_order(quants: &mut [u8]) {
    if LANE_ORDER {
        rearrange(quants, true);
    }
}

/// The kernel's order → GGML's, for reading quants back (embedding rows, writing files).
#[inline]
pub fn to_ggml_order(quants: &mut [u8]) {
    if LANE_ORDER {
        rearrange(quants, false);
    }
}

fn rearrange(quants: &mut [u8], to_lanes: bool) {
    for run in quants.as_chunks_mut::<16>().0 {
        #[cfg(target_feature = "relaxed-simd")]
        if to_lanes {
            lanes::to_lane_order(run); // one shuffle: this runs over every weight at load
            continue;
        }
        let was = *run;
        for e in 0..16 {
            if to_lanes {
                run[lane_position(e)] = was[e];
            } else {
                run[e] = was[lane_position(e)];
            }
        }
    }
}

// The dot products. Each block's 32 integer products are summed into four lanes, lane k holding
// elements {2k, 2k+1, 2k+8, 2k+9} of each 16-element half — the grouping of wasm's i32x4.dot_i16x8
// and x86's pmaddwd alike. The four lanes are then added up as integers (exact in any order), and
// each row accumulates `block_sum · (d_w · d_x)` block by block in one float, the four rows of a
// group side by side in one vector. The wasm, SSE2 and portable versions below all follow this
// one order, so every build gives identical bits. (A float sum per lane, added up at the end,
// took a conversion and a multiply-add per row and block where this takes them once per group;
// q8_0 decode and prefill were slower for it, docs/PERFORMANCE.md.)

/// One activation row as the dot products take it, with the row group's block scales (block by
/// block, a lane per row).
#[derive(Clone, Copy)]
enum Row<'a> {
    /// A decode step's only row, prepared already (`QActivations::widened`), with the scales as
    /// stored (f16, converted as they are used).
    Decode { scales: &'a [[[u8; 2]; ROWS]], x: &'a [lanes::Widened] },
    /// One of a prefill's rows, prepared already, with the scales converted once for all of them.
    Prefill { scales: &'a [[f32; ROWS]], x: &'a [lanes::Widened] },
}

/// Activation row i of a product, as the dot products take it.
type RowOf<'r> = dyn Fn(usize) -> Row<'r> + 'r;

/// A row group's weight blocks (any block type W) as the dot products read them, interleaved as
/// `block_index` keeps them.
#[derive(Clone, Copy)]
enum Group<'a, W> {
    /// Four rows: block b of each, side by side.
    Whole(&'a [[W; ROWS]]),
    /// n < 4 rows, interleaved over n; the last row stands in for the missing ones.
    Short(&'a [W], usize),
}

impl<'a, W> Group<'a, W> {
    /// A group of n rows from its blocks, in `block_index` order.
    fn of(blocks: &'a [W], n: usize) -> Self {
        if n == ROWS { Group::Whole(blocks.as_chunks::<ROWS>().0) } else { Group::Short(blocks, n) }
    }
}

/// Four weight rows (their blocks as `block` reads them) against one activation row, whose block
/// scales are `xs`.
#[inline]
fn dot<W>(row: Row, xs: &[f32], w: Group<W>, block: impl Fn(&W, &lanes::Widened) -> lanes::Ints) -> [f32; ROWS] {
    let blocks = xs.len();
    match row {
        Row::Decode { scales, x } => {
            let (h, x) = (&scales[..blocks], &x[..blocks]);
            group_rows(|b| (lanes::scales_times(&h[b], xs[b]), x[b]), w, blocks, block)
        }
        Row::Prefill { scales, x } => {
            let (f, x) = (&scales[..blocks], &x[..blocks]);
            group_rows(|b| (lanes::times(&f[b], xs[b]), x[b]), w, blocks, block)
        }
    }
}

/// `dot_rows` over a whole group (its four blocks side by side, indexed once per block) or a
/// short one.
#[inline(always)]
fn group_rows<W>(x: impl Fn(usize) -> (lanes::Scales, lanes::Widened), w: Group<W>, blocks: usize, block: impl Fn(&W, &lanes::Widened) -> lanes::Ints) -> [f32; ROWS] {
    match w {
        Group::Whole(g) => {
            let g = &g[..blocks];
            dot_rows(x, |b| g[b].each_ref(), blocks, block)
        }
        Group::Short(g, n) => dot_rows(x, |b| std::array::from_fn(|k| &g[b * n + k.min(n - 1)]), blocks, block),
    }
}

/// The loop both dot products share: per block, each row's four lane sums added up exactly (as
/// integers), the four rows' totals side by side in one vector, times their four scales, into one
/// float accumulator a lane per row. `x(b)`: block b's d_w · d_x for each row, and the activation
/// block; `w(b)`: block b of each row.
#[inline(always)]
fn dot_rows<'w, W: 'w>(x: impl Fn(usize) -> (lanes::Scales, lanes::Widened), w: impl Fn(usize) -> [&'w W; ROWS], blocks: usize, block: impl Fn(&W, &lanes::Widened) -> lanes::Ints) -> [f32; ROWS] {
    let mut acc = lanes::Acc::default();
    for b in 0..blocks {
        let (d, xw) = x(b);
        let [w0, w1, w2, w3] = w(b);
        acc.add(lanes::totals([block(w0, &xw), block(w1, &xw), block(w2, &xw), block(w3, &xw)]), d);
    }
    acc.rows()
}

/// The portable definition of the lanes (and the fallback on other CPUs).
#[allow(dead_code)]
mod portable {
    pub type Ints = [i32; 4];
    /// A block's d_w · d_x for each of the four rows of a group.
    pub type Scales = [f32; 4];

    /// Four rows' sums, a lane per row.
    #[derive(Default)]
    pub struct Acc([f32; 4]);

    impl Acc {
        /// Adds `totals[r] · d[r]` to row r.
        #[inline]
        pub fn add(&mut self, totals: Ints, d: Scales) {
            for r in 0..4 {
                self.0[r] += totals[r] as f32 * d[r];
            }
        }
        #[inline]
        pub fn rows(&self) -> [f32; 4] {
            self.0
        }
    }

    /// Each row's four lane sums added up (exact, in any order): lane r holds row r's total.
    #[inline]
    pub fn totals(rows: [Ints; 4]) -> Ints {
        rows.map(|l| (l[0] + l[2]) + (l[1] + l[3]))
    }

    #[inline]
    pub fn times(f: &[f32; 4], dx: f32) -> Scales {
        f.map(|d| d * dx)
    }

    #[inline]
    pub fn to_f32s(d: Scales) -> [f32; 4] {
        d
    }

    /// Integer sums are exact in any order: pair the two halves first, then add each lane's pairs.
    #[inline]
    fn gather(pairs: [i32; 16]) -> Ints {
        std::array::from_fn(|k| pairs[2 * k] + pairs[2 * k + 1] + pairs[2 * k + 8] + pairs[2 * k + 9])
    }

    #[inline]
    pub fn i8_32(a: &[i8], b: &[i8]) -> Ints {
        gather(std::array::from_fn(|e| a[e] as i32 * b[e] as i32 + a[16 + e] as i32 * b[16 + e] as i32))
    }

    /// A block's four f16 scales (one per row of a group) as f32, each times the activation
    /// block's scale.
    #[inline]
    pub fn scales_times(h: &[[u8; 2]; 4], dx: f32) -> Scales {
        h.map(|h| super::f16_to_f32(h) * dx)
    }

    /// An activation block prepared once for several weight rows (here: as it is).
    #[derive(Clone, Copy)]
    pub struct Widened([i8; 32]);

    impl Widened {
        #[inline]
        pub fn of(x: &[i8; 32]) -> Self {
            Widened(*x)
        }
    }

    #[inline]
    pub fn i8_32_widened(a: &[i8; 32], x: &Widened) -> Ints {
        i8_32(a, &x.0)
    }

    #[inline]
    pub fn nibbles_32_widened(n: &[u8; 16], x: &Widened) -> Ints {
        nibbles_32(n, &x.0)
    }

    #[inline]
    pub fn unpacked_32_widened(u: &[u8; 32], x: &Widened) -> Ints {
        gather(std::array::from_fn(|e| (u[e] as i32 - 8) * x.0[e] as i32 + (u[16 + e] as i32 - 8) * x.0[16 + e] as i32))
    }

    #[inline]
    pub fn nibbles_32(n: &[u8], x: &[i8]) -> Ints {
        gather(std::array::from_fn(|e| ((n[e] & 0x0F) as i32 - 8) * x[e] as i32 + ((n[e] >> 4) as i32 - 8) * x[16 + e] as i32))
    }
}

#[cfg(target_feature = "simd128")]
mod wasm_acc {
    use core::arch::wasm32::*;

    pub type Ints = v128;
    pub type Scales = v128;
    pub struct Acc(v128);

    impl Default for Acc {
        fn default() -> Self {
            Acc(f32x4_splat(0.0))
        }
    }

    impl Acc {
        #[inline]
        pub fn add(&mut self, totals: Ints, d: Scales) {
            self.0 = f32x4_add(self.0, f32x4_mul(f32x4_convert_i32x4(totals), d));
        }
        #[inline]
        pub fn rows(&self) -> [f32; 4] {
            to_f32s(self.0)
        }
    }

    /// Each row's four lane sums added up, lane r holding row r's total (the portable `totals`):
    /// two rounds of interleaving and adding, a 4 × 4 transpose folded into the sums.
    #[inline]
    pub fn totals([a, b, c, d]: [Ints; 4]) -> Ints {
        // [a0 + a2, b0 + b2, a1 + a3, b1 + b3], and the same for c and d.
        let ab = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(a, b), i32x4_shuffle::<2, 6, 3, 7>(a, b));
        let cd = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(c, d), i32x4_shuffle::<2, 6, 3, 7>(c, d));
        i32x4_add(i32x4_shuffle::<0, 1, 4, 5>(ab, cd), i32x4_shuffle::<2, 3, 6, 7>(ab, cd))
    }

    #[inline]
    pub fn times(f: &[f32; 4], dx: f32) -> Scales {
        // SAFETY: f holds 16 bytes; unaligned loads are allowed.
        f32x4_mul(unsafe { v128_load(f.as_ptr() as *const v128) }, f32x4_splat(dx))
    }

    #[inline]
    pub fn to_f32s(d: Scales) -> [f32; 4] {
        [f32x4_extract_lane::<0>(d), f32x4_extract_lane::<1>(d), f32x4_extract_lane::<2>(d), f32x4_extract_lane::<3>(d)]
    }

    /// A block's four f16 scales (one per row of a group) as f32, each times the activation
    /// block's scale: `f16_to_f32` four lanes at once. Each f16 goes into the high half of its
    /// lane, where its sign is the f32's, and an arithmetic shift by 3 puts exponent and mantissa
    /// in their f32 places (the sign's copies land in three bits the mask clears).
    #[inline]
    pub fn scales_times(h: &[[u8; 2]; 4], dx: f32) -> Scales {
        // SAFETY: h holds 8 bytes; unaligned loads are allowed.
        let h = unsafe { v128_load64_zero(h.as_ptr() as *const u64) };
        let high = i8x16_shuffle::<16, 16, 0, 1, 16, 16, 2, 3, 16, 16, 4, 5, 16, 16, 6, 7>(h, u64x2_splat(0));
        let d = f32x4_mul(v128_and(i32x4_shr(high, 3), u32x4_splat(0x8FFF_FFFF)), f32x4_splat(super::TWO_POW_112));
        f32x4_mul(d, f32x4_splat(dx))
    }

    /// `quantize_block_scalar` four lanes at a time, the same operations in the same order (the
    /// scalar one took 2% of a q8_0 decode step in Chromium). Native tests cannot run it; the
    /// browser tests compare the page's logits with the CLI's to the bit, which any difference in
    /// one rounded activation would break.
    #[inline]
    pub fn quantize_block(x: &[f32; 32], q: &mut [i8; 32]) -> f32 {
        // SAFETY: x holds 32 floats; unaligned loads are allowed.
        let v: [v128; 8] = std::array::from_fn(|i| unsafe { v128_load(x.as_ptr().add(4 * i) as *const v128) });
        // pmax(m, a) is `if a > m { a } else { m }`: a NaN never wins, as in `abs_max`.
        let m = v.iter().fold(f32x4_splat(0.0), |m, &v| f32x4_pmax(m, f32x4_abs(v)));
        let d = crate::attention::max(0.0, to_f32s(m)) / 127.0;
        let id = f32x4_splat(if d != 0.0 { 1.0 / d } else { 0.0 });
        let q32 = v.map(|v| round_half_away(f32x4_mul(v, id)));
        // Narrowing saturates, which is `round_half_away`'s clamp to −128..=127.
        let q8 = [0, 1].map(|h| i8x16_narrow_i16x8(i16x8_narrow_i32x4(q32[4 * h], q32[4 * h + 1]), i16x8_narrow_i32x4(q32[4 * h + 2], q32[4 * h + 3])));
        // SAFETY: q has room for 32 bytes; unaligned stores are allowed.
        unsafe {
            v128_store(q.as_mut_ptr() as *mut v128, q8[0]);
            v128_store(q.as_mut_ptr().add(16) as *mut v128, q8[1]);
        }
        d
    }

    /// The scalar `round_half_away` before its final clamp, four lanes at once.
    #[inline]
    fn round_half_away(r: v128) -> v128 {
        // pmax(r, lo) and pmin(·, hi) are f32::clamp's two comparisons (a NaN passes through).
        let r = f32x4_pmin(f32x4_pmax(r, f32x4_splat(-1e6)), f32x4_splat(1e6));
        let t = i32x4_trunc_sat_f32x4(r);
        let rest = f32x4_sub(r, f32x4_convert_i32x4(t));
        // A true comparison is −1: subtracting it adds one.
        i32x4_add(i32x4_sub(t, f32x4_ge(rest, f32x4_splat(0.5))), f32x4_le(rest, f32x4_splat(-0.5)))
    }

    /// Q4_0 nibbles against an activation block: each wasm build's `nibble_halves` does the
    /// arithmetic, on the bytes split here.
    #[inline]
    pub fn nibbles_32_widened(n: &[u8; 16], x: &super::lanes::Widened) -> Ints {
        // SAFETY: n holds 16 bytes; unaligned loads are allowed.
        let packed = unsafe { v128_load(n.as_ptr() as *const v128) };
        super::lanes::nibble_halves(v128_and(packed, u8x16_splat(0x0F)), u8x16_shr(packed, 4), x)
    }

    /// As `nibbles_32_widened`, the nibbles already unpacked (`unpack`).
    #[inline]
    pub fn unpacked_32_widened(u: &[u8; 32], x: &super::lanes::Widened) -> Ints {
        // SAFETY: u holds 32 bytes; unaligned loads are allowed.
        let (lo, hi) = unsafe { (v128_load(u.as_ptr() as *const v128), v128_load(u.as_ptr().add(16) as *const v128)) };
        super::lanes::nibble_halves(lo, hi, x)
    }
}

#[cfg(all(target_feature = "simd128", not(target_feature = "relaxed-simd")))]
mod lanes {
    use core::arch::wasm32::*;

    pub use super::wasm_acc::{Acc, Ints, Scales, nibbles_32_widened, scales_times, times, to_f32s, totals, unpacked_32_widened};

    /// An activation block widened to int16 once, for all the weight rows that use it.
    #[derive(Clone, Copy)]
    pub struct Widened([v128; 4]);

    impl Widened {
        #[inline]
        pub fn of(x: &[i8; 32]) -> Self {
            // SAFETY: x holds 32 bytes; v128_load has no alignment requirement.
            let (x0, x1) = unsafe { (v128_load(x.as_ptr() as *const v128), v128_load(x.as_ptr().add(16) as *const v128)) };
            Widened([i16x8_extend_low_i8x16(x0), i16x8_extend_high_i8x16(x0), i16x8_extend_low_i8x16(x1), i16x8_extend_high_i8x16(x1)])
        }
    }

    /// 16 int8 × int8 products into four int32 lanes (exact: |product| ≤ 2¹⁴), b already widened.
    #[inline]
    fn dot16_widened(a: v128, b_lo: v128, b_hi: v128) -> v128 {
        i32x4_add(i32x4_dot_i16x8(i16x8_extend_low_i8x16(a), b_lo), i32x4_dot_i16x8(i16x8_extend_high_i8x16(a), b_hi))
    }

    #[inline]
    pub fn i8_32_widened(a: &[i8; 32], x: &Widened) -> Ints {
        // SAFETY: a holds 32 bytes; unaligned loads are allowed.
        let (a0, a1) = unsafe { (v128_load(a.as_ptr() as *const v128), v128_load(a.as_ptr().add(16) as *const v128)) };
        i32x4_add(dot16_widened(a0, x.0[0], x.0[1]), dot16_widened(a1, x.0[2], x.0[3]))
    }

    /// The low and high nibbles (stored + 8) of 16 bytes against the block.
    #[inline]
    pub(super) fn nibble_halves(lo: v128, hi: v128, x: &Widened) -> Ints {
        let eight = i8x16_splat(8);
        i32x4_add(dot16_widened(i8x16_sub(lo, eight), x.0[0], x.0[1]), dot16_widened(i8x16_sub(hi, eight), x.0[2], x.0[3]))
    }
}

/// wasm with relaxed SIMD: `i32x4.relaxed_dot_i8x16_i7x16_add` multiplies 16 int8 pairs and adds
/// each four adjacent products into one int32 lane (twice the multiply-adds per second of the
/// widening kernel above, measured in Chromium 148 on the development VM). Its
/// result is exact, the same on every engine, as long as the second operand has no high bit set
/// (a "7-bit" value), so each product is arranged to keep it clear:
/// - Q8_0 splits the activation by sign, x = x⁺ − x⁻, both within 0..=127 (quantized activations
///   never reach −128): w·x = w·x⁺ − w·x⁻, the weight being the free operand.
/// - Q4_0's stored nibbles n = q + 8 are within 0..=15: x·q = x·n − 8·x, with Σx per lane computed
///   once per activation block.
///
/// Adjacent bytes share a lane here, where the portable definition pairs elements {2k, 2k+1,
/// 2k+8, 2k+9}; so the weights are stored with each lane's four elements side by side
/// (`to_kernel_order`, at load) and activations are put in the same order here, and every lane
/// sums exactly the products it sums everywhere else.
#[cfg(target_feature = "relaxed-simd")]
mod lanes {
    use core::arch::wasm32::*;

    pub use super::wasm_acc::{Acc, Ints, Scales, nibbles_32_widened, scales_times, times, to_f32s, totals, unpacked_32_widened};

    /// GGML's order of 16 elements → lane order (each lane's four elements adjacent).
    #[inline]
    fn lane_order(v: v128) -> v128 {
        i8x16_shuffle::<0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15>(v, v)
    }

    #[inline]
    pub fn to_lane_order(run: &mut [u8; 16]) {
        // SAFETY: run holds 16 bytes; unaligned loads and stores are allowed.
        unsafe { v128_store(run.as_mut_ptr() as *mut v128, lane_order(v128_load(run.as_ptr() as *const v128))) }
    }

    #[inline]
    fn dot(free: v128, seven_bit: v128, add: v128) -> v128 {
        i32x4_relaxed_dot_i8x16_i7x16_add(free, seven_bit, add)
    }

    /// An activation block prepared once for all the weight rows that use it.
    #[derive(Clone, Copy)]
    pub struct Widened {
        /// The 32 activations in lane order, as two halves.
        x: [v128; 2],
        /// x⁺ = max(x, 0) and x⁻ = max(−x, 0), for Q8_0.
        pos: [v128; 2],
        neg: [v128; 2],
        /// 8·Σx per lane, for Q4_0's stored +8.
        bias: v128,
    }

    impl Widened {
        #[inline]
        pub fn of(x: &[i8; 32]) -> Self {
            // SAFETY: x holds 32 bytes; v128_load has no alignment requirement.
            let halves = unsafe { [v128_load(x.as_ptr() as *const v128), v128_load(x.as_ptr().add(16) as *const v128)] };
            let x = halves.map(lane_order);
            let zero = i8x16_splat(0);
            let ones = i8x16_splat(1);
            Widened {
                x,
                pos: x.map(|v| i8x16_max(v, zero)),
                neg: x.map(|v| i8x16_max(i8x16_neg(v), zero)),
                bias: i32x4_shl(dot(x[1], ones, dot(x[0], ones, i32x4_splat(0))), 3),
            }
        }
    }

    #[inline]
    pub fn i8_32_widened(a: &[i8; 32], x: &Widened) -> Ints {
        // SAFETY: a holds 32 bytes; unaligned loads are allowed.
        let (a0, a1) = unsafe { (v128_load(a.as_ptr() as *const v128), v128_load(a.as_ptr().add(16) as *const v128)) };
        let zero = i32x4_splat(0);
        let pos = dot(a1, x.pos[1], dot(a0, x.pos[0], zero));
        let neg = dot(a1, x.neg[1], dot(a0, x.neg[0], zero));
        i32x4_sub(pos, neg)
    }

    /// The low and high nibbles (stored + 8, so 7-bit) of 16 bytes against the block.
    #[inline]
    pub(super) fn nibble_halves(lo: v128, hi: v128, x: &Widened) -> Ints {
        i32x4_sub(dot(x.x[1], hi, dot(x.x[0], lo, i32x4_splat(0))), x.bias)
    }
}

/// x86-64: SSE2 is always there; pmaddwd groups products exactly as wasm's dot_i16x8 does.
#[cfg(all(target_arch = "x86_64", not(target_feature = "simd128")))]
mod lanes {
    use core::arch::x86_64::*;

    pub type Ints = __m128i;
    pub type Scales = __m128;
    pub struct Acc(__m128);

    impl Default for Acc {
        fn default() -> Self {
            // SAFETY: SSE2 is part of the x86-64 baseline.
            Acc(unsafe { _mm_setzero_ps() })
        }
    }

    impl Acc {
        #[inline]
        pub fn add(&mut self, totals: Ints, d: Scales) {
            // SAFETY: SSE2 baseline; cvtepi32_ps rounds to nearest like `as f32`.
            unsafe { self.0 = _mm_add_ps(self.0, _mm_mul_ps(_mm_cvtepi32_ps(totals), d)) }
        }
        #[inline]
        pub fn rows(&self) -> [f32; 4] {
            to_f32s(self.0)
        }
    }

    /// Each row's four lane sums added up, lane r holding row r's total, as in the wasm version.
    #[inline]
    pub fn totals([a, b, c, d]: [Ints; 4]) -> Ints {
        // SAFETY: SSE2 baseline.
        unsafe {
            let ab = _mm_add_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
            let cd = _mm_add_epi32(_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
            _mm_add_epi32(_mm_unpacklo_epi64(ab, cd), _mm_unpackhi_epi64(ab, cd))
        }
    }

    #[inline]
    pub fn times(f: &[f32; 4], dx: f32) -> Scales {
        // SAFETY: SSE2 baseline; f holds 16 bytes; the load is unaligned.
        unsafe { _mm_mul_ps(_mm_loadu_ps(f.as_ptr()), _mm_set1_ps(dx)) }
    }

    #[inline]
    pub fn to_f32s(d: Scales) -> [f32; 4] {
        let mut out = [0f32; 4];
        // SAFETY: out has room for four f32; the store is unaligned.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), d) };
        out
    }

    /// A block's four f16 scales as f32, each times the activation block's scale, as in the wasm
    /// version.
    #[inline]
    pub fn scales_times(h: &[[u8; 2]; 4], dx: f32) -> Scales {
        // SAFETY: SSE2 baseline; h holds 8 bytes; the load is unaligned.
        unsafe {
            let high = _mm_unpacklo_epi16(_mm_setzero_si128(), _mm_loadl_epi64(h.as_ptr() as *const __m128i));
            let bits = _mm_and_si128(_mm_srai_epi32(high, 3), _mm_set1_epi32(0x8FFF_FFFFu32 as i32));
            let d = _mm_mul_ps(_mm_castsi128_ps(bits), _mm_set1_ps(super::TWO_POW_112));
            _mm_mul_ps(d, _mm_set1_ps(dx))
        }
    }

    /// Sign-extends the low / high eight int8 of v to int16.
    #[inline]
    unsafe fn widen(v: __m128i) -> (__m128i, __m128i) {
        // SAFETY (callers): SSE2 baseline.
        unsafe {
            let sign = _mm_cmpgt_epi8(_mm_setzero_si128(), v);
            (_mm_unpacklo_epi8(v, sign), _mm_unpackhi_epi8(v, sign))
        }
    }

    /// An activation block widened to int16 once, for all the weight rows that use it.
    #[derive(Clone, Copy)]
    pub struct Widened([__m128i; 4]);

    impl Widened {
        #[inline]
        pub fn of(x: &[i8; 32]) -> Self {
            // SAFETY: x holds 32 bytes; SSE2 baseline; loadu has no alignment requirement.
            unsafe {
                let (l0, h0) = widen(_mm_loadu_si128(x.as_ptr() as *const __m128i));
                let (l1, h1) = widen(_mm_loadu_si128(x.as_ptr().add(16) as *const __m128i));
                Widened([l0, h0, l1, h1])
            }
        }
    }

    #[inline]
    unsafe fn dot16_widened(a: __m128i, b_lo: __m128i, b_hi: __m128i) -> __m128i {
        // SAFETY (callers): SSE2 baseline.
        unsafe {
            let (alo, ahi) = widen(a);
            _mm_add_epi32(_mm_madd_epi16(alo, b_lo), _mm_madd_epi16(ahi, b_hi))
        }
    }

    #[inline]
    pub fn i8_32_widened(a: &[i8; 32], x: &Widened) -> Ints {
        // SAFETY: a holds 32 bytes; SSE2 baseline.
        unsafe {
            let a0 = _mm_loadu_si128(a.as_ptr() as *const __m128i);
            let a1 = _mm_loadu_si128(a.as_ptr().add(16) as *const __m128i);
            _mm_add_epi32(dot16_widened(a0, x.0[0], x.0[1]), dot16_widened(a1, x.0[2], x.0[3]))
        }
    }

    #[inline]
    pub fn nibbles_32_widened(n: &[u8; 16], x: &Widened) -> Ints {
        // SAFETY: n holds 16 bytes; SSE2 baseline.
        unsafe {
            let packed = _mm_loadu_si128(n.as_ptr() as *const __m128i);
            let mask = _mm_set1_epi8(0x0F);
            nibble_halves(_mm_and_si128(packed, mask), _mm_and_si128(_mm_srli_epi16(packed, 4), mask), x)
        }
    }

    /// As `nibbles_32_widened`, the nibbles already unpacked (`unpack`).
    #[inline]
    pub fn unpacked_32_widened(u: &[u8; 32], x: &Widened) -> Ints {
        // SAFETY: u holds 32 bytes; SSE2 baseline.
        unsafe { nibble_halves(_mm_loadu_si128(u.as_ptr() as *const __m128i), _mm_loadu_si128(u.as_ptr().add(16) as *const __m128i), x) }
    }

    /// The low and high nibbles (stored + 8) of 16 bytes against the block.
    #[inline]
    unsafe fn nibble_halves(lo: __m128i, hi: __m128i, x: &Widened) -> Ints {
        // SAFETY (callers): SSE2 baseline.
        unsafe {
            let eight = _mm_set1_epi8(8);
            _mm_add_epi32(dot16_widened(_mm_sub_epi8(lo, eight), x.0[0], x.0[1]), dot16_widened(_mm_sub_epi8(hi, eight), x.0[2], x.0[3]))
        }
    }

    /// The lanes as integers (tests).
    #[allow(dead_code)]
    pub fn to_array(v: Ints) -> [i32; 4] {
        let mut out = [0i32; 4];
        // SAFETY: out has room for four i32.
        unsafe { _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, v) };
        out
    }
}

#[cfg(not(any(target_feature = "simd128", target_arch = "x86_64")))]
use portable as lanes;

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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_lanes_equal_the_portable_definition_exactly() {
        let a: Vec<i8> = (0..32).map(|i| ((i * 37 + 11) % 255) as u8 as i8).collect();
        let b: Vec<i8> = (0..32).map(|i| ((i * 91 + 3) % 255) as u8 as i8).collect();
        let n: Vec<u8> = (0..16).map(|i| (i * 53 + 7) as u8).collect();
        let (a32, b32, n16): ([i8; 32], [i8; 32], [u8; 16]) = (a.clone().try_into().unwrap(), b.clone().try_into().unwrap(), n.clone().try_into().unwrap());
        let x = super::lanes::Widened::of(&b32);
        assert_eq!(super::lanes::to_array(super::lanes::i8_32_widened(&a32, &x)), super::portable::i8_32(&a, &b));
        assert_eq!(super::lanes::to_array(super::lanes::nibbles_32_widened(&n16, &x)), super::portable::nibbles_32(&n, &b));
        assert_eq!(super::lanes::to_array(super::lanes::unpacked_32_widened(&unpack(&n16), &x)), super::portable::nibbles_32(&n, &b), "unpacked first");
        // SAFETY: __m128i is the same 16 bytes as [i32; 4].
        let ints = |r: [i32; 4]| unsafe { std::mem::transmute::<[i32; 4], super::lanes::Ints>(r) };
        let rows = [[1, -2, 3, -4], [i32::MAX / 4, 5, -6, 7], [8, 9, 10, 11], [-12, 13, 0, 1 << 20]];
        assert_eq!(super::lanes::to_array(super::lanes::totals(rows.map(ints))), super::portable::totals(rows), "each row's four lanes added up, a lane per row");
        let extremes = [-128i8; 32];
        let xe = super::lanes::Widened::of(&extremes);
        assert_eq!(super::lanes::to_array(super::lanes::i8_32_widened(&extremes, &xe)), super::portable::i8_32(&extremes, &extremes));
    }

    #[test]
    fn a_group_of_weight_rows_gives_each_row_the_bits_it_gets_alone() {
        let (rows, cols) = (8, 96);
        let mut x = QActivations::default();
        x.quantize(&values(cols, 5), 1, cols);
        let scales: Vec<[u8; 2]> = values(rows * cols / BLOCK, 4).iter().map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let row_scales = |r: usize| &scales[r * cols / BLOCK..(r + 1) * cols / BLOCK];
        // The group's scales interleaved, as the kernel keeps them; a row alone, in all four lanes.
        let group_scales: Vec<[[u8; 2]; ROWS]> = (0..cols / BLOCK).map(|b| std::array::from_fn(|k| row_scales(4 + k)[b])).collect();
        let one = |r: usize| -> Vec<[[u8; 2]; ROWS]> { row_scales(r).iter().map(|&d| [d; ROWS]).collect() };
        let bytes: Vec<u8> = values(rows * cols, 6).iter().map(|v| (v * 127.0) as i8 as u8).collect();
        let quants: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        let q8 = |r: usize| quants[r * cols..(r + 1) * cols].as_chunks::<BLOCK>().0;
        let q4 = |r: usize| bytes[r * cols / 2..(r + 1) * cols / 2].as_chunks::<16>().0;
        // Rows 4..8 interleaved block by block, as `block_index` keeps a group.
        let (q8_group, q4_group): (Vec<[[i8; BLOCK]; ROWS]>, Vec<[[u8; 16]; ROWS]>) = (0..cols / BLOCK).map(|b| (std::array::from_fn(|k| q8(4 + k)[b]), std::array::from_fn(|k| q4(4 + k)[b]))).unzip();
        let as_f32 = |h: &[[[u8; 2]; ROWS]]| -> Vec<[f32; ROWS]> { h.iter().map(|h| h.map(f16_to_f32)).collect() };
        let (group_f32, one_f32) = (as_f32(&group_scales), |r| as_f32(&one(r)));
        let xs = &x.scales[..];
        // A decode step (scales as stored, the row prepared), and a prefill's row (scales
        // converted first).
        fn row<'r>(decode: bool, h: &'r [[[u8; 2]; ROWS]], f: &'r [[f32; ROWS]], x: &'r QActivations) -> Row<'r> {
            if decode { Row::Decode { scales: h, x: &x.widened } } else { Row::Prefill { scales: f, x: &x.widened } }
        }
        for decode in [true, false] {
            let name = if decode { "decode" } else { "prefill" };
            // A row alone is a short group of one row, standing in for all four.
            let group = dot(row(decode, &group_scales, &group_f32, &x), xs, Group::Whole(&q8_group), lanes::i8_32_widened);
            let alone: Vec<f32> = (4..8).map(|r| dot(row(decode, &one(r), &one_f32(r), &x), xs, Group::Short(q8(r), 1), lanes::i8_32_widened)[0]).collect();
            assert_eq!(group.to_vec(), alone, "Q8_0, {name}");
            let group = dot(row(decode, &group_scales, &group_f32, &x), xs, Group::Whole(&q4_group), lanes::nibbles_32_widened);
            let alone: Vec<f32> = (4..8).map(|r| dot(row(decode, &one(r), &one_f32(r), &x), xs, Group::Short(q4(r), 1), lanes::nibbles_32_widened)[0]).collect();
            assert_eq!(group.to_vec(), alone, "Q4_0, {name}");
        }
    }

    #[test]
    fn activations_round_half_away_from_zero_as_f32_round_does() {
        let halves = (-260..=260).map(|h| h as f32 / 2.0);
        let near_halves = halves.clone().flat_map(|h: f32| [h.next_down(), h.next_up()]);
        let grid = (-140 * 1024..=140 * 1024).map(|i| i as f32 / 1024.0);
        let odd = [0.0, -0.0, 0.49999997, -0.49999997, 1e-40, 3e9, -3e9, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        for r in halves.chain(near_halves).chain(grid).chain(odd) {
            assert_eq!(round_half_away(r), r.round() as i8, "{r:e}");
        }
    }

    #[test]
    fn every_finite_f16_scale_converts_exactly() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            if h.is_finite() {
                let want = h.to_f32();
                assert_eq!(f16_to_f32(bits.to_le_bytes()).to_bits(), want.to_bits(), "{bits:#06x}");
                let four = [bits, bits ^ 0x8000, bits, 0].map(u16::to_le_bytes);
                let got = lanes::to_f32s(lanes::scales_times(&four, 0.5));
                let expect = [want * 0.5, -want * 0.5, want * 0.5, 0.0];
                assert_eq!(got.map(f32::to_bits), expect.map(f32::to_bits), "{bits:#06x}, four at once");
            }
        }
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

    #[test]
    fn a_product_split_over_a_team_of_threads_equals_it_on_one_thread() {
        // 300 rows: five parts of 64, the last one short, and a short last group of four.
        let (rows, cols, m) = (300, 96, 3);
        for kind in [crate::format::GgmlKind::Q8_0, crate::format::GgmlKind::Q4_0] {
            let qm = crate::weights::QMatrix::quantize(kind, rows, cols, &values(rows * cols, 4));
            let mut x = QActivations::default();
            x.quantize(&values(m * cols, 5), m, cols);
            let (mut alone, mut shared) = (vec![0f32; m * rows], vec![0f32; m * rows]);
            qm.matmul_q(&x, &mut alone); // small work outside a pass: this thread, in order
            crate::team::run(|| qm.matmul_q(&x, &mut shared));
            assert_eq!(alone, shared, "{kind:?}");
        }
    }

    #[test]
    fn lane_order_puts_each_lanes_four_elements_side_by_side() {
        let mut run: [u8; 16] = std::array::from_fn(|e| e as u8);
        rearrange(&mut run, true);
        for k in 0..4 {
            assert_eq!(run[4 * k..4 * k + 4], [2 * k, 2 * k + 1, 2 * k + 8, 2 * k + 9].map(|e| e as u8), "lane {k}");
        }
        rearrange(&mut run, false);
        assert_eq!(run, std::array::from_fn(|e| e as u8), "and back to GGML's order");
    }

    /// `i32x4.relaxed_dot_i8x16_i7x16_add` as the spec defines it for a second operand without
    /// high bits: lane k += Σ of the four adjacent products 4k..4k+3.
    fn relaxed_dot(free: [i8; 16], seven_bit: [i8; 16], add: [i32; 4]) -> [i32; 4] {
        assert!(seven_bit.iter().all(|&b| b >= 0), "the second operand must be 7-bit");
        std::array::from_fn(|k| add[k] + (4 * k..4 * k + 4).map(|i| free[i] as i32 * seven_bit[i] as i32).sum::<i32>())
    }

    fn in_lane_order(half: &[i8]) -> [i8; 16] {
        let mut run: [u8; 16] = std::array::from_fn(|e| half[e] as u8);
        rearrange(&mut run, true);
        run.map(|b| b as i8)
    }

    #[test]
    fn the_relaxed_simd_arithmetic_gives_the_portable_lane_sums_exactly() {
        // What the relaxed-SIMD lanes compute, in scalar form, against the portable definition,
        // over extreme values too (a Q8_0 weight of −128 included: it is the free operand).
        for seed in 0..200u32 {
            let r = |i: usize, m: u32| ((i as u32 + 1).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) >> 7) % m;
            let x: [i8; 32] = std::array::from_fn(|i| if seed % 7 == 0 { [127, -127][i % 2] } else { r(i, 255) as i8 - 127 }); // quantized: −127..=127
            let w: [i8; 32] = std::array::from_fn(|i| if seed % 5 == 0 { -128 } else { r(i + 99, 256) as u8 as i8 });
            let n: [u8; 16] = std::array::from_fn(|i| r(i + 7, 256) as u8);
            let halves = [in_lane_order(&x[..16]), in_lane_order(&x[16..])];
            // Q8_0: w·x = w·x⁺ − w·x⁻
            let (wl, wh) = (in_lane_order(&w[..16]), in_lane_order(&w[16..]));
            let pos = halves.map(|h| h.map(|v| v.max(0)));
            let neg = halves.map(|h| h.map(|v| (-v).max(0)));
            let p = relaxed_dot(wh, pos[1], relaxed_dot(wl, pos[0], [0; 4]));
            let q = relaxed_dot(wh, neg[1], relaxed_dot(wl, neg[0], [0; 4]));
            let q8: [i32; 4] = std::array::from_fn(|k| p[k] - q[k]);
            assert_eq!(q8, portable::i8_32(&w, &x), "Q8_0, seed {seed}");
            // Q4_0: x·(n − 8) = x·n − 8·x
            let mut nl = n;
            rearrange(&mut nl, true);
            let (lo, hi) = (nl.map(|b| (b & 0x0F) as i8), nl.map(|b| (b >> 4) as i8));
            let sums = relaxed_dot(halves[1], [1; 16], relaxed_dot(halves[0], [1; 16], [0; 4]));
            let dots = relaxed_dot(halves[1], hi, relaxed_dot(halves[0], lo, [0; 4]));
            let q4: [i32; 4] = std::array::from_fn(|k| dots[k] - 8 * sums[k]);
            assert_eq!(q4, portable::nibbles_32(&n, &x), "Q4_0, seed {seed}");
        }
    }

    // Natively the kernel keeps GGML's order, so this checks the layout round trip only; the
    // lane order itself is checked by the browser tests (relaxed builds give the CLI's tokens).
    #[test]
    fn the_file_bytes_round_trip_through_the_kernels_layout() {
        for kind in [crate::format::GgmlKind::Q8_0, crate::format::GgmlKind::Q4_0] {
            let (rows, cols) = (7, 64); // a whole group of four rows, and a short one of three
            let w = values(rows * cols, 11);
            let bytes = crate::weights::QMatrix::quantize(kind, rows, cols, &w).to_bytes();
            let m = crate::weights::QMatrix::from_blocks(kind, rows, cols, &bytes);
            assert_eq!(m.to_bytes(), bytes, "{kind:?}: the file bytes round-trip");
            // Each row read back (an embedding lookup) as candle dequantizes the file's blocks.
            let mut want = vec![0f32; rows * cols];
            match kind {
                crate::format::GgmlKind::Q8_0 => BlockQ8_0::to_float(&blocks_of::<BlockQ8_0>(&bytes), &mut want),
                crate::format::GgmlKind::Q4_0 => BlockQ4_0::to_float(&blocks_of::<BlockQ4_0>(&bytes), &mut want),
            }
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                m.row(r, &mut row);
                assert_eq!(row, want[r * cols..(r + 1) * cols], "{kind:?}: row {r}");
            }
        }
    }
}
