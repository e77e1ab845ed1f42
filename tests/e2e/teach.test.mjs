// The teaching views and exports of the full app, on the real model over real HTTP: every number
// they show is checked against the engine's own attention (window.attnscope.attention) or the
// native CLI, and against plain math written here (softmax, entropy), never against itself.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, freshContext, openApp } from './browser.mjs';

const SLOW = { timeout: 240_000 };
const CLI = join(ROOT, 'target/release/attnscope');
const MODEL_DIR = join(ROOT, 'models/smollm2-135m-instruct');
let b;
let run; // the greedy run the tests look at
const LAYER = 5;
const HEAD = 4;

before(async () => {
  b = await freshContext();
  await openApp(b.page);
  run = await b.page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is Paris. The capital of Italy is', maxTokens: 8, temperature: 0 }));
  await b.page.evaluate(({ l, h }) => window.attnscope.select(l, h), { l: LAYER, h: HEAD });
  await b.page.waitForFunction(({ l, h }) => document.getElementById('heatmap').data?.layer === l && document.getElementById('heatmap').data?.head === h, { l: LAYER, h: HEAD });
});
after(async () => {
  await b?.close();
});

const attention = (layer = LAYER, head = HEAD) => b.page.evaluate((sel) => window.attnscope.attention(sel), { layer, head });

/** Clicks an export button and returns the downloaded file's name and bytes. */
async function exported(format) {
  const [download] = await Promise.all([b.page.waitForEvent('download'), b.page.click(`#export-${format}`)]);
  const path = await download.path();
  return { name: download.suggestedFilename(), bytes: readFileSync(path) };
}

/** RFC 4180 CSV: quoted fields may hold commas, quotes and newlines. */
function parseCSV(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let k = 0; k < text.length; k++) {
    const c = text[k];
    if (quoted) {
      if (c === '"' && text[k + 1] === '"') { field += '"'; k++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; } else if (c === '\r') { /* part of \r\n */ } else if (c === '\n') { row.push(field); rows.push(row); row = []; field = ''; } else field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  return rows;
}

test('CSV and JSON exports hold exactly the model’s weights and tokens', SLOW, async () => {
  const { tokens, weights } = await attention();
  const T = tokens.length;
  const csv = await exported('csv');
  assert.match(csv.name, new RegExp(`^attnscope-L${LAYER}-H${HEAD}-.*\\.csv$`));
  const rows = parseCSV(csv.bytes.toString('utf8'));
  assert.equal(rows.length, T + 1, 'a header and one row per query');
  assert.deepEqual(rows[0].slice(1), tokens.map((t, j) => `${j}:${t}`));
  rows.slice(1).forEach((r, i) => {
    assert.equal(r[0], `${i}:${tokens[i]}`);
    assert.deepEqual(r.slice(1).map((v) => Math.fround(Number(v))), weights[i], `row ${i}`);
  });

  const json = JSON.parse((await exported('json')).bytes.toString('utf8'));
  assert.equal(json.layer, LAYER);
  assert.equal(json.head, HEAD);
  assert.equal(json.hook, `blocks.${LAYER}.attn.hook_pattern`);
  assert.deepEqual(json.tokens, tokens);
  assert.deepEqual(json.weights, weights);
  assert.equal(json.ids.length, T);
  assert.deepEqual(json.ids.slice(json.ids.length - run.ids.length + 1), run.ids.slice(0, -1), 'the ids of the sequence as read');
});

test('PNG and SVG exports are valid pictures of the pattern', SLOW, async () => {
  const { tokens, weights } = await attention();
  const T = tokens.length;
  const png = await exported('png');
  assert.deepEqual([...png.bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'the PNG signature');
  const size = await b.page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    return { w: bitmap.width, h: bitmap.height };
  }, png.bytes.toString('base64'));
  assert.ok(size.w >= T * 9 && size.h >= T * 9, `the PNG decodes (${size.w}×${size.h})`);

  const svg = (await exported('svg')).bytes.toString('utf8');
  const parsed = await b.page.evaluate((text) => {
    const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
    if (doc.querySelector('parsererror')) return { error: doc.querySelector('parsererror').textContent };
    const cells = [...doc.querySelectorAll('g.cells rect')].map((r) => [Number(r.getAttribute('data-i')), Number(r.getAttribute('data-j')), Number(r.getAttribute('data-weight'))]);
    return { root: doc.documentElement.localName, cells, texts: [...doc.querySelectorAll('text')].map((t) => t.textContent) };
  }, svg);
  assert.equal(parsed.error, undefined);
  assert.equal(parsed.root, 'svg');
  assert.equal(parsed.cells.length, (T * (T + 1)) / 2, 'one rect per visible (i ≤ j) cell');
  for (const [i, j, w] of parsed.cells) assert.equal(Math.fround(w), weights[i][j]);
  assert.ok(parsed.texts.some((t) => t.includes(`layer ${LAYER}, head ${HEAD}`)), 'the caption names the head');
});

