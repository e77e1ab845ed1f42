//! A model folder's files → a ready `Transformer` and tokenizer, checked in order (config, then
//! the container, then the memory budget, then the tokenizer against the vocabulary, then every
//! tensor against the config) so the first error names the file at fault and nothing big is
//! allocated for a model that cannot run. The budget (the weights file, kept as the weights, plus the norms; KV cache,
//! attention capture, scratch) is computed in u64 from the config alone, so on wasm32 a context
//! length that would overflow a 32-bit size is refused with the figures rather than attempted. Natively the files are read from a folder; the browser
//! hands the same bytes over from `fetch`.

use crate::config::{Config, ConfigError};
use crate::format::{FormatError, GgmlKind, QSafetensors, StoredTensor};
use crate::model::{ModelError, Transformer, memory_needed};
use crate::tokenizer::{TextTokenizer, TokenizerError};
use crate::weights::{Weights, WeightsError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot read {path}: {source}. Run `./build.sh model` to create the model folder, or pass --model <folder>.")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a model folder (no config.json). Run `./build.sh model`, or convert a model with attnscope-convert.")]
    NotAFolder { path: String },
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Positions the KV cache holds (capped by the model's own limit).
    pub max_context: usize,
    /// Some(n): capture attention patterns for the first n positions.
    pub capture_window: Option<usize>,
    /// Refuse to load when weights + cache + capture + scratch exceed this many bytes.
    pub memory_limit: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { max_context: 2048, capture_window: Some(crate::model::DEFAULT_CAPTURE_WINDOW), memory_limit: None }
    }
}

pub struct LoadedModel {
    pub model: Transformer,
    pub tokenizer: TextTokenizer,
}

/// `weights`, the file's bytes, becomes the storage of the model's quantized matrices.
pub fn load(config_json: &[u8], tokenizer_json: &[u8], weights_name: &str, weights: Vec<u8>, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    let config = Config::from_json(config_json)?;
    let st = QSafetensors::read(weights_name, &weights)?;
    // The file's bytes stay (as the weights); the norms are copied out.
    let max_context = check_budget(&config, weights.len() as u64 + decoded_bytes(&st), opts)?;
    let tokenizer = TextTokenizer::from_json(tokenizer_json, config.vocab_size, config.eos_token_id)?;
    let weights = Weights::load_owned(weights_name, weights, &config)?;
    Ok(LoadedModel { model: Transformer::new(config, weights, max_context, opts.capture_window), tokenizer })
}

/// The KV positions to allocate, once weights + KV cache + capture + scratch are known to fit
/// `opts.memory_limit` (refused with the figures otherwise).
fn check_budget(config: &Config, weights_bytes: u64, opts: &LoadOptions) -> Result<usize, LoadError> {
    let max_context = kv_positions(config, opts.max_context);
    let (needed, detail) = memory_needed(config, weights_bytes, max_context, opts.capture_window);
    match opts.memory_limit {
        Some(limit) if needed > limit => Err(ModelError::OutOfMemoryBudget { needed_mb: needed >> 20, limit_mb: limit >> 20, detail }.into()),
        _ => Ok(max_context),
    }
}

/// The KV cache positions a load allocates when `requested` are asked for: capped by the model's
/// own limit, and at least 2.
pub fn kv_positions(config: &Config, requested: usize) -> usize {
    requested.min(config.max_position_embeddings).max(2)
}

/// Bytes loading adds to the file's own: the norms, copied out.
fn decoded_bytes(st: &QSafetensors) -> u64 {
    st.tensors
        .values()
        .map(|t| match t {
            StoredTensor::Quantized { .. } => 0,
            StoredTensor::F32 { bytes, .. } => bytes.len() as u64,
        })
        .sum()
}

/// The native memory limit: `ATTNSCOPE_MEMORY_LIMIT_MB` if set, else the machine's physical
/// memory (`MemTotal` in /proc/meminfo), else 8 GiB. A model that needs more than the machine has
/// would only end in the OOM killer, so it is refused with the figures instead.
#[cfg(not(target_arch = "wasm32"))]
pub fn default_memory_limit() -> u64 {
    if let Some(mb) = std::env::var("ATTNSCOPE_MEMORY_LIMIT_MB").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        return mb.saturating_mul(1 << 20);
    }
    proc_kb("/proc/meminfo", "MemTotal:").map_or(8 << 30, |kb| kb.saturating_mul(1024))
}

/// A `key: N kB` line of a Linux /proc file (`/proc/meminfo`, `/proc/self/status`), in kB.
#[cfg(not(target_arch = "wasm32"))]
pub fn proc_kb(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The weights file of a quantization inside a model folder.
pub fn weights_file_name(quant: GgmlKind) -> String {
    format!("model.{}.safetensors", quant.name())
}

#[cfg(not(target_arch = "wasm32"))]
pub fn load_folder(dir: &std::path::Path, quant: GgmlKind, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    if !dir.join("config.json").is_file() {
        return Err(LoadError::NotAFolder { path: dir.display().to_string() });
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| LoadError::Io { path: path.display().to_string(), source })
    };
    let weights_name = weights_file_name(quant);
    // A manifest, when there is one, must parse, and the files must have its sizes: a truncated
    // copy is named before its bytes are read. (`attnscope verify` also checks the SHA-256s.)
    if let Some(m) = crate::manifest::read_folder_manifest(dir)? {
        crate::manifest::check_sizes(dir, &m, &["config.json", "tokenizer.json", &weights_name])?;
    }
    let config_json = read("config.json")?;
    // The budget once before reading the weights, from the file's size (loading adds only the
    // norms, checked again once the file is read), so a context that cannot fit is refused
    // before hundreds of megabytes are read.
    if let (Ok(config), Ok(meta)) = (Config::from_json(&config_json), std::fs::metadata(dir.join(&weights_name))) {
        check_budget(&config, meta.len(), opts)?;
    }
    let weights = read(&weights_name)?;
    load(&config_json, &read("tokenizer.json")?, &dir.join(&weights_name).display().to_string(), weights, opts)
}
