// The page: UI wiring and the `window.attnscope` scripting API. The model lives in worker.js;
// this file only sends requests (protocol.js) and hands what comes back to the views.

import { MSG } from './protocol.js';
import { MODEL_BASE, TEXT_EVERY_MS, WorkerClient, engineOptions, randomSeed } from './client.js';
import { SINK_MODES } from './heatmap.js';
import { FIELD_NAMES, readSettings, viewLink, elementSnippet, iframeSnippet, copyText } from './share.js';
import { patternCSV, patternJSON, patternPNG, patternSVG, exportName, download } from './export.js';
import { OnScreen } from './on-screen.js';
import './views/attention-heatmap.js';
import './views/head-grid.js';
import './views/token-text.js';
import './views/teach-tabs.js';

// ?threads=1 runs the single-thread build even where threads are possible (to compare them);
// without it the worker uses every core when the page is cross-origin isolated.
const PAGE_PARAMS = new URLSearchParams(location.search);
const REQUESTED_THREADS = Number(PAGE_PARAMS.get('threads')) || undefined;
// ?context=4096 gives the KV cache that many positions instead of 2,048 (each 2,048 cost ~45 MiB
// of memory): for long generations. The worker checks the value (docs/PROTOCOL.md, `load`).
const REQUESTED_CONTEXT = PAGE_PARAMS.get('context') ?? undefined;
// ?relaxed=0 keeps to the plain-SIMD builds even where relaxed SIMD is available (to compare them).
const REQUESTED_RELAXED = PAGE_PARAMS.get('relaxed') !== '0';

const $ = (id) => document.getElementById(id);
const OVERVIEW_SIZE = 24; // thumbnail cells per side in the all-heads grid
// The slow views, the grid and the open teaching view, redraw at most this often during a
// generation (and at once when one comes on screen, when a head is chosen, and at the end). The
// step table is rebuilt whole, a row per token: redrawn at the heatmap's pace, it cost two-thread
// decode a seventh with every view on screen (26.0 against 30.2 tokens/s, docs/PERFORMANCE.md).
const SLOW_VIEWS_EVERY_MS = 1500;
// While tokens stream, the views redraw at most this often, and a millisecond longer for each
// token they show (their cost grows with it): redrawing per token kept the page's main thread
// busy all the time (a whole core on a two-core laptop), taking the core a second compute thread
// needs. At 992 tokens of context on two threads, every 200 ms decoded 24 tokens/s, every
// 500 ms 30, every 1000 ms 32 (docs/PERFORMANCE.md).
const REDRAW_EVERY_MS = 200;

const state = {
  info: null, // Engine.info() of the loaded model, null while loading or after a crash
  quant: null,
  loading: null, // promise of the current load
  loadCallbacks: null, // {resolve, reject} of `loading`
  run: null, // the generation in progress
  lastRun: null, // the finished one whose attention is on screen
  selection: { layer: 0, head: 0 },
  query: null, // the heatmap row chosen for the step view (null: the last one)
  sink: 'show',
  pattern: null, // the attention on screen, for exports
  autorun: false, // a link with autorun=1 generates once the model is ready
  textMode: 'head', // 'head' or 'mean'
  refreshing: false,
  refreshAgain: null, // options of a refresh asked for while one was in flight
  lastSlowViewsAt: 0, // when the slow views were last due (SLOW_VIEWS_EVERY_MS)
  lastRefreshAt: 0,
  redrawTimer: null, // a refresh waiting for REDRAW_EVERY_MS to pass
  textTimer: null, // the running answer's text waiting for TEXT_EVERY_MS to pass
};

// ---------------------------------------------------------------- the worker

const client = new WorkerClient((msg) => onWorkerMessage(msg));
// A view that scrolls into sight mid-run is redrawn at once, the grid included.
const onScreen = new OnScreen(() => state.run && refreshAttention({ overview: true }));

function startWorker() {
  client.start();
}

const send = (type, body = {}) => client.send(type, body);
const request = (type, body = {}) => client.request(type, body);

