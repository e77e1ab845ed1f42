//! The real SmolLM2-135M-Instruct, converted by `./build.sh model` into models/smollm2-135m-instruct.
//! Checked against what the model is known to say and against llama.cpp run on the same GGUF
//! (tests/fixtures, written by models/make_fixtures.py): an independent tokenizer and forward pass.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use attnscope::format::{GgmlKind, QSafetensors};
use attnscope::generate::{GenerateOptions, Generation};
use attnscope::loader::{LoadOptions, LoadedModel, load_folder};
use attnscope::sampler::SamplingParams;
use attnscope::tokenizer::StreamDecoder;

fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct");
    assert!(dir.join("manifest.json").is_file(), "the real model is missing: run `./build.sh model` first ({})", dir.display());
    dir
}

fn load(quant: GgmlKind) -> LoadedModel {
    load_folder(&model_dir(), quant, &LoadOptions { max_context: 512, capture_window: Some(64), memory_limit: None }).unwrap()
}

fn fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn greedy(m: &mut LoadedModel, prompt: &str, chat: bool, n: usize) -> (Vec<u32>, String) {
    let opts = GenerateOptions { chat, max_tokens: n, ignore_eos: false, sampling: SamplingParams { temperature: 0.0, repeat_penalty: 1.0, ..Default::default() } };
    let mut g = Generation::begin(&mut m.model, &m.tokenizer, prompt, &opts).unwrap();
    let mut text = String::new();
    loop {
        let step = g.next(&mut m.model, &m.tokenizer).unwrap();
        text.push_str(&step.text);
        if step.done {
            break;
        }
    }
    (g.generated_ids().to_vec(), text)
}

fn top1(m: &mut LoadedModel, ids: &[u32]) -> u32 {
    m.model.reset();
    let logits = m.model.forward(ids).unwrap();
    logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32
}

static Q8: OnceLock<std::sync::Mutex<LoadedModel>> = OnceLock::new();
fn q8() -> std::sync::MutexGuard<'static, LoadedModel> {
    Q8.get_or_init(|| std::sync::Mutex::new(load(GgmlKind::Q8_0))).lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_capital_of_france_is_paris_in_both_quantizations() {
    for quant in GgmlKind::ALL {
        let mut m = load(quant);
        let (_, text) = greedy(&mut m, "The capital of France is", false, 3);
        assert!(text.starts_with(" Paris"), "{quant:?} continued with {text:?}");
    }
}

