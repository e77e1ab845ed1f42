//! Model import: a GGUF file, or an unquantized Hugging Face folder (`config.json` +
//! `model.safetensors` in F32/F16/BF16 + `tokenizer.json`), → an attnscope model folder:
//! `config.json`, `tokenizer.json`, `model.q8_0.safetensors`, `model.q4_0.safetensors` and
//! `manifest.json` (each file's size and SHA-256, which the browser checks before caching).
//!
//! Weights are dequantized to f32 and re-quantized to each target type with candle's own
//! quantizers, so the files hold exactly the blocks candle's kernels expect. GGUF names map to
//! Hugging Face names; GGUF's Q/K rows are already in rotary-pair order. A Hugging Face folder's
//! q_proj/k_proj rows are half-split (pairs i and i + hd/2), so they are permuted the way llama.cpp's
//! converter does, and both sources end up in one layout (see weights.rs).
//!
//! The tokenizer for a GGUF is rebuilt from its vocabulary and merges as a `tokenizers` BPE with
//! SmolLM2's pre-tokenizer (llama.cpp's `smollm`: each digit alone, then GPT-2's byte-level split)
//! and its control tokens (GGUF token type 3) as special tokens.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file;
use sha2::{Digest, Sha256};


use crate::config::{Config, FileConfig};
use crate::format::{GgmlKind, TensorToWrite, write};
use crate::weights::{QMatrix, expected_tensors};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {why}")]
    Input { path: String, why: String },
    #[error("cannot write {path}: {source}")]
    Output { path: String, source: std::io::Error },
}

pub(crate) fn input(path: &Path, why: impl std::fmt::Display) -> ConvertError {
    ConvertError::Input { path: path.display().to_string(), why: why.to_string() }
}

/// One tensor in f32, row-major, with its logical shape.
struct F32Tensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// Everything needed to write a model folder.
pub struct Imported {
    config: Config,
    tokenizer_json: Vec<u8>,
    tensors: BTreeMap<String, F32Tensor>,
    source: String,
}

pub fn import_gguf(path: &Path) -> Result<Imported, ConvertError> {
    let bytes = std::fs::read(path).map_err(|e| input(path, e))?;
    import_gguf_bytes(path, &bytes)
}

