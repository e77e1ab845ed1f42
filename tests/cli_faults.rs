//! The CLI and the converter on damaged input: one line on stderr naming the file, tensor or field
//! and what to do, exit code 2, no panic. A representative set of the faults in
//! tests/malformed_files.rs, through the binaries; plus the flags the long run uses.

mod common;

use std::process::{Command, Output};

use attnscope::format::GgmlKind;
use common::*;

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("ATTNSCOPE_MEMORY_LIMIT_MB").args(args).output().unwrap()
}

fn attnscope(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_attnscope"), args)
}

fn convert(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_attnscope-convert"), args)
}

fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line, no backtrace: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
}

fn generate(f: &Folder) -> Output {
    attnscope(&["generate", "--model", f.arg(), "--prompt", "ab", "--max-tokens", "3", "--seed", "1"])
}

#[test]
fn the_tiny_folder_generates() {
    let f = Folder::tiny("cli-ok");
    let out = generate(&f);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn damaged_weight_files_are_one_line_errors_naming_file_and_tensor() {
    let f = Folder::tiny("cli-weights");
    let good = weights(GgmlKind::Q8_0);
    f.write("model.q8_0.safetensors", &good[..good.len() - 10]);
    assert_one_line_error(&generate(&f), &["model.q8_0.safetensors", "truncated", "convert the model again"]);

    f.write("model.q8_0.safetensors", &with_header_text(&good, b"<html>502 Bad Gateway</html>"));
    assert_one_line_error(&generate(&f), &["model.q8_0.safetensors", "not valid JSON"]);

    let text = String::from_utf8(header_text(&good)).unwrap();
    let norm = r#""model.norm.weight":"#;
    let at = text.find(norm).unwrap();
    let end = at + text[at..].find('}').unwrap() + 1;
    let twice = format!("{},{}{}", &text[..end], &text[at..end], &text[end..]);
    f.write("model.q8_0.safetensors", &with_header_text(&good, twice.as_bytes()));
    assert_one_line_error(&generate(&f), &["`model.norm.weight`", "appears twice"]);

    let mut nan = good.clone();
    let (h, data_at) = header(&nan);
    let start = data_at + h["model.layers.0.mlp.down_proj.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    nan[start..start + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    f.write("model.q8_0.safetensors", &nan);
    assert_one_line_error(&generate(&f), &["`model.layers.0.mlp.down_proj.weight` has NaN"]);
}

#[test]
fn a_bad_config_or_tokenizer_is_a_one_line_error_naming_the_field() {
    let f = Folder::tiny("cli-config");
    f.write("config.json", CONFIG_JSON.replace("\"hidden_size\": 32", "\"hidden_size\": 0").as_bytes());
    assert_one_line_error(&generate(&f), &["config.json", "hidden_size = 0"]);
    f.write("config.json", CONFIG_JSON.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 4").replace("\"num_key_value_heads\": 1", "\"num_key_value_heads\": 2").as_bytes());
    assert_one_line_error(&generate(&f), &["num_attention_heads = 4 but the weights were converted with 2"]);
    f.write("config.json", CONFIG_JSON.as_bytes());
    f.write("tokenizer.json", b"{\"version\": \"1.0\", \"model\": ");
    assert_one_line_error(&generate(&f), &["tokenizer.json could not be read"]);
    f.write("config.json", CONFIG_JSON.replace("\"vocab_size\": 8", "\"vocab_size\": 9").as_bytes());
    f.write("tokenizer.json", &tokenizer_json());
    assert_one_line_error(&generate(&f), &["tokenizer.json has 8 tokens but config.json says vocab_size 9"]);
}

#[test]
fn a_context_too_large_for_memory_is_refused_with_the_figures() {
    // The real model's weights with a config that claims a million positions: the KV cache alone
    // would be 30 layers · 2^20 · (3 heads · 72 bytes of 8-bit keys + 192 · 2 bytes of bf16
    // values) = 17.6 GiB.
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct");
    let f = Folder::new("cli-budget");
    for name in ["tokenizer.json", "model.q8_0.safetensors"] {
        std::os::unix::fs::symlink(real.join(name), f.path().join(name)).unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(real.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = (1u64 << 20).into();
    f.write("config.json", config.to_string().as_bytes());
    let huge = attnscope(&["generate", "--model", f.arg(), "--prompt", "x", "--context", "1048576", "--memory-limit", "16384"]);
    assert_one_line_error(&huge, &["KV cache 18000 MB", "at most 16384 MB", "shorter context"]);
    // And an ordinary context under a tiny limit:
    let small = attnscope(&["generate", "--model", f.arg(), "--prompt", "x", "--memory-limit", "100"]);
    assert_one_line_error(&small, &["at most 100 MB"]);
}

#[test]
fn verify_names_a_file_whose_checksum_does_not_match() {
    let f = Folder::new("cli-verify");
    let imported = attnscope::convert::import_gguf_bytes(std::path::Path::new("tiny.gguf"), &gguf()).unwrap();
    attnscope::convert::write_folder(&imported, f.path(), "tiny", &GgmlKind::ALL).unwrap();
    let ok = attnscope(&["verify", "--model", f.arg()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("model.q4_0.safetensors"));
    let path = f.path().join("tokenizer.json");
    let mut t = std::fs::read(&path).unwrap();
    t[10] ^= 0x20;
    std::fs::write(&path, &t).unwrap();
    assert_one_line_error(&attnscope(&["verify", "--model", f.arg()]), &["tokenizer.json has SHA-256", "manifest says"]);
    // Loading checks sizes against the manifest: a truncated weights file is named before parsing.
    let w = f.path().join("model.q8_0.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&generate(&f), &["model.q8_0.safetensors is", "the manifest says"]);
}

#[test]
fn the_converter_refuses_a_damaged_gguf_in_one_line() {
    let f = Folder::new("cli-gguf");
    let mut kv = gguf_metadata();
    kv.retain(|(k, _)| *k != "general.alignment");
    kv.push(("general.alignment", Gv::U32(0)));
    f.write("zero.gguf", &gguf_bytes(&kv, &gguf_tensors(), 32));
    let out_dir = f.path().join("out");
    let zero = f.path().join("zero.gguf");
    assert_one_line_error(&convert(&["--gguf", zero.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]), &["zero.gguf", "general.alignment"]);
    let mut huge = gguf();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    f.write("count.gguf", &huge);
    let count = f.path().join("count.gguf");
    assert_one_line_error(&convert(&["--gguf", count.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]), &["count.gguf", "tensors (limit"]);
    let g = gguf();
    f.write("cut.gguf", &g[..g.len() / 2]);
    let cut = f.path().join("cut.gguf");
    assert_one_line_error(&convert(&["--gguf", cut.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]), &["cut.gguf", "truncated"]);
    assert!(!out_dir.exists(), "nothing is written for a refused input");
    let ok = f.path().join("ok.gguf");
    f.write("ok.gguf", &g);
    let out = convert(&["--gguf", ok.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn ignore_eos_runs_to_max_tokens_and_progress_reports_memory() {
    let out = attnscope(&["generate", "--chat", "--prompt", "Reply with the single word OK.", "--max-tokens", "40", "--ignore-eos", "--progress", "20", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stats: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(stats["generated_tokens"], 40, "{stats}");
    assert_eq!(stats["stop_reason"], "max_tokens");
    let progress: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr).lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|v: &serde_json::Value| v.get("rss_mb").is_some()).collect();
    assert_eq!(progress.len(), 2, "one line per 20 tokens");
    assert!(progress.iter().all(|p| p["rss_mb"].as_f64().unwrap() > 50.0 && p["tok_s"].as_f64().unwrap() > 0.0));
    // Without the flag the same prompt ends at the end of the turn.
    let out = attnscope(&["generate", "--chat", "--prompt", "Reply with the single word OK.", "--max-tokens", "40", "--json"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stats: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(stats["stop_reason"], "eos", "{stats}");
}