test('the step view recomputes a row from q, k and v, and its softmax equals the attention row', SLOW, async () => {
  const { weights } = await attention();
  const T = weights.length;
  const query = T - 2;
  const e = await b.page.evaluate((a) => window.attnscope.explain(a), { layer: LAYER, head: HEAD, query });
  assert.equal(e.query, query);
  assert.equal(e.head_dim, 64);
  assert.ok(Math.abs(e.scale - 1 / 8) < 1e-7, 'scores are divided by √64');
  assert.equal(e.dots.length, query + 1, 'the causal mask: keys 0…query only');
  e.dots.forEach((d, j) => assert.ok(Math.abs(d * e.scale - e.scores[j]) < 1e-4, `score ${j}`));
  const max = Math.max(...e.scores);
  const z = e.scores.reduce((a, s) => a + Math.exp(s - max), 0);
  e.scores.forEach((s, j) => assert.ok(Math.abs(Math.exp(s - max) / z - e.pattern[j]) < 1e-5, `softmax ${j}`));
  // The captured pattern is stored in f16: equal to about three significant digits.
  e.pattern.forEach((p, j) => assert.ok(Math.abs(p - weights[query][j]) <= 1e-3 * Math.max(p, 1e-2), `key ${j}: ${p} vs ${weights[query][j]}`));
  assert.equal(e.out.length, 64);

  // The page: focus the heatmap, move to that row with the keyboard, open "Step by step".
  await b.page.focus('attention-heatmap canvas');
  await b.page.keyboard.press('ArrowUp'); // the focus put the cursor on the last row
  await b.page.click('#teach [role=tab][data-view=steps]');
  await b.page.waitForFunction((q) => document.querySelector('attention-steps')?.explanation?.query === q, query);
  const rows = await b.page.$$eval('attention-steps tbody tr[data-key]', (trs) => trs.map((tr) => Number(tr.dataset.weight)));
  assert.deepEqual(rows, e.pattern);
  const text = await b.page.textContent('attention-steps');
  assert.match(text, /√d = √64 = 8\.000/);
  assert.match(text, /masked/);
});

test('predictions list each step’s candidates and mark the sampled token', SLOW, async () => {
  const steps = await b.page.evaluate(() => window.attnscope.predictions());
  assert.equal(steps.length, run.ids.length, 'one entry per generated token');
  steps.forEach((p, k) => {
    assert.equal(p.sampled, run.ids[k], `step ${k} sampled the generated token`);
    assert.equal(p.top.length, 10);
    for (let r = 1; r < p.top.length; r++) assert.ok(p.top[r - 1].logit >= p.top[r].logit, 'ordered by logit');
    const inTop = p.top.find((c) => c.id === p.sampled);
    assert.ok(inTop, `step ${k}: this greedy run's token is among the top 10`);
    assert.equal(inTop.prob_final, 1, 'greedy: the chosen token gets all the probability');
    for (const c of p.top) if (c.id !== p.sampled) assert.equal(c.prob_final, 0);
    const raw = p.top.reduce((a, c) => a + c.prob, 0);
    assert.ok(raw > 0 && raw <= 1 + 1e-5);
  });
  await b.page.click('#teach [role=tab][data-view=predictions]');
  await b.page.waitForSelector('prediction-table tr.sampled');
  const sampledRow = await b.page.$eval('prediction-table tr.sampled', (tr) => tr.dataset.id);
  assert.equal(Number(sampledRow), steps.at(-1).sampled);
});