/// The import from bytes already in memory (the fuzz target calls this). `path` names the file in
/// errors and in the manifest's `source`.
pub fn import_gguf_bytes(path: &Path, bytes: &[u8]) -> Result<Imported, ConvertError> {
    // Every count, length and offset is checked against the bytes before candle parses them.
    crate::gguf::check(bytes).map_err(|e| input(path, format!("not a usable GGUF file: {e}. Download the model again.")))?;
    let mut file = std::io::Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut file).map_err(|e| input(path, format!("not a readable GGUF file: {e}")))?;
    let md = &content.metadata;
    let get = |key: &str| md.get(key).ok_or_else(|| input(path, format!("metadata `{key}` is missing")));
    let get_u32 = |key: &str| get(key)?.to_u32().map_err(|e| input(path, format!("metadata `{key}`: {e}")));
    let arch = get("general.architecture")?.to_string().map_err(|e| input(path, e))?.clone();
    if arch != "llama" {
        return Err(input(path, format!("architecture `{arch}` is not a Llama-family model")));
    }
    let tokens: Vec<String> = get("tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| input(path, e))?
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<Result<_, _>>()
        .map_err(|e| input(path, format!("tokenizer.ggml.tokens: {e}")))?;
    let merges: Vec<String> = match md.get("tokenizer.ggml.merges") {
        Some(v) => v.to_vec().map_err(|e| input(path, e))?.iter().map(|v| v.to_string().cloned()).collect::<Result<_, _>>().map_err(|e| input(path, e))?,
        None => return Err(input(path, "has no BPE merges (tokenizer.ggml.merges); only byte-level BPE vocabularies are supported")),
    };
    let token_types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v.to_vec().map_err(|e| input(path, e))?.iter().map(|v| v.to_i32()).collect::<Result<_, _>>().map_err(|e| input(path, e))?,
        None => vec![1; tokens.len()],
    };
    if token_types.len() != tokens.len() {
        return Err(input(path, format!("tokenizer.ggml.token_type has {} entries for {} tokens", token_types.len(), tokens.len())));
    }
    let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    let tokenizer_json = build_bpe_tokenizer(&tokens, &merges, &token_types, &pre).map_err(|e| input(path, e))?;

    let n_heads = get_u32("llama.attention.head_count")? as usize;
    let has_output = content.tensor_infos.contains_key("output.weight");
    let file_config = FileConfig {
        model_type: "llama".into(),
        hidden_size: get_u32("llama.embedding_length")? as usize,
        intermediate_size: get_u32("llama.feed_forward_length")? as usize,
        num_hidden_layers: get_u32("llama.block_count")? as usize,
        num_attention_heads: n_heads,
        num_key_value_heads: Some(md.get("llama.attention.head_count_kv").and_then(|v| v.to_u32().ok()).map_or(n_heads, |v| v as usize)),
        vocab_size: tokens.len(),
        rms_norm_eps: get("llama.attention.layer_norm_rms_epsilon")?.to_f32().map_err(|e| input(path, e))? as f64,
        rope_theta: md.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0) as f64,
        max_position_embeddings: md.get("llama.context_length").and_then(|v| v.to_u32().ok()).map_or(2048, |v| v as usize),
        tie_word_embeddings: !has_output,
        bos_token_id: md.get("tokenizer.ggml.bos_token_id").and_then(|v| v.to_u32().ok()),
        eos_token_id: md.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()),
    };
    let config = Config::try_from(file_config).map_err(|e| input(path, e))?;

    // Names and shapes first, all problems at once, before anything is dequantized.
    let mut problems = Vec::new();
    let mut found = HashMap::new(); // Hugging Face name → (GGUF name, shape)
    for (gguf_name, info) in content.tensor_infos.iter() {
        match hf_name(gguf_name) {
            Some(name) => {
                found.insert(name, (gguf_name.clone(), info.shape.dims().to_vec()));
            }
            None => problems.push(format!("unexpected tensor `{gguf_name}`")),
        }
    }
    let expected: HashMap<String, Vec<usize>> = expected_tensors(&config).into_iter().collect();
    for (name, shape) in &expected {
        match found.get(name) {
            None => problems.push(format!("missing tensor `{name}` (shape {shape:?})")),
            Some((_, s)) if s != shape => problems.push(format!("`{name}` has shape {s:?}, the metadata implies {shape:?}")),
            Some(_) => {}
        }
    }
    for name in found.keys().filter(|n| !expected.contains_key(*n)) {
        problems.push(format!("unexpected tensor `{name}` (is llama.block_count right?)"));
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(input(path, format!("the tensors do not match the metadata: {}", problems.join("; "))));
    }

    let mut tensors = BTreeMap::new();
    for (name, (gguf_name, _)) in found {
        let q = content.tensor(&mut file, &gguf_name, &Device::Cpu).map_err(|e| input(path, format!("tensor `{gguf_name}`: {e}")))?;
        let t = q.dequantize(&Device::Cpu).map_err(|e| input(path, e))?;
        let shape = t.dims().to_vec();
        let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| input(path, e))?;
        tensors.insert(name, F32Tensor { shape, values });
    }
    let sha = hex(&Sha256::digest(bytes));
    let source = format!("{} (sha256 {sha})", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    Ok(Imported { config, tokenizer_json, tensors, source })
}