function loadModel(quant) {
  if (state.quant === quant && state.loading) return state.loading;
  state.quant = quant;
  state.info = null;
  state.lastRun = null; // a new Engine starts with no sequence
  $('quant').value = quant;
  setBusy();
  $('loading').hidden = false;
  $('notices').replaceChildren();
  $('notices-box').hidden = true;
  $('progress').value = 0;
  $('progress-file').textContent = 'preparing…';
  $('progress-bytes').textContent = '';
  $('model-status').textContent = `loading the ${quant} weights…`;
  if (!client.running) startWorker();
  state.loading = new Promise((resolve, reject) => {
    state.loadCallbacks = { resolve, reject };
  });
  state.loading.catch(() => {});
  send(MSG.LOAD, { quant, base: MODEL_BASE, threads: REQUESTED_THREADS, relaxed: REQUESTED_RELAXED, context: REQUESTED_CONTEXT });
  return state.loading;
}

function failLoad(error) {
  state.loadCallbacks?.reject(error);
  state.loadCallbacks = null;
  state.loading = null;
  state.info = null;
  $('model-status').textContent = 'the model is not loaded';
  setBusy();
}

/** After a crash: a fresh worker and model (from the cache); the prompt and the output stay. */
function restartModel() {
  hideBanner();
  const quant = state.quant ?? $('quant').value;
  state.quant = null;
  state.loading = null;
  startWorker();
  return loadModel(quant).catch(() => {});
}

function onWorkerMessage(msg) {
  switch (msg.type) {
    case 'worker-failed':
      failLoad(new Error(`the app's worker could not start: ${msg.message}`));
      return showBanner(`The app's worker could not start: ${msg.message}.`, 'Reload with cache bypass (Ctrl+Shift+R); if it persists, the server\'s www/ folder is incomplete: run ./build.sh serve.', { action: ['Reload', () => location.reload()] });
    case 'version-mismatch':
      failLoad(new Error('the page and its worker are from different versions of attnscope'));
      return showBanner('The page and its worker are from different versions of attnscope.', 'Reload with cache bypass (Ctrl+Shift+R).');
    case MSG.PROGRESS: return onProgress(msg);
    case MSG.STATUS: return onStatus(msg);
    case MSG.READY: return onReady(msg);
    case MSG.PROMPT: return onPrompt(msg);
    case MSG.TOKEN: return onToken(msg);
    case MSG.DONE: return onDone(msg);
    case MSG.ERROR: return onError(msg);
  }
}

const mb = (bytes) => (bytes / 1e6).toFixed(1);

function onProgress({ file, loaded, total, phase, overallLoaded, overallTotal }) {
  const verb = { download: 'downloading', verify: 'checking the SHA-256 of', cached: 'found in the cache:' }[phase] ?? phase;
  $('progress-file').textContent = phase === 'download' ? `${verb} ${file} (${mb(loaded)} / ${mb(total)} MB)` : `${verb} ${file}`;
  const all = overallTotal || total;
  const done = overallTotal ? overallLoaded : loaded;
  $('progress-bytes').textContent = all ? `${mb(done)} / ${mb(all)} MB (${Math.floor((100 * done) / all)}%)` : '';
  $('progress').value = all ? done / all : 0;
}

function onStatus({ text, notice }) {
  if (!notice) {
    $('model-status').textContent = text;
    return;
  }
  // Notes stay listed until dismissed: a re-fetched cache entry is worth knowing about.
  const li = document.createElement('li');
  li.textContent = text;
  $('notices').append(li);
  $('notices-box').hidden = false;
}

function onReady({ info, fromCache, loadMs, phasesMs, buildId }) {
  state.info = info;
  state.loadCallbacks?.resolve({ ...info, fromCache, loadMs, phasesMs });
  state.loadCallbacks = null;
  $('loading').hidden = true;
  $('model-status').textContent = `ready: ${info.n_layers} layers × ${info.n_heads} heads, ${info.quant} weights, ${info.threads > 1 ? `${info.threads} threads` : 'one thread'}, loaded ${fromCache ? 'from the cache' : 'from the network'} in ${(loadMs / 1000).toFixed(1)} s`;
  $('build').textContent = buildId ? `build ${buildId.slice(0, 12)}` : '';
  $('capture-limit').textContent = String(info.capture_tokens);
  $('context-limit').textContent = String(info.max_context);
  // Prompt and answer share the context: more tokens than it holds can never be generated.
  $('max-tokens').max = String(info.max_context - 1);
  fillSelectors(info);
  setBusy();
  refreshAttention({ overview: true });
  if (state.autorun) {
    state.autorun = false;
    generate($('prompt').value, formOptions()).catch(() => {});
  }
}

