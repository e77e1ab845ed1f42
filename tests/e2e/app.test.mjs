// The real page, the real worker and the real model over real HTTP, in headless Chromium.
// The tests share one browser profile and run in order: the later ones rely on the Cache API
// that the first load filled.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, BASE_URL, CACHE_NAME, freshContext, openApp, bannerText, nativeAttention, nativeReference, nativeTopLogits, pageTopLogits, runNative, generateArgs } from './browser.mjs';

const SLOW = { timeout: 240_000 };
const ref = nativeReference();
// Every build computes the same bits as the CLI, not only the same greedy tokens: one rounded
// activation or a sum in another order would show in these logits.
const refLogits = ref && nativeTopLogits(ref);
let b; // {context, page, problems, close}
let info; // what the first load reported

before(async () => {
  b = await freshContext();
  info = await openApp(b.page); // so that any one test can also run alone (--test-name-pattern)
});
after(async () => {
  await b?.close();
});

test('the page loads the model over HTTP, checks it and says it is ready', SLOW, async () => {
  assert.deepEqual(
    { layers: info.n_layers, heads: info.n_heads, kv: info.n_kv_heads, capture: info.capture_tokens, context: info.max_context, quant: info.quant },
    { layers: 30, heads: 9, kv: 3, capture: 512, context: 2048, quant: 'q8_0' },
  );
  // The test server sends COOP/COEP like ./build.sh serve: with two or more cores, the threads build runs.
  const cores = await b.page.evaluate(() => navigator.hardwareConcurrency);
  assert.equal(info.threads, cores > 1 ? cores : 1, `threads on ${cores} cores`);
  // Chromium has relaxed SIMD: the worker picks the builds that use it.
  assert.equal(info.relaxed_simd, true);
  assert.match(await b.page.textContent('#model-status'), /ready: .*from the network/);
  assert.equal(await b.page.isHidden('#loading'), true, 'the progress bar is hidden once the model is ready');
  assert.equal(await bannerText(b.page), null);
  const cached = await b.page.evaluate(async (name) => (await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname), CACHE_NAME);
  for (const file of ['config.json', 'tokenizer.json', 'model.q8_0.safetensors']) {
    assert.ok(cached.some((path) => path.endsWith(`/${file}`)), `${file} is kept in the Cache API (have: ${cached.join(', ')})`);
  }
});

test('greedy tokens in the browser equal the native CLI, and the logits after the prompt equal its logits to the bit', SLOW, async (t) => {
  if (!ref) return t.skip('no native reference: set ATTNSCOPE_NATIVE_REF or build target/release/attnscope');
  const result = await b.page.evaluate((args) => window.attnscope.generate(args), generateArgs(ref));
  assert.deepEqual(result.ids, ref.ids);
  if (refLogits) assert.deepEqual(await pageTopLogits(b.page), refLogits);
  assert.equal(result.stats.generated_tokens, ref.ids.length);
  assert.ok(result.stats.ttft_ms > 0 && result.stats.decode_tok_s > 0, `live statistics: ${JSON.stringify(result.stats)}`);
  assert.equal(result.stats.seed, ref.seed);
  // The page shows the same run: the text, and the statistics line.
  assert.equal(await b.page.textContent('#output-text'), result.text);
  assert.equal(await b.page.textContent('#stat-tokens'), `${result.stats.prompt_tokens} + ${result.stats.generated_tokens}`);
});

test('the attention patterns the page shows equal the CLI’s to the bit', SLOW, async (t) => {
  if (!ref) return t.skip('no native reference: build target/release/attnscope');
  // Long enough for many tiny probabilities (f16 subnormals) and every head's habits.
  const prompt = 'Attention lets every token look back at the tokens before it. '.repeat(5).trim();
  const run = await b.page.evaluate((p) => window.attnscope.generate({ prompt: p, maxTokens: 1, temperature: 0 }), prompt);
  for (const layer of [0, 14, 29]) {
    const native = nativeAttention(prompt, layer);
    assert.equal(native[0].length, run.stats.prompt_tokens);
    for (let head = 0; head < 9; head++) {
      const { weights } = await b.page.evaluate((sel) => window.attnscope.attention(sel), { layer, head });
      assert.deepEqual(weights, native[head], `layer ${layer}, head ${head}`);
    }
  }
});

