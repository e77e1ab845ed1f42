//! The fuzz targets' seed corpus (fuzz/corpus/<target>/) run through the same parsers as the
//! targets (src/fuzzing.rs), in a plain `cargo test`: the seeds, and any input a fuzzer once
//! crashed on (copied there by hand from fuzz/artifacts as `regression-*`), are exercised on every test run even where cargo-fuzz and nightly
//! are not installed. `write_fuzz_seeds` (ignored) regenerates the seeds from the tiny model.

mod common;

use std::path::{Path, PathBuf};

use attnscope::format::GgmlKind;
use common::*;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    files
}

use attnscope::fuzzing;

/// Every seed through `target`: a `valid*` seed is accepted; any other (a damaged variant, or a
/// `regression-*` input copied from fuzz/artifacts after a crash) is refused with an error that
/// `names_the_input` approves. A panic fails the test either way.
fn replay(corpus_name: &str, target: impl Fn(&[u8]) -> Result<(), String>, names_the_input: impl Fn(&str) -> bool) {
    for (name, bytes) in seeds(corpus_name) {
        match target(&bytes) {
            Ok(()) => assert!(name.starts_with("valid") || name.starts_with("regression"), "{name}: a damaged seed was accepted"),
            Err(e) => {
                assert!(!name.starts_with("valid"), "{name}: {e}");
                assert!(names_the_input(&e), "{name}: {e}");
            }
        }
    }
}

#[test]
fn safetensors_seeds_parse_or_are_refused_by_name() {
    replay("safetensors", fuzzing::safetensors, |e| e.contains("fuzz.safetensors"));
}

#[test]
fn config_and_manifest_seeds_parse_or_are_refused() {
    // One corpus for both parsers: a valid config is not a manifest and the other way round.
    replay("config_manifest", |b| fuzzing::config(b).or_else(|_| fuzzing::manifest(b)), |_| true);
}

#[test]
fn gguf_seeds_import_or_are_refused_by_name() {
    replay("gguf", fuzzing::gguf, |e| e.starts_with("fuzz.gguf: "));
}

/// Writes the seeds: `cargo test --release --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let put = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(corpus(target)).unwrap();
        std::fs::write(corpus(target).join(name), bytes).unwrap();
    };
    // A small two-tensor file: short inputs mutate fastest; the damaged variants are made from it.
    let small = attnscope::format::write(
        vec![
            ("w".into(), attnscope::format::TensorToWrite::Quantized { kind: GgmlKind::Q8_0, rows: 1, cols: 32, blocks: vec![1; 34] }),
            ("n".into(), attnscope::format::TensorToWrite::F32 { shape: vec![2], values: vec![1.0, 2.0] }),
        ],
        Default::default(),
    )
    .unwrap();
    put("safetensors", "small.safetensors", &small);
    put("safetensors", "truncated.safetensors", &small[..small.len() / 2]);
    put("safetensors", "header-not-json.safetensors", &with_header_text(&small, b"{\"w\": [1, 2"));
    put("safetensors", "overlap.safetensors", &with_header(&small, |h| h["w"]["data_offsets"] = serde_json::json!([0, 40])));
    put("safetensors", "unknown-dtype.safetensors", &with_header(&small, |h| h["n"]["dtype"] = "Q7".into()));
    let twice = String::from_utf8(header_text(&small)).unwrap().replacen("\"n\":", "\"n\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"n\":", 1);
    put("safetensors", "duplicate-name.safetensors", &with_header_text(&small, twice.as_bytes()));
    // The whole tiny model (the target loads it against fuzz/seed_config.json), and one bad scale.
    let st = weights(GgmlKind::Q4_0);
    put("safetensors", "valid-q4_0.safetensors", &st);
    let mut nan = st.clone();
    let (h, data_at) = header(&nan);
    let at = data_at + h["model.layers.0.mlp.up_proj.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    nan[at..at + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    put("safetensors", "nan-scale.safetensors", &nan);

    put("config_manifest", "valid-config.json", CONFIG_JSON.as_bytes());
    let f = Folder::tiny("seeds");
    let imported = attnscope::convert::import_gguf_bytes(Path::new("tiny.gguf"), &gguf()).unwrap();
    attnscope::convert::write_folder(&imported, f.path(), "tiny", &[GgmlKind::Q4_0]).unwrap();
    let manifest = std::fs::read(f.path().join("manifest.json")).unwrap();
    put("config_manifest", "valid-manifest.json", &manifest);
    put("config_manifest", "config-heads.json", CONFIG_JSON.replace("\"num_key_value_heads\": 1", "\"num_key_value_heads\": 3").as_bytes());
    put("config_manifest", "valid-config-huge.json", CONFIG_JSON.replace("\"max_position_embeddings\": 64", "\"max_position_embeddings\": 1048576").as_bytes());
    put("config_manifest", "manifest-dup.json", br#"{"format":"attnscope-model/1","name":"t","source":"s","files":{"a":{"size":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},"a":{"size":1,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}"#);

    let g = gguf();
    put("gguf", "valid-tiny.gguf", &g);
    put("gguf", "truncated.gguf", &g[..g.len() / 3]);
    let mut kv = gguf_metadata();
    kv.retain(|(k, _)| *k != "general.alignment");
    kv.push(("general.alignment", Gv::U32(0)));
    put("gguf", "alignment-zero.gguf", &gguf_bytes(&kv, &[], 32));
    let mut huge_count = g[..96].to_vec();
    huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    put("gguf", "tensor-count-max.gguf", &huge_count);
}