function onPrompt({ id, ids, tokens, prefillMs }) {
  const run = state.run;
  if (!run || run.id !== id) return;
  run.promptIds = ids;
  run.promptTokens = tokens;
  run.prefillMs = prefillMs;
  $('stat-tokens').textContent = `${ids.length} + 0`;
  refreshAttention();
}

function onToken({ id, token, stats, predictions }) {
  const run = state.run;
  if (!run || run.id !== id) return;
  run.ids.push(token.id);
  run.labels.push(token.label);
  run.predictions.push(predictions);
  run.text += token.text;
  run.stats = stats;
  state.textTimer ??= setTimeout(() => showText(run), TEXT_EVERY_MS);
  document.dispatchEvent(new CustomEvent('attnscope:token', { detail: { id: token.id, index: run.ids.length - 1, text: token.text, stats } }));
  redrawSoon();
}

/** Writes `run`'s text and figures so far (a run that ends is written at once). */
function showText(run) {
  clearTimeout(state.textTimer);
  state.textTimer = null;
  if (run !== state.run) return; // another run began since
  $('output-text').textContent = run.text;
  $('output').scrollTop = $('output').scrollHeight;
  if (run.stats) showStats(run.stats);
}

/** A refresh after this token, no sooner than REDRAW_EVERY_MS (plus the tokens on show) after the last one began. */
function redrawSoon() {
  if (state.redrawTimer !== null) return;
  const wait = Math.max(0, state.lastRefreshAt + REDRAW_EVERY_MS + (state.pattern?.size ?? 0) - performance.now());
  state.redrawTimer = setTimeout(() => {
    state.redrawTimer = null;
    refreshAttention();
  }, wait);
}

function onDone({ id, reason, stats, ids, text, tokensAfterStop }) {
  const run = state.run;
  if (!run || run.id !== id) return;
  showText(run);
  state.run = null;
  state.lastRun = run;
  setBusy();
  showStats(stats, reason);
  $('seed').placeholder = `last: ${stats.seed}`;
  // The final refresh below draws every token: a redraw still waiting would only repeat it.
  clearTimeout(state.redrawTimer);
  state.redrawTimer = null;
  refreshAttention({ overview: true });
  const extra = reason === 'stopped' ? { stop_reason: reason, tokens_after_stop: tokensAfterStop } : { stop_reason: reason };
  run.resolve({ ids, text, stats: { ...stats, ...extra } });
}

function onError({ id, request: what, message: text, fix, fatal, crashed }) {
  const error = Object.assign(new Error(text), { fix });
  if (state.run && (id === state.run.id || crashed)) {
    showText(state.run); // what it wrote before the error stays on the page
    state.run.reject(error);
    state.run = null;
    $('stat-reason').textContent = crashed ? 'the model crashed' : 'failed';
  }
  if (crashed) {
    // The wasm instance trapped and cannot be used again; the page keeps the prompt and the text.
    state.info = null;
    state.lastRun = null;
    failLoad(error);
    $('model-status').textContent = 'the model crashed';
    showBanner(capitalise(text), fix, { action: ['Restart the model', restartModel] });
    return;
  }
  if (what === MSG.LOAD || (fatal && !state.info)) {
    failLoad(error);
    showBanner(capitalise(text), fix, { action: ['Try again', () => { hideBanner(); loadModel(state.quant ?? $('quant').value).catch(() => {}); }] });
    return;
  }
  // An attention refresh racing a new generation is harmless; everything else is shown.
  if (what !== MSG.ATTENTION && what !== MSG.OVERVIEW) showBanner(capitalise(text), fix);
  setBusy();
}