test('the single-thread build (?threads=1) gives the same tokens and logits as the threads build and the CLI', SLOW, async (t) => {
  if (!ref) return t.skip('no native reference: set ATTNSCOPE_NATIVE_REF or build target/release/attnscope');
  const page = await b.context.newPage();
  try {
    const single = await openApp(page, '/?threads=1');
    assert.equal(single.threads, 1);
    const result = await page.evaluate((args) => window.attnscope.generate(args), generateArgs(ref));
    assert.deepEqual(result.ids, ref.ids);
    if (refLogits) assert.deepEqual(await pageTopLogits(page), refLogits);
    assert.equal(result.stats.threads, 1);
  } finally {
    await page.close();
  }
});

test('the plain-SIMD builds (?relaxed=0) give the same tokens and logits as the relaxed-SIMD ones and the CLI, on one thread and on all', SLOW, async (t) => {
  if (!ref) return t.skip('no native reference: set ATTNSCOPE_NATIVE_REF or build target/release/attnscope');
  const page = await b.context.newPage();
  try {
    for (const query of ['/?relaxed=0', '/?relaxed=0&threads=1']) {
      const plain = await openApp(page, query);
      assert.equal(plain.relaxed_simd, false, query);
      const result = await page.evaluate((args) => window.attnscope.generate(args), generateArgs(ref));
      assert.deepEqual(result.ids, ref.ids, query);
      if (refLogits) assert.deepEqual(await pageTopLogits(page), refLogits, query);
    }
  } finally {
    await page.close();
  }
});

test('a threads build that cannot start gives way to the relaxed build on one thread, with a notice, and the same tokens', SLOW, async (t) => {
  if (!ref) return t.skip('no native reference: set ATTNSCOPE_NATIVE_REF or build target/release/attnscope');
  if ((await b.page.evaluate(() => navigator.hardwareConcurrency)) < 2) return t.skip('one core: no threads build to fail');
  const threadsBuild = /\/pkg-threads-relaxed\//;
  await b.context.route(threadsBuild, (route) => route.abort());
  const page = await b.context.newPage();
  try {
    const info = await openApp(page, '/');
    assert.deepEqual({ threads: info.threads, relaxed: info.relaxed_simd }, { threads: 1, relaxed: true });
    assert.match(await page.textContent('#notices'), /running on one thread: the threads build did not start/);
    const result = await page.evaluate((args) => window.attnscope.generate(args), generateArgs(ref));
    assert.deepEqual(result.ids, ref.ids);
  } finally {
    await page.close();
    await b.context.unroute(threadsBuild);
  }
});

test('?context=N gives the KV cache N positions (at most the model’s 8,192) and the page says so; anything else is refused, naming it', SLOW, async () => {
  const page = await b.context.newPage();
  try {
    const long = await openApp(page, '/?context=4096');
    assert.equal(long.max_context, 4096);
    assert.equal(await page.textContent('#context-limit'), '4096');
    assert.equal(await page.getAttribute('#max-tokens', 'max'), '4095', 'the form cannot ask for more tokens than the context holds');
    assert.equal((await openApp(page, '/?context=100000')).max_context, 8192);
    for (const bad of ['abc', '1', '2.5', '-4', '']) {
      await page.goto(new URL(`/?context=${bad}`, BASE_URL).href);
      await page.waitForFunction(() => !!window.attnscope?.ready);
      const error = await page.evaluate(() => window.attnscope.ready.then(() => null, (e) => e.message));
      assert.equal(error, `context "${bad}" is not a usable number of positions`);
      assert.match(await bannerText(page), /Fix: give the context as a whole number of tokens .* e\.g\. \?context=4096, or leave it out for 2,048/);
    }
  } finally {
    await page.close();
  }
});

