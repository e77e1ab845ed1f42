//! The browser binding: the only `#[wasm_bindgen]` file and the only place errors become
//! `JsError`. The worker (www/worker.js) owns one `Engine`; the page never touches it.
//!
//! Everything crosses as JSON strings or `Float32Array`s: JSON for small structured answers
//! (readable in the protocol docs and identical to the CLI's output), typed arrays for attention,
//! which the worker transfers to the page without copying. A Rust panic becomes a JS
//! `RuntimeError`; the panic hook prints its message first so the worker can report it.

use wasm_bindgen::prelude::*;

use crate::capture::{HEAD_STATS, head_stats};
use crate::fingerprint::Fingerprint;
use crate::generate::{GenerateOptions, Generation};
use crate::loader::{LoadOptions, load};
use crate::model::{DEFAULT_CAPTURE_WINDOW, Transformer};
use crate::tokenizer::TextTokenizer;

/// wasm32 addresses 4 GiB; leave room for the JS glue's copies and the allocator's slack.
const WASM_MEMORY_LIMIT: u64 = 3 << 30;
/// Positions the KV cache holds in the browser unless the page asks for another context (~35 MiB
/// of 8-bit keys and bf16 values for SmolLM2): modest, because a course page may hold several models.
const BROWSER_CONTEXT: usize = 2048;

/// The KV positions the page asked for (the worker has checked it is a whole number), else the
/// default. The loader caps it by the model's own limit, as natively (`--context`).
fn requested_context(context: Option<u32>) -> usize {
    context.map_or(BROWSER_CONTEXT, |n| n as usize)
}

/// The `threads` build's pool: `await initThreadPool(n)` once after `init`, before any Engine.
/// (The re-export keeps the crate linked; its `#[wasm_bindgen]` export is what JS calls.)
#[cfg(feature = "threads")]
#[allow(unused_imports)]
pub use wasm_bindgen_rayon::init_thread_pool;

/// Threads the matrix products use: the pool's size in the `threads` build, else 1.
#[wasm_bindgen]
pub fn threads() -> usize {
    if cfg!(feature = "threads") { rayon::current_num_threads() } else { 1 }
}

/// Bytes of wasm linear memory: it only grows, so this is the peak so far.
#[wasm_bindgen]
pub fn memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size(0) * 65536) as f64
}

/// Grows wasm memory once to what loading a model with this config and weights file will hold
/// (weights, KV cache, scratch), and hands it to the allocator. Growing it allocation by
/// allocation instead costs hundreds of milliseconds in V8 (each growth is a runtime call that
/// replaces the memory's ArrayBuffer). Best effort: a bad config is reported by `Engine::new`.
/// `context` must be the one `Engine::new` will get, or the reservation is too small or too big.
#[wasm_bindgen]
pub fn reserve_memory(config: &FileBuffer, weights_bytes: f64, context: Option<u32>) {
    let Ok(config) = crate::config::Config::from_json(&config.bytes) else { return };
    let positions = crate::loader::kv_positions(&config, requested_context(context));
    let (needed, _) = crate::model::memory_needed(&config, weights_bytes as u64, positions, None);
    let mut reservation = Vec::<u8>::new();
    // Freed at once: the block returns to the allocator, which carves the model out of it.
    let _ = reservation.try_reserve_exact(needed.min(WASM_MEMORY_LIMIT) as usize);
}

#[wasm_bindgen]
pub fn set_panic_hook() {
    console_error_panic_hook::set_once();
}

