//! Tensor names → typed weights, with every expected name and shape checked against `Config`.
//!
//! Names are Hugging Face's Llama names (`model.layers.{l}.self_attn.q_proj.weight`, …), so a
//! converted GGUF and a converted Hugging Face folder produce the same file. Matrices stay
//! quantized (`QMatrix`): the file's GGML blocks are rearranged once into the kernel's layout
//! (qmatmul.rs), in place when the weights own the file's bytes; norms are f32. All problems are
//! collected and reported together, so a mismatched file is fixed in one round.
//!
//! Rotary convention: q_proj and k_proj rows are stored in GGUF order, where each rotated pair
//! is two adjacent rows (2i, 2i+1). The Hugging Face importer permutes its rows into this order.

use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
use std::collections::HashMap;
use std::sync::Arc;

use half::f16;

use crate::qmatmul::{self, QActivations, QWeights};

use crate::config::Config;
use crate::format::{GgmlKind, QSafetensors, StoredTensor, f32_values};

/// A weight matrix `[rows, cols]` = `[out_features, in_features]`, in blocks of 32 along `cols`,
/// held in the layout our kernel reads (quants apart from scales; see qmatmul.rs).
pub struct QMatrix {
    kind: GgmlKind,
    rows: usize,
    cols: usize,
    blocks: SplitBlocks,
}

/// A matrix's blocks split in two runs of bytes: every block's quants, contiguous, then every
/// block's scale (the file's f16, little-endian), both in the kernel's order
/// (`qmatmul::block_index`: rows in groups of four, their blocks interleaved). They sit inside a buffer that may hold many matrices: loaded from a
/// file, that buffer is the file's own bytes, rearranged in place (`split_blocks`), so the
/// weights are held in memory once, not as the file plus a copy.
struct SplitBlocks {
    buf: Arc<Vec<u8>>,
    start: usize,
    /// Blocks, and quant bytes per block.
    n: usize,
    q: usize,
}

impl SplitBlocks {
    fn quants(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.n * self.q]
    }

    fn scales(&self) -> &[[u8; 2]] {
        let at = self.start + self.n * self.q;
        self.buf[at..at + 2 * self.n].as_chunks::<2>().0
    }
}

/// Rewrites a matrix's GGML blocks in place as their quants, contiguous, then their f16 scales
/// (`SplitBlocks`), all in `block_index` order, and returns the number of blocks. The scales are
/// set aside first (2 bytes a block), since their place is not free until every block has moved.
/// The quants move a group of rows at a time, read from a copy of the group's blocks: a group's
/// quants end before the next group's blocks begin (g·q < g·size), so nothing unread is
/// overwritten.
fn split_blocks(kind: GgmlKind, rows: usize, cols: usize, blocks: &mut [u8]) -> usize {
    match kind {
        GgmlKind::Q8_0 => split::<32>(rows, cols / 32, blocks),
        GgmlKind::Q4_0 => split::<16>(rows, cols / 32, blocks),
    }
}

/// `split_blocks` for blocks of an f16 scale and Q bytes of quants, `per_row` blocks a row.
fn split<const Q: usize>(rows: usize, per_row: usize, blocks: &mut [u8]) -> usize {
    let size = Q + 2;
    let n = rows * per_row;
    let scales: Vec<[u8; 2]> = blocks[..n * size].chunks_exact(size).map(|block| [block[0], block[1]]).collect();
    let mut source = Vec::with_capacity(qmatmul::ROWS * per_row * size);
    // Group by group, rows and blocks in order: no division per block (4 M of them at load).
    for (first_row, group_rows) in qmatmul::row_groups(rows) {
        let (first, end) = (first_row * per_row, (first_row + group_rows) * per_row);
        source.clear();
        source.extend_from_slice(&blocks[first * size..end * size]);
        let placed = blocks[first * Q..end * Q].as_chunks_mut::<Q>().0;
        for (k, row) in source.chunks_exact(per_row * size).enumerate() {
            for (b, block) in row.chunks_exact(size).enumerate() {
                let mut quants: [u8; Q] = block[2..].try_into().expect("Q bytes");
                qmatmul::to_kernel_order(&mut quants);
                placed[qmatmul::in_group(group_rows, k, b)] = quants;
            }
        }
    }
    let placed = blocks[n * Q..n * size].as_chunks_mut::<2>().0;
    for (first_row, group_rows) in qmatmul::row_groups(rows) {
        let first = first_row * per_row;
        for (k, row) in scales[first..first + group_rows * per_row].chunks_exact(per_row).enumerate() {
            for (b, &d) in row.iter().enumerate() {
                placed[first + qmatmul::in_group(group_rows, k, b)] = d;
            }
        }
    }
    n
}