test('the heatmap is drawn from real attention weights of the current sequence', SLOW, async () => {
  const prompt = 'The capital of France is';
  const run = await b.page.evaluate((p) => window.attnscope.generate({ prompt: p, maxTokens: 24, temperature: 0 }), prompt);
  const { layer, head } = { layer: 5, head: 4 };
  await b.page.selectOption('#layer', String(layer));
  await b.page.selectOption('#head', String(head));
  const { tokens, weights } = await b.page.evaluate((sel) => window.attnscope.attention(sel), { layer, head });

  // The last sampled token is fed to the model only when the next one is computed, so the model
  // has read every token of the sequence but that one: T = prompt + generated − 1.
  const T = run.stats.prompt_tokens + run.stats.generated_tokens - 1;
  assert.equal(weights.length, T);
  assert.equal(tokens.length, T);
  assert.equal(tokens.slice(0, run.stats.prompt_tokens).join(''), prompt, 'the labels are the prompt’s tokens');
  assert.ok(run.text.startsWith(tokens.slice(run.stats.prompt_tokens).join('')), 'then the generated ones');
  weights.forEach((row, i) => {
    assert.equal(row.length, T);
    const sum = row.reduce((a, v) => a + v, 0);
    assert.ok(Math.abs(sum - 1) < 1e-3, `row ${i} sums to ${sum}`);
    assert.ok(row.every((v) => v >= 0), `row ${i} has a negative weight`);
    assert.ok(row.slice(i + 1).every((v) => v === 0), `row ${i} attends to the future`);
  });
  assert.ok(new Set(weights.flat().map((v) => v.toFixed(3))).size > 20, 'a real pattern, not a constant');

  // The canvas shows that pattern: opaque colours below the diagonal, nothing above it.
  await b.page.waitForFunction((n) => document.getElementById('heatmap').layout?.n === n && document.getElementById('heatmap').data?.layer === 5, T);
  const drawn = await b.page.evaluate(() => {
    const el = document.getElementById('heatmap');
    const { left, top, cell, ratio, n } = el.layout;
    const ctx = el.canvas.getContext('2d');
    const at = (i, j) => Array.from(ctx.getImageData(Math.round((left + (j + 0.5) * cell) * ratio), Math.round((top + (i + 0.5) * cell) * ratio), 1, 1).data);
    const all = ctx.getImageData(0, 0, el.canvas.width, el.canvas.height).data;
    const colours = new Set();
    for (let k = 0; k < all.length; k += 4) if (all[k + 3] === 255) colours.add((all[k] << 16) | (all[k + 1] << 8) | all[k + 2]);
    return { below: at(n - 1, 0), above: at(0, n - 1), colours: colours.size };
  });
  assert.equal(drawn.below[3], 255, 'a cell below the diagonal is painted');
  assert.equal(drawn.above[3], 0, 'the masked future is left empty');
  assert.ok(drawn.colours > 20, `the heatmap shows only ${drawn.colours} colours`);

  // The text view shades the tokens a hovered token attends to.
  await b.page.hover(`token-text .tok:nth-child(${T})`);
  const shaded = await b.page.$$eval('token-text .tok', (spans) => spans.filter((s) => s.style.backgroundColor).length);
  assert.equal(shaded, T, 'the hovered token and every token before it are shaded');
  const pending = await b.page.$$eval('token-text .tok.pending', (spans) => spans.length);
  assert.equal(pending, 1, 'the token not yet read by the model is marked');

  // "Mean of the layer's heads" shades by the average of the layer's 9 patterns.
  const heads = await b.page.evaluate(async (l) => Promise.all(Array.from({ length: 9 }, (_, h) => window.attnscope.attention({ layer: l, head: h }))), layer);
  const mean = heads.reduce((acc, h) => acc + h.weights[T - 1][0], 0) / heads.length;
  await b.page.check('input[name=text-mode][value=mean]');
  await b.page.waitForFunction((m) => document.querySelector('token-text .tok').title.endsWith(m), mean.toFixed(4));
  await b.page.check('input[name=text-mode][value=head]');
  await b.page.waitForFunction((w) => document.querySelector('token-text .tok').title.endsWith(w), weights[T - 1][0].toFixed(4));

  mkdirSync(join(ROOT, 'target/e2e'), { recursive: true });
  await b.page.hover('attention-heatmap canvas', { position: { x: 110 + 16 * 3 + 8, y: 110 + 16 * (T - 4) + 8 } });
  assert.match(await b.page.textContent('attention-heatmap .tooltip'), /attends to “.*” \(#3\): 0\.\d{4}/);
  await b.page.screenshot({ path: join(ROOT, 'target/e2e/app.png'), fullPage: true });
});

test('clicking a thumbnail in the all-heads grid shows that head', SLOW, async () => {
  const point = await b.page.evaluate(() => {
    const grid = document.getElementById('head-grid');
    const r = grid.canvas.getBoundingClientRect();
    return { x: grid.columnX(7) + 5, y: grid.rowY(2) + 5, width: r.width };
  });
  await b.page.click('head-grid canvas', { position: { x: point.x, y: point.y } });
  assert.equal(await b.page.inputValue('#layer'), '2');
  assert.equal(await b.page.inputValue('#head'), '7');
  assert.match(await b.page.textContent('#gqa-note'), /Head 7 reads key\/value head 2, which heads 6–8 share/);
  await b.page.waitForFunction(() => document.getElementById('heatmap').data?.head === 7 && document.getElementById('heatmap').data?.layer === 2);
});

test('the seed a sampled run used is shown, and reusing it reproduces the text', SLOW, async () => {
  const page = b.page;
  await page.fill('#prompt', 'Once upon a time');
  await page.fill('#temperature', '0.9');
  await page.fill('#max-tokens', '12');
  await page.fill('#seed', '');
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('stat-reason').textContent === 'reached max tokens');
  const first = { seed: await page.textContent('#stat-seed'), text: await page.textContent('#output-text') };
  assert.match(first.seed, /^\d+$/);
  await page.click('#reuse-seed');
  assert.equal(await page.inputValue('#seed'), first.seed);
  await page.evaluate(() => { document.getElementById('stat-reason').textContent = 'before the second run'; });
  await page.focus('#prompt');
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(() => document.getElementById('stat-reason').textContent === 'reached max tokens');
  assert.equal(await page.textContent('#output-text'), first.text);
  assert.equal(await page.textContent('#stat-seed'), first.seed);
  await page.fill('#temperature', '0');
  await page.fill('#seed', '');
  await page.fill('#max-tokens', '64');
});

test('Escape stops a generation within one token, and the next run is normal', SLOW, async () => {
  const page = b.page;
  // Count tokens as the page sees them; note the count when the Escape key reaches the page.
  await page.evaluate(() => {
    window.__seen = 0;
    window.__atStop = null;
    window.__drawn = new Set();
    document.addEventListener('attnscope:token', () => {
      window.__seen += 1;
      window.__drawn.add(document.getElementById('heatmap').data?.size);
    });
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && window.__atStop === null) window.__atStop = window.__seen; }, { capture: true });
    window.__long = window.attnscope.generate({ prompt: 'Once upon a time', maxTokens: 400, temperature: 0.8, seed: 3 });
  });
  // The views redraw at most every 200 ms while tokens stream: stop once three sizes were drawn.
  await page.waitForFunction(() => window.__seen >= 5 && [...window.__drawn].filter((n) => n > 0).length >= 3);
  await page.keyboard.press('Escape');
  const result = await page.evaluate(() => window.__long);
  const atStop = await page.evaluate(() => window.__atStop);
  assert.equal(result.stats.stop_reason, 'stopped');
  assert.ok(atStop !== null && atStop >= 5);
  // The worker computed at most the one token that was under way when the stop arrived. (Counting
  // on the page instead would also count tokens computed before the stop but still queued behind
  // the key press: a busy page handles input first.)
  assert.ok(result.stats.tokens_after_stop <= 1, `the worker computed ${result.stats.tokens_after_stop} tokens after the stop arrived`);
  assert.ok(result.stats.generated_tokens - result.stats.tokens_after_stop >= atStop, 'the stop arrived after the key press');
  assert.ok(result.stats.generated_tokens < 50, 'the generation of 400 tokens really stopped');
  const sizes = await page.evaluate(() => [...window.__drawn].filter((n) => n > 0));
  assert.ok(sizes.length >= 3, `the heatmap follows the generation live (sizes drawn: ${sizes.join(', ')})`);

  // The Stop button does the same.
  await page.evaluate(() => {
    window.__seen = 0;
    window.__long = window.attnscope.generate({ prompt: 'Once upon a time', maxTokens: 400, temperature: 0.8, seed: 4 });
  });
  await page.waitForFunction(() => window.__seen >= 3);
  await page.click('#stop');
  const clicked = await page.evaluate(() => window.__long);
  assert.equal(clicked.stats.stop_reason, 'stopped');
  assert.ok(clicked.stats.tokens_after_stop <= 1);
  assert.equal(await page.textContent('#stat-reason'), 'stopped');
  assert.equal(await page.isDisabled('#generate'), false, 'Generate is available again');
  if (ref) {
    const again = await page.evaluate((args) => window.attnscope.generate(args), generateArgs(ref, { maxTokens: 3 }));
    assert.deepEqual(again.ids, ref.ids.slice(0, 3));
  } else {
    const again = await page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is', maxTokens: 3 }));
    assert.equal(again.ids.length, 3);
  }
});