test('the logit lens has a row per layer and its last row is the model’s own prediction', SLOW, async () => {
  const lens = await b.page.evaluate(() => window.attnscope.logitLens({ k: 5 }));
  const steps = await b.page.evaluate(() => window.attnscope.predictions());
  assert.equal(lens.layers.length, 30);
  assert.equal(lens.position, steps.at(-1).position - 1, 'the lens reads the last position the model has read');
  const last = lens.layers.at(-1).top;
  const own = steps.at(-1).top;
  assert.deepEqual(last.map((c) => c.id), own.slice(0, 5).map((c) => c.id));
  last.forEach((c, r) => assert.ok(Math.abs(c.prob - own[r].prob) < 1e-5, `rank ${r}: ${c.prob} vs ${own[r].prob}`));
  await b.page.click('#teach [role=tab][data-view=lens]');
  await b.page.waitForFunction(() => document.querySelectorAll('logit-lens tbody tr').length === 30);
});

test('the tokenization view marks special tokens and chat roles, with the CLI’s ids', SLOW, async (t) => {
  const prompt = 'Hi <b>there</b>';
  const chatRun = await b.page.evaluate((p) => window.attnscope.generate({ prompt: p, chat: true, maxTokens: 2, temperature: 0 }), prompt);
  const seq = await b.page.evaluate(() => window.attnscope.sequence());
  if (existsSync(CLI)) {
    const cli = JSON.parse(execFileSync(CLI, ['tokenize', '--model', MODEL_DIR, '--text', prompt, '--chat'], { encoding: 'utf8' }));
    assert.deepEqual(seq.ids.slice(0, cli.ids.length), cli.ids);
    assert.equal(seq.ids.length, cli.ids.length + chatRun.ids.length);
  } else t.diagnostic('no native CLI: ids not compared');
  await b.page.click('#teach [role=tab][data-view=tokens]');
  await b.page.waitForFunction((n) => document.querySelectorAll('token-list li.chip').length === n, seq.ids.length);
  const chips = await b.page.$$eval('token-list li.chip', (lis) => lis.map((li) => ({ cls: li.className, role: li.dataset.role ?? null, id: li.querySelector('.chip-id').textContent })));
  assert.deepEqual(chips.map((c) => Number(c.id)), seq.ids);
  const specials = chips.filter((c) => c.cls.includes('special')).length;
  assert.equal(specials, seq.special.filter(Boolean).length);
  assert.ok(specials >= 5, 'three <|im_start|> and two <|im_end|>, each marked');
  const roles = await b.page.$$eval('token-list li.chip.role', (lis) => lis.map((li) => li.querySelector('.chip-text').textContent));
  assert.equal(roles.join(''), 'systemuserassistant', 'the tokens that spell the three roles ("assistant" takes two)');
  assert.ok(chips.some((c) => c.role === 'user'), 'the user turn is marked');
  // Hostile text stays text.
  assert.equal(await b.page.$$eval('token-list b', (els) => els.length), 0);
});

test('head statistics equal the same statistics computed here from attention()', SLOW, async () => {
  await b.page.evaluate(() => window.attnscope.generate({ prompt: 'one two three one two three one two', maxTokens: 4, temperature: 0 }));
  const stats = await b.page.evaluate(() => window.attnscope.headStats());
  const seq = await b.page.evaluate(() => window.attnscope.sequence());
  assert.deepEqual(stats.names, ['entropy', 'first', 'previous', 'self', 'same']);
  assert.equal(stats.layers, 30);
  for (const [layer, head] of [[0, 0], [5, 4], [29, 8], [12, 3]]) {
    const { weights } = await attention(layer, head);
    const T = weights.length;
    assert.equal(stats.size, T);
    const ids = seq.ids;
    const acc = [0, 0, 0, 0, 0];
    for (let i = 1; i < T; i++) {
      const row = weights[i];
      for (let j = 0; j <= i; j++) if (row[j] > 0) acc[0] -= row[j] * Math.log(row[j]);
      acc[1] += row[0];
      acc[2] += row[i - 1];
      acc[3] += row[i];
      for (let j = 0; j <= i; j++) if (ids[j] === ids[i]) acc[4] += row[j];
    }
    const expected = acc.map((v) => v / (T - 1));
    stats.stats[layer][head].forEach((v, k) => assert.ok(Math.abs(v - expected[k]) < 1e-4, `L${layer} H${head} ${stats.names[k]}: ${v} vs ${expected[k]}`));
  }
  await b.page.click('#teach [role=tab][data-view=stats]');
  await b.page.waitForFunction(() => document.querySelectorAll('head-stats canvas').length === 5);
  // Clicking a "kind of head" button shows that head.
  await b.page.click('head-stats .stat-kinds button');
  const chosen = await b.page.$eval('head-stats .stat-kinds button', (el) => el.textContent.match(/L(\d+) H(\d+)/).slice(1).map(Number));
  assert.deepEqual([Number(await b.page.inputValue('#layer')), Number(await b.page.inputValue('#head'))], chosen);
});