impl QMatrix {
    /// From GGML block bytes as stored in the file (any alignment), copied.
    pub fn from_blocks(kind: GgmlKind, rows: usize, cols: usize, bytes: &[u8]) -> Self {
        let mut buf = bytes.to_vec();
        let n = split_blocks(kind, rows, cols, &mut buf);
        buf.truncate(n * kind.type_size());
        QMatrix { kind, rows, cols, blocks: SplitBlocks { buf: Arc::new(buf), start: 0, n, q: kind.type_size() - 2 } }
    }

    /// The kernel's view of this matrix.
    fn view(&self) -> QWeights<'_> {
        let (bytes, scales) = (self.blocks.quants(), self.blocks.scales());
        match self.kind {
            // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is valid.
            GgmlKind::Q8_0 => QWeights::Q8_0 { scales, quants: unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const i8, bytes.len()) } },
            GgmlKind::Q4_0 => QWeights::Q4_0 { scales, nibbles: bytes },
        }
    }

    /// Quantizes a row-major f32 matrix (converter and tests): Q8_0 with candle's GGML quantizer,
    /// Q4_0 with the error-minimizing search below.
    pub fn quantize(kind: GgmlKind, rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols, "quantize: values do not match [{rows}, {cols}]");
        let bytes = match kind {
            GgmlKind::Q8_0 => bytes_of(&quantize_blocks::<BlockQ8_0>(values)),
            GgmlKind::Q4_0 => values.chunks_exact(32).flat_map(q4_0_block).collect(),
        };
        Self::from_blocks(kind, rows, cols, &bytes)
    }

    pub fn kind(&self) -> GgmlKind {
        self.kind
    }

    /// The bytes a product with this matrix reads: its quants, then its scales.
    pub fn stored(&self) -> [&[u8]; 2] {
        (self.blocks.quants(), self.blocks.scales().as_flattened()).into()
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The raw GGML bytes, as they go into a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.kind.bytes_for(self.rows, self.cols).unwrap_or(0));
        let (per_row, q) = (self.cols / 32, self.blocks.q);
        let (quants, scales) = (self.blocks.quants(), self.blocks.scales());
        for i in 0..self.rows * per_row {
            let at = qmatmul::block_index(self.rows, per_row, i / per_row, i % per_row);
            out.extend_from_slice(&scales[at]);
            let start = out.len();
            out.extend_from_slice(&quants[at * q..(at + 1) * q]);
            qmatmul::to_ggml_order(&mut out[start..]);
        }
        out
    }

    /// out (x.rows × rows) = x · selfᵀ, x already rounded to 8 bits (qmatmul.rs).
    pub fn matmul_q(&self, x: &QActivations, out: &mut [f32]) {
        qmatmul::matmul(self.view(), self.rows, self.cols, x, out);
    }

    /// Each out = x · Wᵀ for its W, as one job for the pass's threads (`qmatmul::matmuls`).
    pub fn matmuls_q<const N: usize>(x: &QActivations, products: [(&QMatrix, &mut [f32]); N]) {
        let cols = x.cols;
        assert!(products.iter().all(|(w, _)| w.cols == cols), "matmuls_q: the products' widths differ from the input's");
        qmatmul::matmuls(products.map(|(w, out)| qmatmul::Product { w: w.view(), rows: w.rows, out }), cols, x);
    }

    /// Dequantizes one row (an embedding lookup) into `out` (cols).
    pub fn row(&self, row: usize, out: &mut [f32]) {
        let per_row = self.cols / 32;
        let type_q = self.blocks.q;
        let bytes = self.blocks.quants();
        for (b, o) in out[..self.cols].chunks_exact_mut(32).enumerate() {
            let block = qmatmul::block_index(self.rows, per_row, row, b);
            // The block's quants in GGML's order, whatever order the kernel keeps them in.
            let mut q = [0u8; 32];
            q[..type_q].copy_from_slice(&bytes[block * type_q..(block + 1) * type_q]);
            qmatmul::to_ggml_order(&mut q[..type_q]);
            let d = qmatmul::f16_to_f32(self.blocks.scales()[block]);
            match self.kind {
                GgmlKind::Q8_0 => o.iter_mut().zip(q).for_each(|(o, q)| *o = q as i8 as f32 * d),
                GgmlKind::Q4_0 => {
                    for j in 0..16 {
                        o[j] = ((q[j] & 0x0F) as i32 - 8) as f32 * d;
                        o[j + 16] = ((q[j] >> 4) as i32 - 8) as f32 * d;
                    }
                }
            }
        }
    }

    /// The whole matrix as f32 (tests and the converter).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, chunk) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row(r, chunk);
        }
        out
    }

    fn scales_are_finite(&self) -> bool {
        self.blocks.scales().iter().all(|&d| f16::from_le_bytes(d).is_finite())
    }
}