test('while tokens arrive only the views on screen redraw; one scrolled into sight catches up at once, and all are drawn at the end', SLOW, async (t) => {
  const page = b.page;
  // A short window: the heatmap at the top of the page is on screen, the teaching views below it are not.
  const viewport = page.viewportSize();
  await page.setViewportSize({ width: 1280, height: 420 });
  t.after(() => page.setViewportSize(viewport));
  await page.evaluate(() => window.scrollTo(0, 0));
  const steps = () => page.evaluate(() => document.querySelector('attention-steps').explanation ?? null);
  const top = (id) => page.evaluate((id) => document.getElementById(id).getBoundingClientRect().top - innerHeight, id);
  assert.ok((await top('heatmap')) < 0 && (await top('teach')) > 0, 'the heatmap is on screen, the teaching views below the fold');
  assert.equal(await page.evaluate(() => document.querySelector('teach-tabs').active), 'steps');
  await page.evaluate(() => {
    window.__drawn = new Set();
    window.__stepsBefore = document.querySelector('attention-steps').explanation;
    window.__stepsStale = true; // the step view off screen keeps the previous run's row
    document.addEventListener('attnscope:token', () => {
      window.__drawn.add(document.getElementById('heatmap').data?.size);
      if (document.querySelector('attention-steps').explanation !== window.__stepsBefore) window.__stepsStale = false;
    });
    window.__live = window.attnscope.generate({ prompt: 'Once upon a time', maxTokens: 400, temperature: 0.8, seed: 5 });
  });
  // The heatmap, on screen, follows the run while the step view, off screen, waits.
  await page.waitForFunction(() => [...window.__drawn].filter((n) => n > 0).length >= 3);
  assert.equal(await page.evaluate(() => window.__stepsStale), true, 'the step view off screen was not redrawn');
  // Scrolled into sight mid-run, it shows the newest row without waiting for the end.
  await page.evaluate(() => document.getElementById('teach').scrollIntoView());
  await page.waitForFunction(() => document.querySelector('attention-steps').explanation !== window.__stepsBefore);
  const midRun = await steps();
  const sizeThen = await page.evaluate(() => document.getElementById('heatmap').data.size);
  await page.evaluate(() => window.attnscope.stop());
  const result = await page.evaluate(() => window.__live);
  assert.equal(result.stats.stop_reason, 'stopped', 'the run was still going when the step view caught up');
  assert.ok(midRun.query >= sizeThen - 2, `the step view caught up with the run (row ${midRun.query}, heatmap ${sizeThen} rows)`);
  // At the end every view shows the whole run, whether on screen or not.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForFunction(() => {
    const shown = document.getElementById('heatmap').data;
    return document.querySelector('attention-steps').explanation.query === shown.size - 1 && document.getElementById('head-grid').data?.seqLen === shown.seqLen;
  });

});

