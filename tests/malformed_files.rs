//! Damaged and hostile model files, each built here from a valid tiny model (tests/common): every
//! one must be refused with a typed error that names the file, the tensor or the field, never a
//! panic and never an allocation sized by a number read from the file. The CLI side of the same
//! faults (one line on stderr, exit code 2) is in tests/cli_faults.rs; the table of faults is in
//! docs/RELIABILITY.md.

mod common;

use std::collections::HashMap;

use attnscope::config::{Config, ConfigError};
use attnscope::format::{FormatError, GgmlKind, MAX_HEADER_BYTES, QSafetensors, TensorToWrite, write};
use attnscope::loader::{LoadError, LoadOptions, load, load_folder, weights_file_name};
use attnscope::manifest::{Manifest, ManifestError, verify_folder};
use attnscope::model::ModelError;
use attnscope::tokenizer::{TextTokenizer, TokenizerError};
use attnscope::weights::{QMatrix, Weights, WeightsError, layout_metadata};
use common::*;

const FILE: &str = "model.q8_0.safetensors";

fn refused(bytes: &[u8]) -> FormatError {
    QSafetensors::read(FILE, bytes).err().expect("the damaged file must be refused")
}

fn weights_error(bytes: &[u8], c: &Config) -> String {
    let st = QSafetensors::read(FILE, bytes).unwrap_or_else(|e| panic!("the container is fine: {e}"));
    match Weights::load(FILE, &st, c) {
        Err(e @ WeightsError::Mismatch { .. }) => e.to_string(),
        Err(e) => panic!("refused as a mismatch with the config, not: {e}"),
        Ok(_) => panic!("the weights must be refused"),
    }
}

fn valid() -> Vec<u8> {
    weights(GgmlKind::Q8_0)
}

/// (start, end) of a tensor's bytes within the whole file.
fn span(bytes: &[u8], name: &str) -> (usize, usize) {
    let (h, data_at) = header(bytes);
    let o = &h[name]["data_offsets"];
    (data_at + o[0].as_u64().unwrap() as usize, data_at + o[1].as_u64().unwrap() as usize)
}

/// Tensor names in file order (by offset).
fn names_by_offset(bytes: &[u8]) -> Vec<String> {
    let (h, _) = header(bytes);
    let mut names: Vec<(u64, String)> = h
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (v["data_offsets"][0].as_u64().unwrap(), k.clone()))
        .collect();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

// ---------------------------------------------------------------- the container

#[test]
fn the_tiny_model_is_valid_to_begin_with() {
    let c = config();
    for kind in GgmlKind::ALL {
        let bytes = weights(kind);
        let st = QSafetensors::read(FILE, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(Weights::load(FILE, &st, &c).is_ok());
    }
    let loaded = load(CONFIG_JSON.as_bytes(), &tokenizer_json(), FILE, valid(), &LoadOptions::default());
    assert!(loaded.is_ok(), "{}", loaded.err().unwrap());
}

#[test]
fn empty_and_truncated_files_are_refused_at_every_length() {
    let bytes = valid();
    for len in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        let err = refused(&bytes[..len]);
        assert!(matches!(err, FormatError::Container { .. } | FormatError::Tensor { .. }), "{err}");
        assert!(err.to_string().contains(FILE), "{err}");
    }
}

#[test]
fn a_header_length_beyond_the_file_or_the_cap_is_refused_before_parsing() {
    let bytes = valid();
    for claimed in [u64::MAX, u64::MAX / 2, 1 << 32, bytes.len() as u64 - 7] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&claimed.to_le_bytes());
        let err = refused(&b).to_string();
        assert!(err.contains("header claims") && err.contains("only"), "{err}");
    }
    // Within the file but over the cap: refused before the JSON is read.
    let mut big = vec![b' '; 8 + MAX_HEADER_BYTES as usize + 16];
    big[..8].copy_from_slice(&(MAX_HEADER_BYTES + 1).to_le_bytes());
    let err = refused(&big).to_string();
    assert!(err.contains("limit"), "{err}");
}

#[test]
fn a_header_that_is_not_json_or_not_tensor_entries_is_refused() {
    let bytes = valid();
    let cases: [&[u8]; 6] = [
        b"this is not json",
        b"\xff\xfe{}",
        b"[1, 2, 3]",
        b"{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}",
        b"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"extra\": 1}}",
        b"{\"__metadata__\": {\"format\": 7}}",
    ];
    for text in cases {
        let err = refused(&with_header_text(&bytes, text));
        assert!(matches!(err, FormatError::Container { .. }), "{err}");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }
}