/// One Q4_0 block (f16 scale, 16 bytes of nibbles), choosing the scale that minimizes the squared
/// error rather than GGML's reference rule d = max/−8. The converter re-quantizes weights that were
/// already 4-bit (the GGUF ships Q4_1), where the reference rule loses noticeably more; searching
/// candidate rounding grids, each with its least-squares scale (as llama.cpp's `make_qx_quants`
/// does), keeps more of the model.
fn q4_0_block(x: &[f32]) -> [u8; 18] {
    let max = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let mut best = (f32::INFINITY, 0f32);
    if max != 0.0 {
        for step in -10..=10 {
            let iscale = -(8.0 + 0.1 * step as f32) / max;
            let (mut sum_xl, mut sum_ll) = (0f32, 0f32);
            for &v in x {
                let l = (iscale * v).round().clamp(-8.0, 7.0);
                sum_xl += v * l;
                sum_ll += l * l;
            }
            if sum_ll == 0.0 {
                continue;
            }
            // The scale is stored as f16: judge each candidate with the scale it will really have.
            let d = f16::from_f32(sum_xl / sum_ll).to_f32();
            if d == 0.0 {
                continue;
            }
            let err: f32 = x
                .iter()
                .map(|&v| {
                    let l = (v / d).round().clamp(-8.0, 7.0);
                    (v - l * d).powi(2)
                })
                .sum();
            if err < best.0 {
                best = (err, d);
            }
        }
    }
    let d = best.1;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let level = |v: f32| ((v * id).round().clamp(-8.0, 7.0) as i32 + 8) as u8;
    let mut block = [0u8; 18];
    block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..16 {
        block[2 + j] = level(x[j]) | (level(x[j + 16]) << 4);
    }
    block
}

fn quantize_blocks<T: GgmlType>(values: &[f32]) -> Vec<T> {
    let mut blocks = vec![T::zeros(); values.len() / T::BLCK_SIZE];
    T::from_float(values, &mut blocks);
    blocks
}

fn bytes_of<T: GgmlType>(blocks: &[T]) -> Vec<u8> {
    let size = std::mem::size_of_val(blocks);
    // SAFETY: GGML block types are repr(C) plain data with no padding (f16 + byte arrays).
    unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, size) }.to_vec()
}