// Engine and worker messages are lower-case clauses; a banner starts with a capital, unless the
// message starts with a name (tokenizer.json, q8_0) that must be shown as it is.
const capitalise = (s) => (/^[a-z]+[\s:,]/.test(s ?? '') ? s[0].toUpperCase() + s.slice(1) : s);

// ---------------------------------------------------------------- generation

/** The sampling options from the form, in the Engine's JSON names; blank seed = a random one. */
function formOptions() {
  const num = (id) => ($(id).value.trim() === '' ? null : Number($(id).value));
  return engineOptions({
    chat: $('chat').checked,
    maxTokens: num('max-tokens') ?? 64,
    temperature: num('temperature') ?? 0,
    topK: num('top-k'),
    topP: num('top-p'),
    repeatPenalty: num('repeat-penalty') ?? 1.1,
    seed: num('seed') ?? randomSeed(),
  });
}

async function generate(prompt, opts, quant) {
  if (state.run) throw new Error('a generation is already running: stop it first');
  if (state.loading) await state.loading.catch(() => {}); // one load at a time
  if (quant && quant !== state.quant) await loadModel(quant);
  if (!state.info) throw new Error('the model is not loaded');
  if (state.run) throw new Error('a generation is already running: stop it first');
  const id = client.newId();
  return new Promise((resolve, reject) => {
    state.run = { id, prompt, options: opts, ids: [], labels: [], predictions: [], text: '', promptIds: [], promptTokens: [], resolve, reject };
    state.query = null;
    $('output-prompt').textContent = opts.chat ? '' : prompt;
    $('output-text').textContent = '';
    $('output').classList.toggle('chat', opts.chat);
    clearStats();
    $('stat-reason').textContent = 'reading the prompt…';
    hideBanner();
    setBusy();
    send(MSG.GENERATE, { id, prompt, options: opts });
  });
}

function stop() {
  if (state.run) send(MSG.STOP);
}

function clearStats() {
  for (const k of ['ttft', 'rate', 'tokens', 'prefill', 'seed', 'reason']) $(`stat-${k}`).textContent = '–';
  $('reuse-seed').hidden = true;
}

function showStats(s, reason) {
  $('stat-ttft').textContent = s.ttft_ms == null ? '–' : `${Math.round(s.ttft_ms)} ms`;
  $('stat-rate').textContent = s.decode_tok_s ? `${s.decode_tok_s.toFixed(1)} tok/s` : '–';
  $('stat-tokens').textContent = `${s.prompt_tokens} + ${s.generated_tokens}`;
  $('stat-prefill').textContent = `${s.prefill_tok_s.toFixed(0)} tok/s`;
  $('stat-seed').textContent = String(s.seed);
  $('stat-reason').textContent = reason
    ? { eos: 'the model ended its answer', max_tokens: 'reached max tokens', context_full: 'the context is full', stopped: 'stopped' }[reason] ?? reason
    : 'generating…';
  $('reuse-seed').hidden = !reason || $('seed').value === String(s.seed);
}

// ---------------------------------------------------------------- attention views

function shownRun() {
  return state.run ?? state.lastRun;
}

async function fetchAttention(layer, head, mean = false) {
  const reply = await request(MSG.ATTENTION, { layer, head, mean });
  return { layer, head, mean, size: reply.size, tokens: reply.tokens, weights: reply.weights, seqLen: reply.seqLen, captureTokens: reply.captureTokens };
}

/**
 * Redraws the chosen head, the text view and now and then the slow views (the grid and the open
 * teaching view); `overview`: the slow views now. One refresh in flight.
 */