#[test]
fn offsets_that_overlap_leave_a_gap_or_reach_outside_the_data_are_refused() {
    let bytes = valid();
    let order = names_by_offset(&bytes);
    let (second, last) = (order[1].clone(), order.last().unwrap().clone());
    let shift = |b: &[u8], name: &str, by: i64| {
        with_header(b, |h| {
            let o = &mut h[name]["data_offsets"];
            let (s, e) = (o[0].as_i64().unwrap() + by, o[1].as_i64().unwrap() + by);
            *o = serde_json::json!([s, e]);
        })
    };
    let overlap = refused(&shift(&bytes, &second, -4)).to_string();
    assert!(overlap.contains("overlap") && overlap.contains(&second), "{overlap}");

    let mut gapped = shift(&bytes, &last, 4);
    gapped.extend_from_slice(&[0; 4]);
    let gap = refused(&gapped).to_string();
    assert!(gap.contains("gap of 4 bytes") && gap.contains(&last), "{gap}");

    let outside = refused(&shift(&bytes, &last, 1 << 20)).to_string();
    assert!(outside.contains("truncated") && outside.contains(&last), "{outside}");

    let backwards = refused(&with_header(&bytes, |h| h[&last]["data_offsets"] = serde_json::json!([8, 4]))).to_string();
    assert!(backwards.contains("end before they start"), "{backwards}");

    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&[0; 3]);
    assert!(refused(&trailing).to_string().contains("3 bytes of data follow the last tensor"));
}

#[test]
fn a_quantized_tensor_whose_bytes_do_not_match_its_type_and_shape_is_refused() {
    let bytes = valid();
    let name = "model.layers.0.mlp.up_proj.weight";
    let spec_key = format!("ggml.{name}");
    let edit_spec = |spec: &str| with_header(&bytes, |h| h["__metadata__"][&spec_key] = spec.into());
    // Rows, columns and type each changed: the byte count no longer fits.
    for spec in ["q8_0:33,32", "q8_0:32,64", "q4_0:32,32", "q8_0:32,33"] {
        let err = refused(&edit_spec(spec));
        assert!(matches!(&err, FormatError::Tensor { tensor, .. } if tensor == name), "{spec}: {err}");
    }
    // Same byte count, wrong stored shape.
    let reshaped = with_header(&bytes, |h| h[name]["shape"] = serde_json::json!([16, 68]));
    assert!(refused(&reshaped).to_string().contains("is stored as [32, 34]"));
    // No block spec at all.
    let unspecified = with_header(&bytes, |h| {
        h["__metadata__"].as_object_mut().unwrap().remove(&spec_key);
    });
    assert!(refused(&unspecified).to_string().contains("no `ggml.<name>` entry"));
    // A block spec without its tensor.
    let orphan = with_header(&bytes, |h| h["__metadata__"]["ggml.ghost"] = "q8_0:1,32".into());
    assert!(refused(&orphan).to_string().contains("`ghost` is described in the metadata but missing"));
}

