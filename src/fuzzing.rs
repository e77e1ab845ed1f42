//! The bodies of the fuzz targets (fuzz/fuzz_targets/*.rs), here so that `tests/fuzz_corpus.rs`
//! replays the committed seeds through exactly the code the fuzzers run. Each returns Ok(()) when
//! the input was accepted and the parser's error otherwise; a panic is the bug being hunted.

use crate::config::Config;
use crate::format::QSafetensors;
use crate::manifest::Manifest;
use crate::model::memory_needed;
use crate::weights::Weights;

/// The quantized-safetensors reader, then the per-tensor checks against the seed config.
pub fn safetensors(data: &[u8]) -> Result<(), String> {
    let st = QSafetensors::read("fuzz.safetensors", data).map_err(|e| e.to_string())?;
    let config = Config::from_json(include_bytes!("../fuzz/seed_config.json")).expect("the seed config is valid");
    Weights::load("fuzz.safetensors", &st, &config).map(|_| ()).map_err(|e| e.to_string())
}

/// config.json parsing and the memory budget of any config that parses (its arithmetic must not
/// overflow whatever the sizes).
pub fn config(data: &[u8]) -> Result<(), String> {
    let c = Config::from_json(data).map_err(|e| e.to_string())?;
    let _ = memory_needed(&c, u64::MAX / 4, c.max_position_embeddings, Some(c.max_position_embeddings));
    assert!(c.n_heads % c.n_kv_heads == 0 && c.dim == c.n_heads * c.head_dim, "a config that parses is consistent");
    Ok(())
}

/// manifest.json parsing, and the checks of every listed file against the input's own bytes.
pub fn manifest(data: &[u8]) -> Result<(), String> {
    let m = Manifest::from_json("fuzz/manifest.json", data).map_err(|e| e.to_string())?;
    for name in m.files.keys() {
        let _ = m.check_bytes("fuzz/manifest.json", name, data);
    }
    Ok(())
}

/// The converter's GGUF import: header walk, candle's reader, metadata, tokenizer, tensors.
#[cfg(not(target_arch = "wasm32"))]
pub fn gguf(data: &[u8]) -> Result<(), String> {
    crate::convert::import_gguf_bytes(std::path::Path::new("fuzz.gguf"), data).map(|_| ()).map_err(|e| e.to_string())
}
