// A profile of the wasm engine outside the browser: the same www/pkg module in Node's V8, so
// `node --cpu-prof tests/bench/node-step.mjs` shows where a step's time goes. Function names
// need a build packaged with `wasm-bindgen --keep-debug` and without wasm-opt, as in
// chromium-profile.mjs. Figures here are for profiling only; the benchmark proper runs in Chromium.
// PKG=www/pkg-relaxed profiles the relaxed-SIMD build (Node 20: --experimental-wasm-relaxed-simd),
// but not its results: under that flag Node 20 decoded different greedy tokens from run to run
// (Chromium's are the CLI's, which the browser tests check). Check numbers with the plain build.
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PKG = process.env.PKG ?? join(ROOT, 'www/pkg');
const { initSync, Engine, FileBuffer } = await import(join(PKG, 'attnscope.js'));
initSync({ module: readFileSync(join(PKG, 'attnscope_bg.wasm')) });

const quant = process.env.QUANT ?? 'q8_0';
const model = join(ROOT, 'models/smollm2-135m-instruct');
const file = (name) => FileBuffer.of(readFileSync(join(model, name)));
const engine = new Engine(file('config.json'), file('tokenizer.json'), file(`model.${quant}.safetensors`));
const contextTokens = Number(process.env.CONTEXT ?? 0);
const prompt = contextTokens ? 'The history of the transformer architecture is long. '.repeat(Math.ceil(contextTokens / 10)) : 'The history of the transformer architecture is long. It began with attention, then';
const n = Number(process.env.TOKENS ?? 64);
let t = performance.now();
const begun = JSON.parse(engine.begin(prompt, JSON.stringify({ chat: false, max_tokens: n, temperature: 0, seed: 1 })));
const prefillMs = performance.now() - t;
t = performance.now();
let steps = 0;
for (; steps < n; steps++) if (JSON.parse(engine.next()).done) break;
const decodeMs = performance.now() - t;
console.log(JSON.stringify({ quant, prompt_tokens: begun.prompt_ids.length, prefill_tok_s: (begun.prompt_ids.length / prefillMs) * 1000, decode_tok_s: (steps / decodeMs) * 1000, steps }));
