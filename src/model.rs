//! The Llama-family decoder: a `Transformer` of `Block`s, each two residual lines
//!
//! ```text
//!   x = x + Attention(RMSNorm(x))        (causal self-attention, rotary positions, GQA)
//!   x = x + MLP(RMSNorm(x))              (SwiGLU: W_down · (silu(W_gate·x) ⊙ W_up·x))
//!   logits = W_out · RMSNorm(x_last)     (W_out is the embedding when tied)
//! ```
//! written top to bottom in `forward_chunk`, after llama2.c's `forward()`: every buffer lives in
//! `RunState`, allocated once for the largest chunk, and one generated token allocates nothing.
//! Keys and values go into a `KvCache` preallocated for the whole context and written in place:
//! keys rounded to 8 bits as weights are (attention/keys.rs), values as bf16 (attention.rs says
//! why).
//! Matrix products are quantized (`QMatrix::matmul_q`, each input rounded to 8 bits once and
//! shared by the matrices that read it); the rest is plain loops over slices, which is what the
//! equations are. Transcendentals come from `libm`, not the platform's C library, so the browser
//! and the CLI compute the same bits (see qmatmul.rs for why that matters).
//!
//! Dimension letters: t tokens in the chunk, d model width, h query heads, kvh key/value heads,
//! hd head width, f MLP width, v vocabulary, p absolute position.

use crate::attention::{self, keys::Keys};
use crate::capture::AttentionCapture;
use crate::qmatmul::QActivations;
use crate::team::{self, Disjoint};
use crate::config::Config;
use crate::weights::{QMatrix, Weights};
use half::bf16;

/// Prompts are processed this many tokens at a time: big enough that each weight block is
/// reused across many rows (candle tiles rows in its quantized matmul), small enough that the
/// run-state buffers stay a few megabytes.
pub const PREFILL_CHUNK: usize = 64;

/// Keys from which a query's attention is shared out over the pass's threads (for a short row,
/// handing it over costs more than it saves). 32 rather than 128: two threads decoded
/// 128 tokens after a 15-token prompt 2–4% faster in the worker-alone page; no value below 32 was
/// measured.
const PARALLEL_ATTENTION_FROM: usize = 32;

/// Capture keeps the first this-many positions unless told otherwise (see capture.rs).
pub const DEFAULT_CAPTURE_WINDOW: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the sequence would be {needed} tokens but the context holds {max_context}: shorten the prompt or lower max tokens")]
    ContextFull { needed: usize, max_context: usize },
    #[error("token id {id} is outside the vocabulary ({vocab_size} tokens)")]
    BadToken { id: u32, vocab_size: usize },
    #[error("running this model needs about {needed_mb} MB ({detail}) but at most {limit_mb} MB is available here: choose q4_0, a shorter context, or turn attention capture off")]
    OutOfMemoryBudget { needed_mb: u64, limit_mb: u64, detail: String },
    #[error("layer {layer} / head {head} does not exist: the model has {n_layers} layers of {n_heads} heads")]
    NoSuchHead { layer: usize, head: usize, n_layers: usize, n_heads: usize },
}

/// Rotary position tables, cos and sin of p·θ_i for i < hd/2, θ_i = rope_theta^(−2i/hd).
///
/// Pairing: the GGUF layout rotates adjacent pairs (x[2i], x[2i+1]) — llama.cpp's "normal" RoPE,
/// candle's `rope_i` — because the GGUF converter permuted Hugging Face's half-split rows into it.
struct Rope {
    half: usize,
    cos: Vec<f32>, // (max_context, hd/2)
    sin: Vec<f32>, // (max_context, hd/2)
}

