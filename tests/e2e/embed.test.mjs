// The embeddable attnscope: embed.html driven by URL parameters, the <attn-scope> snippet pasted
// into a plain page on a plain static server (python3 -m http.server: no COOP/COEP, no CSP, no
// special MIME setup), and the iframe snippet on a page of another origin. Real model, real HTTP,
// tokens compared with the native CLI.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ROOT, BASE_URL, freshContext, runNative } from './browser.mjs';

const SLOW = { timeout: 300_000 };
const SETTINGS = { prompt: 'Once upon a time, in a small village,', max_tokens: 12, temperature: 0.8, seed: 7 };
const native = runNative(SETTINGS);
const STATIC_DIR = join(ROOT, 'target/e2e-static');
let b;
let staticServer; // {port, close}
let firstPicture = null; // layer 5, head 4 of the first test's run, to compare other hosts with

const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});

/** python3 -m http.server on the repository root: a static host that sends no special headers. */
async function startStaticServer() {
  const port = await freePort();
  const child = spawn('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', ROOT], { stdio: 'ignore' });
  for (let k = 0; k < 100; k++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/www/embed.html`);
      if (r.ok) return { port, close: () => child.kill() };
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error('python3 -m http.server did not start');
}

before(async () => {
  b = await freshContext();
  await b.context.grantPermissions(['clipboard-read', 'clipboard-write']);
  staticServer = await startStaticServer();
  mkdirSync(STATIC_DIR, { recursive: true });
});
after(async () => {
  await b?.close();
  staticServer?.close();
  rmSync(STATIC_DIR, { recursive: true, force: true });
});

const query = (s) => new URLSearchParams({ prompt: s.prompt, 'max-tokens': String(s.max_tokens), temperature: String(s.temperature), seed: String(s.seed) });

/** Waits for the page's (or frame's) first <attn-scope> to finish its run. */
const scopeDone = (target) => target.evaluate(async () => {
  await customElements.whenDefined('attn-scope');
  const el = document.querySelector('attn-scope');
  return el.done;
});

test('embed.html with URL parameters reproduces the CLI’s sampled tokens and shows that head', SLOW, async (t) => {
  const params = query(SETTINGS);
  params.set('layer', '5');
  params.set('head', '4');
  params.set('view', 'heatmap');
  params.set('autorun', '1');
  await b.page.goto(new URL(`/embed.html?${params}`, BASE_URL).href);
  const result = await scopeDone(b.page);
  if (native) assert.deepEqual(result.ids, native.ids);
  else t.diagnostic('no native CLI: ids not compared');
  assert.equal(result.stats.seed, 7);
  assert.equal(await b.page.inputValue('attn-scope select >> nth=0'), '5');
  assert.equal(await b.page.inputValue('attn-scope select >> nth=1'), '4');
  await b.page.waitForFunction(() => document.querySelector('attention-heatmap').data?.layer === 5 && document.querySelector('attention-heatmap').data?.head === 4);
  const drawn = await b.page.evaluate(() => {
    const el = document.querySelector('attention-heatmap');
    const { left, top, cell, ratio, n } = el.layout;
    const px = el.canvas.getContext('2d').getImageData(Math.round((left + 0.5 * cell) * ratio), Math.round((top + (n - 0.5) * cell) * ratio), 1, 1).data;
    return { n, alpha: px[3] };
  });
  assert.equal(drawn.n, result.stats.prompt_tokens + result.stats.generated_tokens - 1);
  assert.equal(drawn.alpha, 255, 'the heatmap is drawn');
  // The element answers like window.attnscope.attention.
  const { weights } = await b.page.evaluate(() => document.querySelector('attn-scope').attention({ layer: 5, head: 4 }));
  assert.equal(weights.length, drawn.n);
  firstPicture = weights;
});

test('"Copy link to this view" and "Copy embed code" describe exactly this view', SLOW, async () => {
  await b.page.click('attn-scope [role=tab][data-view=stats]');
  await b.page.click('attn-scope button:has-text("Copy link to this view")');
  const link = new URL(await b.page.evaluate(() => navigator.clipboard.readText()));
  assert.equal(link.pathname, '/embed.html');
  const p = Object.fromEntries(link.searchParams);
  assert.deepEqual(
    { prompt: p.prompt, 'max-tokens': p['max-tokens'], temperature: p.temperature, seed: p.seed, layer: p.layer, head: p.head, view: p.view, autorun: p.autorun },
    { prompt: SETTINGS.prompt, 'max-tokens': '12', temperature: '0.8', seed: '7', layer: '5', head: '4', view: 'stats', autorun: '1' },
  );
  await b.page.click('attn-scope button:has-text("Copy embed code")');
  const snippet = await b.page.evaluate(() => navigator.clipboard.readText());
  assert.equal(snippet, await b.page.inputValue('attn-scope textarea.as-copy'), 'the copied code is also shown');
  assert.match(snippet, new RegExp(`^<script type="module" src="${new URL('/attn-scope.js', BASE_URL).href.replace(/[.?]/g, '\\$&')}"></script>\n<attn-scope `));
  assert.match(snippet, /prompt="Once upon a time, in a small village,"/);
  assert.match(snippet, / seed="7"/);
  assert.match(snippet, / layer="5" head="4"/);
  assert.match(snippet, / autorun>/);
  const iframe = await b.page.inputValue('attn-scope .as-iframe textarea');
  assert.match(iframe, /^<iframe src="[^"]*\/embed\.html\?[^"]*seed=7[^"]*layer=5&amp;head=4[^"]*autorun=1"/);
});

test('a plain HTML page with the copied snippet, on a plain static server, shows the same picture', SLOW, async (t) => {
  const origin = `http://127.0.0.1:${staticServer.port}`;
  // The teacher opens attnscope where it is hosted (here: the static server) and copies the code.
  const params = query(SETTINGS);
  params.set('layer', '5');
  params.set('head', '4');
  await b.page.goto(`${origin}/www/embed.html?${params}`);
  await b.page.waitForSelector('attn-scope button:has-text("Copy embed code")');
  await b.page.click('attn-scope button:has-text("Copy embed code")');
  const snippet = await b.page.inputValue('attn-scope textarea.as-copy');
  assert.match(snippet, new RegExp(`src="${origin}/www/attn-scope\\.js"`));
  // …and pastes it into a course page.
  writeFileSync(join(STATIC_DIR, 'lesson.html'), `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Week 3: attention</title></head>
<body>
<h1>Week 3: self-attention</h1>
<p>Each row shows where one token looks.</p>
${snippet}
</body>
</html>
`);
  const student = await b.context.newPage();
  const errors = [];
  student.on('pageerror', (e) => errors.push(e.message));
  // A plain page has no icon: the browser's own /favicon.ico request is the host's 404, not ours.
  student.on('console', (m) => { if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) errors.push(m.text()); });
  student.on('response', (r) => { if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') errors.push(`${r.status()} ${r.url()}`); });
  await student.goto(`${origin}/target/e2e-static/lesson.html`);
  const result = await scopeDone(student);
  if (native) assert.deepEqual(result.ids, native.ids);
  else t.diagnostic('no native CLI: ids not compared');
  assert.equal(await student.evaluate(() => crossOriginIsolated), false, 'no COOP/COEP headers on a static host');
  await student.waitForFunction(() => document.querySelector('attention-heatmap').layout?.n > 0);
  const pattern = await student.evaluate(async () => {
    const el = document.querySelector('attention-heatmap');
    return { layer: el.data.layer, head: el.data.head, n: el.layout.n };
  });
  assert.deepEqual({ layer: pattern.layer, head: pattern.head }, { layer: 5, head: 4 });
  if (firstPicture) {
    const { weights } = await student.evaluate(() => document.querySelector('attn-scope').attention({ layer: 5, head: 4 }));
    assert.deepEqual(weights, firstPicture, 'the same weights, to the bit, as on the app’s own server');
  }
  assert.equal(await student.evaluate(() => getComputedStyle(document.body).marginTop), '8px', 'the element does not restyle the host page');
  assert.deepEqual(errors, []);
  await student.close();
});

