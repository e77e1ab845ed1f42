// A 4,000-token generation in the browser, the counterpart of tests/long_run.rs: the real page
// (`?threads=1&context=4096`), its worker and the real model in headless Chromium, through
// `window.attnscope.generate` with attention capture on as always in the app. Run by
// `./build.sh longrun` after the native run, never by `./build.sh test`: it takes several minutes
// (so the file is not named *.test.mjs, which `node --test tests/e2e/` would pick up). The figures
// go to docs/RELIABILITY.md.
//
// Sampled per token from the page's own `attnscope:token` event, whose `stats` are the worker's
// (docs/PROTOCOL.md). Why wasm memory should be exactly flat, unlike native RSS: wasm memory is
// the size of the linear memory, not the pages in use, and the worker reserves weights, KV cache
// and scratch for the whole context in one growth before the model is built. Only the attention
// capture grows, as it fills its 512-position window (to at most its bound, src/capture.rs).
// After that nothing new is kept per token, so any growth would be a leak (or an allocator that
// cannot reuse what a token freed).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freshContext, openApp, bannerText, runNative } from './browser.mjs';

const TOKENS = 4000;
const EVERY = 250;
const CONTEXT = 4096;
const CAPTURE_WINDOW = 512;
const SAME_AS_CLI = 64; // tokens compared with the native CLI's for the same settings
const RUN = { prompt: 'Once upon a time, in a small village by the sea,', maxTokens: TOKENS, ignoreEos: true, temperature: 0.8, topP: 0.95, seed: 42 };
const MIB = 1024 * 1024;

/** Seconds of decoding at a token: the worker's `decode_tok_s` is (generated − 1) / that time. */
const decodeSeconds = (s) => (s.generated_tokens > 1 ? (s.generated_tokens - 1) / s.decode_tok_s : 0);

test('4,000 tokens in the browser: wasm memory flat once the capture window is full, tokens/s falls only as the context grows', { timeout: 60 * 60_000 }, async () => {
  // The native tokens first, so the CLI does not compete with the page for the two cores.
  const native = runNative({
    prompt: RUN.prompt, max_tokens: SAME_AS_CLI, temperature: RUN.temperature, top_p: RUN.topP, seed: RUN.seed,
    ignore_eos: true, context: CONTEXT, capture: true,
  });
  assert.ok(native, 'the native CLI is needed for the comparison: cargo build --release --bins');

  const b = await freshContext();
  try {
    const info = await openApp(b.page, `/?threads=1&context=${CONTEXT}`);
    assert.equal(info.max_context, CONTEXT);
    assert.equal(info.threads, 1);
    assert.equal(await b.page.textContent('#context-limit'), String(CONTEXT), 'the page shows the context it got');

    await b.page.evaluate(() => {
      window.longRunSamples = [];
      document.addEventListener('attnscope:token', ({ detail: { index, stats } }) => {
        window.longRunSamples.push({ index, generated_tokens: stats.generated_tokens, prompt_tokens: stats.prompt_tokens, decode_tok_s: stats.decode_tok_s, wasm_memory_bytes: stats.wasm_memory_bytes });
      });
    });
    const started = Date.now();
    const result = await b.page.evaluate((run) => window.attnscope.generate(run), RUN);
    const wallSeconds = (Date.now() - started) / 1000;
    const samples = await b.page.evaluate(() => window.longRunSamples);

    assert.equal(result.ids.length, TOKENS);
    assert.equal(result.stats.stop_reason, 'max_tokens');
    assert.deepEqual(result.ids.slice(0, SAME_AS_CLI), native.ids, `the first ${SAME_AS_CLI} tokens equal the CLI's for the same seed and settings`);
    assert.deepEqual(samples.map((s) => s.index), Array.from({ length: TOKENS }, (_, i) => i), 'one sample per token, in order');

    const position = (s) => s.prompt_tokens + s.generated_tokens - 1; // tokens the model has read
    const base = samples.find((s) => position(s) >= CAPTURE_WINDOW);
    const rows = [];
    for (let g = EVERY; g <= TOKENS; g += EVERY) {
      const s = samples[g - 1];
      // The first window starts at the first token (its time is the prefill's: ttft), like
      // decode_tok_s; the others are the EVERY tokens since the previous row.
      const from = g === EVERY ? samples[0] : samples[g - EVERY - 1];
      const tokS = (s.generated_tokens - from.generated_tokens) / (decodeSeconds(s) - decodeSeconds(from));
      rows.push({ generated: g, position: position(s), tokS, memory: s.wasm_memory_bytes });
    }
    const lastGrowth = samples.findLast((s, i) => i > 0 && s.wasm_memory_bytes !== samples[i - 1].wasm_memory_bytes) ?? samples[0];
    console.log(`\n${TOKENS} tokens in ${wallSeconds.toFixed(0)} s; wasm memory ${(info.wasm_memory_bytes / MIB).toFixed(1)} MiB when ready, ${(samples[0].wasm_memory_bytes / MIB).toFixed(1)} MiB at the first token, last grew at token ${lastGrowth.index + 1} (position ${position(lastGrowth)}) to ${(lastGrowth.wasm_memory_bytes / MIB).toFixed(1)} MiB\n`);
    console.log(`| generated | position | tok/s (last ${EVERY}) | wasm memory (MiB) | growth since position ${position(base)} (bytes) |`);
    console.log('|---|---|---|---|---|');
    for (const r of rows) {
      const growth = r.position >= position(base) ? String(r.memory - base.wasm_memory_bytes) : '(capture filling)';
      console.log(`| ${r.generated} | ${r.position} | ${r.tokS.toFixed(1)} | ${(r.memory / MIB).toFixed(1)} | ${growth} |`);
    }
    console.log(`\nfinal stats: ${JSON.stringify(result.stats)}`);

    const grown = samples.filter((s) => position(s) >= position(base) && s.wasm_memory_bytes !== base.wasm_memory_bytes);
    assert.equal(grown.length, 0, `wasm memory grew after the capture window: first at position ${grown[0] && position(grown[0])}, to ${grown[0]?.wasm_memory_bytes} bytes from ${base.wasm_memory_bytes}`);
    // As natively: attention per token is linear in the context, so a token at ~4,000 positions
    // costs more, but not collapse-more. The first window includes warm-up: compare the second.
    const [second, last] = [rows[1].tokS, rows.at(-1).tokS];
    assert.ok(last > second * 0.4, `tokens/s fell from ${second.toFixed(1)} to ${last.toFixed(1)}`);
    assert.equal(await bannerText(b.page), null);
    assert.deepEqual(b.problems, []);
  } finally {
    await b.close();
  }
});