#[test]
fn shapes_whose_size_overflows_32_or_64_bits_are_refused_without_allocating() {
    let bytes = valid();
    let norm = "model.norm.weight";
    // F32: 2^64 elements overflow u64; 2^32 elements (u32 overflow, wasm32's usize) do not fit the data.
    for shape in [serde_json::json!([1u64 << 32, 1u64 << 32]), serde_json::json!([u64::MAX, 2]), serde_json::json!([1u64 << 32]), serde_json::json!([65536, 65536])] {
        let err = refused(&with_header(&bytes, |h| h[norm]["shape"] = shape.clone())).to_string();
        assert!(err.contains(norm) && (err.contains("overflows") || err.contains("data_offsets span")), "{shape}: {err}");
    }
    // Quantized: the logical shape in the block spec.
    let name = "model.layers.0.mlp.up_proj.weight";
    for spec in ["q8_0:4294967296,4294967296", "q8_0:18446744073709551615,32", "q8_0:18446744073709551616,32", "q8_0:-1,32", "q8_0:32"] {
        let err = refused(&with_header(&bytes, |h| h["__metadata__"][format!("ggml.{name}")] = spec.into())).to_string();
        assert!(err.contains(name), "{spec}: {err}");
    }
    // data_offsets beyond u64 are not even numbers serde accepts.
    let huge = with_header_text(&bytes, br#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}}"#);
    assert!(matches!(refused(&huge), FormatError::Container { .. }));
}

#[test]
fn unknown_or_unsupported_dtypes_and_block_types_are_refused_by_name() {
    let bytes = valid();
    let norm = "model.norm.weight";
    let unknown = refused(&with_header(&bytes, |h| h[norm]["dtype"] = "Q7".into())).to_string();
    assert!(unknown.contains("unknown dtype `Q7`") && unknown.contains(norm), "{unknown}");
    let f16 = refused(&with_header(&bytes, |h| h[norm]["dtype"] = "F16".into())).to_string();
    assert!(f16.contains("dtype F16") && f16.contains("only U8"), "{f16}");
    let name = "model.layers.0.mlp.up_proj.weight";
    let q5k = refused(&with_header(&bytes, |h| h["__metadata__"][format!("ggml.{name}")] = "q5_k:32,32".into())).to_string();
    assert!(q5k.contains("q5_k:32,32") && q5k.contains("q8_0, q4_0"), "{q5k}");
    let spec_on_f32 = refused(&with_header(&bytes, |h| h["__metadata__"][format!("ggml.{norm}")] = "q8_0:1,32".into())).to_string();
    assert!(spec_on_f32.contains("is F32 but also has a `ggml.` block spec"), "{spec_on_f32}");
}

#[test]
fn a_tensor_or_metadata_key_written_twice_is_refused() {
    let bytes = valid();
    let (h, _) = header(&bytes);
    let obj = h.as_object().unwrap();
    let norm = "model.norm.weight";
    // serde_json (and so the safetensors crate) would keep the second entry silently.
    let entries: Vec<String> = obj.iter().map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v)).collect();
    let twice = format!("{{{},\"{norm}\":{}}}", entries.join(","), obj[norm]);
    let err = refused(&with_header_text(&bytes, twice.as_bytes()));
    assert!(matches!(&err, FormatError::Tensor { tensor, why, .. } if tensor == norm && why.contains("twice")), "{err}");

    let meta = obj["__metadata__"].as_object().unwrap();
    let meta_entries: Vec<String> = meta.iter().map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v)).collect();
    let tensors: Vec<String> = obj.iter().filter(|(k, _)| *k != "__metadata__").map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v)).collect();
    let meta_twice = format!("{{\"__metadata__\":{{{},\"format\":\"attnscope-qsafetensors/1\"}},{}}}", meta_entries.join(","), tensors.join(","));
    assert!(refused(&with_header_text(&bytes, meta_twice.as_bytes())).to_string().contains("metadata key `format` appears twice"));
}

#[test]
fn a_plain_safetensors_file_is_told_apart() {
    let bytes = with_header(&valid(), |h| {
        h["__metadata__"].as_object_mut().unwrap().remove("format");
    });
    assert!(matches!(refused(&bytes), FormatError::NotQuantizedSafetensors { .. }));
}

// ---------------------------------------------------------------- tensors against the config

#[test]
fn missing_tensors_are_all_listed_at_once() {
    let c = config();
    let dropped = ["model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.norm.weight"];
    let tensors = tensors_f32(&c)
        .into_iter()
        .filter(|(n, _, _)| !dropped.contains(&n.as_str()))
        .map(|(name, shape, values)| {
            let t = if shape.len() == 2 {
                TensorToWrite::Quantized { kind: GgmlKind::Q8_0, rows: shape[0], cols: shape[1], blocks: QMatrix::quantize(GgmlKind::Q8_0, shape[0], shape[1], &values).to_bytes() }
            } else {
                TensorToWrite::F32 { shape, values }
            };
            (name, t)
        })
        .collect();
    let bytes = write(tensors, HashMap::new()).unwrap();
    let err = weights_error(&bytes, &c);
    for name in dropped {
        assert!(err.contains(&format!("missing tensor `{name}`")), "{err}");
    }
    assert!(err.contains(FILE));
}

