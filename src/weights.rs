//! Tensor names → typed weights, with every expected name and shape checked against `Config`.
//!
//! Names are Hugging Face's Llama names (`model.layers.{l}.self_attn.q_proj.weight`, …), so a
//! converted GGUF and a converted Hugging Face folder produce the same file. Matrices keep their
//! GGML blocks (`QMatrix`), copied once from the file into typed block vectors that candle's
//! kernels take directly; norms are f32. All problems are collected and reported together, so a
//! mismatched file is fixed in one round rather than one error at a time.
//!
//! Rotary convention: q_proj and k_proj rows are stored in GGUF order, where each rotated pair
//! is two adjacent rows (2i, 2i+1). The Hugging Face importer permutes its rows into this order.

use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ8_0, GgmlType};
use half::f16;

use crate::config::Config;
use crate::format::{GgmlKind, QSafetensors, StoredTensor, f32_values};

/// A weight matrix `[rows, cols]` = `[out_features, in_features]`, in GGML blocks along `cols`.
pub enum QMatrix {
    Q8_0 { rows: usize, cols: usize, blocks: Vec<BlockQ8_0> },
    Q4_0 { rows: usize, cols: usize, blocks: Vec<BlockQ4_0> },
}

impl QMatrix {
    pub fn from_blocks(kind: GgmlKind, rows: usize, cols: usize, bytes: &[u8]) -> Self {
        match kind {
            GgmlKind::Q8_0 => QMatrix::Q8_0 { rows, cols, blocks: blocks_from_bytes(bytes) },
            GgmlKind::Q4_0 => QMatrix::Q4_0 { rows, cols, blocks: blocks_from_bytes(bytes) },
        }
    }

    /// Quantizes a row-major f32 matrix (used by the converter and the tests).
    pub fn quantize(kind: GgmlKind, rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols, "quantize: values do not match [{rows}, {cols}]");
        match kind {
            GgmlKind::Q8_0 => QMatrix::Q8_0 { rows, cols, blocks: quantize_blocks(values) },
            GgmlKind::Q4_0 => QMatrix::Q4_0 { rows, cols, blocks: quantize_blocks(values) },
        }
    }

    pub fn kind(&self) -> GgmlKind {
        match self {
            QMatrix::Q8_0 { .. } => GgmlKind::Q8_0,
            QMatrix::Q4_0 { .. } => GgmlKind::Q4_0,
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        match self {
            QMatrix::Q8_0 { rows, cols, .. } | QMatrix::Q4_0 { rows, cols, .. } => (*rows, *cols),
        }
    }

    /// The raw GGML bytes, as they go into a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            QMatrix::Q8_0 { blocks, .. } => bytes_of(blocks),
            QMatrix::Q4_0 { blocks, .. } => bytes_of(blocks),
        }
    }

    /// out (m × rows) = x (m × cols) · selfᵀ — candle's quantized kernel (simd128 on wasm):
    /// x is quantized to Q8 blocks once per call, then each weight row is an integer dot product.
    pub fn matmul_t(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let (rows, cols) = self.shape();
        debug_assert_eq!(x.len(), m * cols);
        let out = &mut out[..m * rows];
        let result = match self {
            QMatrix::Q8_0 { blocks, .. } => candle_core::quantized::k_quants::matmul((m, cols, rows), x, blocks, out),
            QMatrix::Q4_0 { blocks, .. } => candle_core::quantized::k_quants::matmul((m, cols, rows), x, blocks, out),
        };
        result.expect("matmul_t: shapes were checked when the weights were loaded");
    }

    /// Dequantizes one row (an embedding lookup) into `out` (cols).
    pub fn row(&self, row: usize, out: &mut [f32]) {
        let (_, cols) = self.shape();
        let per_row = cols / 32;
        match self {
            QMatrix::Q8_0 { blocks, .. } => BlockQ8_0::to_float(&blocks[row * per_row..(row + 1) * per_row], out),
            QMatrix::Q4_0 { blocks, .. } => BlockQ4_0::to_float(&blocks[row * per_row..(row + 1) * per_row], out),
        }
    }

    /// The whole matrix as f32 (tests and the converter).
    pub fn dequantize(&self) -> Vec<f32> {
        let (rows, cols) = self.shape();
        let mut out = vec![0f32; rows * cols];
        for (r, chunk) in out.chunks_exact_mut(cols).enumerate() {
            self.row(r, chunk);
        }
        out
    }
}

fn quantize_blocks<T: GgmlType>(values: &[f32]) -> Vec<T> {
    let mut blocks = vec![T::zeros(); values.len() / T::BLCK_SIZE];
    T::from_float(values, &mut blocks);
    blocks
}

