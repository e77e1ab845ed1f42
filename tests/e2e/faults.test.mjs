// Network faults, served on purpose by a loopback server that misbehaves (request interception is
// not used: the model files are fetched inside a worker). Each test starts from an empty browser
// profile, so everything comes over the network and nothing is cached beforehand.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createReadStream, readFileSync, statSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, extname, normalize } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, ROOT } from './browser.mjs';

const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.svg': 'image/svg+xml' };
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; object-src 'none'; base-uri 'none'";
const MODEL = '/models/smollm2-135m-instruct/';

// What the server does wrong for one path: a function (req, res) → true when it has answered.
const faults = new Map();
let server;
let base;

before(async () => {
  server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const fault = faults.get(path);
    if (fault && fault(req, res)) return;
    const file = path.startsWith('/models/') ? join(ROOT, normalize(path)) : join(ROOT, 'www', normalize(path === '/' ? '/index.html' : path));
    if (!file.startsWith(ROOT) || !existsSync(file) || statSync(file).isDirectory()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, {
      'content-type': MIME[extname(file)] ?? 'application/octet-stream',
      'content-length': statSync(file).size,
      'content-security-policy': CSP,
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
      'cache-control': 'no-store',
    });
    createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => server?.close());

async function withPage(fn) {
  const profile = mkdtempSync(join(tmpdir(), 'attnscope-faults-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const page = context.pages()[0] ?? (await context.newPage());
  const violations = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
  try {
    await page.goto(`${base}/`);
    return await fn(page, violations);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Waits for the model load to end; returns {ok, error, banner, notices}. */
async function loadOutcome(page) {
  const ok = await page.evaluate(() => window.attnscope.ready.then(() => true, (e) => e.message));
  return {
    ok: ok === true,
    error: ok === true ? null : ok,
    banner: await page.textContent('#banner'),
    notices: await page.textContent('#notices'),
  };
}

async function cachedPaths(page) {
  return page.evaluate(async () => {
    const cache = await caches.open('attnscope-models-v1');
    return (await cache.keys()).map((r) => new URL(r.url).pathname);
  });
}

test('a download cut off half way is retried, says so, and leaves nothing partial in the cache', async () => {
  let cuts = 0;
  faults.set(`${MODEL}model.q8_0.safetensors`, (req, res) => {
    if (cuts > 0) return false;
    cuts += 1;
    const file = join(ROOT, 'models/smollm2-135m-instruct/model.q8_0.safetensors');
    const size = statSync(file).size;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
    const stream = createReadStream(file, { start: 0, end: Math.floor(size / 2) });
    stream.on('end', () => res.destroy());
    stream.pipe(res, { end: false });
    return true;
  });
  try {
    await withPage(async (page) => {
      const r = await loadOutcome(page);
      assert.ok(r.ok, `the load should recover: ${r.error}`);
      assert.equal(cuts, 1);
      assert.match(r.notices, /model\.q8_0\.safetensors.*(interrupted|retry)/i);
      const cached = await page.evaluate(async () => {
        const cache = await caches.open('attnscope-models-v1');
        const out = [];
        for (const req of await cache.keys()) out.push([new URL(req.url).pathname, (await (await cache.match(req)).arrayBuffer()).byteLength]);
        return out;
      });
      const weights = cached.find(([p]) => p.endsWith('model.q8_0.safetensors'));
      assert.equal(weights?.[1], statSync(join(ROOT, 'models/smollm2-135m-instruct/model.q8_0.safetensors')).size, 'only the complete, verified file is cached');
    });
  } finally {
    faults.clear();
  }
});

test('a missing file (404) names the file and is not cached', async () => {
  faults.set(`${MODEL}tokenizer.json`, (req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('no such file');
    return true;
  });
  try {
    await withPage(async (page) => {
      const r = await loadOutcome(page);
      assert.ok(!r.ok);
      assert.match(r.banner, /tokenizer\.json/);
      assert.match(r.banner, /404/);
      assert.ok(!(await cachedPaths(page)).some((p) => p.endsWith('tokenizer.json')));
    });
  } finally {
    faults.clear();
  }
});

test('an HTML error page served with status 200 is recognised, named and not cached', async () => {
  faults.set(`${MODEL}config.json`, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><h1>Oops, something went wrong</h1>');
    return true;
  });
  try {
    await withPage(async (page) => {
      const r = await loadOutcome(page);
      assert.ok(!r.ok);
      assert.match(r.banner, /config\.json/);
      assert.match(r.banner, /HTML/);
      assert.ok(!(await cachedPaths(page)).some((p) => p.endsWith('config.json')));
    });
  } finally {
    faults.clear();
  }
});

test('a file whose SHA-256 does not match the manifest is refused, named and not cached', async () => {
  const manifest = JSON.parse(readFileSync(join(ROOT, 'models/smollm2-135m-instruct/manifest.json'), 'utf8'));
  manifest.files['config.json'].sha256 = '0'.repeat(64);
  faults.set(`${MODEL}manifest.json`, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(manifest));
    return true;
  });
  try {
    await withPage(async (page) => {
      const r = await loadOutcome(page);
      assert.ok(!r.ok);
      assert.match(r.banner, /config\.json/);
      assert.match(r.banner, /SHA-256/);
      assert.ok(!(await cachedPaths(page)).some((p) => p.endsWith('config.json')));
    });
  } finally {
    faults.clear();
  }
});

test('stale JavaScript glue beside a new wasm is explained, not a LinkError', async () => {
  // Every build: this server is cross-origin isolated, so the worker picks a threads build.
  for (const dir of ['pkg', 'pkg-threads', 'pkg-relaxed', 'pkg-threads-relaxed']) {
    const glue = readFileSync(join(ROOT, `www/${dir}/attnscope.js`), 'utf8').replace(/BUILD_ID = "[0-9a-f]+"/, `BUILD_ID = "${'f'.repeat(64)}"`);
    faults.set(`/${dir}/attnscope.js`, (req, res) => {
      res.writeHead(200, { 'content-type': 'text/javascript', 'content-security-policy': CSP }).end(glue);
      return true;
    });
  }
  try {
    await withPage(async (page) => {
      const r = await loadOutcome(page);
      assert.ok(!r.ok);
      assert.match(r.banner, /different builds/);
      assert.match(r.banner, /reload/i);
      assert.doesNotMatch(r.banner, /LinkError/);
    });
  } finally {
    faults.clear();
  }
});

test('hostile text in the prompt and output is shown as text, under a strict CSP, with no violations', async () => {
  await withPage(async (page, violations) => {
    const r = await loadOutcome(page);
    assert.ok(r.ok, r.error);
    const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> says';
    const result = await page.evaluate((prompt) => window.attnscope.generate({ prompt, maxTokens: 8, temperature: 0, repeatPenalty: 1.0 }), hostile);
    assert.equal(result.ids.length, 8);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.equal(await page.locator('main img').count(), 0);
    const shown = await page.textContent('#output');
    assert.ok(shown.includes('<img src=x onerror='), 'the prompt is echoed literally');
    await page.waitForTimeout(300);
    const tokenText = await page.textContent('token-text');
    assert.ok(tokenText.includes('<img'), 'token labels are text');
    assert.deepEqual(violations, []);
  });
});

test('a full storage quota falls back to running uncached, and says so', async () => {
  await withPage(async (page) => {
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: base, quotaSize: 64 * 1024 });
    await page.reload();
    const r = await loadOutcome(page);
    assert.ok(r.ok, `the model still runs: ${r.error}`);
    assert.match(r.notices, /storage is full|running without the cache|could not keep/i);
    const result = await page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is', maxTokens: 2, temperature: 0, repeatPenalty: 1.0 }));
    assert.equal(result.ids[0], 7042);
  });
});