/// One transformer block's weights.
pub struct BlockWeights {
    pub attn_norm: Vec<f32>, // (d)
    pub wq: QMatrix,         // (h·hd, d)
    pub wk: QMatrix,         // (kvh·hd, d)
    pub wv: QMatrix,         // (kvh·hd, d)
    pub wo: QMatrix,         // (d, h·hd)
    pub mlp_norm: Vec<f32>,  // (d)
    pub w_gate: QMatrix,     // (f, d)
    pub w_up: QMatrix,       // (f, d)
    pub w_down: QMatrix,     // (d, f)
}

impl BlockWeights {
    /// The block's seven matrices, each with its name in the file after `model.layers.{l}.`.
    pub fn matrices(&self) -> [(&'static str, &QMatrix); 7] {
        [
            ("self_attn.q_proj", &self.wq),
            ("self_attn.k_proj", &self.wk),
            ("self_attn.v_proj", &self.wv),
            ("self_attn.o_proj", &self.wo),
            ("mlp.gate_proj", &self.w_gate),
            ("mlp.up_proj", &self.w_up),
            ("mlp.down_proj", &self.w_down),
        ]
    }
}

pub struct Weights {
    pub embed: QMatrix, // (vocab, d)
    pub blocks: Vec<BlockWeights>,
    pub final_norm: Vec<f32>, // (d)
    /// None when the output head is tied to the embedding (SmolLM2).
    pub lm_head: Option<QMatrix>, // (vocab, d)
}

impl Weights {
    /// The output projection: the separate head, or the tied embedding.
    pub fn output(&self) -> &QMatrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Every matrix a decode step multiplies by, once each: the blocks' seven and the output head
    /// (the embedding itself when tied; of the embedding a step reads one row, not counted).
    pub fn products(&self) -> impl Iterator<Item = &QMatrix> {
        self.blocks.iter().flat_map(|b| b.matrices().map(|(_, m)| m)).chain([self.output()])
    }

