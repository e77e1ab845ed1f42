//! The native CLI: the same engine as the browser, scriptable, so every number the page shows can
//! be checked from a terminal. Output is JSON lines where a program reads it. Any error is one line
//! on stderr naming the problem and the fix, exit code 2.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use attnscope::format::GgmlKind;
use attnscope::generate::{GenerateOptions, Generation};
use attnscope::loader::{LoadOptions, load_folder};
use attnscope::sampler::SamplingParams;
use attnscope::tokenizer::TextTokenizer;

const USAGE: &str = "usage: attnscope <tokenize|generate|logits|attention|verify> [--model <folder>] [--quant q8_0|q4_0]
                 [--context N] [--memory-limit MB] …
  tokenize  --text S [--chat]
  generate  --prompt S [--chat] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
            [--repeat-penalty R] [--repeat-last-n N] [--seed S] [--capture] [--json]
            [--ignore-eos] [--progress N]
  logits    --prompt S [--chat] [--top K]
  attention --prompt S [--chat] [--layer L] [--head H]
  verify    every file of the model folder against manifest.json (size and SHA-256)
--context N        positions the KV cache holds (default 2048, at most the model's limit)
--memory-limit MB  refuse to load when weights + KV cache + capture + scratch need more
                   (default: ATTNSCOPE_MEMORY_LIMIT_MB, else the machine's physical memory)
--ignore-eos       keep generating past end-of-text tokens, up to --max-tokens
--progress N       every N generated tokens, one JSON line on stderr: position, tokens/s, RSS";

const DEFAULT_MODEL: &str = "models/smollm2-135m-instruct";

struct Args {
    command: String,
    model: PathBuf,
    quant: GgmlKind,
    text: Option<String>,
    chat: bool,
    json: bool,
    capture: bool,
    max_tokens: usize,
    context: usize,
    top: usize,
    layer: Option<usize>,
    head: Option<usize>,
    sampling: SamplingParams,
    seed_given: bool,
    memory_limit: u64,
    ignore_eos: bool,
    progress: usize,
}

fn parse_args() -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut a = Args {
        command: String::new(),
        model: PathBuf::from(DEFAULT_MODEL),
        quant: GgmlKind::Q8_0,
        text: None,
        chat: false,
        json: false,
        capture: false,
        max_tokens: 64,
        context: 2048,
        top: 10,
        layer: None,
        head: None,
        sampling: SamplingParams::default(),
        seed_given: false,
        memory_limit: attnscope::loader::default_memory_limit(),
        ignore_eos: false,
        progress: 0,
    };
    fn num<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
        let v = p.value().map_err(|e| e.to_string())?;
        let v = v.to_string_lossy();
        v.parse().map_err(|_| format!("{flag} needs a number, got `{v}`"))
    }
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Value(v) if a.command.is_empty() => a.command = v.to_string_lossy().into_owned(),
            Long("model") => a.model = PathBuf::from(p.value().map_err(|e| e.to_string())?),
            Long("quant") => {
                let v = p.value().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
                a.quant = GgmlKind::from_name(&v).ok_or(format!("--quant must be q8_0 or q4_0, got `{v}`"))?;
            }
            Long("text") | Long("prompt") => a.text = Some(p.value().map_err(|e| e.to_string())?.to_string_lossy().into_owned()),
            Long("chat") => a.chat = true,
            Long("json") => a.json = true,
            Long("capture") => a.capture = true,
            Long("ignore-eos") => a.ignore_eos = true,
            Long("progress") => a.progress = num(&mut p, "--progress")?,
            Long("memory-limit") => a.memory_limit = num::<u64>(&mut p, "--memory-limit")?.saturating_mul(1 << 20),
            Long("max-tokens") => a.max_tokens = num(&mut p, "--max-tokens")?,
            Long("context") => a.context = num(&mut p, "--context")?,
            Long("top") => a.top = num(&mut p, "--top")?,
            Long("layer") => a.layer = Some(num(&mut p, "--layer")?),
            Long("head") => a.head = Some(num(&mut p, "--head")?),
            Long("temperature") => a.sampling.temperature = num(&mut p, "--temperature")?,
            Long("top-k") => a.sampling.top_k = Some(num(&mut p, "--top-k")?),
            Long("top-p") => a.sampling.top_p = Some(num(&mut p, "--top-p")?),
            Long("repeat-penalty") => a.sampling.repeat_penalty = num(&mut p, "--repeat-penalty")?,
            Long("repeat-last-n") => a.sampling.repeat_last_n = num(&mut p, "--repeat-last-n")?,
            Long("seed") => {
                a.sampling.seed = num(&mut p, "--seed")?;
                a.seed_given = true;
            }
            Short('h') | Long("help") => return Err(USAGE.to_string()),
            other => return Err(format!("{} (run `attnscope --help` for the flags)", other.unexpected())),
        }
    }
    if a.command.is_empty() {
        return Err(format!("no command given (run `attnscope --help`)\n{USAGE}"));
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg == USAGE => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => return fail(&msg),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn text_arg(a: &Args, flag: &str) -> Result<String, String> {
    a.text.clone().ok_or(format!("{} needs {flag} <text>", a.command))
}

fn run(a: Args) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match a.command.as_str() {
        "tokenize" => {
            let text = text_arg(&a, "--text")?;
            let tok = tokenizer_only(&a)?;
            let ids = tok.encode(&text, a.chat).map_err(|e| e.to_string())?;
            let line = serde_json::json!({ "ids": ids, "tokens": tok.labels(&ids) });
            writeln!(out, "{line}").map_err(|e| e.to_string())
        }
        "generate" => generate(&a, &mut out),
        "logits" => {
            let prompt = text_arg(&a, "--prompt")?;
            let opts = LoadOptions { max_context: a.context, capture_window: None, memory_limit: Some(a.memory_limit) };
            let mut m = load_folder(&a.model, a.quant, &opts).map_err(|e| e.to_string())?;
            let ids = m.tokenizer.encode(&prompt, a.chat).map_err(|e| e.to_string())?;
            if ids.is_empty() {
                return Err("the prompt is empty".into());
            }
            let logits = m.model.forward(&ids).map_err(|e| e.to_string())?;
            let mut ranked: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
            ranked.sort_by(|x, y| y.1.total_cmp(&x.1));
            ranked.truncate(a.top);
            let line = serde_json::json!({ "ids": ids, "top": ranked });
            writeln!(out, "{line}").map_err(|e| e.to_string())
        }
        "attention" => {
            let prompt = text_arg(&a, "--prompt")?;
            let opts = LoadOptions { max_context: a.context, capture_window: Some(a.context), memory_limit: Some(a.memory_limit) };
            let mut m = load_folder(&a.model, a.quant, &opts).map_err(|e| e.to_string())?;
            let ids = m.tokenizer.encode(&prompt, a.chat).map_err(|e| e.to_string())?;
            if ids.is_empty() {
                return Err("the prompt is empty".into());
            }
            m.model.forward(&ids).map_err(|e| e.to_string())?;
            let c = &m.model.config;
            let check = |v: Option<usize>, n: usize, what: &str| match v {
                Some(i) if i >= n => Err(format!("--{what} {i} does not exist: the model has {n} {what}s (0..{})", n - 1)),
                Some(i) => Ok(vec![i]),
                None => Ok((0..n).collect()),
            };
            let layers = check(a.layer, c.n_layers, "layer")?;
            let heads = check(a.head, c.n_heads, "head")?;
            let cap = m.model.capture().expect("capture was switched on above");
            let weights: Vec<Vec<Vec<Vec<f32>>>> = layers
                .iter()
                .map(|&l| {
                    heads
                        .iter()
                        .map(|&h| {
                            let (t, flat) = cap.pattern(l, h);
                            flat.chunks(t.max(1)).map(<[f32]>::to_vec).collect()
                        })
                        .collect()
                })
                .collect();
            let line = serde_json::json!({ "tokens": m.tokenizer.labels(&ids), "ids": ids, "layers": layers, "heads": heads, "weights": weights });
            writeln!(out, "{line}").map_err(|e| e.to_string())
        }
        "verify" => {
            let files = attnscope::manifest::verify_folder(&a.model).map_err(|e| e.to_string())?;
            let line = serde_json::json!({ "verified": files });
            writeln!(out, "{line}").map_err(|e| e.to_string())
        }
        other => Err(format!("unknown command `{other}`: use tokenize, generate, logits, attention or verify")),
    }
}