impl Rope {
    fn new(head_dim: usize, theta: f32, max_context: usize) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_context * half);
        let mut sin = Vec::with_capacity(max_context * half);
        for p in 0..max_context {
            for i in 0..half {
                let freq = 1.0 / libm::powf(theta, 2.0 * i as f32 / head_dim as f32);
                let angle = p as f32 * freq;
                cos.push(libm::cosf(angle));
                sin.push(libm::sinf(angle));
            }
        }
        Rope { half, cos, sin }
    }

    /// Rotates every head of one token's q or k row in place, for position p.
    fn rotate(&self, row: &mut [f32], p: usize) {
        let cos = &self.cos[p * self.half..(p + 1) * self.half];
        let sin = &self.sin[p * self.half..(p + 1) * self.half];
        for head in row.chunks_exact_mut(2 * self.half) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * cos[i] - x1 * sin[i];
                pair[1] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}

/// Keys and values of every past position, per layer and KV head: the keys in 8 bits
/// (`attention::keys::Keys`), the values (max_context, hd) as bf16, so that one head's values are
/// contiguous for the weighted sum. Each head's room is reserved at load but filled as positions
/// are written, not zeroed first: zeroing ~90 MiB of wasm memory (the cache in f32)
/// took 49 ms of a load in a Node profile (and the build 26 ms less in Chromium without it), and
/// no position is read before it is written.
struct KvCache {
    n_kv_heads: usize,
    head_dim: usize,
    keys: Vec<Keys>,        // [layer · n_kv_heads + g]
    values: Vec<Vec<bf16>>, // [layer · n_kv_heads + g]
}

impl KvCache {
    fn new(c: &Config, max_context: usize) -> Self {
        let heads = c.n_layers * c.n_kv_heads;
        KvCache {
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            keys: (0..heads).map(|_| Keys::with_room(c.head_dim, max_context)).collect(),
            values: (0..heads).map(|_| Vec::with_capacity(max_context * c.head_dim)).collect(),
        }
    }

    /// Stores one token's k and v rows (kvh·hd each) at position p: k rounded to 8 bits
    /// (`Keys`), v to bf16 (to nearest, ties to even; bf16 has f32's range, so nothing is clamped).
    fn write(&mut self, layer: usize, p: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        for (g, (kh, vh)) in k.chunks_exact(hd).zip(v.chunks_exact(hd)).enumerate() {
            let head = layer * self.n_kv_heads + g;
            self.keys[head].write(p, kh);
            Self::put(&mut self.values[head], p * hd, vh);
        }
    }

    /// Writes `row` at `at`: over an earlier sequence's position, or as the next one.
    fn put(head: &mut Vec<bf16>, at: usize, row: &[f32]) {
        let rounded = row.iter().map(|&x| bf16::from_f32(x));
        if at < head.len() {
            head[at..at + row.len()].iter_mut().zip(rounded).for_each(|(h, x)| *h = x);
        } else {
            assert_eq!(at, head.len(), "positions are written in order");
            head.extend(rounded);
        }
    }

    /// Bytes of keys and values for `max_context` positions: what `new` reserves.
    fn bytes(c: &Config, max_context: usize) -> u64 {
        let values = max_context as u64 * c.head_dim as u64 * size_of::<bf16>() as u64;
        c.n_layers as u64 * c.n_kv_heads as u64 * (Keys::bytes(c.head_dim, max_context) + values)
    }

    /// The keys of KV head g.
    fn keys(&self, layer: usize, g: usize) -> &Keys {
        &self.keys[layer * self.n_kv_heads + g]
    }
    /// Values 0..n of KV head g: n × hd, contiguous.
    fn values(&self, layer: usize, g: usize, n: usize) -> &[bf16] {
        &self.values[layer * self.n_kv_heads + g][..n * self.head_dim]
    }
}