#[test]
fn a_config_that_disagrees_with_the_tensors_is_refused_naming_the_difference() {
    let bytes = valid();
    let with = |edit: &dyn Fn(&mut attnscope::config::FileConfig)| {
        let mut f = file_config();
        edit(&mut f);
        Config::try_from(f).unwrap()
    };
    let vocab = weights_error(&bytes, &with(&|f| f.vocab_size = 16));
    assert!(vocab.contains("model.embed_tokens.weight") && vocab.contains("vocab_size = 16"), "{vocab}");
    let layers = weights_error(&bytes, &with(&|f| f.num_hidden_layers = 2));
    assert!(layers.contains("missing tensor `model.layers.1.input_layernorm.weight`"), "{layers}");
    let dims = weights_error(&bytes, &with(&|f| {
        f.hidden_size = 64;
    }));
    assert!(dims.contains("has shape [8, 32], config implies [8, 64]"), "{dims}");
    // 4 heads of 8 instead of 2 heads of 16: every matrix has the same shape, so only the layout
    // metadata the converter writes can tell.
    let heads = weights_error(&bytes, &with(&|f| {
        f.num_attention_heads = 4;
        f.num_key_value_heads = Some(2);
    }));
    assert!(heads.contains("num_attention_heads = 4 but the weights were converted with 2"), "{heads}");
    let ffn = weights_error(&bytes, &with(&|f| f.intermediate_size = 64));
    assert!(ffn.contains("mlp.gate_proj.weight"), "{ffn}");
    let untied = weights_error(&bytes, &with(&|f| f.tie_word_embeddings = false));
    assert!(untied.contains("missing tensor `lm_head.weight`"), "{untied}");
}

#[test]
fn a_config_with_absurd_values_is_refused_with_the_field_named() {
    let base: serde_json::Value = serde_json::from_str(CONFIG_JSON).unwrap();
    let cases = [
        ("hidden_size", serde_json::json!(0)),
        ("hidden_size", serde_json::json!(1u64 << 40)),
        ("hidden_size", serde_json::json!(33)),
        ("vocab_size", serde_json::json!(u64::MAX)),
        ("num_hidden_layers", serde_json::json!(1_000_000_000)),
        ("num_attention_heads", serde_json::json!(3)),
        ("num_key_value_heads", serde_json::json!(0)),
        ("intermediate_size", serde_json::json!(1u64 << 33)),
        ("max_position_embeddings", serde_json::json!(1u64 << 40)),
        ("rms_norm_eps", serde_json::json!(-1.0)),
        ("rope_theta", serde_json::json!(0.5)),
        ("eos_token_id", serde_json::json!(8)),
        ("model_type", serde_json::json!("gpt2")),
    ];
    for (field, value) in cases {
        let mut v = base.clone();
        v[field] = value.clone();
        let err = Config::from_json(v.to_string().as_bytes()).err().unwrap_or_else(|| panic!("{field} = {value} accepted"));
        let msg = err.to_string();
        assert!(msg.contains("config.json"), "{msg}");
        if matches!(err, ConfigError::Invalid { .. }) {
            assert!(msg.contains(field), "{field}: {msg}");
        }
    }
    for text in ["", "not json", "[]", r#"{"hidden_size": 32}"#, r#"{"hidden_size": "32"}"#] {
        assert!(matches!(Config::from_json(text.as_bytes()), Err(ConfigError::Parse(_))), "{text}");
    }
    // A field written twice is an error, not a silent last-one-wins.
    let twice = CONFIG_JSON.replacen("\"hidden_size\": 32,", "\"hidden_size\": 32, \"hidden_size\": 64,", 1);
    let err = Config::from_json(twice.as_bytes()).err().expect("a repeated field is refused").to_string();
    assert!(err.contains("duplicate field `hidden_size`"), "{err}");
}

#[test]
fn nan_or_infinite_weights_are_refused_naming_the_tensor() {
    let c = config();
    let up = "model.layers.0.mlp.up_proj.weight";
    let mut bytes = valid();
    let (start, _) = span(&bytes, up);
    bytes[start..start + 2].copy_from_slice(&half::f16::NAN.to_le_bytes()); // the first block's scale
    let err = weights_error(&bytes, &c);
    assert!(err.contains(&format!("`{up}` has NaN or infinite block scales")), "{err}");

    let norm = "model.layers.0.post_attention_layernorm.weight";
    let mut bytes = valid();
    let (start, _) = span(&bytes, norm);
    bytes[start + 8..start + 12].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let (start, _) = span(&bytes, "model.layers.0.self_attn.k_proj.weight");
    bytes[start + 34..start + 36].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    let err = weights_error(&bytes, &c);
    assert!(err.contains(&format!("`{norm}` has NaN or infinite values")), "{err}");
    assert!(err.contains("`model.layers.0.self_attn.k_proj.weight` has NaN"), "both are listed: {err}");
}