async function refreshAttention({ overview = false } = {}) {
  if (!state.info || !client.running) return;
  if (state.refreshing) {
    state.refreshAgain = { overview: overview || !!state.refreshAgain?.overview };
    return;
  }
  state.refreshing = true;
  state.lastRefreshAt = performance.now();
  try {
    // While tokens arrive, only the views on screen are redrawn (on-screen.js).
    const sees = (id) => !state.run || onScreen.has($(id));
    const { layer, head } = state.selection;
    const data = await fetchAttention(layer, head);
    state.pattern = data;
    if (sees('heatmap')) {
      $('heatmap').show(data);
      $('legend').show({ sink: state.sink, max: $('heatmap').display?.max ?? null }); // the range show() just computed
    }
    describeCapture(data);
    if (sees('token-text')) {
      const text = state.textMode === 'mean' ? await fetchAttention(layer, head, true) : data;
      const run = shownRun();
      const labels = run ? [...run.promptTokens, ...run.labels] : data.tokens;
      $('token-text').show(labels, run?.promptTokens.length ?? 0, text.size, (i) => (i < text.size ? text.weights.subarray(i * text.size, i * text.size + i + 1) : null));
    }
    const now = performance.now();
    const slowViewsDue = overview || now - state.lastSlowViewsAt > SLOW_VIEWS_EVERY_MS;
    if (slowViewsDue) state.lastSlowViewsAt = now;
    if (!data.size) {
      $('head-grid').show(null); // nothing has been read yet: no thumbnails to draw
    } else if (sees('head-grid') && slowViewsDue) {
      const grid = await request(MSG.OVERVIEW, { size: OVERVIEW_SIZE });
      $('head-grid').show(grid, state.selection, state.info.n_kv_heads);
    }
    if (sees('teach') && (slowViewsDue || !state.run)) await refreshTeaching();
  } catch {
    // A refresh racing a restart or a new prompt is harmless: the next token redraws.
  } finally {
    state.refreshing = false;
    const again = state.refreshAgain;
    state.refreshAgain = null;
    if (again) refreshAttention(again);
  }
}

/** The open teaching tab, for the pattern on show (a tab switch needs nothing else fetched). */
function refreshTeaching() {
  const run = shownRun();
  const { layer, head } = state.selection;
  return $('teach').refresh({
    request, layer, head, query: state.query, size: state.pattern?.size ?? 0,
    promptLength: run?.promptTokens.length ?? 0, predictions: run?.predictions ?? [], options: run?.options, live: !!state.run,
  }).catch(() => {}); // racing a restart or a new prompt: the next token redraws
}

/** Says when the heatmap shows fewer tokens than the sequence has, and why. */
function describeCapture({ size, seqLen, captureTokens, tokens }) {
  const note = $('capture-note');
  if (!size) note.textContent = '';
  else if (size >= captureTokens && seqLen > size) {
    note.textContent = `Showing the first ${size} of ${seqLen} tokens: attention is captured for the first ${captureTokens} positions only, which bounds its memory.`;
  } else if (seqLen > size) {
    const run = shownRun();
    const newest = run?.labels.at(-1);
    note.textContent = `${size} tokens read. The newest token${newest === undefined ? '' : ` “${newest}”`} has no row yet: the model reads it when it computes the next one.`;
  } else {
    note.textContent = `${size} tokens (${tokens.length} labels).`;
  }
}

function fillSelectors(info) {
  const fill = (select, n, name) => {
    const current = Math.min(Number(select.value) || 0, n - 1);
    select.replaceChildren(...Array.from({ length: n }, (_, i) => new Option(`${name} ${i}`, String(i))));
    select.value = String(current);
  };
  fill($('layer'), info.n_layers, 'layer');
  fill($('head'), info.n_heads, 'head');
  state.selection = { layer: Number($('layer').value), head: Number($('head').value) };
  describeGqa();
}

/** Grouped-query attention, stated plainly: which query heads read the same keys and values. */
function describeGqa() {
  const info = state.info;
  if (!info) return;
  const { n_heads: heads, n_kv_heads: kvHeads } = info;
  const group = heads / kvHeads;
  const kv = Math.floor(state.selection.head / group);
  const first = kv * group;
  $('gqa-note').textContent = kvHeads === heads
    ? `Every head has its own keys and values (${heads} heads).`
    : `Grouped-query attention: ${heads} query heads share ${kvHeads} key/value heads, ${group} each. Head ${state.selection.head} reads key/value head ${kv}, which heads ${first}–${first + group - 1} share: their patterns differ only through their queries.`;
  $('gqa-groups').textContent = Array.from({ length: kvHeads }, (_, k) => `KV head ${k}: query heads ${k * group}–${k * group + group - 1}`).join(' · ');
}