    /// The quantization of the transformer blocks (the embedding may be kept at 8 bits).
    pub fn quant(&self) -> GgmlKind {
        self.blocks.first().map_or(self.embed.kind(), |b| b.wq.kind())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error("{file} does not match config.json: {}. The weights and config come from different models or a damaged conversion: convert the model again.", summarize(.problems))]
    Mismatch { file: String, problems: Vec<String> },
}

/// All problems on one line; a long list is cut after the first eight.
fn summarize(problems: &[String]) -> String {
    let mut s = problems.iter().take(8).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > 8 {
        s.push_str(&format!("; and {} more", problems.len() - 8));
    }
    s
}

/// Every tensor name the config implies, with its expected shape.
pub fn expected_tensors(c: &Config) -> Vec<(String, Vec<usize>)> {
    let mut names = vec![("model.embed_tokens.weight".to_string(), vec![c.vocab_size, c.dim])];
    for l in 0..c.n_layers {
        let p = format!("model.layers.{l}");
        names.extend([
            (format!("{p}.input_layernorm.weight"), vec![c.dim]),
            (format!("{p}.self_attn.q_proj.weight"), vec![c.q_dim(), c.dim]),
            (format!("{p}.self_attn.k_proj.weight"), vec![c.kv_dim(), c.dim]),
            (format!("{p}.self_attn.v_proj.weight"), vec![c.kv_dim(), c.dim]),
            (format!("{p}.self_attn.o_proj.weight"), vec![c.dim, c.q_dim()]),
            (format!("{p}.post_attention_layernorm.weight"), vec![c.dim]),
            (format!("{p}.mlp.gate_proj.weight"), vec![c.ffn_dim, c.dim]),
            (format!("{p}.mlp.up_proj.weight"), vec![c.ffn_dim, c.dim]),
            (format!("{p}.mlp.down_proj.weight"), vec![c.dim, c.ffn_dim]),
        ]);
    }
    names.push(("model.norm.weight".into(), vec![c.dim]));
    if !c.tie_word_embeddings {
        names.push(("lm_head.weight".into(), vec![c.vocab_size, c.dim]));
    }
    names
}

/// The head layout the weights were converted with, written into the weights file's metadata.
/// Shapes alone cannot tell 9 heads of 64 from 18 heads of 32 (the matrices are the same size),
/// and a config.json that says the wrong one would run and print nonsense; with these entries the
/// loader refuses instead. Files without them (older conversions) are checked by shape only.
pub fn layout_metadata(c: &Config) -> Vec<(String, String)> {
    vec![
        ("config.num_attention_heads".into(), c.n_heads.to_string()),
        ("config.num_key_value_heads".into(), c.n_kv_heads.to_string()),
        ("config.hidden_size".into(), c.dim.to_string()),
        ("config.num_hidden_layers".into(), c.n_layers.to_string()),
        ("config.vocab_size".into(), c.vocab_size.to_string()),
    ]
}

/// Every way the container disagrees with the config: layout metadata, and missing, misshapen,
/// mistyped and unexpected tensors.
fn check_tensors(file: &str, st: &QSafetensors, c: &Config) -> Result<(), WeightsError> {
    let expected = expected_tensors(c);
    let mut problems = Vec::new();
    for (key, ours) in layout_metadata(c) {
        if let Some(theirs) = st.metadata.get(&key) {
            if theirs.trim() != ours {
                let field = key.trim_start_matches("config.");
                problems.push(format!("config.json says {field} = {ours} but the weights were converted with {theirs}"));
            }
        }
    }
    for (name, shape) in &expected {
        match st.tensors.get(name) {
            None => problems.push(format!("missing tensor `{name}` (expected shape {shape:?})")),
            Some(t) if &t.shape() != shape => {
                problems.push(format!("`{name}` has shape {:?}, config implies {shape:?}", t.shape()))
            }
            Some(t) => {
                let is_matrix = shape.len() == 2;
                match (t, is_matrix) {
                    (StoredTensor::Quantized { .. }, true) => {}
                    (StoredTensor::F32 { .. }, false) => {}
                    (t, _) => problems.push(format!(
                        "`{name}` is stored as {}, expected {}",
                        t.type_name(),
                        if is_matrix { "quantized blocks" } else { "f32" }
                    )),
                }
            }
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for name in st.tensors.keys().filter(|n| !known.contains(n.as_str())) {
        problems.push(format!("unexpected tensor `{name}` (is num_hidden_layers or tie_word_embeddings right?)"));
    }
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch { file: file.to_string(), problems });
    }
    Ok(())
}

fn vector(st: &QSafetensors, name: &str) -> Vec<f32> {
    match &st.tensors[name] {
        StoredTensor::F32 { bytes, .. } => f32_values(bytes),
        StoredTensor::Quantized { .. } => unreachable!("checked: vectors are f32"),
    }
}

impl Weights {
    /// Checks a container against the config (every problem at once) and builds the weights from
    /// copies of its tensors; the container's bytes stay with the caller.
    pub fn load(file: &str, st: &QSafetensors, c: &Config) -> Result<Self, WeightsError> {
        check_tensors(file, st, c)?;
        let matrix = |name: &str| match &st.tensors[name] {
            StoredTensor::Quantized { kind, rows, cols, blocks } => QMatrix::from_blocks(*kind, *rows, *cols, blocks),
            StoredTensor::F32 { .. } => unreachable!("checked: matrices are quantized"),
        };
        let weights = Self::assemble(c, matrix, |name| vector(st, name));
        weights.check_finite(file)?;
        Ok(weights)
    }