/// Activations for one chunk of up to `PREFILL_CHUNK` tokens, allocated once.
struct RunState {
    x: Vec<f32>,        // (t, d) the residual stream
    xb: Vec<f32>,       // (t, d) normed input of the current sublayer
    q: Vec<f32>,        // (t, h·hd)
    k: Vec<f32>,        // (t, kvh·hd)
    v: Vec<f32>,        // (t, kvh·hd)
    heads_out: Vec<f32>, // (t, h·hd) attention output, heads side by side
    proj: Vec<f32>,     // (t, d) a sublayer's output before it joins the residual
    gate: Vec<f32>,     // (t, f)
    up: Vec<f32>,       // (t, f)
    scores: Vec<f32>,   // (h, max_context) one attention row per query head
    queries: QActivations, // one position's query heads rounded to 8 bits, as the keys are
    padded: Vec<f32>,   // the query heads padded to whole blocks, when hd is not
    logits: Vec<f32>,   // (v)
    xq: QActivations,   // the current matmul input rounded to 8 bits
}

impl RunState {
    fn new(c: &Config, max_context: usize) -> Self {
        let t = PREFILL_CHUNK;
        RunState {
            x: vec![0.0; t * c.dim],
            xb: vec![0.0; t * c.dim],
            q: vec![0.0; t * c.q_dim()],
            k: vec![0.0; t * c.kv_dim()],
            v: vec![0.0; t * c.kv_dim()],
            heads_out: vec![0.0; t * c.q_dim()],
            proj: vec![0.0; t * c.dim],
            gate: vec![0.0; t * c.ffn_dim],
            up: vec![0.0; t * c.ffn_dim],
            scores: vec![0.0; c.n_heads * max_context],
            queries: QActivations::default(),
            padded: Vec::new(),
            logits: vec![0.0; c.vocab_size],
            xq: QActivations::default(),
        }
    }
}

/// Bytes the model needs beyond its weights, computed before anything is allocated.
pub fn memory_needed(c: &Config, weights_bytes: u64, max_context: usize, capture_window: Option<usize>) -> (u64, String) {
    let kv = KvCache::bytes(c, max_context);
    let capture = capture_window.map_or(0, |w| AttentionCapture::bound_bytes(c.n_layers, c.n_heads, c.head_dim, w.min(max_context)) + (c.n_layers * c.dim * 4) as u64);
    let t = PREFILL_CHUNK as u64;
    let scratch = 4 * (t * (4 * c.dim as u64 + 2 * c.q_dim() as u64 + 2 * c.kv_dim() as u64 + 2 * c.ffn_dim as u64)
        + c.n_heads as u64 * max_context as u64
        + c.vocab_size as u64)
        + max_context as u64 * c.head_dim as u64 * 4;
    let total = weights_bytes + kv + capture + scratch;
    let mb = |b: u64| b.div_ceil(1 << 20);
    (total, format!("weights {} MB + KV cache {} MB + attention capture {} MB + scratch {} MB", mb(weights_bytes), mb(kv), mb(capture), mb(scratch)))
}

pub struct Transformer {
    pub config: Config,
    weights: Weights,
    rope: Rope,
    kv: KvCache,
    state: RunState,
    capture: Option<AttentionCapture>,
    /// Tokens already in the KV cache; the next token goes at this position.
    pos: usize,
    max_context: usize,
    /// With capture on: the residual stream after each block at the last fed position
    /// (n_layers × d), for the logit lens.
    resid_after: Vec<f32>,
}

impl Transformer {
    /// `capture_window`: Some(n) records attention patterns for the first n positions.
    pub fn new(config: Config, weights: Weights, max_context: usize, capture_window: Option<usize>) -> Self {
        let max_context = max_context.min(config.max_position_embeddings).max(1);
        Transformer {
            rope: Rope::new(config.head_dim, config.rope_theta, max_context),
            kv: KvCache::new(&config, max_context),
            state: RunState::new(&config, max_context),
            capture: capture_window.map(|w| AttentionCapture::new(config.n_layers, config.n_heads, w.min(max_context))),
            resid_after: if capture_window.is_some() { vec![0.0; config.n_layers * config.dim] } else { Vec::new() },
            weights,
            config,
            pos: 0,
            max_context,
        }
    }

