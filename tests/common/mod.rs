//! A tiny but complete model folder, built in the test (no fixture files): config.json,
//! tokenizer.json, a quantized-safetensors weights file and the same weights as a GGUF, plus
//! helpers that edit a safetensors header or a GGUF in place to make the damaged files the
//! reliability tests and the fuzz seeds need. Small on purpose (d = 32, one layer, eight tokens):
//! the whole weights file is about 4 KB.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use attnscope::config::{Config, FileConfig};
use attnscope::format::{GgmlKind, TensorToWrite, write};
use attnscope::weights::{QMatrix, expected_tensors, layout_metadata};

pub const CONFIG_JSON: &str = include_str!("../../fuzz/seed_config.json");

pub fn config() -> Config {
    Config::from_json(CONFIG_JSON.as_bytes()).expect("the tiny config is valid")
}

pub fn file_config() -> FileConfig {
    serde_json::from_str(CONFIG_JSON).expect("the tiny config parses")
}

/// Eight byte-level BPE tokens: two control tokens (ids 0 and 1, the config's bos and eos), then text.
pub const TOKENS: [&str; 8] = ["<|endoftext|>", "<|im_end|>", "a", "b", "ab", "Ġ", "Ġa", "c"];
pub const MERGES: [&str; 2] = ["a b", "Ġ a"];
pub const TOKEN_TYPES: [i32; 8] = [3, 3, 1, 1, 1, 1, 1, 1];

pub fn tokenizer_json() -> Vec<u8> {
    let tokens: Vec<String> = TOKENS.iter().map(|s| s.to_string()).collect();
    let merges: Vec<String> = MERGES.iter().map(|s| s.to_string()).collect();
    attnscope::convert::build_bpe_tokenizer(&tokens, &merges, &TOKEN_TYPES, "smollm").expect("the tiny tokenizer builds")
}

/// A fixed pseudo-random stream (xorshift), so the model is the same on every run.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Every tensor the config implies, in f32, row-major.
pub fn tensors_f32(c: &Config) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = Rng(0x5eed_0000_1234_5678);
    expected_tensors(c)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = if shape.len() == 2 { (0..n).map(|_| rng.next() * 0.5).collect() } else { (0..n).map(|_| 1.0 + 0.1 * rng.next()).collect() };
            (name, shape, values)
        })
        .collect()
}

/// The tiny model's weights file, with the head-layout metadata the converter writes.
pub fn weights(kind: GgmlKind) -> Vec<u8> {
    let c = config();
    weights_with(&c, kind, layout_metadata(&c).into_iter().collect())
}

pub fn weights_with(c: &Config, kind: GgmlKind, extra: HashMap<String, String>) -> Vec<u8> {
    let tensors = tensors_f32(c)
        .into_iter()
        .map(|(name, shape, values)| {
            let t = if shape.len() == 2 {
                let m = QMatrix::quantize(kind, shape[0], shape[1], &values);
                TensorToWrite::Quantized { kind, rows: shape[0], cols: shape[1], blocks: m.to_bytes() }
            } else {
                TensorToWrite::F32 { shape, values }
            };
            (name, t)
        })
        .collect();
    write(tensors, extra).expect("the tiny model writes")
}

/// The header of a safetensors file as JSON, and where its data starts.
pub fn header(bytes: &[u8]) -> (serde_json::Value, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), 8 + n)
}

/// The header's text, without the padding.
pub fn header_text(bytes: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&bytes[8..8 + n]).trim_end().as_bytes().to_vec()
}

/// The file with its header replaced by `text` (any bytes, JSON or not) and the same data.
pub fn with_header_text(bytes: &[u8], text: &[u8]) -> Vec<u8> {
    let (_, data_at) = header(bytes);
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text);
    out.extend_from_slice(&bytes[data_at..]);
    out
}

/// The file with its header edited as JSON.
pub fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (mut h, _) = header(bytes);
    edit(&mut h);
    with_header_text(bytes, &serde_json::to_vec(&h).unwrap())
}

/// A model folder in a fresh temporary directory; removed on drop.
pub struct Folder(pub PathBuf);