// ---------------------------------------------------------------- tokenizer, manifest, budget

#[test]
fn a_tokenizer_that_does_not_parse_or_does_not_match_the_vocabulary_is_refused() {
    for bad in [&b""[..], b"{", b"{\"model\": 1}", &[0xff; 64]] {
        assert!(matches!(TextTokenizer::from_json(bad, 8, None), Err(TokenizerError::Parse(_))));
    }
    let err = TextTokenizer::from_json(&tokenizer_json(), 9, None).err().expect("9 ≠ 8").to_string();
    assert!(err.contains("8 tokens") && err.contains("vocab_size 9"), "{err}");
    // Through the loader: the tokenizer is checked before the weights are decoded.
    let mut config: serde_json::Value = serde_json::from_str(CONFIG_JSON).unwrap();
    config["vocab_size"] = 9.into();
    let err = load(config.to_string().as_bytes(), &tokenizer_json(), FILE, valid(), &LoadOptions::default()).err().unwrap();
    assert!(matches!(err, LoadError::Tokenizer(TokenizerError::VocabMismatch { tokenizer: 8, config: 9 })), "{err}");
}

/// A manifest for the folder's current files.
fn write_manifest(f: &Folder) {
    let mut files = serde_json::Map::new();
    for name in ["config.json", "tokenizer.json", "model.q8_0.safetensors", "model.q4_0.safetensors"] {
        let bytes = std::fs::read(f.path().join(name)).unwrap();
        use sha2::Digest;
        files.insert(name.into(), serde_json::json!({ "size": bytes.len(), "sha256": attnscope::manifest::hex(&sha2::Sha256::digest(&bytes)) }));
    }
    let m = serde_json::json!({ "format": attnscope::manifest::MANIFEST_FORMAT, "name": "tiny", "source": "test", "files": files });
    f.write("manifest.json", m.to_string().as_bytes());
}

#[test]
fn files_that_do_not_match_the_manifest_are_named() {
    let f = Folder::tiny("manifest");
    write_manifest(&f);
    assert_eq!(verify_folder(f.path()).unwrap().len(), 4);

    // Same size, one byte changed: only the checksum can tell.
    let mut w = std::fs::read(f.path().join("model.q4_0.safetensors")).unwrap();
    let last = w.len() - 1;
    w[last] ^= 1;
    f.write("model.q4_0.safetensors", &w);
    let err = verify_folder(f.path()).unwrap_err();
    assert!(matches!(&err, ManifestError::ChecksumMismatch { file, .. } if file == "model.q4_0.safetensors"), "{err}");

    // Truncated: loading compares sizes before reading the weights.
    f.write("model.q8_0.safetensors", &valid()[..100]);
    let err = load_folder(f.path(), GgmlKind::Q8_0, &LoadOptions::default()).err().unwrap();
    assert!(matches!(&err, LoadError::Manifest(ManifestError::SizeMismatch { file, expected, actual: 100, .. }) if file == FILE && *expected > 100), "{err}");

    // A manifest that is itself damaged.
    f.write("manifest.json", b"{\"format\": \"attnscope-model/1\"");
    assert!(matches!(load_folder(f.path(), GgmlKind::Q8_0, &LoadOptions::default()), Err(LoadError::Manifest(ManifestError::Invalid { .. }))));
    assert!(Manifest::from_json("m", br#"{"format":"other/1","name":"","source":"","files":{}}"#).is_err());
}

#[test]
fn a_context_that_cannot_fit_in_memory_is_refused_with_the_figures_before_allocating() {
    let mut config: serde_json::Value = serde_json::from_str(CONFIG_JSON).unwrap();
    config["max_position_embeddings"] = (1u64 << 20).into();
    let opts = LoadOptions { max_context: 1 << 20, capture_window: Some(512), memory_limit: Some(64 << 20) };
    let err = load(config.to_string().as_bytes(), &tokenizer_json(), FILE, valid(), &opts).err().expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, LoadError::Model(ModelError::OutOfMemoryBudget { limit_mb: 64, .. })), "{msg}");
    assert!(msg.contains("KV cache 68 MB") && msg.contains("at most 64 MB"), "{msg}");
    // The same context fits when the limit allows it, and a short context fits the small limit.
    let small = LoadOptions { max_context: 64, ..opts.clone() };
    assert!(load(config.to_string().as_bytes(), &tokenizer_json(), FILE, valid(), &small).is_ok());
}