    pub fn max_context(&self) -> usize {
        self.max_context
    }
    /// Bytes the KV cache takes for `max_context` positions.
    pub fn kv_cache_bytes(&self) -> u64 {
        KvCache::bytes(&self.config, self.max_context)
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn weights(&self) -> &Weights {
        &self.weights
    }
    pub fn capture(&self) -> Option<&AttentionCapture> {
        self.capture.as_ref()
    }
    /// The logits left by the last `forward` (v).
    pub fn logits(&self) -> &[f32] {
        &self.state.logits
    }

    /// Starts a new sequence: the cache and the captured patterns are forgotten (not freed).
    pub fn reset(&mut self) {
        self.pos = 0;
        if let Some(c) = &mut self.capture {
            c.clear();
        }
    }

    /// Feeds tokens at the next positions and returns the logits (v) for the token after the last.
    /// A prompt is a prefill (many tokens); generation feeds one token per call.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<&[f32], ModelError> {
        assert!(!tokens.is_empty(), "forward needs at least one token");
        let needed = self.pos + tokens.len();
        if needed > self.max_context {
            return Err(ModelError::ContextFull { needed, max_context: self.max_context });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(ModelError::BadToken { id, vocab_size: self.config.vocab_size });
        }
        let chunks = tokens.chunks(PREFILL_CHUNK);
        let last = chunks.len() - 1;
        // One team of threads for the whole pass: its products are split without a wake each.
        crate::team::run(|| {
            for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
                self.forward_chunk(chunk, i == last);
            }
        });
        Ok(&self.state.logits)
    }

    fn forward_chunk(&mut self, tokens: &[u32], want_logits: bool) {
        let c = &self.config;
        let (t, d, hd, f) = (tokens.len(), c.dim, c.head_dim, c.ffn_dim);
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let p0 = self.pos;
        let scale = 1.0 / (hd as f32).sqrt();
        let s = &mut self.state;
        let w = &self.weights;

        // x = embedding rows of the tokens                                       (t, d)
        for (row, &id) in s.x.chunks_exact_mut(d).zip(tokens) {
            w.embed.row(id as usize, row);
        }

        for (l, block) in w.blocks.iter().enumerate() {
            // ---- attention sublayer: x = x + W_o · Attention(RMSNorm(x)) ----
            rmsnorm_rows(&mut s.xb[..t * d], &s.x[..t * d], &block.attn_norm, c.rms_norm_eps);
            s.xq.quantize(&s.xb[..t * d], t, d);
            // q = h·W_qᵀ (t, h·hd), k = h·W_kᵀ and v = h·W_vᵀ (t, kvh·hd): one job for the team
            QMatrix::matmuls_q(&s.xq, [(&block.wq, &mut s.q), (&block.wk, &mut s.k), (&block.wv, &mut s.v)]);
            for i in 0..t {
                self.rope.rotate(&mut s.q[i * qd..(i + 1) * qd], p0 + i);
                self.rope.rotate(&mut s.k[i * kvd..(i + 1) * kvd], p0 + i);
                self.kv.write(l, p0 + i, &s.k[i * kvd..(i + 1) * kvd], &s.v[i * kvd..(i + 1) * kvd]);
                if let Some(cap) = &mut self.capture {
                    cap.record_query(l, p0 + i, &s.q[i * qd..(i + 1) * qd]);
                }
            }
            let group = c.group_size();
            for i in 0..t {
                let n = p0 + i + 1; // this query sees keys 0..n
                attention::keys::quantize_queries(&s.q[i * qd..(i + 1) * qd], hd, &mut s.padded, &mut s.queries);
                let (scores, outs) = (Disjoint::new(&mut s.scores[..c.n_heads * n]), Disjoint::new(&mut s.heads_out[i * qd..(i + 1) * qd]));
                let (queries, kv) = (&s.queries, &self.kv);
                // The heads are independent: at long context, where attention is a large share
                // of a step, each thread takes an even run of them (by KV group, 3 groups would
                // leave one of two threads idle a third of the time). Within a run, the heads of
                // one group read its keys and values together.
                let parts = if n >= PARALLEL_ATTENTION_FROM { team::size() } else { 1 };
                let attend_group = |g: usize, h: usize, end: usize| {
                    // SAFETY: heads h..end are this part's alone, and so are their rows of `scores` and `outs`.
                    let (rows, out) = unsafe { (scores.part(h * n, (end - h) * n), outs.part(h * hd, (end - h) * hd)) };
                    kv.keys(l, g).scores(queries, h..end, n, scale, rows); //                (heads, n)
                    rows.chunks_exact_mut(n).for_each(attention::pattern);
                    attention::group_weighted_sum(rows, kv.values(l, g, n), hd, out); //     (heads, hd)
                };
                let attend = |part: usize| {
                    let (first, last) = (part * c.n_heads / parts, (part + 1) * c.n_heads / parts);
                    // Each KV group's share of this part's heads h..end, where it has any.
                    let runs = (0..c.n_kv_heads)
                        .map(|g| (g, (g * group).max(first), ((g + 1) * group).min(last)))
                        .filter(|&(_, h, end)| h < end);
                    // A group split between parts 2i and 2i + 1 would be the last of the one and
                    // the first of the other. Both take it first, at the same time, so that the
                    // second reader may find its keys and values in the cache the cores share
                    // (two threads, q4_0, 992 tokens of context: 1.068 in a paired A/B).
                    if part % 2 == 0 {
                        runs.rev().for_each(|(g, h, end)| attend_group(g, h, end));
                    } else {
                        runs.for_each(|(g, h, end)| attend_group(g, h, end));
                    }
                };
                team::for_each_part(parts, 0, &attend);
                if let Some(cap) = &mut self.capture {
                    for (h, row) in s.scores[..c.n_heads * n].chunks_exact(n).enumerate() {
                        cap.record(l, h, n - 1, row);
                    }
                }
            }
            s.xq.quantize(&s.heads_out[..t * qd], t, qd);
            block.wo.matmul_q(&s.xq, &mut s.proj); //                             (t, d)
            add_into(&mut s.x[..t * d], &s.proj[..t * d]);

            // ---- MLP sublayer: x = x + W_down · (silu(W_gate · h) ⊙ W_up · h), h = RMSNorm(x) ----
            rmsnorm_rows(&mut s.xb[..t * d], &s.x[..t * d], &block.mlp_norm, c.rms_norm_eps);
            s.xq.quantize(&s.xb[..t * d], t, d);
            QMatrix::matmuls_q(&s.xq, [(&block.w_gate, &mut s.gate), (&block.w_up, &mut s.up)]); // (t, f) each
            for (g, u) in s.gate[..t * f].iter_mut().zip(&s.up[..t * f]) {
                *g = silu(*g) * u;
            }
            s.xq.quantize(&s.gate[..t * f], t, f);
            block.w_down.matmul_q(&s.xq, &mut s.proj); //                         (t, d)
            add_into(&mut s.x[..t * d], &s.proj[..t * d]);
            if !self.resid_after.is_empty() {
                self.resid_after[l * d..(l + 1) * d].copy_from_slice(&s.x[(t - 1) * d..t * d]);
            }
        }
        self.pos += t;

        if want_logits {
            // logits = W_out · RMSNorm(x_last)                                        (v)
            let last = &s.x[(t - 1) * d..t * d];
            rmsnorm_rows(&mut s.xb[..d], last, &w.final_norm, c.rms_norm_eps);
            s.xq.quantize(&s.xb[..d], 1, d);
            w.output().matmul_q(&s.xq, &mut s.logits);
        }
    }
}