/// llama.cpp's prompts with their top-10 logits and greedy continuations.
fn llamacpp_prompts() -> Vec<serde_json::Value> {
    fixture("llamacpp_logits.json")["prompts"].as_array().unwrap().clone()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// How far llama.cpp's best next token is ahead of its second: below about a logit, a different
/// rounding of the same weights may legitimately swap them.
fn margin(case: &serde_json::Value) -> f64 {
    let top = case["top10"].as_array().unwrap();
    top[0]["logit"].as_f64().unwrap() - top[1]["logit"].as_f64().unwrap()
}

/// The q4_0 file re-rounds weights that the GGUF already ships at 4 bits (Q4_1), so it is a
/// second-generation copy and measurably worse: on llama.cpp's clear prompts it picks q8_0's
/// token for all but one ("The quick brown fox": q8_0 and llama.cpp say " jumps", q4_0 a newline).
/// The bar stated here is that: at most one disagreement, and never on "The capital of France is".
#[test]
fn q8_0_and_q4_0_agree_on_the_next_token_where_it_is_clear() {
    let mut q4 = load(GgmlKind::Q4_0);
    let mut q8 = q8();
    let clear: Vec<_> = llamacpp_prompts().into_iter().filter(|c| margin(c) >= 1.0).collect();
    assert!(clear.len() >= 5, "the fixture should hold at least five clear prompts");
    let mut disagree = Vec::new();
    for case in &clear {
        let ids = ids_of(&case["prompt_ids"]);
        if top1(&mut q8, &ids) != top1(&mut q4, &ids) {
            disagree.push(case["prompt"].as_str().unwrap().to_string());
        }
    }
    assert!(disagree.len() <= 1 && !disagree.iter().any(|p| p.contains("France")), "q4_0 and q8_0 disagree on {disagree:?}");
}

#[test]
fn token_ids_equal_llama_cpp_on_the_same_gguf() {
    let f = fixture("tokenizer_ids.json");
    let m = q8();
    for case in f["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(m.tokenizer.encode(text, false).unwrap(), ids_of(&case["ids"]), "text {text:?}");
    }
}

#[test]
fn the_tokenizer_is_read_as_the_tokenizers_crate_reads_it() {
    let json = std::fs::read(model_dir().join("tokenizer.json")).unwrap();
    let ours = attnscope::tokenizer_json::read_bpe(&json).expect("SmolLM2's tokenizer.json is read without the crate's loader");
    let crates = tokenizers::Tokenizer::from_bytes(&json).unwrap();
    assert_eq!(ours.to_string(false).unwrap(), crates.to_string(false).unwrap());
}

#[test]
fn next_token_logits_agree_with_llama_cpp_on_the_same_gguf() {
    let mut m = q8();
    for case in llamacpp_prompts() {
        let ids = ids_of(&case["prompt_ids"]);
        m.model.reset();
        let logits = m.model.forward(&ids).unwrap().to_vec();
        let top = case["top10"].as_array().unwrap();
        // Our weights are the GGUF's Q4_1 re-rounded to Q8_0, so logits differ slightly. Compared
        // as gaps to the best token (a constant shift changes no probability): within one logit
        // on llama.cpp's ten best tokens (most agree within 0.2), and the same winner unless tied.
        let (best_id, best) = (top[0]["id"].as_u64().unwrap() as usize, top[0]["logit"].as_f64().unwrap());
        for t in top {
            let (id, want) = (t["id"].as_u64().unwrap() as usize, t["logit"].as_f64().unwrap());
            let (ours_gap, want_gap) = ((logits[best_id] - logits[id]) as f64, best - want);
            assert!((ours_gap - want_gap).abs() < 1.0, "prompt {:?} token {id}: gap to the best ours {ours_gap}, llama.cpp {want_gap}", case["prompt"]);
        }
        if margin(&case) >= 0.25 {
            let best = top[0]["id"].as_u64().unwrap() as u32;
            assert_eq!(top1(&mut m, &ids), best, "prompt {:?}", case["prompt"]);
        }
    }
}

#[test]
fn greedy_continuations_equal_llama_cpp_until_a_near_tie() {
    let mut m = q8();
    let mut compared = 0;
    for case in llamacpp_prompts() {
        let want = ids_of(&case["greedy_ids"]);
        let margins: Vec<f64> = serde_json::from_value(case["greedy_margins"].clone()).unwrap();
        // Compare up to llama.cpp's first step that is within a logit of a tie.
        let sure = margins.iter().take_while(|&&d| d >= 1.0).count().min(want.len());
        let prompt = m.tokenizer.decode(&ids_of(&case["prompt_ids"]));
        let (got, _) = greedy(&mut m, &prompt, false, want.len());
        assert_eq!(got[..sure], want[..sure], "prompt {prompt:?}");
        compared += sure;
    }
    assert!(compared >= 10, "only {compared} greedy tokens were clear enough to compare");
}

#[test]
fn the_chat_prompt_is_answered_like_llama_cpp_and_ends_the_turn() {
    let mut m = q8();
    let case = llamacpp_prompts().into_iter().find(|c| c["prompt"].as_str().unwrap().starts_with("<|im_start|>")).unwrap();
    let prompt = case["prompt"].as_str().unwrap();
    let (ids, text) = greedy(&mut m, prompt, false, 24);
    let im_end = m.tokenizer.inner().token_to_id("<|im_end|>").unwrap();
    assert_eq!(ids[..ids.len() - 1], ids_of(&case["greedy_ids"])[..], "{text:?}");
    assert_eq!(*ids.last().unwrap(), im_end);
    assert_eq!(text, case["greedy_text"].as_str().unwrap());
}

const ROUND_TRIP: &[&str] = &[
    "Hello, world!",
    "I ❤️ 🦀 and 👨‍👩‍👧 — ünïcödé",
    "注意力机制 日本語のテキスト 한국어",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
    "a  b   c\n\n\n\tx    \t  ",
    "   leading and trailing   ",
    "12345678901234567890 3.14159",
    "<|im_start|>user\nHi<|im_end|>\n",
];

#[test]
fn tokenization_round_trips_text_exactly() {
    let m = q8();
    for text in ROUND_TRIP {
        let ids = m.tokenizer.encode(text, false).unwrap();
        assert_eq!(m.tokenizer.decode(&ids), *text);
    }
}

#[test]
fn streamed_text_equals_the_full_decode_and_never_shows_a_broken_character() {
    let m = q8();
    for text in ROUND_TRIP {
        let ids = m.tokenizer.encode(text, false).unwrap();
        let mut dec = StreamDecoder::default();
        let pieces: Vec<String> = ids.iter().map(|&id| dec.step(&m.tokenizer, id)).collect();
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{text:?}: {pieces:?}");
        assert_eq!(pieces.concat(), *text);
    }
}

#[test]
fn labels_of_partial_characters_show_their_bytes() {
    let m = q8();
    let ids = m.tokenizer.encode("🦀", false).unwrap();
    assert!(ids.len() > 1, "the crab should take several byte tokens");
    let labels = m.tokenizer.labels(&ids);
    assert!(labels.iter().any(|l| l.contains("<0x")), "{labels:?}");
    assert!(labels.iter().all(|l| !l.contains('\u{FFFD}')));
}

#[test]
fn chat_mode_wraps_the_prompt_in_the_template_with_special_tokens() {
    let m = q8();
    let ids = m.tokenizer.encode("What is attention?", true).unwrap();
    let im_start = m.tokenizer.inner().token_to_id("<|im_start|>").unwrap();
    assert_eq!(ids[0], im_start);
    assert_eq!(ids.iter().filter(|&&i| i == im_start).count(), 3, "system, user, assistant turns");
    assert!(m.tokenizer.decode(&ids).ends_with("<|im_start|>assistant\n"));
}

#[test]
fn captured_real_attention_rows_are_probabilities() {
    let mut m = q8();
    m.model.reset();
    let ids = m.tokenizer.encode("The cat sat on the mat because the cat", false).unwrap();
    m.model.forward(&ids).unwrap();
    let cap = m.model.capture().unwrap();
    for (l, h) in [(0, 0), (15, 4), (29, 8)] {
        let (t, p) = cap.pattern(l, h);
        assert_eq!(t, ids.len());
        for i in 0..t {
            let s: f32 = p[i * t..(i + 1) * t].iter().sum();
            assert!((s - 1.0).abs() < 2e-3 && p[i * t + i + 1..(i + 1) * t].iter().all(|&x| x == 0.0));
        }
    }
}

#[test]
fn damaged_weight_files_are_refused_with_the_file_named() {
    let path = model_dir().join("model.q4_0.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = QSafetensors::read("model.q4_0.safetensors", &bytes[..cut]).err().unwrap().to_string();
        assert!(err.contains("model.q4_0.safetensors"), "{err}");
    }
    let mut flipped = bytes.clone();
    flipped[9] = b'!';
    assert!(QSafetensors::read("x", &flipped).is_err());
}
