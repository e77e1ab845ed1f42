//! Bringing your own checkpoint: an unquantized Hugging Face Llama folder (F32 safetensors, the
//! half-split rotary layout) converts into a model folder that computes what the same weights
//! compute in GGUF layout.

use std::collections::HashMap;
use std::path::Path;

use attnscope::config::{Config, FileConfig};
use attnscope::convert::{build_bpe_tokenizer, import_hf_folder, write_folder};
use attnscope::format::{GgmlKind, QSafetensors, TensorToWrite, write};
use attnscope::loader::{LoadOptions, load_folder};
use attnscope::model::Transformer;
use attnscope::weights::{QMatrix, Weights, expected_tensors};

fn config() -> FileConfig {
    FileConfig {
        model_type: "llama".into(),
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        vocab_size: 40,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_id: None,
    }
}

/// Inverse of the importer's permutation: GGUF pairs (2i, 2i+1) → Hugging Face halves (i, i+hd/2).
fn pairs_to_half_split(w: &[f32], n_heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for s in 0..2 {
                let (pair_row, half_row) = (h * hd + 2 * i + s, h * hd + s * hd / 2 + i);
                out[half_row * cols..(half_row + 1) * cols].copy_from_slice(&w[pair_row * cols..(pair_row + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn a_hugging_face_folder_converts_to_the_same_model() {
    let fc = config();
    let c = Config::try_from(fc.clone()).unwrap();
    let mut seed = 0x1234_5678_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    // Weights on the Q8_0 grid already, so re-quantizing them in the converter loses nothing.
    let mut gguf_layout = Vec::new();
    let mut hf_tensors = Vec::new();
    for (name, shape) in expected_tensors(&c) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| next() * if shape.len() == 1 { 0.1 } else { 0.5 } + if shape.len() == 1 { 1.0 } else { 0.0 }).collect();
        let values = if shape.len() == 2 { QMatrix::quantize(GgmlKind::Q8_0, shape[0], shape[1], &values).dequantize() } else { values };
        let hf_values = if name.ends_with("q_proj.weight") {
            pairs_to_half_split(&values, c.n_heads, c.head_dim, c.dim)
        } else if name.ends_with("k_proj.weight") {
            pairs_to_half_split(&values, c.n_kv_heads, c.head_dim, c.dim)
        } else {
            values.clone()
        };
        let bytes: Vec<u8> = hf_values.iter().flat_map(|v| v.to_le_bytes()).collect();
        hf_tensors.push((name.clone(), shape.clone(), bytes));
        let t = if shape.len() == 2 {
            let m = QMatrix::quantize(GgmlKind::Q8_0, shape[0], shape[1], &values);
            TensorToWrite::Quantized { kind: GgmlKind::Q8_0, rows: shape[0], cols: shape[1], blocks: m.to_bytes() }
        } else {
            TensorToWrite::F32 { shape, values }
        };
        gguf_layout.push((name, t));
    }

    let dir = std::env::temp_dir().join(format!("attnscope-hf-{}", std::process::id()));
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    std::fs::write(hf.join("config.json"), serde_json::to_vec(&fc).unwrap()).unwrap();
    let views: Vec<_> = hf_tensors
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(hf.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let tokens: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    std::fs::write(hf.join("tokenizer.json"), build_bpe_tokenizer(&tokens, &[], &vec![1; 40], "smollm").unwrap()).unwrap();

    let out = dir.join("converted");
    let imported = import_hf_folder(&hf).unwrap();
    let manifest = write_folder(&imported, &out, "tiny", &[GgmlKind::Q8_0]).unwrap();
    assert!(manifest.files.contains_key("model.q8_0.safetensors"));

    let prompt = [3u32, 14, 15, 9, 26, 5, 35];
    let mut converted = load_folder(&out, GgmlKind::Q8_0, &LoadOptions { max_context: 64, capture_window: None, memory_limit: None }).unwrap();
    let got = converted.model.forward(&prompt).unwrap().to_vec();
    let bytes = write(gguf_layout, HashMap::new()).unwrap();
    let st = QSafetensors::read("reference", &bytes).unwrap();
    let mut reference = Transformer::new(c.clone(), Weights::load("reference", &st, &c).unwrap(), 64, None);
    let want = reference.forward(&prompt).unwrap();
    assert_eq!(got, want, "the converted folder computes the same logits");
    std::fs::remove_dir_all(Path::new(&dir)).ok();
}