#[test]
fn a_folder_over_the_budget_is_refused_before_its_weights_are_read() {
    let f = Folder::new("budget-out");
    let imported = attnscope::convert::import_gguf_bytes(std::path::Path::new("tiny.gguf"), &gguf()).unwrap();
    attnscope::convert::write_folder(&imported, f.path(), "tiny", &GgmlKind::ALL).unwrap();
    // Garbage of the right size: reading it would fail as a format error, so a budget error
    // proves the refusal came first.
    let path = f.path().join(weights_file_name(GgmlKind::Q4_0));
    std::fs::write(&path, vec![0xAB; std::fs::metadata(&path).unwrap().len() as usize]).unwrap();
    let opts = LoadOptions { memory_limit: Some(1), ..LoadOptions::default() };
    let err = load_folder(f.path(), GgmlKind::Q4_0, &opts).err().expect("refused");
    assert!(matches!(err, LoadError::Model(ModelError::OutOfMemoryBudget { .. })), "{err}");
}

#[test]
fn the_head_layout_is_written_by_the_converter_and_read_back() {
    // Through the converter itself (the tests' own writer adds the same keys, so it proves nothing).
    let f = Folder::new("layout-out");
    let imported = attnscope::convert::import_gguf_bytes(std::path::Path::new("tiny.gguf"), &gguf()).unwrap();
    attnscope::convert::write_folder(&imported, f.path(), "tiny", &GgmlKind::ALL).unwrap();
    let config = Config::from_json(&std::fs::read(f.path().join("config.json")).unwrap()).unwrap();
    for kind in GgmlKind::ALL {
        let bytes = std::fs::read(f.path().join(weights_file_name(kind))).unwrap();
        let st = QSafetensors::read(FILE, &bytes).unwrap();
        for (k, v) in layout_metadata(&config) {
            assert_eq!(st.metadata.get(&k), Some(&v), "{kind:?}: {k}");
        }
    }
}

// ---------------------------------------------------------------- GGUF input (the converter)

fn import(bytes: &[u8]) -> Result<(), String> {
    attnscope::convert::import_gguf_bytes(std::path::Path::new("tiny.gguf"), bytes).map(|_| ()).map_err(|e| e.to_string())
}

fn import_err(bytes: &[u8]) -> String {
    import(bytes).err().expect("the damaged GGUF must be refused")
}

#[test]
fn the_tiny_gguf_imports_and_converts() {
    import(&gguf()).unwrap();
    let f = Folder::new("gguf-out");
    let imported = attnscope::convert::import_gguf_bytes(std::path::Path::new("tiny.gguf"), &gguf()).unwrap();
    attnscope::convert::write_folder(&imported, f.path(), "tiny", &GgmlKind::ALL).unwrap();
    assert_eq!(verify_folder(f.path()).unwrap().len(), 4);
    assert!(load_folder(f.path(), GgmlKind::Q4_0, &LoadOptions::default()).is_ok());
}

#[test]
fn a_truncated_gguf_is_refused_at_every_length() {
    let bytes = gguf();
    for len in (0..bytes.len()).step_by(13).chain([bytes.len() - 1]) {
        let err = import_err(&bytes[..len]);
        assert!(err.starts_with("tiny.gguf: "), "{err}");
    }
}

#[test]
fn gguf_alignment_zero_or_not_a_power_of_two_is_refused() {
    for align in [0, 3, 1 << 20] {
        let mut kv = gguf_metadata();
        kv.retain(|(k, _)| *k != "general.alignment");
        kv.push(("general.alignment", Gv::U32(align)));
        let err = import_err(&gguf_bytes(&kv, &gguf_tensors(), 32));
        assert!(err.contains("general.alignment must be a power of two"), "{align}: {err}");
    }
}