impl Transformer {
    /// The logit lens at the last fed position: for each block, the final RMSNorm and the output
    /// head applied to the residual stream after that block — what the model "would say" if it
    /// stopped there. The last entry is the model's own logits. Needs capture on.
    pub fn logit_lens(&self, mut each: impl FnMut(usize, &[f32])) -> Option<()> {
        if self.resid_after.is_empty() || self.pos == 0 {
            return None;
        }
        let (c, w) = (&self.config, &self.weights);
        let mut normed = vec![0f32; c.dim];
        let mut xq = QActivations::default();
        let mut logits = vec![0f32; c.vocab_size];
        crate::team::run(|| {
            for l in 0..c.n_layers {
                rmsnorm_rows(&mut normed, &self.resid_after[l * c.dim..(l + 1) * c.dim], &w.final_norm, c.rms_norm_eps);
                xq.quantize(&normed, 1, c.dim);
                w.output().matmul_q(&xq, &mut logits);
                each(l, &logits);
            }
        });
        Some(())
    }

    /// Scaled dot-product attention of one query, step by step, recomputed from the captured
    /// query and the cached keys and values with the functions the forward pass uses.
    pub fn explain(&self, layer: usize, head: usize, query: usize) -> Option<Explanation> {
        let c = &self.config;
        if layer >= c.n_layers || head >= c.n_heads || query >= self.pos {
            return None;
        }
        let q = self.capture.as_ref()?.query(layer, head, query, c.head_dim)?;
        let g = c.kv_head_of(head);
        let n = query + 1;
        let values = &self.kv.values(layer, g, n).iter().map(|&x| x.to_f32()).collect::<Vec<f32>>()[..];
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let (mut padded, mut rounded) = (Vec::new(), QActivations::default());
        attention::keys::quantize_queries(q, c.head_dim, &mut padded, &mut rounded);
        let mut dots = vec![0f32; n];
        self.kv.keys(layer, g).scores(&rounded, 0..1, n, 1.0, &mut dots);
        let scores = dots.iter().map(|&d| d * scale).collect::<Vec<f32>>();
        let mut pattern = scores.clone();
        attention::pattern(&mut pattern);
        let mut out = vec![0f32; c.head_dim];
        attention::weighted_sum(&pattern, values, &mut out);
        let value_norms = values.chunks_exact(c.head_dim).map(|v| attention::dot(v, v).sqrt()).collect();
        Some(Explanation { query, kv_head: g, head_dim: c.head_dim, scale, dots, scores, pattern, out, value_norms })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub query: usize,
    pub kv_head: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// q · k_j, as the forward pass computes it: q and the cached keys rounded to 8 bits per block
    /// of 32 (attention/keys.rs)
    pub dots: Vec<f32>,
    /// q · k_j / √hd (what softmax sees; the mask means j ≤ query only)
    pub scores: Vec<f32>,
    pub pattern: Vec<f32>,
    /// Σ_j pattern_j v_j
    pub out: Vec<f32>,
    pub value_norms: Vec<f32>,
}

/// RMSNorm of each d-wide row: y = x / √(mean(x²) + ε) ⊙ weight.
fn rmsnorm_rows(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let mean_sq = attention::dot(xr, xr) / d as f32;
        let inv = 1.0 / libm::sqrtf(mean_sq + eps);
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(weight) {
            *o = xv * inv * wv;
        }
    }
}

/// silu(x) = x · σ(x) = x / (1 + e^(−x)), with the softmax's exponential (which vectorizes; libm's
/// `expf` is a call per element, 46,080 a step) on a non-positive argument: e^(−x) for x ≥ 0,
/// and for x < 0 the same quotient multiplied through by e^x.
fn silu(x: f32) -> f32 {
    let e = attention::exp_nonpositive(-x.abs());
    if x >= 0.0 { x / (1.0 + e) } else { x * e / (1.0 + e) }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn silu_is_x_times_the_logistic_of_x_to_within_a_few_ulp() {
        let mut x = -100f32;
        while x < 100.0 {
            let exact = x as f64 / (1.0 + (-x as f64).exp());
            let ours = super::silu(x) as f64;
            assert!((ours - exact).abs() <= 5e-7 * exact.abs() + 1e-30, "silu({x}) = {ours}, exactly {exact}");
            x += 0.0173;
        }
        assert_eq!(super::silu(0.0), 0.0);
        assert_eq!(super::silu(-1000.0), 0.0);
    }
}