function select(layer, head) {
  if (!state.info) return;
  layer = Math.max(0, Math.min(state.info.n_layers - 1, layer));
  head = Math.max(0, Math.min(state.info.n_heads - 1, head));
  state.selection = { layer, head };
  $('layer').value = String(layer);
  $('head').value = String(head);
  $('heading-selection').textContent = `layer ${layer}, head ${head}`;
  describeGqa();
  refreshAttention({ overview: true });
}

// ---------------------------------------------------------------- page chrome

function setBusy() {
  const running = !!state.run;
  $('generate').disabled = running || !state.info;
  $('stop').disabled = !running;
  $('quant').disabled = running || (!!state.loading && !state.info);
}

/** The error banner: what went wrong, what to do, and a button that does it when there is one. */
function showBanner(title, fix, { action = null } = {}) {
  $('banner').hidden = false;
  $('banner-title').textContent = title;
  $('banner-fix').textContent = fix ? `Fix: ${fix}` : '';
  const button = $('banner-action');
  button.hidden = !action;
  button.onclick = null;
  if (action) {
    button.textContent = action[0];
    button.onclick = action[1];
  }
}

function hideBanner() {
  $('banner').hidden = true;
}

const THEMES = ['auto', 'light', 'dark'];

function applyTheme(theme) {
  if (!THEMES.includes(theme)) theme = 'auto';
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  $('theme').value = theme;
  try {
    localStorage.setItem('attnscope-theme', theme);
  } catch { /* storage may be off: the choice lasts for this page */ }
  // Canvas labels take their colours from the theme's custom properties: draw again.
  $('heatmap').draw?.();
  $('head-grid').draw?.();
  $('teach').view('stats')?.draw?.();
}

function wire() {
  let theme = 'auto';
  try {
    theme = localStorage.getItem('attnscope-theme') ?? 'auto';
  } catch { /* storage off */ }
  applyTheme(theme);
  $('theme').addEventListener('change', () => applyTheme($('theme').value));
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => applyTheme($('theme').value));

  $('generate').addEventListener('click', () => {
    generate($('prompt').value, formOptions()).catch(() => {});
  });
  $('stop').addEventListener('click', stop);
  $('banner-close').addEventListener('click', hideBanner);
  $('notices-close').addEventListener('click', () => { $('notices-box').hidden = true; });
  $('reuse-seed').addEventListener('click', () => {
    $('seed').value = $('stat-seed').textContent;
    $('reuse-seed').hidden = true;
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.run) {
      e.preventDefault();
      stop();
    }
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      if (!$('generate').disabled) $('generate').click();
    }
  });
  $('quant').addEventListener('change', () => loadModel($('quant').value).catch(() => {}));
  $('layer').addEventListener('change', () => select(Number($('layer').value), state.selection.head));
  $('head').addEventListener('change', () => select(state.selection.layer, Number($('head').value)));
  $('zoom').addEventListener('input', () => $('heatmap').setZoom(Number($('zoom').value)));
  $('sink').addEventListener('change', () => setSink($('sink').value));
  $('heatmap').addEventListener('cellselect', (e) => { state.query = e.detail.i; });
  $('teach').addEventListener('viewchange', () => refreshTeaching());
  $('teach').addEventListener('headselect', (e) => select(e.detail.layer, e.detail.head));
  $('copy-embed').addEventListener('click', () => share('embed'));
  $('copy-link').addEventListener('click', () => share('link'));
  for (const f of ['png', 'svg', 'csv', 'json']) $(`export-${f}`).addEventListener('click', () => exportPattern(f).catch((e) => showBanner(`The export failed: ${e.message}`, '')));
  for (const radio of document.querySelectorAll('input[name=text-mode]')) {
    radio.addEventListener('change', () => {
      state.textMode = document.querySelector('input[name=text-mode]:checked').value;
      refreshAttention();
    });
  }
  $('head-grid').addEventListener('headselect', (e) => select(e.detail.layer, e.detail.head));
  onScreen.watch($('heatmap'), $('token-text'), $('head-grid'), $('teach'));
  $('heatmap').show(null);
  clearStats();
}