test('a reload loads the model from the Cache API with the model files unreachable', SLOW, async () => {
  const blocked = [];
  await b.context.route('**/models/**', (route) => {
    blocked.push(new URL(route.request().url()).pathname);
    return route.abort('internetdisconnected');
  });
  try {
    const info = await openApp(b.page);
    assert.equal(info.n_layers, 30);
    assert.match(await b.page.textContent('#model-status'), /from the cache/);
    // The worker did try the network (for the manifest) and was refused: the route reaches it.
    assert.ok(blocked.some((p) => p.endsWith('/manifest.json')), `blocked requests: ${blocked.join(', ')}`);
    assert.match(await b.page.textContent('#notices'), /offline: using the cached model/);
    const r = await b.page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is', maxTokens: 2, temperature: 0 }));
    assert.equal(r.ids.length, 2);
    if (ref) assert.equal(r.ids[0], ref.ids[0]);
  } finally {
    await b.context.unroute('**/models/**');
  }
});

test('a corrupted cached file is detected on reload, deleted, fetched again and the page says so', SLOW, async () => {
  const damaged = await b.page.evaluate(async (name) => {
    const cache = await caches.open(name);
    const key = (await cache.keys()).find((r) => new URL(r.url).pathname.endsWith('/tokenizer.json'));
    await cache.put(key, new Response('{"not": "the tokenizer"}'));
    return key.url;
  }, CACHE_NAME);
  await openApp(b.page);
  assert.match(await b.page.textContent('#notices'), /cached copy of tokenizer\.json was damaged .*deleted and is being downloaded again/);
  assert.equal(await b.page.isVisible('#notices-box'), true, 'the note is on screen');
  assert.match(await b.page.textContent('#model-status'), /from the network/);
  const size = await b.page.evaluate(async ({ name, url }) => (await (await (await caches.open(name)).match(url)).arrayBuffer()).byteLength, { name: CACHE_NAME, url: damaged });
  const manifest = JSON.parse(readFileSync(join(ROOT, 'models/smollm2-135m-instruct/manifest.json'), 'utf8'));
  assert.equal(size, manifest.files['tokenizer.json'].size, 'the re-fetched, verified tokenizer is cached again');
});

