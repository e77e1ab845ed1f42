//! A model folder's files → a ready `Transformer` and tokenizer, checked in order (config, then
//! the container, then every tensor against the config, then the tokenizer against the vocabulary,
//! then the memory budget) so the first error names the file at fault and nothing big is
//! allocated for a model that cannot run. Natively the files are read from a folder; the browser
//! hands the same bytes over from `fetch`.

use crate::config::{Config, ConfigError};
use crate::format::{FormatError, GgmlKind, QSafetensors};
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

pub fn load(config_json: &[u8], tokenizer_json: &[u8], weights_name: &str, weights: &[u8], opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    let config = Config::from_json(config_json)?;
    let st = QSafetensors::read(weights_name, weights)?;
    let max_context = opts.max_context.min(config.max_position_embeddings).max(2);
    let (needed, detail) = memory_needed(&config, weights.len() as u64, max_context, opts.capture_window);
    if let Some(limit) = opts.memory_limit {
        if needed > limit {
            return Err(ModelError::OutOfMemoryBudget { needed_mb: needed >> 20, limit_mb: limit >> 20, detail }.into());
        }
    }
    let weights = Weights::load(weights_name, &st, &config)?;
    let tokenizer = TextTokenizer::from_json(tokenizer_json, config.vocab_size, config.eos_token_id)?;
    Ok(LoadedModel { model: Transformer::new(config, weights, max_context, opts.capture_window), tokenizer })
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
    let weights = read(&weights_name)?;
    load(&read("config.json")?, &read("tokenizer.json")?, &dir.join(&weights_name).display().to_string(), &weights, opts)
}