/// Copies raw GGML bytes into a typed block vector. The block types are `repr(C)` plain data
/// (f16 scales and byte arrays), so any byte pattern is a valid value; copying instead of casting
/// means the source may sit at any alignment (candle's own cast asserts alignment and would trap).
fn blocks_from_bytes<T: GgmlType>(bytes: &[u8]) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    assert_eq!(bytes.len() % size, 0, "block bytes were size-checked by the format reader");
    let n = bytes.len() / size;
    let mut blocks: Vec<T> = vec![T::zeros(); n];
    // SAFETY: `blocks` owns n * size bytes, the regions do not overlap, and T is plain data.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), blocks.as_mut_ptr() as *mut u8, n * size) };
    blocks
}

fn bytes_of<T: GgmlType>(blocks: &[T]) -> Vec<u8> {
    let size = std::mem::size_of_val(blocks);
    // SAFETY: T is repr(C) plain data with no padding (f16 + byte arrays), read as bytes.
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

    pub fn quant(&self) -> GgmlKind {
        self.embed.kind()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
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

impl Weights {
    pub fn load(file: &str, st: &QSafetensors, c: &Config) -> Result<Self, WeightsError> {
        let expected = expected_tensors(c);
        let mut problems = Vec::new();
        let mut quant = None;
        for (name, shape) in &expected {
            match st.tensors.get(name) {
                None => problems.push(format!("missing tensor `{name}` (expected shape {shape:?})")),
                Some(t) if &t.shape() != shape => {
                    problems.push(format!("`{name}` has shape {:?}, config implies {shape:?}", t.shape()))
                }
                Some(t) => {
                    let is_matrix = shape.len() == 2;
                    match (t, is_matrix) {
                        (StoredTensor::Quantized { kind, .. }, true) => {
                            if *quant.get_or_insert(*kind) != *kind {
                                problems.push(format!("`{name}` is {} but other matrices are {}", kind.name(), quant.map(|k: GgmlKind| k.name()).unwrap_or("?")))
                            }
                        }
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

        let matrix = |name: &str| match &st.tensors[name] {
            StoredTensor::Quantized { kind, rows, cols, blocks } => QMatrix::from_blocks(*kind, *rows, *cols, blocks),
            StoredTensor::F32 { .. } => unreachable!("checked above: matrices are quantized"),
        };
        let vector = |name: &str| match &st.tensors[name] {
            StoredTensor::F32 { bytes, .. } => f32_values(bytes),
            StoredTensor::Quantized { .. } => unreachable!("checked above: vectors are f32"),
        };
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
        let weights = Weights {
            embed: matrix("model.embed_tokens.weight"),
            blocks,
            final_norm: vector("model.norm.weight"),
            lm_head: (!c.tie_word_embeddings).then(|| matrix("lm_head.weight")),
        };
        weights.check_finite(file)?;
        Ok(weights)
    }

    /// NaN or Inf anywhere would silently turn every logit into NaN; refuse instead.
    fn check_finite(&self, file: &str) -> Result<(), WeightsError> {
        let mut problems = Vec::new();
        let check_scales = |problems: &mut Vec<String>, name: String, m: &QMatrix| {
            let finite = match m {
                QMatrix::Q8_0 { blocks, .. } => blocks.iter().all(|b| scale_q8(b).is_finite()),
                QMatrix::Q4_0 { blocks, .. } => blocks.iter().all(|b| scale_q4(b).is_finite()),
            };
            if !finite {
                problems.push(format!("`{name}` has NaN or infinite block scales"));
            }
        };
        check_scales(&mut problems, "model.embed_tokens.weight".into(), &self.embed);
        if let Some(head) = &self.lm_head {
            check_scales(&mut problems, "lm_head.weight".into(), head);
        }
        for (l, b) in self.blocks.iter().enumerate() {
            for (part, m) in [("q_proj", &b.wq), ("k_proj", &b.wk), ("v_proj", &b.wv), ("o_proj", &b.wo), ("gate_proj", &b.w_gate), ("up_proj", &b.w_up), ("down_proj", &b.w_down)] {
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

// The block scale is the first field (an f16) of both block types; read it through the bytes so
// no private field is touched.
fn scale_q8(b: &BlockQ8_0) -> f16 {
    let p = b as *const BlockQ8_0 as *const u8;
    // SAFETY: BlockQ8_0 is repr(C) and starts with its f16 scale.
    f16::from_le_bytes(unsafe { [*p, *p.add(1)] })
}
fn scale_q4(b: &BlockQ4_0) -> f16 {
    let p = b as *const BlockQ4_0 as *const u8;
    // SAFETY: BlockQ4_0 is repr(C) and starts with its f16 scale.
    f16::from_le_bytes(unsafe { [*p, *p.add(1)] })
}