test('a cached file changed in one byte or cut short, its fingerprint kept, is caught as it streams in', SLOW, async () => {
  const manifest = JSON.parse(readFileSync(join(ROOT, 'models/smollm2-135m-instruct/manifest.json'), 'utf8'));
  for (const [damage, expected] of [['flip', /its content changed since it was verified/], ['cut', /(\d+) bytes instead of (\d+)/]]) {
    await b.page.evaluate(async ({ name, damage }) => {
      const cache = await caches.open(name);
      const key = (await cache.keys()).find((r) => new URL(r.url).pathname.endsWith('/tokenizer.json'));
      const cached = await cache.match(key);
      const bytes = new Uint8Array(await cached.arrayBuffer());
      if (damage === 'flip') bytes[bytes.length >> 1] ^= 0x01;
      await cache.put(key, new Response(damage === 'cut' ? bytes.slice(0, -3) : bytes, { headers: cached.headers }));
    }, { name: CACHE_NAME, damage });
    await openApp(b.page);
    const notices = await b.page.textContent('#notices');
    assert.match(notices, /cached copy of tokenizer\.json was damaged .*deleted and is being downloaded again/, damage);
    assert.match(notices, expected, damage);
    assert.match(await b.page.textContent('#model-status'), /from the network/);
    const again = await b.page.evaluate(async (name) => {
      const cache = await caches.open(name);
      const key = (await cache.keys()).find((r) => new URL(r.url).pathname.endsWith('/tokenizer.json'));
      return (await (await cache.match(key)).arrayBuffer()).byteLength;
    }, CACHE_NAME);
    assert.equal(again, manifest.files['tokenizer.json'].size, 'the verified tokenizer is cached again');
  }
});

test('a file that fails its SHA-256 check on download is named, not cached, and can be retried', SLOW, async () => {
  await b.page.evaluate(async (name) => {
    const cache = await caches.open(name);
    for (const r of await cache.keys()) if (new URL(r.url).pathname.endsWith('/tokenizer.json')) await cache.delete(r);
  }, CACHE_NAME);
  const original = readFileSync(join(ROOT, 'models/smollm2-135m-instruct/tokenizer.json'));
  const tampered = Buffer.from(original);
  tampered[tampered.length - 2] ^= 0x20; // same size, different bytes
  await b.context.route('**/models/smollm2-135m-instruct/tokenizer.json', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: tampered }));
  try {
    await b.page.goto(new URL('/', process.env.ATTNSCOPE_URL ?? 'http://127.0.0.1:8080').href);
    const failure = await b.page.evaluate(() => window.attnscope.ready.then(() => null, (e) => e.message));
    assert.match(failure ?? '', /tokenizer\.json has SHA-256 [0-9a-f]+…, the manifest says/);
    assert.match(await bannerText(b.page), /tokenizer\.json.*Fix:/);
    const cached = await b.page.evaluate(async (name) => (await (await caches.open(name)).keys()).map((r) => r.url), CACHE_NAME);
    assert.ok(!cached.some((u) => u.includes('tokenizer.json')), 'the bad download was not cached');
  } finally {
    await b.context.unroute('**/models/smollm2-135m-instruct/tokenizer.json');
  }
  await b.page.click('#banner-action'); // "Try again"
  await b.page.waitForFunction(() => /^ready:/.test(document.getElementById('model-status').textContent));
});

