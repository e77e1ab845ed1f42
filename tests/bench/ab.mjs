// A/B of two builds of the worker, paired: is B faster than A, by how much? Each build is a copy
// of www/ (say one from `git stash` and one from the working tree, each with its pkg-* rebuilt).
// Both load in one Chromium, each on its own page and server, and their runs alternate A, B, B,
// A, … so that each pair meets the VM in the same state: on the development VM single runs of one
// build moved by a third within minutes, which unpaired rounds could not see through.
//
//   BUILDS=/tmp/a/www,/tmp/b/www node tests/bench/ab.mjs
//
// THREADS (1), QUANT (q8_0), PAIRS (12), RELAXED (1,1: whether each build may use relaxed SIMD;
// RELAXED=1,0 with the same copy twice compares plain SIMD with relaxed); decode of 128 tokens
// after the short prompt, or after a 992-token one with LONG=1, or prefill of the ~256-token
// prompt with PREFILL=1. Prints each pair and the median of the pairs' ratios B / A.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, ROOT } from '../e2e/browser.mjs';
import { serveRoots } from './static-server.mjs';

const builds = (process.env.BUILDS ?? '').split(',').filter(Boolean);
if (builds.length !== 2) throw new Error('BUILDS must name two copies of www/, comma-separated');
const threads = Number(process.env.THREADS ?? 1);
const quant = process.env.QUANT ?? 'q8_0';
const pairs = Number(process.env.PAIRS ?? 12);
const relaxed = (process.env.RELAXED ?? '1,1').split(',').map((x) => x !== '0');
const SENTENCE = 'The history of the transformer architecture is long. ';
const [prompt, tokens, figure] = process.env.PREFILL
  ? [`${SENTENCE.repeat(28)}It began`, 2, 'prefill_tok_s']
  : [process.env.LONG ? `${SENTENCE.repeat(110)}It began` : `${SENTENCE}It began with attention, then`, 128, 'decode_tok_s'];

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const profile = mkdtempSync(join(tmpdir(), 'attnscope-ab-'));
const context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
const servers = [];
try {
  const pages = [];
  for (const www of builds) {
    const server = await serveRoots({ '/bench/': join(ROOT, 'tests/bench'), '/models/': join(ROOT, 'models'), '/www/': www });
    servers.push(server);
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/bench/worker.html`);
    await page.waitForFunction(() => window.oursReady === true);
    const info = await page.evaluate(({ quant, threads, relaxed }) => window.ours.load(quant, threads, relaxed), { quant, threads, relaxed: relaxed[pages.length] });
    // V8 optimises wasm only after it has run a while: two short runs first.
    for (let i = 0; i < 2; i++) await page.evaluate((p) => window.ours.generate(p, 32), prompt);
    console.log(`${'AB'[pages.length]}: ${www} (threads ${info.threads}, relaxed SIMD ${info.relaxed_simd})`);
    pages.push(page);
  }
  const got = [[], []];
  for (let r = 0; r < pairs; r++) {
    for (const k of r % 2 ? [1, 0] : [0, 1]) {
      const stats = await pages[k].evaluate(({ p, n }) => window.ours.generate(p, n), { p: prompt, n: tokens });
      got[k].push(stats[figure]);
    }
    console.log(`pair ${r}: A ${got[0][r].toFixed(1)}, B ${got[1][r].toFixed(1)}, B / A ${(got[1][r] / got[0][r]).toFixed(3)}`);
  }
  const ratios = got[1].map((b, i) => b / got[0][i]);
  console.log(`${figure}: medians A ${median(got[0]).toFixed(1)}, B ${median(got[1]).toFixed(1)}; B / A median ${median(ratios).toFixed(3)}, B ahead in ${ratios.filter((x) => x > 1).length} of ${pairs} pairs`);
} finally {
  await context.close();
  for (const s of servers) s.close();
  rmSync(profile, { recursive: true, force: true });
}
