//! The converter: a GGUF file or a Hugging Face Llama folder → an attnscope model folder
//! (config.json, tokenizer.json, model.q8_0.safetensors, model.q4_0.safetensors, manifest.json);
//! or, with `--export`, a folder's weights back to a GGUF file for llama.cpp (the bench's peer).

use std::path::PathBuf;
use std::process::ExitCode;

use attnscope::convert::{import_gguf, import_hf_folder, write_folder};
use attnscope::format::GgmlKind;

const USAGE: &str = "usage: attnscope-convert (--gguf <file.gguf> | --hf <folder>) --out <folder> [--name <display name>] [--quant q8_0,q4_0]
       attnscope-convert --export <model folder> --quant q8_0 --gguf <the GGUF it was converted from> --out <file.gguf>";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn value(p: &mut lexopt::Parser) -> Result<PathBuf, String> {
    p.value().map(PathBuf::from).map_err(|e| e.to_string())
}

fn run() -> Result<(), String> {
    use lexopt::prelude::*;
    let (mut gguf, mut hf, mut out, mut name, mut export) = (None, None, None, None, None);
    let mut quants = GgmlKind::ALL.to_vec();
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("gguf") => gguf = Some(value(&mut p)?),
            Long("hf") => hf = Some(value(&mut p)?),
            Long("export") => export = Some(value(&mut p)?),
            Long("out") => out = Some(value(&mut p)?),
            Long("name") => name = Some(value(&mut p)?.to_string_lossy().into_owned()),
            Long("quant") => {
                quants = value(&mut p)?
                    .to_string_lossy()
                    .split(',')
                    .map(|q| GgmlKind::from_name(q.trim()).ok_or(format!("--quant: `{q}` is not q8_0 or q4_0")))
                    .collect::<Result<_, _>>()?
            }
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    let out = out.ok_or(format!("--out <folder> is required\n{USAGE}"))?;
    let started = std::time::Instant::now();
    if let Some(folder) = export {
        let (Some(source), None, [kind]) = (gguf, hf, quants.as_slice()) else {
            return Err(format!("--export needs --gguf <source> and one --quant, and no --hf\n{USAGE}"));
        };
        attnscope::export::export_gguf(&folder, *kind, &source, &out).map_err(|e| e.to_string())?;
        eprintln!("wrote {} ({} weights) in {:.1} s", out.display(), kind.name(), started.elapsed().as_secs_f64());
        return Ok(());
    }
    let (imported, default_name) = match (gguf, hf) {
        (Some(g), None) => (import_gguf(&g).map_err(|e| e.to_string())?, g.file_stem().map(|s| s.to_string_lossy().into_owned())),
        (None, Some(h)) => (import_hf_folder(&h).map_err(|e| e.to_string())?, h.file_name().map(|s| s.to_string_lossy().into_owned())),
        _ => return Err(format!("give exactly one of --gguf or --hf\n{USAGE}")),
    };
    let name = name.or(default_name).unwrap_or_else(|| "model".into());
    let manifest = write_folder(&imported, &out, &name, &quants).map_err(|e| e.to_string())?;
    for (file, entry) in &manifest.files {
        eprintln!("wrote {}/{file}  {} bytes  sha256 {}", out.display(), entry.size, entry.sha256);
    }
    eprintln!("converted in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