function setSink(mode) {
  state.sink = SINK_MODES[mode] ? mode : 'show';
  $('sink').value = state.sink;
  $('heatmap').setSink(state.sink);
  $('legend').show({ sink: state.sink, max: $('heatmap').display?.max ?? null });
}

// ---------------------------------------------------------------- sharing and export

/** The settings that reproduce the view on screen (share.js names): the last run's prompt and
 * options (with the seed it actually used), the layer, head, teaching view, sink and query row. */
function currentSettings() {
  const run = shownRun();
  const o = run?.options ?? formOptions();
  return {
    prompt: run?.prompt ?? $('prompt').value,
    chat: o.chat,
    'max-tokens': o.max_tokens,
    seed: o.seed,
    temperature: o.temperature,
    'top-k': o.top_k,
    'top-p': o.top_p,
    'repeat-penalty': o.repeat_penalty,
    quant: state.quant ?? $('quant').value,
    layer: state.selection.layer,
    head: state.selection.head,
    view: $('teach').active ?? 'steps',
    sink: state.sink,
    query: state.query,
  };
}

async function share(what) {
  const settings = currentSettings();
  $('share-code').value = elementSnippet(settings);
  $('share-iframe').value = iframeSnippet(settings);
  $('share-box').hidden = what !== 'embed';
  const text = what === 'embed' ? $('share-code').value : viewLink({ ...settings, autorun: true }, 'index.html');
  const ok = await copyText(text, what === 'embed' ? $('share-code') : null);
  $('share-note').textContent = ok
    ? `${what === 'embed' ? 'Embed code' : 'Link'} copied to the clipboard.`
    : `Copy it by hand: ${what === 'embed' ? 'the code is selected below' : text}`;
  return text;
}

async function exportPattern(format) {
  const p = state.pattern;
  if (!p?.size) {
    $('share-note').textContent = 'Generate first: there is no attention to export yet.';
    return;
  }
  const style = getComputedStyle(document.documentElement);
  const look = { sink: state.sink, fg: style.getPropertyValue('--fg').trim(), bg: style.getPropertyValue('--panel').trim() };
  const run = shownRun();
  const name = exportName(p, run?.prompt);
  const ids = run ? [...run.promptIds, ...run.ids].slice(0, p.size) : undefined;
  if (format === 'png') download(await patternPNG(p, look), `${name}.png`);
  else if (format === 'svg') download(patternSVG(p, look), `${name}.svg`, 'image/svg+xml');
  else if (format === 'csv') download(patternCSV(p), `${name}.csv`, 'text/csv');
  else download(patternJSON(p, { prompt: run?.prompt, settings: run?.options, quant: state.info?.quant, ids, sink_display: SINK_MODES[state.sink] }), `${name}.json`, 'application/json');
  $('share-note').textContent = `Saved ${name}.${format}.`;
}

/** index.html?prompt=…&seed=…: the form, the selection and the views from a shared link. */
function applyLink() {
  const params = new URLSearchParams(location.search);
  if (![...params.keys()].some((k) => FIELD_NAMES.includes(k))) return;
  const s = readSettings((name) => params.get(name));
  $('prompt').value = s.prompt;
  $('chat').checked = s.chat;
  $('max-tokens').value = String(s['max-tokens']);
  $('temperature').value = String(s.temperature);
  $('top-k').value = s['top-k'] == null ? '' : String(s['top-k']);
  $('top-p').value = s['top-p'] == null ? '' : String(s['top-p']);
  $('repeat-penalty').value = String(s['repeat-penalty']);
  $('seed').value = String(s.seed);
  $('quant').value = s.quant;
  for (const [id, n] of [['layer', s.layer], ['head', s.head]]) {
    if (![...$(id).options].length) $(id).append(new Option(`${id} ${n}`, String(n)));
    $(id).value = String(n);
  }
  state.selection = { layer: s.layer, head: s.head };
  $('heading-selection').textContent = `layer ${s.layer}, head ${s.head}`;
  state.query = s.query;
  setSink(s.sink);
  if (['steps', 'predictions', 'lens', 'tokens', 'stats'].includes(s.view)) $('teach').select(s.view, { quiet: true });
  state.autorun = s.autorun;
}