#[test]
fn gguf_counts_and_lengths_beyond_the_file_are_refused_without_allocating() {
    let bytes = gguf();
    let patch = |at: usize, v: u64| {
        let mut b = bytes.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        b
    };
    // Tensor count, metadata count.
    for v in [u64::MAX, 1 << 40, 1 << 17] {
        assert!(import_err(&patch(8, v)).contains("tensors (limit"), "{v}");
        assert!(import_err(&patch(16, v)).contains("metadata entries (limit"), "{v}");
    }
    // Counts within the caps but more than the file holds: the walk runs into the tensor data
    // and stops at whatever does not fit there.
    assert!(import_err(&patch(8, 60_000)).contains("not a usable GGUF file"));
    // The first key's string length.
    for v in [u64::MAX, 1 << 30, bytes.len() as u64] {
        let err = import_err(&patch(24, v));
        assert!(err.contains("metadata key 0") && (err.contains("limit") || err.contains("truncated")), "{v}: {err}");
    }
    // The token array's element count.
    let key = b"tokenizer.ggml.tokens";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 4;
    for v in [u64::MAX, 1 << 24, 1 << 19] {
        let err = import_err(&patch(at, v));
        assert!(err.contains("tokenizer.ggml.tokens") && (err.contains("limit") || err.contains("truncated")), "{v}: {err}");
    }
}

#[test]
fn gguf_tensors_that_overflow_overlap_or_reach_past_the_end_are_refused() {
    let with_tensors = |edit: &dyn Fn(&mut Vec<GgufTensor>)| {
        let mut t = gguf_tensors();
        edit(&mut t);
        gguf_bytes(&gguf_metadata(), &t, 32)
    };
    let overflow = import_err(&with_tensors(&|t| t[0].dims = vec![1 << 32, 1 << 32, 1 << 8]));
    assert!(overflow.contains("overflow"), "{overflow}");
    let u32_overflow = import_err(&with_tensors(&|t| t[0].dims = vec![1 << 16, 1 << 16]));
    assert!(u32_overflow.contains("past the end"), "{u32_overflow}");
    let unknown = import_err(&with_tensors(&|t| t[0].ggml_type = 99));
    assert!(unknown.contains("GGML type 99"), "{unknown}");
    let odd_blocks = import_err(&with_tensors(&|t| {
        let q = t.iter_mut().find(|t| t.ggml_type == 2).unwrap();
        q.dims = vec![16, q.dims[1] * 2];
    }));
    assert!(odd_blocks.contains("not whole blocks of 32"), "{odd_blocks}");
    let twice = import_err(&with_tensors(&|t| {
        let copy = GgufTensor { name: t[0].name.clone(), dims: t[0].dims.clone(), ggml_type: t[0].ggml_type, data: t[0].data.clone() };
        t.push(copy);
    }));
    assert!(twice.contains("appears twice"), "{twice}");

    // An offset moved into its neighbour: patch the second tensor info's offset field.
    let bytes = gguf();
    let summary = attnscope::gguf::check(&bytes).unwrap();
    let second = &summary.tensors[1];
    let name = second.name.as_bytes();
    let info_at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let offset_at = info_at + 4 + 8 * second.dims.len() + 4;
    let mut b = bytes.clone();
    b[offset_at..offset_at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(import_err(&b).contains("overlap"));
    b[offset_at..offset_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(import_err(&b).contains("past the end"));
}

#[test]
fn gguf_keys_written_twice_and_missing_tensors_are_refused() {
    let mut kv = gguf_metadata();
    kv.push(("llama.block_count", Gv::U32(2)));
    assert!(import_err(&gguf_bytes(&kv, &gguf_tensors(), 32)).contains("`llama.block_count` appears twice"));

    let mut tensors = gguf_tensors();
    tensors.retain(|t| t.name != "blk.0.attn_k.weight" && t.name != "output_norm.weight");
    let err = import_err(&gguf_bytes(&gguf_metadata(), &tensors, 32));
    assert!(err.contains("missing tensor `model.layers.0.self_attn.k_proj.weight`") && err.contains("missing tensor `model.norm.weight`"), "{err}");

    let mut kv = gguf_metadata();
    kv.retain(|(k, _)| *k != "tokenizer.ggml.token_type");
    kv.push(("tokenizer.ggml.token_type", Gv::I32s(vec![1, 1])));
    assert!(import_err(&gguf_bytes(&kv, &gguf_tensors(), 32)).contains("token_type has 2 entries for 8 tokens"));
}
