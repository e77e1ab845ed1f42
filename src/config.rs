//! The model's shape: `FileConfig` mirrors `config.json` (Hugging Face Llama names, so a
//! user's own checkpoint folder reads as is), and `Config` is the same data checked once.
//!
//! Every later stage trusts `Config`: weights are checked against it, buffers are sized from
//! it, and the memory budget is computed from it before anything large is allocated. So the
//! checks here are the ones that keep a hostile or mistaken file from reaching an allocation:
//! each count has a sane ceiling, the head layout must divide evenly, and products are
//! computed with overflow checks because `usize` is 32 bits on wasm32.

use serde::{Deserialize, Serialize};

/// `config.json` as written by the converter (and by Hugging Face for Llama-family models).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_position_embeddings() -> usize {
    2048
}

/// The validated model shape. Field names follow the weights file and the papers.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// d: width of the residual stream.
    pub dim: usize,
    /// f: width of the SwiGLU hidden layer.
    pub ffn_dim: usize,
    pub n_layers: usize,
    /// h: query heads.
    pub n_heads: usize,
    /// Key/value heads; `n_heads / n_kv_heads` query heads share each (grouped-query attention).
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// The longest context the model was trained for.
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json is not valid JSON for a Llama config: {0}. Re-run the converter to write a fresh model folder.")]
    Parse(#[from] serde_json::Error),
    #[error("config.json: {field} = {value} is not usable: {why}. Re-run the converter, or fix the file by hand.")]
    Invalid { field: &'static str, value: String, why: String },
}

// Ceilings far above any Llama that can run in a browser, low enough that products stay in u32.
const MAX_DIM: usize = 16_384;
const MAX_FFN_DIM: usize = 65_536;
const MAX_LAYERS: usize = 256;
const MAX_HEADS: usize = 256;
const MAX_VOCAB: usize = 1 << 20;
const MAX_POSITIONS: usize = 1 << 20;

impl Config {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::try_from(serde_json::from_slice::<FileConfig>(bytes)?)
    }

    /// n_heads / n_kv_heads: how many query heads read one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// The key/value head that query head `head` reads.
    pub fn kv_head_of(&self, head: usize) -> usize {
        head / self.group_size()
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

impl TryFrom<FileConfig> for Config {
    type Error = ConfigError;

    fn try_from(f: FileConfig) -> Result<Self, ConfigError> {
        let invalid = |field: &'static str, value: &dyn std::fmt::Display, why: &str| ConfigError::Invalid {
            field,
            value: value.to_string(),
            why: why.to_string(),
        };
        let in_range = |field: &'static str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(invalid(field, &v, &format!("must be between 1 and {max}")))
            } else {
                Ok(v)
            }
        };
        if f.model_type != "llama" && f.model_type != "mistral" {
            return Err(invalid("model_type", &f.model_type, "only Llama-family models are supported"));
        }
        let dim = in_range("hidden_size", f.hidden_size, MAX_DIM)?;
        let ffn_dim = in_range("intermediate_size", f.intermediate_size, MAX_FFN_DIM)?;
        let n_layers = in_range("num_hidden_layers", f.num_hidden_layers, MAX_LAYERS)?;
        let n_heads = in_range("num_attention_heads", f.num_attention_heads, MAX_HEADS)?;
        let n_kv_heads = in_range("num_key_value_heads", f.num_key_value_heads.unwrap_or(n_heads), MAX_HEADS)?;
        let vocab_size = in_range("vocab_size", f.vocab_size, MAX_VOCAB)?;
        let max_position_embeddings = in_range("max_position_embeddings", f.max_position_embeddings, MAX_POSITIONS)?;
        if dim % n_heads != 0 {
            return Err(invalid("hidden_size", &dim, &format!("must be a multiple of num_attention_heads ({n_heads})")));
        }
        let head_dim = dim / n_heads;
        if head_dim % 2 != 0 {
            return Err(invalid("hidden_size", &dim, "gives an odd head dimension; rotary embeddings rotate pairs"));
        }
        if n_heads % n_kv_heads != 0 {
            return Err(invalid("num_key_value_heads", &n_kv_heads, &format!("must divide num_attention_heads ({n_heads})")));
        }
        if !(f.rms_norm_eps.is_finite() && f.rms_norm_eps > 0.0 && f.rms_norm_eps < 1.0) {
            return Err(invalid("rms_norm_eps", &f.rms_norm_eps, "must be a small positive number"));
        }
        if !(f.rope_theta.is_finite() && f.rope_theta > 1.0) {
            return Err(invalid("rope_theta", &f.rope_theta, "must be a finite number above 1"));
        }
        for (field, id) in [("bos_token_id", f.bos_token_id), ("eos_token_id", f.eos_token_id)] {
            if let Some(id) = id {
                if id as usize >= vocab_size {
                    return Err(invalid(field, &id, &format!("is outside the vocabulary (vocab_size {vocab_size})")));
                }
            }
        }
        Ok(Config {
            dim,
            ffn_dim,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: f.rms_norm_eps as f32,
            rope_theta: f.rope_theta as f32,
            max_position_embeddings,
            tie_word_embeddings: f.tie_word_embeddings,
            bos_token_id: f.bos_token_id,
            eos_token_id: f.eos_token_id,
        })
    }
}

impl From<&Config> for FileConfig {
    fn from(c: &Config) -> Self {
        FileConfig {
            model_type: "llama".into(),
            hidden_size: c.dim,
            intermediate_size: c.ffn_dim,
            num_hidden_layers: c.n_layers,
            num_attention_heads: c.n_heads,
            num_key_value_heads: Some(c.n_kv_heads),
            vocab_size: c.vocab_size,
            rms_norm_eps: c.rms_norm_eps as f64,
            rope_theta: c.rope_theta as f64,
            max_position_embeddings: c.max_position_embeddings,
            tie_word_embeddings: c.tie_word_embeddings,
            bos_token_id: c.bos_token_id,
            eos_token_id: c.eos_token_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> FileConfig {
        FileConfig {
            model_type: "llama".into(),
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: Some(3),
            vocab_size: 49152,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }

    #[test]
    fn smollm2_shape_is_accepted_and_derived() {
        let c = Config::try_from(smollm2()).unwrap();
        assert_eq!((c.head_dim, c.group_size(), c.kv_head_of(4)), (64, 3, 1));
    }

    #[test]
    fn heads_that_do_not_divide_are_refused_with_the_field_named() {
        let mut f = smollm2();
        f.num_key_value_heads = Some(4);
        let err = Config::try_from(f).unwrap_err().to_string();
        assert!(err.contains("num_key_value_heads"), "{err}");
    }

    #[test]
    fn absurd_sizes_are_refused_before_anything_is_allocated() {
        let mut f = smollm2();
        f.vocab_size = usize::MAX / 2;
        assert!(Config::try_from(f).is_err());
        let mut f = smollm2();
        f.num_hidden_layers = 0;
        assert!(Config::try_from(f).is_err());
    }

    #[test]
    fn round_trips_through_the_file_form() {
        let c = Config::try_from(smollm2()).unwrap();
        let json = serde_json::to_vec(&FileConfig::from(&c)).unwrap();
        assert_eq!(Config::from_json(&json).unwrap(), c);
    }
}