/// Crashes on purpose, so the browser tests can check that a fault inside the model reaches a
/// person as a readable message and a fresh worker, never as a bare `unreachable` trap. Two real
/// faults, not imitations:
/// - `"panic"`: panics with `message`; the panic hook prints it, then the instance traps.
/// - `"oom"`: allocates until wasm32's 4 GiB address space is used up, so the allocator fails
///   and Rust's allocation-failure path aborts, as when a tab runs out of memory: a trap with
///   no panic message (`message` is not used).
///
/// Any other `kind` is an error, so a typo in a test fails loudly instead of crashing nothing.
#[wasm_bindgen]
pub fn crash_for_tests(kind: &str, message: &str) -> Result<(), JsError> {
    match kind {
        "panic" => panic!("{message}"),
        "oom" => {
            // Many blocks, not one: a single request above isize::MAX (2 GiB on wasm32) is a
            // capacity-overflow *panic*, which would test the panic path again. Only a byte per
            // block is written: memory.grow is refused at the 4 GiB limit whether or not the pages
            // were touched, and touching them all would cost the test machine 4 GB of RAM.
            const BLOCK: usize = 64 << 20;
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = Vec::<u8>::with_capacity(BLOCK);
                block.push(1);
                blocks.push(std::hint::black_box(block));
            }
        }
        other => Err(JsError::new(&format!("crash_for_tests: unknown kind `{other}`: use \"panic\" or \"oom\""))),
    }
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// One model file in wasm memory, filled piece by piece as the Cache API or the network delivers
/// it: the weights are copied once, straight to where the model keeps them, and fingerprinted on
/// the way while the next piece is read.
#[wasm_bindgen]
pub struct FileBuffer {
    bytes: Vec<u8>,
    fingerprint: Fingerprint,
}

#[wasm_bindgen]
impl FileBuffer {
    /// Room for a file of `size` bytes (the manifest's figure).
    #[wasm_bindgen(constructor)]
    pub fn new(name: &str, size: f64) -> Result<FileBuffer, JsError> {
        let size = size as usize;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(size).map_err(|_| {
            js_err(format!("there is no room in this tab's memory for {name} ({} MiB): close other tabs or use the smaller q4_0 weights, then reload", size >> 20))
        })?;
        Ok(FileBuffer { bytes, fingerprint: Fingerprint::new(size) })
    }

    /// A whole file at once (tools and tests that hold the bytes already).
    pub fn of(bytes: &[u8]) -> FileBuffer {
        let mut fingerprint = Fingerprint::new(bytes.len());
        fingerprint.update(bytes);
        FileBuffer { bytes: bytes.to_vec(), fingerprint }
    }

    /// Adds the file's next bytes; refused past the size it was made for.
    pub fn append(&mut self, piece: &js_sys::Uint8Array) -> Result<(), JsError> {
        let (start, n) = (self.bytes.len(), piece.length() as usize);
        if n > self.bytes.capacity() - start {
            return Err(js_err(format!("the file is longer than the {} bytes expected", self.bytes.capacity())));
        }
        piece.copy_to_uninit(&mut self.bytes.spare_capacity_mut()[..n]);
        // SAFETY: `copy_to_uninit` initialised these n bytes, within the capacity checked above.
        unsafe { self.bytes.set_len(start + n) };
        self.fingerprint.update(&self.bytes[start..]);
        Ok(())
    }

    /// The fingerprint (`crate::fingerprint`) of the bytes so far: the whole file's once full.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.hex()
    }
}

#[wasm_bindgen]
pub struct Engine {
    model: Transformer,
    tokenizer: TextTokenizer,
    generation: Option<Generation>,
}

#[wasm_bindgen]
impl Engine {
    /// Builds the model from the three files (already checked by the worker against the manifest).
    /// The weights' buffer is taken: their one copy in wasm memory becomes the model's storage.
    /// `context`: KV cache positions (left out: 2,048; capped by the model's limit; `info()`
    /// reports what was allocated as `max_context`).
    #[wasm_bindgen(constructor)]
    pub fn new(config: &FileBuffer, tokenizer: &FileBuffer, weights: FileBuffer, context: Option<u32>) -> Result<Engine, JsError> {
        let opts = LoadOptions { max_context: requested_context(context), capture_window: Some(DEFAULT_CAPTURE_WINDOW), memory_limit: Some(WASM_MEMORY_LIMIT) };
        let loaded = load(&config.bytes, &tokenizer.bytes, "the weights file", weights.bytes, &opts).map_err(js_err)?;
        Ok(Engine { model: loaded.model, tokenizer: loaded.tokenizer, generation: None })
    }

    /// Reads every weight matrix `passes` times, as plainly as possible (`read_bound`), and
    /// returns the matrices' bytes (`read_all` leaves out fewer than eight at the end of each of
    /// their runs: a few KB of the 92–143 MB): the bench times it beside decoding, in the same worker.
    pub fn read_weights(&self, passes: usize) -> f64 {
        let runs: Vec<&[u8]> = self.model.weights().products().flat_map(|m| m.stored()).collect();
        std::hint::black_box(crate::read_bound::read_all(&runs, passes));
        runs.iter().map(|r| r.len() as f64).sum()
    }