test('a prompt longer than the context is refused with the token counts, and the next run works', async () => {
  await withPage(async (page) => {
    assert.ok((await loadOutcome(page)).ok);
    const long = 'attention '.repeat(2100);
    const err = await page.evaluate((prompt) => window.attnscope.generate({ prompt, maxTokens: 4 }).then(() => null, (e) => e.message), long);
    assert.match(err, /prompt is \d+ tokens but the context holds 2048/);
    assert.match(await page.textContent('#banner'), /shorten the prompt/);
    const ok = await page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is', maxTokens: 2, temperature: 0, repeatPenalty: 1.0 }));
    assert.equal(ok.ids[0], 7042);
  });
});

test('emoji split across byte tokens stream without a broken character, as in the CLI', async () => {
  const prompt = 'Crabs: 🦀🦀🦀 Hearts: ❤️❤️❤️ Families: 👨‍👩‍👧👨‍👩‍👧';
  const { execFileSync } = await import('node:child_process');
  const native = execFileSync(join(ROOT, 'target/release/attnscope'), ['generate', '--model', join(ROOT, 'models/smollm2-135m-instruct'), '--prompt', prompt, '--max-tokens', '24', '--temperature', '0', '--repeat-penalty', '1.0', '--json'], { encoding: 'utf8' })
    .trim().split('\n').map((l) => JSON.parse(l)).filter((l) => 'id' in l);
  await withPage(async (page) => {
    assert.ok((await loadOutcome(page)).ok);
    const pieces = await page.evaluate((p) => new Promise((resolve, reject) => {
      const seen = [];
      const before = document.getElementById('output-text').textContent.length;
      const onToken = () => seen.push(document.getElementById('output-text').textContent.slice(before));
      document.addEventListener('attnscope:token', onToken);
      window.attnscope.generate({ prompt: p, maxTokens: 24, temperature: 0, repeatPenalty: 1.0 })
        .then((r) => { document.removeEventListener('attnscope:token', onToken); resolve({ text: r.text, ids: r.ids, seen }); }, reject);
    }), prompt);
    assert.deepEqual(pieces.ids, native.map((l) => l.id));
    assert.equal(pieces.text, native.map((l) => l.text).join(''));
    assert.ok(pieces.seen.every((s) => !s.includes('\uFFFD')), 'no replacement character is ever on screen');
  });
});

