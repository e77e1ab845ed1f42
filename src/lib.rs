//! attnscope: a Llama-family language model on candle's quantized kernels that shows its
//! attention. The same code runs natively (the `attnscope` CLI) and in a browser (wasm32 + simd128,
//! see `wasm.rs`), so every number the page draws can be checked from a terminal.
//!
//! Reading order: `config` (the model's shape) → `format` (quantized safetensors) → `weights`
//! (names → blocks) → `qmatmul` (the quantized product, split over threads by `team`) → `tokenizer` (read by `tokenizer_json`) → `attention` + `capture` → `model` (the forward pass) →
//! `sampler` → `generate` (the loop both front ends share) → `loader` (a folder → a model);
//! `manifest` lists a folder's files with their SHA-256 (`fingerprint` checks the browser's cached
//! copies); `convert` imports GGUF (header checked
//! by `gguf` first) / Hugging Face checkpoints, and `export` writes a folder's weights back as GGUF
//! (the bench's peer runs the same blocks); `read_bound` measures the memory bound a decode step cannot beat; `wasm` is the browser binding.

pub mod attention;
pub mod capture;
pub mod config;
pub mod fingerprint;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod loader;
pub mod manifest;
pub mod model;
pub mod qmatmul;
pub mod read_bound;
pub mod sampler;
pub mod team;
pub mod tokenizer;
pub mod tokenizer_json;
pub mod weights;

#[cfg(not(target_arch = "wasm32"))]
pub mod convert;
#[cfg(not(target_arch = "wasm32"))]
pub mod export;
#[cfg(not(target_arch = "wasm32"))]
pub mod gguf;

#[cfg(target_arch = "wasm32")]
mod wasm;