    pub fn build_id() -> String {
        concat!("attnscope ", env!("CARGO_PKG_VERSION")).to_string()
    }

    /// JSON: the model's shape and the limits the page should show.
    pub fn info(&self) -> String {
        let c = &self.model.config;
        serde_json::json!({
            "n_layers": c.n_layers, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
            "vocab_size": c.vocab_size, "max_context": self.model.max_context(), "kv_cache_bytes": self.model.kv_cache_bytes(),
            "capture_tokens": self.model.capture().map_or(0, |c| c.window()),
            "quant": self.model.weights().quant().name(),
        })
        .to_string()
    }

    /// JSON {"ids": [...], "tokens": [...labels...]}.
    pub fn tokenize(&self, text: &str, chat: bool) -> Result<String, JsError> {
        let ids = self.tokenizer.encode(text, chat).map_err(js_err)?;
        Ok(serde_json::json!({ "ids": ids, "tokens": self.tokenizer.labels(&ids) }).to_string())
    }

    /// Starts a generation: options JSON as `GenerateOptions` (chat, max_tokens, temperature, top_k,
    /// top_p, repeat_penalty, repeat_last_n, seed). Runs the prefill. JSON {prompt_ids, prompt_tokens}.
    pub fn begin(&mut self, prompt: &str, options: &str) -> Result<String, JsError> {
        let opts: GenerateOptions = serde_json::from_str(options).map_err(|e| js_err(format!("generation options: {e}")))?;
        self.generation = None;
        let g = Generation::begin(&mut self.model, &self.tokenizer, prompt, &opts).map_err(js_err)?;
        let ids = g.prompt_ids().to_vec();
        self.generation = Some(g);
        Ok(serde_json::json!({ "prompt_ids": ids, "prompt_tokens": self.tokenizer.labels(&ids) }).to_string())
    }

    /// One token: JSON {id, text, label, done, reason}.
    pub fn next(&mut self) -> Result<String, JsError> {
        let g = self.generation.as_mut().ok_or_else(|| js_err("no generation in progress: call begin first"))?;
        let step = g.next(&mut self.model, &self.tokenizer).map_err(js_err)?;
        Ok(serde_json::to_string(&step).expect("a step serializes"))
    }

    pub fn seq_len(&self) -> usize {
        self.generation.as_ref().map_or(0, |g| g.sequence().len())
    }

    /// JSON array of labels for the current sequence.
    pub fn tokens(&self) -> String {
        let ids = self.generation.as_ref().map_or(&[][..], |g| g.sequence());
        serde_json::to_string(&self.tokenizer.labels(ids)).expect("labels serialize")
    }

    /// T × T row-major probabilities for one layer and head (T = captured tokens).
    pub fn attention(&self, layer: usize, head: usize) -> Result<js_sys::Float32Array, JsError> {
        let c = &self.model.config;
        if layer >= c.n_layers || head >= c.n_heads {
            return Err(js_err(format!("layer {layer} / head {head} does not exist: the model has {} layers of {} heads", c.n_layers, c.n_heads)));
        }
        let cap = self.model.capture().ok_or_else(|| js_err("attention capture is off"))?;
        let (_, weights) = cap.pattern(layer, head);
        Ok(js_sys::Float32Array::from(weights.as_slice()))
    }

    /// JSON: the k most likely next tokens of the latest step (raw and as sampled), or null.
    pub fn predictions(&self, k: usize) -> String {
        let Some(p) = self.generation.as_ref().and_then(|g| g.predictions(k.clamp(1, 100))) else { return "null".into() };
        let top: Vec<_> = p
            .top
            .iter()
            .map(|c| serde_json::json!({ "id": c.id, "label": self.tokenizer.label(c.id), "logit": c.logit, "prob": c.prob, "prob_final": c.prob_final }))
            .collect();
        serde_json::json!({ "position": p.position, "sampled": p.sampled, "sampled_label": self.tokenizer.label(p.sampled), "top": top }).to_string()
    }