test('hiding the first-token sink rescales rows and the legend says so', SLOW, async () => {
  await b.page.selectOption('#sink', 'hide');
  assert.match(await b.page.textContent('scale-legend'), /first token hidden; each row rescaled/i);
  const rows = await b.page.evaluate(() => {
    const el = document.getElementById('heatmap');
    const n = el.data.size;
    return Array.from({ length: n - 1 }, (_, k) => { const i = k + 1; let s = 0; for (let j = 0; j <= i; j++) s += el.display.values[i * n + j]; return [el.display.values[i * n], s]; });
  });
  for (const [first, sum] of rows) {
    assert.equal(first, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4);
  }
  await b.page.selectOption('#sink', 'clip');
  assert.match(await b.page.textContent('scale-legend'), /largest weight outside the first column/);
  await b.page.selectOption('#sink', 'show');
});

test('keyboard only: Tab reaches the heatmap and the arrow keys move between cells', SLOW, async () => {
  await b.page.focus('#prompt');
  let reached = false;
  for (let k = 0; k < 80 && !reached; k++) {
    await b.page.keyboard.press('Tab');
    reached = await b.page.evaluate(() => document.activeElement === document.querySelector('#heatmap canvas'));
  }
  assert.ok(reached, 'the heatmap is in the tab order');
  const cursor = () => b.page.evaluate(() => ({ ...document.getElementById('heatmap').cursor }));
  const start = await cursor();
  await b.page.keyboard.press('ArrowRight');
  assert.deepEqual(await cursor(), { i: start.i, j: start.j + 1 });
  await b.page.keyboard.press('ArrowUp');
  assert.deepEqual(await cursor(), { i: start.i - 1, j: start.j + 1 });
  assert.match(await b.page.textContent('#heatmap [aria-live]'), /attends to “.*” \(#1\): \d\.\d{4}/);
  // The tabs follow the WAI-ARIA pattern: arrows move between them.
  await b.page.focus('#teach [role=tab][aria-selected=true]');
  const before = await b.page.$eval('#teach [role=tab][aria-selected=true]', (el) => el.dataset.view);
  await b.page.keyboard.press('ArrowRight');
  const afterTab = await b.page.evaluate(() => document.activeElement.dataset.view);
  assert.notEqual(afterTab, before);
  assert.equal(await b.page.$eval('#teach [role=tab][aria-selected=true]', (el) => el.dataset.view), afterTab);
});

test('500+ tokens: the heatmap stays labelled and pans in a window', SLOW, async () => {
  const prompt = Array.from({ length: 180 }, (_, k) => `word${k % 10} is`).join(' ');
  const long = await b.page.evaluate((p) => window.attnscope.generate({ prompt: p, maxTokens: 2, temperature: 0 }), prompt);
  assert.ok(long.stats.prompt_tokens >= 500, `${long.stats.prompt_tokens} prompt tokens`);
  await b.page.waitForFunction(() => document.getElementById('heatmap').layout?.n === 512);
  await b.page.fill('#zoom', '16');
  await b.page.dispatchEvent('#zoom', 'input');
  const view = await b.page.evaluate(() => {
    const el = document.getElementById('heatmap');
    const box = el.scroller.getBoundingClientRect();
    return { labels: el.layout.labels, canvas: el.canvas.getBoundingClientRect().width, box: box.width, scroll: el.scroller.scrollWidth, page: document.documentElement.scrollWidth, vw: innerWidth };
  });
  assert.equal(view.labels, true, 'cells are big enough for labels');
  assert.ok(view.canvas <= view.box + 1, 'the canvas covers only the visible window');
  assert.ok(view.scroll > 512 * 16, 'the scroll range covers every cell');
  assert.ok(view.page <= view.vw, 'the page itself does not overflow');
  await b.page.focus('#heatmap canvas');
  await b.page.keyboard.press('Control+End');
  const visible = await b.page.evaluate(() => {
    const el = document.getElementById('heatmap');
    const { i, j } = el.cursor;
    const { left, top, cell } = el.layout;
    const x = left + j * cell - el.scroller.scrollLeft;
    const y = top + i * cell - el.scroller.scrollTop;
    return { i, j, inside: x >= left && y >= top && x + cell <= el.view.w + 1 && y + cell <= el.view.h + 1 };
  });
  assert.equal(visible.i, 511);
  assert.equal(visible.j, 511);
  assert.ok(visible.inside, 'the cursor cell was scrolled into the window');
});

test('the page fits a 390 px phone screen without horizontal scrolling', SLOW, async () => {
  await b.page.setViewportSize({ width: 390, height: 844 });
  await b.page.evaluate(() => window.attnscope.generate({ prompt: 'The capital of France is', maxTokens: 6, temperature: 0 }));
  for (const view of ['steps', 'predictions', 'lens', 'tokens', 'stats']) {
    await b.page.click(`#teach [role=tab][data-view=${view}]`);
    await b.page.waitForTimeout(300);
    const widths = await b.page.evaluate(() => ({ page: document.documentElement.scrollWidth, body: document.body.scrollWidth }));
    assert.ok(widths.page <= 390 && widths.body <= 390, `${view}: page ${widths.page}px, body ${widths.body}px`);
  }
  await b.page.setViewportSize({ width: 1280, height: 900 });
});

test('axe-core finds no serious or critical violations with every teaching view', SLOW, async () => {
  await b.page.evaluate(readFileSync(join(ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8'));
  for (const view of ['steps', 'predictions', 'lens', 'tokens', 'stats']) {
    await b.page.click(`#teach [role=tab][data-view=${view}]`);
    await b.page.waitForTimeout(300);
    const violations = await b.page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`));
    assert.deepEqual(violations, [], view);
  }
});

test('"Copy link to this view" in the app opens the same run, head and view on another page', SLOW, async () => {
  const sampled = await b.page.evaluate(() => window.attnscope.generate({ prompt: 'Once upon a time', maxTokens: 8, temperature: 0.9 })); // a random seed
  await b.page.evaluate(() => window.attnscope.select(7, 2));
  await b.page.click('#teach [role=tab][data-view=lens]');
  await b.context.grantPermissions(['clipboard-read', 'clipboard-write']);
  await b.page.click('#copy-link');
  const link = await b.page.evaluate(() => navigator.clipboard.readText());
  const params = new URL(link).searchParams;
  assert.equal(params.get('seed'), String(sampled.stats.seed), 'the seed the run actually used');
  assert.deepEqual([params.get('layer'), params.get('head'), params.get('view'), params.get('autorun')], ['7', '2', 'lens', '1']);
  await b.page.click('#copy-embed');
  const code = await b.page.inputValue('#share-code');
  assert.equal(code, await b.page.evaluate(() => navigator.clipboard.readText()));
  assert.match(code, new RegExp(` seed="${sampled.stats.seed}"`));
  assert.match(await b.page.inputValue('#share-iframe'), /^<iframe src=".*\/embed\.html\?/);

  const other = await b.context.newPage();
  await other.goto(link);
  await other.waitForFunction(() => /^ready:/.test(document.getElementById('model-status').textContent));
  await other.waitForFunction(() => /reached max tokens|ended/.test(document.getElementById('stat-reason').textContent));
  assert.equal(await other.textContent('#output-text'), sampled.text, 'the same tokens');
  assert.deepEqual([await other.inputValue('#layer'), await other.inputValue('#head')], ['7', '2']);
  assert.equal(await other.$eval('#teach [role=tab][aria-selected=true]', (el) => el.dataset.view), 'lens');
  await other.waitForFunction(() => document.querySelectorAll('logit-lens tbody tr').length === 30);
  await other.close();
});

test('nothing went wrong on the way: no page errors, no CSP violations, no console errors', () => {
  assert.deepEqual(b.problems, []);
});