test('Stop during the prefill and rapid Stop/Generate leave the app idle and working', async () => {
  await withPage(async (page) => {
    assert.ok((await loadOutcome(page)).ok);
    // A prompt of ~600 tokens takes a while to read; press Stop (the button) while it is read.
    const long = 'The history of the transformer architecture is long. '.repeat(60);
    await page.evaluate((prompt) => {
      window.__run = window.attnscope.generate({ prompt, maxTokens: 50, temperature: 0 }).then((r) => r.stats, (e) => ({ error: e.message }));
    }, long);
    await page.waitForSelector('#stop:not([disabled])');
    await page.click('#stop');
    const stats = await page.evaluate(() => window.__run);
    assert.equal(stats.stop_reason, 'stopped');
    assert.ok(stats.generated_tokens <= 1, `${stats.generated_tokens} tokens after Stop during the prefill`);
    for (let i = 0; i < 5; i++) {
      const r = await page.evaluate(() => {
        const run = window.attnscope.generate({ prompt: 'Once upon a time', maxTokens: 30, temperature: 0.7, seed: 5 });
        setTimeout(() => window.attnscope.stop(), 5);
        return run.then((x) => x.stats.stop_reason);
      });
      assert.ok(['stopped', 'max_tokens', 'eos'].includes(r), r);
    }
    const ok = await page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is', maxTokens: 2, temperature: 0, repeatPenalty: 1.0 }));
    assert.equal(ok.ids[0], 7042);
    assert.equal(await page.isDisabled('#generate'), false);
  });
});