    /// JSON {position, label, layers}: for each layer, the top-k tokens the final norm and output
    /// head would predict from the residual stream after that layer, at the last fed position
    /// (`position`, whose token is `label`).
    pub fn logit_lens(&self, k: usize) -> Result<String, JsError> {
        let k = k.clamp(1, 50);
        let mut layers = Vec::new();
        self.model
            .logit_lens(|layer, logits| {
                let probs = crate::sampler::softmax(logits, 1.0);
                let top: Vec<_> = crate::sampler::top_k(logits, k).iter().map(|&i| serde_json::json!({ "id": i, "label": self.tokenizer.label(i as u32), "prob": probs[i] })).collect();
                layers.push(serde_json::json!({ "layer": layer, "top": top }));
            })
            .ok_or_else(|| js_err("the logit lens needs a sequence: generate first"))?;
        let position = self.model.position() - 1;
        let ids = self.generation.as_ref().map_or(&[][..], |g| g.sequence());
        let label = ids.get(position).map(|&id| self.tokenizer.label(id));
        Ok(serde_json::json!({ "position": position, "label": label, "layers": layers }).to_string())
    }

    /// JSON: one query's scaled dot-product attention, step by step (see `Transformer::explain`).
    pub fn explain(&self, layer: usize, head: usize, query: usize) -> Result<String, JsError> {
        let e = self
            .model
            .explain(layer, head, query)
            .ok_or_else(|| js_err(format!("no captured attention for layer {layer}, head {head}, token {query}")))?;
        let ids = self.generation.as_ref().map_or(&[][..], |g| g.sequence());
        let mut v = serde_json::to_value(&e).expect("an explanation serializes");
        v["label"] = self.tokenizer.label(ids.get(query).copied().unwrap_or(0)).into();
        v["keys"] = self.tokenizer.labels(&ids[..(query + 1).min(ids.len())]).into();
        Ok(v.to_string())
    }

    /// JSON {ids, labels, special} of the current sequence (prompt and generated), for the
    /// tokenization view: `special` marks added special tokens such as `<|im_start|>`.
    pub fn sequence(&self) -> String {
        let ids = self.generation.as_ref().map_or(&[][..], |g| g.sequence());
        let tok = self.tokenizer.inner();
        let special: Vec<bool> = ids
            .iter()
            .map(|&id| tok.id_to_token(id).is_some_and(|piece| tok.get_added_vocabulary().is_special_token(&piece)))
            .collect();
        serde_json::json!({ "ids": ids, "labels": self.tokenizer.labels(ids), "special": special }).to_string()
    }

    /// Summary statistics of every head, so "kinds of heads" can be found without sending
    /// 270 matrices to the page: `HEAD_STATS` floats per (layer, head), layer-major, see
    /// `capture::head_stats`. Computed over the captured rows of the current sequence.
    pub fn head_stats(&self) -> Result<js_sys::Float32Array, JsError> {
        let c = &self.model.config;
        let cap = self.model.capture().ok_or_else(|| js_err("attention capture is off"))?;
        let ids = self.generation.as_ref().map_or(&[][..], |g| g.sequence());
        let mut out = Vec::with_capacity(c.n_layers * c.n_heads * HEAD_STATS);
        for l in 0..c.n_layers {
            for h in 0..c.n_heads {
                let (t, m) = cap.pattern(l, h); // (t, t)
                out.extend_from_slice(&head_stats(&m, t, ids));
            }
        }
        Ok(js_sys::Float32Array::from(out.as_slice()))
    }

    /// Every layer's and head's pattern as a size × size thumbnail (max-pooled), layer-major.
    pub fn overview(&self, size: usize) -> Result<js_sys::Float32Array, JsError> {
        let c = &self.model.config;
        let cap = self.model.capture().ok_or_else(|| js_err("attention capture is off"))?;
        let size = size.clamp(1, 256);
        let mut out = vec![0f32; c.n_layers * c.n_heads * size * size];
        for l in 0..c.n_layers {
            for h in 0..c.n_heads {
                cap.thumbnail(l, h, size, &mut out[(l * c.n_heads + h) * size * size..(l * c.n_heads + h + 1) * size * size]);
            }
        }
        Ok(js_sys::Float32Array::from(out.as_slice()))
    }
}