test('the iframe snippet works on a page of another origin', SLOW, async (t) => {
  // Copied from the app's own server (127.0.0.1:<port>), pasted into a page on localhost:<other>.
  await b.page.goto(new URL(`/embed.html?${query(SETTINGS)}`, BASE_URL).href);
  const settings = await b.page.evaluate(() => document.querySelector('attn-scope').currentSettings());
  // share.js resolves URLs against its own module URL, so the snippet is made in the page.
  const snippet = await b.page.evaluate(async (s) => (await import('./share.js')).iframeSnippet(s), settings);
  assert.match(snippet, /^<iframe src="http:\/\/127\.0\.0\.1:\d+\/embed\.html\?/);
  writeFileSync(join(STATIC_DIR, 'slides.html'), `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Slides</title></head><body><h1>Slide 4</h1>${snippet}</body></html>`);
  const page = await b.context.newPage();
  await page.goto(`http://localhost:${staticServer.port}/target/e2e-static/slides.html`);
  const frame = await (await page.waitForSelector('iframe')).contentFrame();
  assert.notEqual(new URL(frame.url()).origin, new URL(page.url()).origin);
  const result = await scopeDone(frame);
  if (native) assert.deepEqual(result.ids, native.ids);
  else t.diagnostic('no native CLI: ids not compared');
  await page.close();
});

test('an element out of sight does not redraw while tokens arrive, catches up once scrolled into sight, and is drawn at the end', SLOW, async () => {
  const origin = `http://127.0.0.1:${staticServer.port}`;
  writeFileSync(join(STATIC_DIR, 'long-lesson.html'), `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Week 4: reading attention</title><script type="module" src="${origin}/www/attn-scope.js"></script></head>
<body>
<h1>Week 4</h1>
<div style="height: 3000px">Read the chapter first; the model is further down.</div>
<attn-scope prompt="Once upon a time" max-tokens="300" temperature="0.8" seed="5" autorun></attn-scope>
</body>
</html>
`);
  const page = await b.context.newPage();
  await page.goto(`${origin}/target/e2e-static/long-lesson.html`);
  await page.waitForFunction(() => document.querySelector('attn-scope')?.run?.ids.length >= 1);
  // Off screen: tokens arrive, the heatmap is not drawn.
  await page.evaluate(() => {
    window.__drawnOffScreen = 0;
    window.__watch = setInterval(() => { if (document.querySelector('attention-heatmap').data?.size) window.__drawnOffScreen += 1; }, 10);
  });
  await page.waitForFunction(() => document.querySelector('attn-scope').run.ids.length >= 12);
  assert.equal(await page.evaluate(() => { clearInterval(window.__watch); return window.__drawnOffScreen; }), 0, 'nothing was drawn out of sight');
  // Scrolled into sight mid-run, it draws the run so far without waiting for the end.
  await page.evaluate(() => document.querySelector('attn-scope').scrollIntoView());
  await page.waitForFunction(() => document.querySelector('attention-heatmap').data?.size > 0);
  assert.equal(await page.evaluate(() => document.querySelector('attn-scope').run.finished), false, 'drawn while the run was still going');
  // At the end it shows the whole run, scrolled away again or not.
  await page.evaluate(() => window.scrollTo(0, 0));
  const result = await scopeDone(page);
  await page.waitForFunction((n) => document.querySelector('attention-heatmap').data?.size === n, result.stats.prompt_tokens + result.stats.generated_tokens - 1);
  await page.close();
});

test('postMessage with the host page: only the named parent origin, only well-formed messages', SLOW, async (t) => {
  const appOrigin = new URL(BASE_URL).origin;
  const hostOrigin = `http://localhost:${staticServer.port}`;
  const params = query({ ...SETTINGS, max_tokens: 4 });
  params.set('autorun', '1');
  params.set('parent-origin', hostOrigin);
  const src = new URL(`/embed.html?${params}`, BASE_URL).href;
  writeFileSync(join(STATIC_DIR, 'host.js'), `window.received = [];
window.addEventListener('message', (e) => window.received.push({ origin: e.origin, data: e.data }));
window.command = (data, target) => document.getElementById('f').contentWindow.postMessage(data, target);
`);
  writeFileSync(join(STATIC_DIR, 'host.html'), `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Host</title><script src="host.js"></script></head>
<body><iframe id="f" src="${src.replace(/&/g, '&amp;')}" title="attnscope" width="800" height="600"></iframe></body></html>`);

  // The named parent (localhost:<port>) hears the result and can steer the view.
  const host = await b.context.newPage();
  await host.goto(`${hostOrigin}/target/e2e-static/host.html`);
  await host.waitForFunction(() => window.received.some((m) => m.data?.type === 'done'), null, { timeout: 240_000 });
  const done = await host.evaluate(() => window.received.find((m) => m.data?.type === 'done'));
  assert.equal(done.origin, appOrigin);
  assert.equal(done.data.source, 'attnscope');
  if (native) assert.deepEqual(done.data.ids, native.ids.slice(0, 4));
  else t.diagnostic('no native CLI: ids not compared');
  assert.ok(await host.evaluate(() => window.received.some((m) => m.data?.type === 'resize' && m.data.height > 100)));
  const frame = (await host.$('#f').then((el) => el.contentFrame()));
  const attrs = () => frame.evaluate(() => ['layer', 'head', 'view'].map((n) => document.querySelector('attn-scope').getAttribute(n)));
  const before = await attrs();
  // Malformed commands change nothing.
  await host.evaluate((o) => {
    window.command({ source: 'attnscope-host', v: 1, type: 'select', layer: 99, head: 1 }, o);
    window.command({ source: 'attnscope-host', v: 1, type: 'select', layer: '3', head: 2 }, o);
    window.command({ source: 'attnscope-host', v: 2, type: 'select', layer: 3, head: 2 }, o);
    window.command({ type: 'select', layer: 3, head: 2 }, o);
    window.command('select 3 2', o);
    window.command({ source: 'attnscope-host', v: 1, type: 'view', view: '<img src=x>' }, o);
  }, appOrigin);
  await host.waitForTimeout(500);
  assert.deepEqual(await attrs(), before);
  await host.evaluate((o) => {
    window.command({ source: 'attnscope-host', v: 1, type: 'select', layer: 3, head: 2 }, o);
    window.command({ source: 'attnscope-host', v: 1, type: 'view', view: 'lens' }, o);
  }, appOrigin);
  await frame.waitForFunction(() => document.querySelector('attention-heatmap').data?.layer === 3 && document.querySelector('attention-heatmap').data?.head === 2);
  assert.deepEqual(await attrs(), ['3', '2', 'lens']);
  await host.close();

  // The same page on another origin (127.0.0.1 is not localhost) is neither told nor obeyed.
  const other = await b.context.newPage();
  await other.goto(`http://127.0.0.1:${staticServer.port}/target/e2e-static/host.html`);
  const otherFrame = await (await other.waitForSelector('#f')).contentFrame();
  await scopeDone(otherFrame);
  await other.evaluate((o) => window.command({ source: 'attnscope-host', v: 1, type: 'select', layer: 3, head: 2 }, o), appOrigin);
  await other.waitForTimeout(800);
  assert.deepEqual(await other.evaluate(() => window.received), [], 'nothing is posted to an origin that was not named');
  assert.deepEqual(await otherFrame.evaluate(() => ['layer', 'head'].map((n) => document.querySelector('attn-scope').getAttribute(n))), [null, null]);
  await other.close();
});

test('hostile prompt text is shown as text, and the copied code carries it exactly', SLOW, async () => {
  const prompt = '"><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> & done';
  const params = new URLSearchParams({ prompt, 'max-tokens': '2', autorun: '1', view: 'tokens' });
  await b.page.goto(new URL(`/embed.html?${params}`, BASE_URL).href);
  await scopeDone(b.page);
  assert.equal(await b.page.$$eval('attn-scope img, attn-scope script', (els) => els.length), 0);
  assert.equal(await b.page.evaluate(() => window.__pwned ?? null), null);
  assert.equal(await b.page.textContent('attn-scope .as-output .echo'), prompt);
  await b.page.waitForSelector('attn-scope token-list li.chip');
  await b.page.click('attn-scope button:has-text("Copy embed code")');
  const snippet = await b.page.inputValue('attn-scope textarea.as-copy');
  const parsed = await b.page.evaluate((html) => {
    const doc = new DOMParser().parseFromString(html, 'text/html');
    const el = doc.querySelector('attn-scope');
    return { prompt: el?.getAttribute('prompt'), elements: [...doc.body.querySelectorAll('*')].map((e) => e.localName), head: [...doc.head.querySelectorAll('*')].map((e) => e.localName) };
  }, snippet);
  assert.equal(parsed.prompt, prompt);
  assert.deepEqual([...parsed.head, ...parsed.elements], ['script', 'attn-scope'], 'one script and the element, nothing injected');
});

test('embed.html fits a 390 px phone screen and passes axe-core', SLOW, async () => {
  await b.page.setViewportSize({ width: 390, height: 844 });
  await b.page.goto(new URL(`/embed.html?${query({ ...SETTINGS, max_tokens: 4 })}&autorun=1`, BASE_URL).href);
  await scopeDone(b.page);
  // Keyboard only: from the prompt, Tab reaches the heatmap; the arrow keys move its cursor.
  await b.page.focus('attn-scope textarea.as-prompt');
  let reached = false;
  for (let k = 0; k < 40 && !reached; k++) {
    await b.page.keyboard.press('Tab');
    reached = await b.page.evaluate(() => document.activeElement === document.querySelector('attention-heatmap canvas'));
  }
  assert.ok(reached, 'the heatmap is in the tab order');
  const cursor = () => b.page.evaluate(() => ({ ...document.querySelector('attention-heatmap').cursor }));
  const start = await cursor();
  await b.page.keyboard.press('ArrowUp');
  await b.page.keyboard.press('ArrowRight');
  assert.deepEqual(await cursor(), { i: start.i - 1, j: start.j + 1 });
  assert.equal(await b.page.evaluate(() => document.querySelector('attn-scope').getAttribute('query')), String(start.i - 1), 'the chosen row is the step view’s query');

  await b.page.evaluate(readFileSync(join(ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8'));
  for (const view of ['heatmap', 'steps', 'predictions', 'lens', 'tokens', 'stats', 'text']) {
    await b.page.click(`attn-scope [role=tab][data-view=${view}]`);
    await b.page.waitForTimeout(300);
    const width = await b.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `${view}: the page is ${width}px wide`);
    const violations = await b.page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`));
    assert.deepEqual(violations, [], view);
  }
  await b.page.setViewportSize({ width: 1280, height: 900 });
});

test('nothing went wrong on the way: no page errors, no CSP violations, no console errors', () => {
  assert.deepEqual(b.problems, []);
});