fn tokenizer_only(a: &Args) -> Result<TextTokenizer, String> {
    let read = |name: &str| {
        let path = a.model.join(name);
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}. Run `./build.sh model`, or pass --model <folder>.", path.display()))
    };
    let config = attnscope::config::Config::from_json(&read("config.json")?).map_err(|e| e.to_string())?;
    TextTokenizer::from_json(&read("tokenizer.json")?, config.vocab_size, config.eos_token_id).map_err(|e| e.to_string())
}

fn generate(a: &Args, out: &mut impl Write) -> Result<(), String> {
    let prompt = text_arg(a, "--prompt")?;
    let mut sampling = a.sampling.clone();
    if !a.seed_given {
        sampling.seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64 % 1_000_000_007);
    }
    let opts = GenerateOptions { chat: a.chat, max_tokens: a.max_tokens, ignore_eos: a.ignore_eos, sampling };
    let load_start = Instant::now();
    let capture = a.capture.then_some(attnscope::model::DEFAULT_CAPTURE_WINDOW);
    let load_opts = LoadOptions { max_context: a.context, capture_window: capture, memory_limit: Some(a.memory_limit) };
    let mut m = load_folder(&a.model, a.quant, &load_opts).map_err(|e| e.to_string())?;
    let load_s = load_start.elapsed().as_secs_f64();

    let prefill_start = Instant::now();
    let mut g = Generation::begin(&mut m.model, &m.tokenizer, &prompt, &opts).map_err(|e| e.to_string())?;
    let prefill_s = prefill_start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut first_token_s = None;
    let mut window_start = (Instant::now(), 0usize);
    let reason;
    loop {
        let step = g.next(&mut m.model, &m.tokenizer).map_err(|e| e.to_string())?;
        if let Some(id) = step.id {
            first_token_s.get_or_insert(prefill_s + decode_start.elapsed().as_secs_f64());
            if a.json {
                writeln!(out, "{}", serde_json::json!({ "id": id, "text": step.text })).map_err(|e| e.to_string())?;
            } else {
                write!(out, "{}", step.text).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
        }
        let generated = g.generated_ids().len();
        if a.progress > 0 && step.id.is_some() && generated % a.progress == 0 {
            let window_s = window_start.0.elapsed().as_secs_f64();
            let line = serde_json::json!({
                "generated": generated,
                "position": m.model.position(),
                "tok_s": round2((generated - window_start.1) as f64 / window_s),
                "rss_mb": rss_mb(),
            });
            writeln!(std::io::stderr(), "{line}").map_err(|e| e.to_string())?;
            window_start = (Instant::now(), generated);
        }
        if step.done {
            reason = step.reason;
            break;
        }
    }
    let decode_s = decode_start.elapsed().as_secs_f64();
    let generated = g.generated_ids().len();
    // The first token comes from the prefill's logits; decode speed counts the forward passes after it.
    let decode_tok_s = if generated > 1 { (generated - 1) as f64 / decode_s } else { 0.0 };
    let stats = serde_json::json!({
        "prompt_tokens": g.prompt_ids().len(),
        "generated_tokens": generated,
        "prefill_tok_s": round2(g.prompt_ids().len() as f64 / prefill_s),
        "decode_tok_s": round2(decode_tok_s),
        "ttft_ms": round2(first_token_s.unwrap_or(prefill_s) * 1000.0),
        "load_s": round2(load_s),
        "seed": opts.sampling.seed,
        "quant": a.quant.name(),
        "stop_reason": reason,
    });
    if a.json {
        writeln!(out, "{stats}").map_err(|e| e.to_string())
    } else {
        writeln!(out).and_then(|_| writeln!(std::io::stderr(), "{stats}")).map_err(|e| e.to_string())
    }
}

/// Resident memory from /proc/self/status (Linux), in MB; None elsewhere.
fn rss_mb() -> Option<f64> {
    let kb = attnscope::loader::proc_kb("/proc/self/status", "VmRSS:")?;
    Some(round2(kb as f64 / 1024.0))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