/// GGUF's tensor names beside Hugging Face Llama's: whole names, then per-layer suffixes
/// (`blk.{l}.` ↔ `model.layers.{l}.`).
const NAMES: [(&str, &str); 3] = [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"), ("output.weight", "lm_head.weight")];
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// GGUF tensor names → Hugging Face Llama names.
fn hf_name(gguf: &str) -> Option<String> {
    renamed(gguf, "blk.", "model.layers.", |(g, h)| (g, h))
}

/// Hugging Face Llama names → GGUF tensor names (the GGUF export).
pub fn gguf_name(hf: &str) -> Option<String> {
    renamed(hf, "model.layers.", "blk.", |(g, h)| (h, g))
}

/// `name` in the other naming: `pair` puts each table entry as (from, to).
fn renamed(name: &str, layer_from: &str, layer_to: &str, pair: fn((&'static str, &'static str)) -> (&'static str, &'static str)) -> Option<String> {
    if let Some((_, to)) = NAMES.map(pair).into_iter().find(|(from, _)| *from == name) {
        return Some(to.to_string());
    }
    let (layer, part) = name.strip_prefix(layer_from)?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, to) = LAYER_NAMES.map(pair).into_iter().find(|(from, _)| *from == part)?;
    Some(format!("{layer_to}{layer}.{to}"))
}

/// A byte-level BPE tokenizer.json from a GGUF vocabulary.
pub fn build_bpe_tokenizer(tokens: &[String], merges: &[String], token_types: &[i32], pre: &str) -> Result<Vec<u8>, String> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

    if !matches!(pre, "smollm" | "") {
        return Err(format!("pre-tokenizer `{pre}` is not supported (only SmolLM2's `smollm`)"));
    }
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (id, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), id as u32);
    }
    if vocab.len() != tokens.len() {
        return Err("the vocabulary has duplicate tokens".into());
    }
    let merges = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| format!("merge `{m}` is not two tokens")))
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| e.to_string())?;
    let mut tokenizer = Tokenizer::new(bpe);
    let pre_tokenizer = Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
    // GGUF token type 3 = control: `<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, …
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(token_types)
        .filter(|(_, ty)| **ty == 3)
        .map(|(t, _)| AddedToken::from(t.clone(), true))
        .collect();
    tokenizer.add_special_tokens(specials).map_err(|e| e.to_string())?;
    tokenizer.to_string(false).map(String::into_bytes).map_err(|e| e.to_string())
}

pub fn import_hf_folder(dir: &Path) -> Result<Imported, ConvertError> {
    let config_bytes = std::fs::read(dir.join("config.json")).map_err(|e| input(&dir.join("config.json"), e))?;
    let config = Config::from_json(&config_bytes).map_err(|e| input(&dir.join("config.json"), e))?;
    let tokenizer_json = std::fs::read(dir.join("tokenizer.json")).map_err(|e| input(&dir.join("tokenizer.json"), e))?;
    let st_path = dir.join("model.safetensors");
    let bytes = std::fs::read(&st_path).map_err(|e| input(&st_path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| input(&st_path, e))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            safetensors::Dtype::F16 => view.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            safetensors::Dtype::BF16 => view.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(input(&st_path, format!("tensor `{name}` is {other:?}; F32, F16 or BF16 expected"))),
        };
        let shape = view.shape().to_vec();
        let values = if name.ends_with("q_proj.weight") {
            half_split_to_pairs(&values, config.n_heads, config.head_dim, config.dim)
        } else if name.ends_with("k_proj.weight") {
            half_split_to_pairs(&values, config.n_kv_heads, config.head_dim, config.dim)
        } else {
            values
        };
        if config.tie_word_embeddings && name == "lm_head.weight" {
            continue;
        }
        tensors.insert(name, F32Tensor { shape, values });
    }
    Ok(Imported { config, tokenizer_json, tensors, source: format!("{} (Hugging Face folder)", dir.display()) })
}

/// Reorders one projection's rows from Hugging Face's rotary layout (row i pairs with i + hd/2)
/// to adjacent pairs (rows 2i, 2i+1), per head:  new[h, 2i + s] = old[h, s·hd/2 + i].
pub fn half_split_to_pairs(w: &[f32], n_heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for s in 0..2 {
                let new_row = h * head_dim + 2 * i + s;
                let old_row = h * head_dim + s * half + i;
                out[new_row * cols..(new_row + 1) * cols].copy_from_slice(&w[old_row * cols..(old_row + 1) * cols]);
            }
        }
    }
    out
}

