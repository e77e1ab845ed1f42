// The real page, the real worker, the real model over real HTTP, in headless Chromium.

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, freshContext, openApp, nativeIds } from './browser.mjs';

const PROMPT = 'The capital of France is';
let ctx;

before(async () => {
  ctx = await freshContext();
});
after(async () => {
  await ctx?.context.close();
});

test('greedy tokens in the browser equal the native CLI', async () => {
  const info = await openApp(ctx.page);
  assert.equal(info.n_layers, 30);
  const result = await ctx.page.evaluate((prompt) => window.attnscope.generate({ prompt, maxTokens: 24, temperature: 0, repeatPenalty: 1.0, seed: 1 }), PROMPT);
  assert.deepEqual(result.ids, nativeIds({ prompt: PROMPT, maxTokens: 24 }));
  assert.match(result.text, /^ Paris/);
  assert.equal(result.stats.generated_tokens, 24);
  assert.ok(result.stats.decode_tok_s > 0 && result.stats.ttft_ms > 0);
});

test('the heatmap is drawn from real attention weights', async () => {
  const { tokens, weights } = await ctx.page.evaluate(() => window.attnscope.attention({ layer: 5, head: 4 }));
  // The last sampled token is not fed back until the next step, so the sequence has 5 + 23 rows.
  assert.equal(tokens.length, 28);
  assert.equal(weights.length, 28);
  weights.forEach((row, i) => {
    const sum = row.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 2e-3, `row ${i} sums to ${sum}`);
    assert.ok(row.slice(i + 1).every((v) => v === 0), `row ${i} attends to the future`);
  });
  await ctx.page.evaluate(() => window.attnscope.select(5, 4));
  await ctx.page.waitForTimeout(300);
  const colours = await ctx.page.evaluate(() => {
    const c = document.querySelector('attention-heatmap canvas');
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0) seen.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
    return seen.size;
  });
  assert.ok(colours > 20, `the heatmap canvas shows only ${colours} colours`);
  mkdirSync(join(ROOT, 'target/e2e'), { recursive: true });
  await ctx.page.screenshot({ path: join(ROOT, 'target/e2e/app.png'), fullPage: true });
});

test('Stop ends a generation within one token and the next run is normal', async () => {
  const { result, stoppedAt } = await ctx.page.evaluate(() => new Promise((resolve, reject) => {
    let seen = 0;
    let stoppedAt = null;
    document.addEventListener('attnscope:token', () => {
      seen += 1;
      if (seen === 5) {
        stoppedAt = seen;
        window.attnscope.stop();
      }
    });
    window.attnscope.generate({ prompt: 'Once upon a time', maxTokens: 400, temperature: 0.8, seed: 3 })
      .then((result) => resolve({ result, stoppedAt }), reject);
  }));
  assert.equal(result.stats.stop_reason, 'stopped');
  assert.ok(result.stats.generated_tokens <= stoppedAt + 1, `${result.stats.generated_tokens} tokens after stopping at ${stoppedAt}`);
  const again = await ctx.page.evaluate((prompt) => window.attnscope.generate({ prompt, maxTokens: 3, temperature: 0, repeatPenalty: 1.0 }), PROMPT);
  assert.deepEqual(again.ids, nativeIds({ prompt: PROMPT, maxTokens: 3 }));
});

test('a reload loads the model from the Cache API without the network', async () => {
  let modelRequests = 0;
  await ctx.context.route('**/models/**', (route) => {
    modelRequests += 1;
    return route.abort('internetdisconnected');
  });
  try {
    const info = await openApp(ctx.page);
    assert.equal(info.n_layers, 30);
    const status = await ctx.page.textContent('#model-status');
    assert.match(status, /from cache/);
    assert.ok(modelRequests >= 1, 'the manifest request should have been tried (and failed)');
    const r = await ctx.page.evaluate((prompt) => window.attnscope.generate({ prompt, maxTokens: 2, temperature: 0, repeatPenalty: 1.0 }), PROMPT);
    assert.equal(r.ids[0], 7042);
  } finally {
    await ctx.context.unroute('**/models/**');
  }
});

test('a corrupted cached file is detected, deleted and fetched again', async () => {
  const damaged = await ctx.page.evaluate(async () => {
    const cache = await caches.open('attnscope-models-v1');
    const key = (await cache.keys()).find((r) => r.url.includes('tokenizer.json'));
    await cache.put(key, new Response('{"not": "the tokenizer"}'));
    return key.url;
  });
  assert.match(damaged, /tokenizer\.json/);
  await openApp(ctx.page);
  const notices = await ctx.page.textContent('#notices');
  assert.match(notices, /cached copy of tokenizer\.json was damaged/);
  const healthy = await ctx.page.evaluate(async (url) => {
    const cache = await caches.open('attnscope-models-v1');
    const bytes = new Uint8Array(await (await cache.match(url)).arrayBuffer());
    return bytes.length;
  }, damaged);
  assert.ok(healthy > 1_000_000, 'the re-fetched tokenizer is cached again');
  assert.deepEqual(ctx.problems.filter((p) => !p.includes('internetdisconnected') && !p.includes('Failed to load resource')), []);
});
