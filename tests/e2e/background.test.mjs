// A generation goes on while its tab is in the background, and the page is right when the person
// comes back. The tab is hidden for real, by bringing another page to the front, in a Chromium
// that Playwright attaches to without its focus emulation (browser.mjs, hideableContext): the
// page's document.visibilityState becomes 'hidden' and animation frames stop, as in a person's
// browser. Nothing in the page is overridden.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { hideableContext, openApp, bannerText } from './browser.mjs';

const SLOW = { timeout: 240_000 };
// Sampled, so that equal text also means the seed and the sampler's state went through intact.
const RUN = { prompt: 'Once upon a time', maxTokens: 24, temperature: 0.8, seed: 5 };
let h; // {context, page, problems, close}
let foreground; // RUN generated with the tab in front: what the background runs must equal

before(async () => {
  h = await hideableContext();
  await openApp(h.page);
  foreground = await h.page.evaluate((run) => window.attnscope.generate(run), RUN);
  assert.equal(foreground.ids.length, RUN.maxTokens);
  // From here on: each token as the page receives it, and the tab's lifecycle, in order.
  await h.page.evaluate(() => {
    window.__events = [];
    const note = (event) => window.__events.push({ ...event, visibility: document.visibilityState });
    document.addEventListener('attnscope:token', (e) => note({ token: e.detail.index }));
    document.addEventListener('visibilitychange', () => note({ lifecycle: document.visibilityState }));
    document.addEventListener('freeze', () => note({ lifecycle: 'frozen' }));
    document.addEventListener('resume', () => note({ lifecycle: 'resumed' }));
  });
});
after(async () => {
  await h?.close();
});

/** Starts RUN with the Generate button, as a person would, and waits for its first two tokens. */
async function startRun(page) {
  await page.evaluate(() => { window.__events = []; });
  await page.fill('#prompt', RUN.prompt);
  await page.fill('#max-tokens', String(RUN.maxTokens));
  await page.fill('#temperature', String(RUN.temperature));
  await page.fill('#seed', String(RUN.seed));
  await page.click('#generate');
  await page.waitForFunction(() => window.__events.filter((e) => 'token' in e).length >= 2);
}

/** Brings another page to the front, so that this one is hidden; returns that other page. */
async function hide(page) {
  const other = await h.context.newPage();
  await other.bringToFront();
  assert.equal(await page.evaluate(() => document.visibilityState), 'hidden', 'the tab is really in the background');
  return other;
}

/** Waits for the run to end without animation frames (a hidden page has none), then comes back. */
async function finishHiddenAndReturn(page, other) {
  await page.waitForFunction(() => document.getElementById('stat-reason').textContent === 'reached max tokens', null, { polling: 100 });
  assert.equal(await page.evaluate(() => document.visibilityState), 'hidden', 'the run ended while the tab was hidden');
  await page.bringToFront();
  await other.close();
  await page.waitForFunction(() => document.visibilityState === 'visible', null, { polling: 100 });
}

/** The page as the person sees it on return. */
const screen = (page) => page.evaluate(() => {
  const text = (id) => document.getElementById(id).textContent;
  return {
    text: text('output-text'), tokens: text('stat-tokens'), rate: text('stat-rate'), seed: text('stat-seed'), reason: text('stat-reason'),
    generateDisabled: document.getElementById('generate').disabled, stopDisabled: document.getElementById('stop').disabled,
    heatmapSize: document.getElementById('heatmap').data?.size ?? null,
  };
});

/** Every token reached the page once, in order; returns how many arrived while the tab was hidden. */
async function checkTokenStream(page) {
  const events = await page.evaluate(() => window.__events);
  const tokens = events.filter((e) => 'token' in e);
  assert.deepEqual(tokens.map((e) => e.token), foreground.ids.map((_, i) => i), 'no token lost or repeated');
  return { events, hidden: tokens.filter((e) => e.visibility === 'hidden').length };
}

/** What must hold after any background run: the foreground's text and a page ready for more. */
async function checkPageOnReturn(page) {
  const s = await screen(page);
  const promptTokens = Number(s.tokens.split(' + ')[0]);
  assert.deepEqual({ ...s, rate: null }, {
    text: foreground.text, tokens: `${promptTokens} + ${RUN.maxTokens}`, rate: null, seed: String(RUN.seed), reason: 'reached max tokens',
    generateDisabled: false, stopDisabled: true,
    // The model has read every token but the newest: the heatmap followed the run to its end.
    heatmapSize: promptTokens + RUN.maxTokens - 1,
  });
  assert.match(s.rate, /^\d+\.\d tok\/s$/);
  assert.equal(await bannerText(page), null);
  // Usable: the same run again, in front, gives the same tokens.
  const again = await page.evaluate((run) => window.attnscope.generate(run), RUN);
  assert.deepEqual(again.ids, foreground.ids);
}

test('a generation in a hidden tab goes on and gives the foreground’s text, and the page is right on return', SLOW, async () => {
  const page = h.page;
  await startRun(page);
  const other = await hide(page);
  await finishHiddenAndReturn(page, other);

  const { hidden } = await checkTokenStream(page);
  // The worker is not throttled with its page: most of the run happens while the tab is hidden.
  // (How fast is measured by the bench, not asserted here.)
  assert.ok(hidden >= RUN.maxTokens / 2, `most tokens were generated while hidden (${hidden} of ${RUN.maxTokens})`);
  await checkPageOnReturn(page);
});

test('a hidden tab that the browser freezes mid-run resumes where it stopped, without losing or repeating tokens', SLOW, async () => {
  const page = h.page;
  await startRun(page);
  const other = await hide(page);
  // What Chromium does to background tabs to save power: the page and its workers stop running.
  const cdp = await h.context.newCDPSession(page);
  await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await cdp.send('Page.setWebLifecycleState', { state: 'active' });
  await cdp.detach();
  await finishHiddenAndReturn(page, other);

  const { events } = await checkTokenStream(page);
  const lifecycle = events.filter((e) => 'lifecycle' in e).map((e) => e.lifecycle);
  assert.deepEqual(lifecycle, ['hidden', 'frozen', 'resumed', 'visible'], 'the tab was hidden, frozen, resumed and shown');
  const frozenAt = events.findIndex((e) => e.lifecycle === 'frozen');
  assert.equal(events[frozenAt + 1].lifecycle, 'resumed', 'no token reached the page while it was frozen');
  assert.ok(events.slice(frozenAt).some((e) => 'token' in e), 'the run went on after the resume');
  await checkPageOnReturn(page);
});

test('nothing went wrong in the background: no page errors, no console errors', () => {
  assert.deepEqual(h.problems, []);
});
