// Where a decode step's time goes in Chromium's own V8 (Node's older V8 runs relaxed SIMD
// differently): the Engine runs on a blank page's main thread, Chromium's sampling profiler
// records 128 greedy tokens, and the functions with the most self time are printed by name.
//
// Function names survive only without wasm-opt and with wasm-bindgen's --keep-debug, so this
// profiles a build of its own (after `./build.sh build`, which leaves target/relaxed warm):
//   wasm-bindgen --target web --no-typescript --keep-debug --out-dir /tmp/pkg-named \
//     target/relaxed/wasm32-unknown-unknown/release/attnscope.wasm
//   PKG=/tmp/pkg-named QUANT=q8_0 node tests/bench/chromium-profile.mjs
// LONG=1 decodes after a ~900-token prompt instead of a 15-token one. Only the decode steps are
// profiled, not the prompt's prefill, which at that length would take most of the samples.
// The whole profile is written to target/bench/decode.cpuprofile (DevTools opens it).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, ROOT } from '../e2e/browser.mjs';
import { serveRoots } from './static-server.mjs';

const PKG = process.env.PKG ?? join(ROOT, 'www/pkg-relaxed');
const quant = process.env.QUANT ?? 'q8_0';

const server = await serveRoots({ '/pkg/': PKG, '/models/': join(ROOT, 'models'), '/bench/': join(ROOT, 'tests/bench'), '/www/': join(ROOT, 'www') });
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage();
  // The bench's blank page (it draws nothing; its own worker is never started here).
  await page.goto(`http://127.0.0.1:${server.address().port}/bench/worker.html`);
  await page.evaluate(async (quant) => {
    const m = await import('/pkg/attnscope.js');
    await m.default({ module_or_path: '/pkg/attnscope_bg.wasm' });
    const get = async (f) => m.FileBuffer.of(new Uint8Array(await (await fetch(`/models/smollm2-135m-instruct/${f}`)).arrayBuffer()));
    window.engine = new m.Engine(await get('config.json'), await get('tokenizer.json'), await get(`model.${quant}.safetensors`));
  }, quant);
  const sentence = 'The history of the transformer architecture is long. ';
  const prompt = process.env.LONG ? `${sentence.repeat(100)}It began` : `${sentence}It began with attention, then`;
  const begin = (n) => page.evaluate(({ prompt, n }) => {
    const options = { chat: false, max_tokens: n, temperature: 0, seed: 1, ignore_eos: true };
    window.engine.begin(prompt, JSON.stringify(options));
  }, { prompt, n });
  const decode = (n) => page.evaluate((n) => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) window.engine.next();
    return (n / (performance.now() - t0)) * 1000;
  }, n);
  await begin(32);
  console.log(`${quant}, ${PKG}: ${(await decode(32)).toFixed(1)} tokens/s unprofiled (warm-up)`);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
  await begin(128);
  await cdp.send('Profiler.start');
  console.log(`${(await decode(128)).toFixed(1)} tokens/s profiled`);
  const { profile } = await cdp.send('Profiler.stop');
  mkdirSync(join(ROOT, 'target/bench'), { recursive: true });
  writeFileSync(join(ROOT, 'target/bench/decode.cpuprofile'), JSON.stringify(profile));

  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const name = nodes.get(id).callFrame.functionName || '(anonymous)';
    self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas[i] ?? 0));
    total += profile.timeDeltas[i] ?? 0;
  });
  for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${name.slice(0, 110)}`);
  }
} finally {
  await browser.close();
  server.close();
}