    /// As `load`, but the file's bytes become the weights' storage: each matrix's blocks are
    /// split in place into quants and scales, so the weights are held once (in the browser,
    /// where the bytes are copied into wasm memory, that saves the size of the file).
    pub fn load_owned(file: &str, mut bytes: Vec<u8>, c: &Config) -> Result<Self, WeightsError> {
        let st = QSafetensors::read(file, &bytes)?;
        check_tensors(file, &st, c)?;
        let base = bytes.as_ptr() as usize;
        let (mut spans, mut vectors) = (Vec::new(), HashMap::new());
        for (name, t) in &st.tensors {
            match t {
                StoredTensor::Quantized { kind, rows, cols, blocks } => spans.push((name.clone(), *kind, *rows, *cols, blocks.as_ptr() as usize - base, blocks.len())),
                StoredTensor::F32 { .. } => {
                    vectors.insert(name.clone(), vector(&st, name));
                }
            }
        }
        drop(st);
        // Split every matrix in place (the bytes are still ours alone), then share them.
        let mut parts: HashMap<String, (GgmlKind, usize, usize, usize, usize)> =
            spans.into_iter().map(|(name, kind, rows, cols, start, len)| (name, (kind, rows, cols, start, split_blocks(kind, rows, cols, &mut bytes[start..start + len])))).collect();
        let buf = Arc::new(bytes);
        let matrix = |name: &str| {
            let (kind, rows, cols, start, n) = parts.remove(name).expect("each matrix is taken once");
            QMatrix { kind, rows, cols, blocks: SplitBlocks { buf: buf.clone(), start, n, q: kind.type_size() - 2 } }
        };
        let weights = Self::assemble(c, matrix, |name| vectors.remove(name).expect("each vector is taken once"));
        weights.check_finite(file)?;
        Ok(weights)
    }

    /// The model's structure, each tensor made by `matrix` or `vector` from its name.
    fn assemble(c: &Config, mut matrix: impl FnMut(&str) -> QMatrix, mut vector: impl FnMut(&str) -> Vec<f32>) -> Self {
        let blocks = (0..c.n_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                BlockWeights {
                    attn_norm: vector(&format!("{p}.input_layernorm.weight")),
                    wq: matrix(&format!("{p}.self_attn.q_proj.weight")),
                    wk: matrix(&format!("{p}.self_attn.k_proj.weight")),
                    wv: matrix(&format!("{p}.self_attn.v_proj.weight")),
                    wo: matrix(&format!("{p}.self_attn.o_proj.weight")),
                    mlp_norm: vector(&format!("{p}.post_attention_layernorm.weight")),
                    w_gate: matrix(&format!("{p}.mlp.gate_proj.weight")),
                    w_up: matrix(&format!("{p}.mlp.up_proj.weight")),
                    w_down: matrix(&format!("{p}.mlp.down_proj.weight")),
                }
            })
            .collect();
        Weights {
            embed: matrix("model.embed_tokens.weight"),
            blocks,
            final_norm: vector("model.norm.weight"),
            lm_head: (!c.tie_word_embeddings).then(|| matrix("lm_head.weight")),
        }
    }

    /// NaN or Inf anywhere would silently turn every logit into NaN; refuse instead.
    fn check_finite(&self, file: &str) -> Result<(), WeightsError> {
        let mut problems = Vec::new();
        let check_scales = |problems: &mut Vec<String>, name: String, m: &QMatrix| {
            if !m.scales_are_finite() {
                problems.push(format!("`{name}` has NaN or infinite block scales (the file is corrupt or was quantized from broken weights)"));
            }
        };
        check_scales(&mut problems, "model.embed_tokens.weight".into(), &self.embed);
        if let Some(head) = &self.lm_head {
            check_scales(&mut problems, "lm_head.weight".into(), head);
        }
        for (l, b) in self.blocks.iter().enumerate() {
            for (part, m) in b.matrices() {
                check_scales(&mut problems, format!("model.layers.{l}.{part}.weight"), m);
            }
            for (part, v) in [("input_layernorm", &b.attn_norm), ("post_attention_layernorm", &b.mlp_norm)] {
                if !v.iter().all(|x| x.is_finite()) {
                    problems.push(format!("`model.layers.{l}.{part}.weight` has NaN or infinite values"));
                }
            }
        }
        if !self.final_norm.iter().all(|x| x.is_finite()) {
            problems.push("`model.norm.weight` has NaN or infinite values".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(WeightsError::Mismatch { file: file.to_string(), problems }) }
    }
}