// ---------------------------------------------------------------- scripting API

/** Shows the options a script used in the form, so the page always says how its text was made. */
function reflectOptions(prompt, o, seedGiven) {
  $('prompt').value = prompt;
  $('chat').checked = o.chat;
  $('max-tokens').value = String(o.max_tokens);
  $('temperature').value = String(o.temperature);
  $('top-k').value = o.top_k == null ? '' : String(o.top_k);
  $('top-p').value = o.top_p == null ? '' : String(o.top_p);
  $('repeat-penalty').value = String(o.repeat_penalty);
  $('seed').value = seedGiven ? String(o.seed) : '';
}

window.attnscope = {
  /** Resolves with the model's info once it is loaded (rejects if it cannot be). */
  ready: null,
  /** Generates with the same worker and UI as the Generate button. Resolves to {ids, text, stats}. */
  async generate({ prompt, chat = false, maxTokens = 64, ignoreEos = false, temperature = 0, topK = null, topP = null, repeatPenalty = 1.1, seed = null, quant = null } = {}) {
    if (typeof prompt !== 'string') throw new TypeError('generate({prompt}) needs the prompt as a string');
    const opts = engineOptions({ chat, maxTokens, ignoreEos, temperature, topK, topP, repeatPenalty, seed: seed ?? randomSeed() });
    if (!state.run) reflectOptions(prompt, opts, seed != null);
    return generate(prompt, opts, quant);
  },
  /** {tokens, weights}: the current sequence's pattern for one head, weights as rows (T × T). */
  async attention({ layer = 0, head = 0 } = {}) {
    if (!state.info) throw new Error('the model is not loaded');
    const d = await fetchAttention(layer, head);
    const weights = Array.from({ length: d.size }, (_, i) => Array.from(d.weights.subarray(i * d.size, (i + 1) * d.size)));
    return { tokens: d.tokens, weights };
  },
  /** Like the Stop button or Escape: the generation ends before its next token. */
  stop,
  /** Shows one layer and head in the attention panel. */
  select,
  /** One query's scaled dot-product attention step by step (Engine.explain). */
  async explain({ layer = 0, head = 0, query }) {
    return (await request(MSG.EXPLAIN, { layer, head, query })).explanation;
  },
  /** The candidates of every generated step of the last run (Engine.predictions per token). */
  predictions() {
    return shownRun()?.predictions ?? [];
  },
  /** {position, label, layers: [{layer, top: [{id, label, prob}]}]} (Engine.logit_lens). */
  async logitLens({ k = 5 } = {}) {
    const { position, label, layers } = await request(MSG.LOGIT_LENS, { k });
    return { position, label, layers };
  },
  /** {ids, labels, special} of the current sequence. */
  async sequence() {
    const { ids, labels, special } = await request(MSG.SEQUENCE);
    return { ids, labels, special };
  },
  /** {names, layers, heads, size, stats: [layer][head][stat]} (Engine.head_stats). */
  async headStats() {
    const d = await request(MSG.HEAD_STATS);
    const n = d.names.length;
    const stats = Array.from({ length: d.layers }, (_, l) => Array.from({ length: d.heads }, (_, h) => Array.from(d.stats.subarray((l * d.heads + h) * n, (l * d.heads + h + 1) * n))));
    return { names: d.names, layers: d.layers, heads: d.heads, size: d.size, stats };
  },
  /** Test-only: a real crash in the worker, `kind` 'panic' or 'oom' (docs/PROTOCOL.md). The page
   * reacts as to any crash; the promise rejects with the crash's message. */
  crashForTests(kind, message) {
    return request(MSG.CRASH_FOR_TESTS, { kind, message });
  },
};

wire();
applyLink();
window.attnscope.ready = loadModel($('quant').value);