test('JavaScript and WebAssembly from different builds are reported as stale app files', SLOW, async () => {
  // Any build (the worker picks the relaxed-SIMD threads build on this isolated server), altered in one byte.
  const wasmRoute = /\/(pkg(?:-threads)?(?:-relaxed)?)\/attnscope_bg\.wasm$/;
  await b.context.route(wasmRoute, (route) => {
    const other = Buffer.from(readFileSync(join(ROOT, 'www', wasmRoute.exec(route.request().url())[1], 'attnscope_bg.wasm')));
    other[other.length - 1] ^= 0xff; // another build, as far as BUILD_ID can tell
    return route.fulfill({ status: 200, contentType: 'application/wasm', body: other });
  });
  try {
    await b.page.goto(new URL('/', process.env.ATTNSCOPE_URL ?? 'http://127.0.0.1:8080').href);
    const failure = await b.page.evaluate(() => window.attnscope.ready.then(() => null, (e) => e.message));
    assert.match(failure ?? '', /stale cached app files: the page's JavaScript and WebAssembly are from different builds/);
    const banner = await bannerText(b.page);
    assert.match(banner, /Ctrl\+Shift\+R/);
    assert.doesNotMatch(banner, /LinkError/);
  } finally {
    await b.context.unroute(wasmRoute);
  }
  await openApp(b.page);
});

// A sampled run, so that "the same tokens" also checks that the seed survives a restart.
const CRASH_RUN = { prompt: 'Once upon a time', maxTokens: 16, temperature: 0.8, seed: 11 };
const PANIC_TEXT = 'a panic injected by the browser test';

/** What a crash leaves on screen, for the tests below. */
const crashScreen = (page) => page.evaluate(() => ({
  status: document.getElementById('model-status').textContent,
  reason: document.getElementById('stat-reason').textContent,
  prompt: document.getElementById('prompt').value,
  outputPrompt: document.getElementById('output-prompt').textContent,
  text: document.getElementById('output-text').textContent,
  generateDisabled: document.getElementById('generate').disabled,
  stopDisabled: document.getElementById('stop').disabled,
}));

/** Clicks "Restart the model" and waits for the fresh worker's model (from the Cache API). */
async function restartFromBanner(page) {
  assert.equal(await page.textContent('#banner-action'), 'Restart the model');
  await page.click('#banner-action');
  await page.waitForFunction(() => /^ready:.*from the cache/.test(document.getElementById('model-status').textContent));
  assert.equal(await bannerText(page), null, 'the banner is gone once the model is back');
}

test('a panic in the engine during a generation is shown readably, and a restart keeps the prompt and the text and repeats the run exactly', SLOW, async () => {
  const page = b.page;
  // The run without a crash, and its text after each of its tokens (the page writes it at most
  // every 50 ms, and all of it when the run ends or fails).
  await page.evaluate(() => {
    window.__shown = [];
    document.addEventListener('attnscope:token', (e) => window.__shown.push((window.__shown.at(-1) ?? '') + e.detail.text));
  });
  const whole = await page.evaluate((run) => window.attnscope.generate(run), CRASH_RUN);
  const texts = await page.evaluate(() => window.__shown.splice(0));
  assert.equal(texts.length, whole.ids.length);
  assert.equal(texts.at(-1), whole.text);
  assert.equal(await page.textContent('#output-text'), whole.text);

  // The same run again. After its fourth token the page asks the worker for a real Rust panic
  // (crash_for_tests in src/wasm.rs), which the worker handles between two tokens of the run.
  const [run, crash] = await page.evaluate(({ run, panicText }) => {
    const crash = new Promise((resolve) => {
      const afterFourth = (e) => {
        if (e.detail.index < 3) return;
        document.removeEventListener('attnscope:token', afterFourth);
        resolve(window.attnscope.crashForTests('panic', panicText).then(() => 'no crash', (err) => err.message));
      };
      document.addEventListener('attnscope:token', afterFourth);
    });
    return Promise.all([window.attnscope.generate(run).then(() => 'finished', (err) => err.message), crash]);
  }, { run: CRASH_RUN, panicText: PANIC_TEXT });
  const crashed = new RegExp(`^the model crashed: panicked at src/wasm\\.rs:\\d+:\\d+: ${PANIC_TEXT}$`);
  assert.match(run, crashed, 'the generation ends with the panic’s message');
  assert.match(crash, crashed);

  const shown = await page.evaluate(() => window.__shown.splice(0));
  assert.ok(shown.length >= 4 && shown.length < whole.ids.length, `the crash came mid-run (after ${shown.length} of ${whole.ids.length} tokens)`);
  assert.deepEqual(shown, texts.slice(0, shown.length), 'up to the crash the run streamed exactly as before');
  const banner = await bannerText(page);
  assert.match(banner, new RegExp(`^The model crashed: panicked at src/wasm\\.rs:\\d+:\\d+: ${PANIC_TEXT} Fix: restart the model: the prompt and the text so far are kept Restart the model`));
  assert.doesNotMatch(banner, /unreachable|RuntimeError/i, 'never the bare trap');
  assert.deepEqual(await crashScreen(page), {
    status: 'the model crashed', reason: 'the model crashed', prompt: CRASH_RUN.prompt, outputPrompt: CRASH_RUN.prompt,
    text: shown.at(-1), generateDisabled: true, stopDisabled: true,
  });

  await restartFromBanner(page);
  assert.equal(await page.textContent('#output-text'), shown.at(-1), 'the text so far survives the restart');
  assert.equal(await page.inputValue('#prompt'), CRASH_RUN.prompt);
  const again = await page.evaluate((r) => window.attnscope.generate(r), CRASH_RUN);
  assert.deepEqual(again.ids, whole.ids, 'the restarted model gives the same tokens for the same seed');
  assert.equal(await page.textContent('#output-text'), whole.text);
  assert.equal(await page.textContent('#stat-reason'), 'reached max tokens');
  b.problems.splice(0, b.problems.length, ...b.problems.filter((p) => !p.includes(PANIC_TEXT)));
});

test('running out of memory in the engine is reported as such, never as a bare trap, and a restart recovers', SLOW, async () => {
  const page = b.page;
  const before = await page.evaluate((r) => window.attnscope.generate(r), CRASH_RUN);
  // A real allocation failure: crash_for_tests allocates until wasm32's 4 GiB are used up, and
  // Rust's out-of-memory path aborts without a panic message, as a tab out of memory does.
  const crash = await page.evaluate(() => window.attnscope.crashForTests('oom').then(() => 'no crash', (err) => err.message));
  assert.equal(crash, 'the model crashed without an error message; most often this means the tab ran out of memory');
  const banner = await bannerText(page);
  assert.match(banner, /^The model crashed without an error message; most often this means the tab ran out of memory Fix: restart the model: the prompt and the text so far are kept \(if it happens again, close other tabs, or choose q4_0 or a shorter prompt\) Restart the model/);
  assert.doesNotMatch(banner, /unreachable|RuntimeError/i, 'never the bare trap');
  assert.deepEqual(await crashScreen(page), {
    status: 'the model crashed', reason: 'reached max tokens', prompt: CRASH_RUN.prompt, outputPrompt: CRASH_RUN.prompt,
    text: before.text, generateDisabled: true, stopDisabled: true,
  });

  await restartFromBanner(page);
  assert.equal(await page.textContent('#output-text'), before.text, 'the text survives the restart');
  const after = await page.evaluate((r) => window.attnscope.generate(r), CRASH_RUN);
  assert.deepEqual(after.ids, before.ids, 'the restarted model gives the same tokens for the same seed');
  // The fresh worker has a fresh wasm memory, not the exhausted 4 GiB one.
  assert.ok(after.stats.wasm_memory_bytes < 1 << 30, `wasm memory after the restart: ${after.stats.wasm_memory_bytes} bytes`);
});

test('choosing q4_0 reloads the weights, and its greedy tokens and logits equal the CLI’s', SLOW, async () => {
  const page = b.page;
  await page.selectOption('#quant', 'q4_0');
  await page.waitForFunction(() => /^ready:.*q4_0/.test(document.getElementById('model-status').textContent));
  const prompt = 'The capital of France is';
  const result = await page.evaluate((p) => window.attnscope.generate({ prompt: p, maxTokens: 8, temperature: 0 }), prompt);
  const native = runNative({ prompt, max_tokens: 8, quant: 'q4_0' });
  if (native) {
    assert.deepEqual(result.ids, native.ids);
    assert.deepEqual(await pageTopLogits(page), nativeTopLogits({ prompt, quant: 'q4_0', chat: false }));
  } else {
    assert.equal(result.ids.length, 8);
  }
  await page.selectOption('#quant', 'q8_0');
  await page.waitForFunction(() => /^ready:.*q8_0/.test(document.getElementById('model-status').textContent));
});

test('the page passes axe-core accessibility checks in light and dark themes', SLOW, async () => {
  const page = b.page;
  await page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is', maxTokens: 8, temperature: 0 }));
  // Injected through the DevTools protocol: the page's CSP rightly refuses inline scripts.
  await page.evaluate(readFileSync(join(ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8'));
  for (const theme of ['light', 'dark']) {
    await page.selectOption('#theme', theme);
    const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`));
    assert.deepEqual(violations, [], `${theme} theme`);
  }
  await page.selectOption('#theme', 'auto');
});

test('nothing went wrong on the way: no page errors, no CSP violations, no console errors', () => {
  assert.deepEqual(b.problems, []);
});
