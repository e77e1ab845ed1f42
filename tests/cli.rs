//! The CLI's contract as scripts and teaching material use it: JSON lines on stdout, and for
//! anything wrong a single line on stderr naming the problem and the fix, with exit code 2.

use std::process::{Command, Output};

fn attnscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attnscope")).current_dir(env!("CARGO_MANIFEST_DIR")).args(args).output().unwrap()
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line, no backtrace: {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_flags_and_commands_are_one_line_errors() {
    assert_one_line_error(&attnscope(&["generate", "--prompt", "x", "--frobnicate"]), "--frobnicate");
    assert_one_line_error(&attnscope(&["summon"]), "unknown command");
    assert_one_line_error(&attnscope(&["generate", "--max-tokens", "many"]), "--max-tokens");
    assert_one_line_error(&attnscope(&["generate", "--quant", "q2"]), "q8_0 or q4_0");
}

#[test]
fn a_missing_model_folder_says_how_to_make_one() {
    assert_one_line_error(&attnscope(&["generate", "--model", "/nonexistent", "--prompt", "x"]), "./build.sh model");
}

#[test]
fn a_corrupt_model_folder_is_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("attnscope-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(real.join(f), dir.join(f)).unwrap();
    }
    let weights = std::fs::read(real.join("model.q4_0.safetensors")).unwrap();
    std::fs::write(dir.join("model.q4_0.safetensors"), &weights[..weights.len() / 3]).unwrap();
    assert_one_line_error(&attnscope(&["generate", "--model", dir.to_str().unwrap(), "--quant", "q4_0", "--prompt", "x"]), "model.q4_0.safetensors");
    // A config from another model: the mismatch is named, with every tensor problem on the one line.
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(real.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = 12.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("model.q4_0.safetensors"), &weights).unwrap();
    assert_one_line_error(&attnscope(&["generate", "--model", dir.to_str().unwrap(), "--quant", "q4_0", "--prompt", "x"]), "unexpected tensor");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tokenize_prints_ids_and_tokens() {
    let out = attnscope(&["tokenize", "--text", "Hello world"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), v["tokens"].as_array().unwrap().len());
    assert_eq!(v["tokens"][1], " world");
}

#[test]
fn generate_json_streams_tokens_then_stats_and_repeats_with_a_seed() {
    let run = || {
        let out = attnscope(&["generate", "--prompt", "Once upon a time", "--max-tokens", "8", "--temperature", "0.8", "--top-p", "0.9", "--seed", "7", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines
    };
    let a = run();
    let stats = a.last().unwrap();
    assert_eq!(stats["generated_tokens"], 8);
    assert_eq!(stats["seed"], 7);
    assert!(stats["prefill_tok_s"].as_f64().unwrap() > 0.0 && stats["decode_tok_s"].as_f64().unwrap() > 0.0);
    assert!(a[..a.len() - 1].iter().all(|l| l["id"].is_u64() && l["text"].is_string()));
    let ids = |v: &[serde_json::Value]| v.iter().filter_map(|l| l["id"].as_u64()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&run()));
}

#[test]
fn logits_lists_the_top_tokens_in_order() {
    let out = attnscope(&["logits", "--prompt", "The capital of France is", "--top", "5"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    assert_eq!(top[0][0], 7042, "\" Paris\"");
    assert!(top.windows(2).all(|w| w[0][1].as_f64() >= w[1][1].as_f64()));
}

#[test]
fn attention_rows_sum_to_one_with_nothing_above_the_diagonal() {
    let out = attnscope(&["attention", "--prompt", "The cat sat on the mat", "--layer", "3", "--head", "7"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v["weights"][0][0];
    let t = v["tokens"].as_array().unwrap().len();
    assert_eq!(m.as_array().unwrap().len(), t);
    for i in 0..t {
        let row: Vec<f64> = serde_json::from_value(m[i].clone()).unwrap();
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 2e-3);
        assert!(row[i + 1..].iter().all(|&x| x == 0.0));
    }
    assert_one_line_error(&attnscope(&["attention", "--prompt", "x", "--layer", "30"]), "--layer 30");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_with_the_counts() {
    let long = "word ".repeat(100);
    assert_one_line_error(&attnscope(&["generate", "--prompt", &long, "--context", "32"]), "context holds 32");
}