pub use crate::manifest::{MANIFEST_FORMAT, Manifest, ManifestFile, hex, sha256_file};

/// Writes the model folder; returns the manifest.
pub fn write_folder(imported: &Imported, out: &Path, name: &str, quants: &[GgmlKind]) -> Result<Manifest, ConvertError> {
    let c = &imported.config;
    let expected = expected_tensors(c);
    let missing: Vec<&str> = expected.iter().filter(|(n, _)| !imported.tensors.contains_key(n)).map(|(n, _)| n.as_str()).collect();
    if !missing.is_empty() {
        return Err(ConvertError::Input { path: imported.source.clone(), why: format!("missing tensors: {}", missing.join(", ")) });
    }
    std::fs::create_dir_all(out).map_err(|source| ConvertError::Output { path: out.display().to_string(), source })?;
    let write_file = |file: &str, bytes: &[u8]| -> Result<(String, ManifestFile), ConvertError> {
        let path = out.join(file);
        // Write beside, then rename: an interrupted conversion never leaves a half file.
        let tmp = out.join(format!(".{file}.partial"));
        std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)).map_err(|source| ConvertError::Output { path: path.display().to_string(), source })?;
        Ok((file.to_string(), ManifestFile { size: bytes.len() as u64, sha256: hex(&Sha256::digest(bytes)) }))
    };
    let mut files = BTreeMap::new();
    let config_json = serde_json::to_vec_pretty(&FileConfig::from(c)).expect("config serializes");
    files.extend([write_file("config.json", &config_json)?, write_file("tokenizer.json", &imported.tokenizer_json)?]);
    for &kind in quants {
        let tensors = expected
            .iter()
            .map(|(n, shape)| {
                let t = &imported.tensors[n];
                if &t.shape != shape {
                    return Err(ConvertError::Input { path: imported.source.clone(), why: format!("`{n}` has shape {:?}, config implies {shape:?}", t.shape) });
                }
                let tensor = if shape.len() == 2 {
                    let kind = matrix_kind(n, kind);
                    let m = QMatrix::quantize(kind, shape[0], shape[1], &t.values);
                    TensorToWrite::Quantized { kind, rows: shape[0], cols: shape[1], blocks: m.to_bytes() }
                } else {
                    TensorToWrite::F32 { shape: shape.clone(), values: t.values.clone() }
                };
                Ok((n.clone(), tensor))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut extra: HashMap<String, String> = crate::weights::layout_metadata(c).into_iter().collect();
        extra.insert("source".to_string(), imported.source.clone());
        let bytes = write(tensors, extra).map_err(|e| ConvertError::Input { path: imported.source.clone(), why: e.to_string() })?;
        files.insert_entry_from(write_file(&crate::loader::weights_file_name(kind), &bytes)?);
    }
    let manifest = Manifest { format: MANIFEST_FORMAT.into(), name: name.into(), source: imported.source.clone(), files };
    write_file("manifest.json", &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"))?;
    Ok(manifest)
}

/// Which matrices stay 8-bit in a 4-bit file, as llama.cpp's own 4-bit mixes do: the embedding
/// (also the output head when tied: every logit passes through it) and the value projections
/// (small, 2% of the weights, and the most sensitive to rounding). The shipped GGUF is already
/// 4-bit (Q4_1), and re-rounding it to Q4_0 everywhere made SmolLM2-135M stop answering " Paris";
/// with these two kept at 8 bits, q4_0 and q8_0 agree on the next token (tests/real_model.rs).
fn matrix_kind(name: &str, kind: GgmlKind) -> GgmlKind {
    let sensitive = name == "model.embed_tokens.weight" || name == "lm_head.weight" || name.ends_with("self_attn.v_proj.weight");
    if sensitive { GgmlKind::Q8_0 } else { kind }
}

trait InsertEntry {
    fn insert_entry_from(&mut self, kv: (String, ManifestFile));
}
impl InsertEntry for BTreeMap<String, ManifestFile> {
    fn insert_entry_from(&mut self, (k, v): (String, ManifestFile)) {
        self.insert(k, v);
    }
}