impl Folder {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("attnscope-{tag}-{}-{n}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        Folder(dir)
    }

    /// A complete tiny folder (config, tokenizer, q8_0 and q4_0 weights; no manifest).
    pub fn tiny(tag: &str) -> Self {
        let f = Folder::new(tag);
        f.write("config.json", CONFIG_JSON.as_bytes());
        f.write("tokenizer.json", &tokenizer_json());
        f.write("model.q8_0.safetensors", &weights(GgmlKind::Q8_0));
        f.write("model.q4_0.safetensors", &weights(GgmlKind::Q4_0));
        f
    }

    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.0.join(name), bytes).unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

// ------------------------------------------------------------------------------- GGUF

/// A metadata value for the GGUF writer.
pub enum Gv {
    U32(u32),
    F32(f32),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// One GGUF tensor: name, dimensions innermost first (GGUF order), GGML type id, data.
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 file, laid out as llama.cpp writes one.
pub fn gguf_bytes(kv: &[(&str, Gv)], tensors: &[GgufTensor], alignment: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        put_str(&mut out, key);
        match value {
            Gv::U32(v) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Gv::F32(v) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Gv::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Gv::Strs(v) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter().for_each(|s| put_str(&mut out, s));
            }
            Gv::I32s(v) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
        }
    }
    let align = alignment.max(1);
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&t.ggml_type.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len() as u64).div_ceil(align) * align;
    }
    let data_at = (out.len() as u64).div_ceil(align) * align;
    out.resize(data_at as usize, 0);
    for (t, at) in tensors.iter().zip(offsets) {
        out.resize((data_at + at) as usize, 0);
        out.extend_from_slice(&t.data);
    }
    out
}

/// The tiny model's metadata, as llama.cpp names it.
pub fn gguf_metadata() -> Vec<(&'static str, Gv)> {
    let c = config();
    vec![
        ("general.architecture", Gv::Str("llama".into())),
        ("general.alignment", Gv::U32(32)),
        ("llama.embedding_length", Gv::U32(c.dim as u32)),
        ("llama.feed_forward_length", Gv::U32(c.ffn_dim as u32)),
        ("llama.block_count", Gv::U32(c.n_layers as u32)),
        ("llama.attention.head_count", Gv::U32(c.n_heads as u32)),
        ("llama.attention.head_count_kv", Gv::U32(c.n_kv_heads as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Gv::F32(1e-5)),
        ("llama.rope.freq_base", Gv::F32(10_000.0)),
        ("llama.context_length", Gv::U32(64)),
        ("tokenizer.ggml.pre", Gv::Str("smollm".into())),
        ("tokenizer.ggml.tokens", Gv::Strs(TOKENS.iter().map(|s| s.to_string()).collect())),
        ("tokenizer.ggml.merges", Gv::Strs(MERGES.iter().map(|s| s.to_string()).collect())),
        ("tokenizer.ggml.token_type", Gv::I32s(TOKEN_TYPES.to_vec())),
        ("tokenizer.ggml.bos_token_id", Gv::U32(0)),
        ("tokenizer.ggml.eos_token_id", Gv::U32(1)),
    ]
}

/// Hugging Face name → GGUF name (the converter's mapping, inverted).
pub fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("{other}"),
    };
    format!("blk.{layer}.{part}")
}

/// The tiny model's tensors as GGUF tensors: matrices Q4_0 (type 2), norms F32 (type 0).
pub fn gguf_tensors() -> Vec<GgufTensor> {
    tensors_f32(&config())
        .into_iter()
        .map(|(name, shape, values)| {
            let (ggml_type, data) = if shape.len() == 2 {
                (2, QMatrix::quantize(GgmlKind::Q4_0, shape[0], shape[1], &values).to_bytes())
            } else {
                (0, values.iter().flat_map(|v| v.to_le_bytes()).collect())
            };
            GgufTensor { name: gguf_name(&name), dims: shape.iter().rev().map(|&d| d as u64).collect(), ggml_type, data }
        })
        .collect()
}

pub fn gguf() -> Vec<u8> {
    gguf_bytes(&gguf_metadata(), &gguf_tensors(), 32)
}
