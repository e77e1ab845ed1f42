// The page: UI wiring and the `window.attnscope` scripting API. The model lives in worker.js;
// this file only sends requests and draws what comes back.

import { MSG, PROTOCOL_VERSION, message } from './protocol.js';
import { VIRIDIS } from './heatmap.js';
import './views/attention-heatmap.js';
import './views/head-grid.js';
import './views/token-text.js';

const $ = (id) => document.getElementById(id);
const MODEL_BASE = new URL('models/smollm2-135m-instruct/', document.baseURI).href;
const OVERVIEW_SIZE = 24;

const state = {
  worker: null,
  info: null,
  quant: null,
  loading: null, // promise of the current load
  run: null, // {id, prompt, options, promptIds, promptTokens, ids, labels, text, resolve, reject}
  selection: { layer: 0, head: 0 },
  textMode: 'head',
  pending: new Map(), // request id → {resolve, reject}
  nextId: 1,
  attention: null, // the drawn pattern {layer, head, size, tokens, weights}
  meanRows: null,
  refreshInFlight: false,
  refreshAgain: false,
  lastOverviewAt: 0,
};

// ---------------------------------------------------------------- the worker

function startWorker() {
  state.worker?.terminate();
  state.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  state.worker.onmessage = (e) => onWorkerMessage(e.data);
  state.worker.onerror = (e) => {
    e.preventDefault?.();
    showBanner('The app could not start its worker.', `${e.message || 'unknown error'} — reload the page; if it persists, reload with cache bypass (Ctrl+Shift+R).`);
  };
}

function send(type, body = {}) {
  state.worker.postMessage(message(type, body));
}

function request(type, body = {}) {
  const id = state.nextId++;
  return new Promise((resolve, reject) => {
    state.pending.set(id, { resolve, reject });
    send(type, { id, ...body });
  });
}

function loadModel(quant) {
  if (state.quant === quant && state.loading) return state.loading;
  state.quant = quant;
  state.info = null;
  setBusy(true);
  $('loading').hidden = false;
  $('notices').replaceChildren();
  $('model-status').textContent = `loading ${quant} weights…`;
  if (!state.worker) startWorker();
  state.loading = new Promise((resolve, reject) => {
    state.onReady = resolve;
    state.onLoadError = reject;
  });
  send(MSG.LOAD, { quant, base: MODEL_BASE });
  return state.loading;
}

function onWorkerMessage(msg) {
  if (msg?.v !== PROTOCOL_VERSION) {
    showBanner('The page and its worker are from different versions.', 'Reload with cache bypass (Ctrl+Shift+R).');
    return;
  }
  switch (msg.type) {
    case MSG.PROGRESS: return onProgress(msg);
    case MSG.STATUS: return onStatus(msg);
    case MSG.READY: return onReady(msg);
    case MSG.PROMPT: return onPrompt(msg);
    case MSG.TOKEN: return onToken(msg);
    case MSG.DONE: return onDone(msg);
    case MSG.ATTENTION:
    case MSG.OVERVIEW:
    case MSG.TOKENIZE: {
      const p = state.pending.get(msg.id);
      state.pending.delete(msg.id);
      return p?.resolve(msg);
    }
    case MSG.ERROR: return onError(msg);
  }
}

function onProgress({ file, loaded, total, phase }) {
  const mb = (b) => (b / 1e6).toFixed(1);
  const verb = { download: 'downloading', verify: 'checking', cached: 'from cache' }[phase] ?? phase;
  $('progress-file').textContent = `${verb} ${file}`;
  $('progress-bytes').textContent = total ? `${mb(loaded)} / ${mb(total)} MB (${Math.floor((100 * loaded) / total)}%)` : '';
  $('progress').value = total ? loaded / total : 0;
}

function onStatus({ text, notice }) {
  if (notice) {
    const li = document.createElement('li');
    li.textContent = text;
    $('notices').append(li);
    showBanner('Note:', text, { notice: true });
  } else {
    $('model-status').textContent = text;
  }
}

function onReady({ info, fromCache, loadMs, buildId }) {
  state.info = info;
  $('loading').hidden = true;
  $('model-status').textContent = `ready: ${info.n_layers} layers × ${info.n_heads} heads, ${info.quant}, loaded ${fromCache ? 'from cache' : 'from the network'} in ${(loadMs / 1000).toFixed(1)} s`;
  $('build').textContent = buildId ? `build ${buildId.slice(0, 10)}` : '';
  fillSelectors(info);
  setBusy(false);
  state.onReady?.(info);
}

function onPrompt({ id, ids, tokens, prefillMs }) {
  const run = state.run;
  if (!run || run.id !== id) return;
  run.promptIds = ids;
  run.promptTokens = tokens;
  run.prefillMs = prefillMs;
  $('output-prompt').textContent = run.options.chat ? '' : run.prompt;
  refreshAttention();
}

function onToken({ id, token, stats }) {
  const run = state.run;
  if (!run || run.id !== id) return;
  run.ids.push(token.id);
  run.labels.push(token.label);
  run.text += token.text;
  $('output-text').textContent = run.text;
  $('output').scrollTop = $('output').scrollHeight;
  showStats(stats);
  document.dispatchEvent(new CustomEvent('attnscope:token', { detail: { id: token.id, index: run.ids.length - 1 } }));
  refreshAttention();
}

function onDone({ id, reason, stats, ids, text }) {
  const run = state.run;
  if (!run || run.id !== id) return;
  state.run = null;
  state.lastRun = run;
  setBusy(false);
  showStats(stats, reason);
  $('seed').placeholder = `random (last: ${stats.seed})`;
  refreshAttention({ overview: true });
  run.resolve({ ids, text, stats: { ...stats, stop_reason: reason } });
}

function onError({ id, request: what, message: text, fix, fatal, crashed }) {
  const p = id !== undefined ? state.pending.get(id) : null;
  if (p) {
    state.pending.delete(id);
    p.reject(new Error(text));
  }
  if (state.run && (id === state.run.id || crashed)) {
    state.run.reject(new Error(text));
    state.run = null;
  }
  if (what === MSG.LOAD || (fatal && !state.info)) {
    $('model-status').textContent = 'could not load the model';
    state.onLoadError?.(new Error(text));
    state.loading = null;
  }
  showBanner(text, fix);
  setBusy(false);
  if (crashed) {
    // The wasm instance is unusable after a trap: start a fresh worker; the prompt and the text
    // written so far stay on the page.
    const quant = state.quant;
    state.quant = null;
    startWorker();
    loadModel(quant).catch(() => {});
  }
}

// ---------------------------------------------------------------- generation

function options() {
  const num = (id) => ($(id).value === '' ? null : Number($(id).value));
  const seed = num('seed') ?? Math.floor(Math.random() * 2 ** 32);
  return {
    chat: $('chat').checked,
    max_tokens: num('max-tokens') ?? 64,
    temperature: num('temperature') ?? 0,
    top_k: num('top-k'),
    top_p: num('top-p'),
    repeat_penalty: num('repeat-penalty') ?? 1.0,
    repeat_last_n: 64,
    seed,
  };
}

async function generate(prompt, opts, quant) {
  if (state.run) throw new Error('a generation is already running: stop it first');
  if (quant && quant !== state.quant) await loadModel(quant);
  await state.loading;
  const id = state.nextId++;
  return new Promise((resolve, reject) => {
    state.run = { id, prompt, options: opts, ids: [], labels: [], text: '', promptIds: [], promptTokens: [], resolve, reject };
    $('output-text').textContent = '';
    $('output-prompt').textContent = opts.chat ? '' : prompt;
    $('stats').textContent = 'reading the prompt…';
    hideBanner();
    setBusy(true, true);
    send(MSG.GENERATE, { id, prompt, options: opts });
  });
}

function stop() {
  if (state.run) send(MSG.STOP);
}

function showStats(s, reason) {
  const parts = [`${s.prompt_tokens} prompt tokens`, `${s.generated_tokens} generated`];
  if (s.ttft_ms != null) parts.push(`first token ${Math.round(s.ttft_ms)} ms`);
  if (s.decode_tok_s) parts.push(`${s.decode_tok_s.toFixed(1)} tokens/s`);
  parts.push(`prefill ${s.prefill_tok_s.toFixed(0)} tokens/s`);
  parts.push(`seed ${s.seed}`);
  if (reason) parts.push({ eos: 'ended by the model', max_tokens: 'reached max tokens', context_full: 'context is full', stopped: 'stopped' }[reason] ?? reason);
  $('stats').textContent = parts.join(' · ');
}

// ---------------------------------------------------------------- attention views

function sequenceLabels() {
  const run = state.run ?? state.lastRun;
  return run ? [...run.promptTokens, ...run.labels] : [];
}

async function fetchAttention(layer, head) {
  const reply = await request(MSG.ATTENTION, { layer, head });
  return { layer, head, size: reply.size, tokens: reply.tokens, weights: reply.weights };
}

/** Redraws the chosen head (and now and then the overview); at most one refresh in flight. */
async function refreshAttention({ overview = false } = {}) {
  if (!state.info) return;
  if (state.refreshInFlight) {
    state.refreshAgain = true;
    state.overviewAgain ||= overview;
    return;
  }
  state.refreshInFlight = true;
  try {
    const { layer, head } = state.selection;
    const data = await fetchAttention(layer, head);
    state.attention = data;
    $('heatmap').show(data);
    $('legend-max').textContent = $('hide-sink').checked ? 'row max (rescaled)' : 'max';
    let rows = null;
    if (state.textMode === 'mean') {
      const heads = await Promise.all(Array.from({ length: state.info.n_heads }, (_, h) => fetchAttention(layer, h)));
      rows = (i) => {
        const out = new Float32Array(i + 1);
        for (const hd of heads) for (let j = 0; j <= i && i < hd.size; j++) out[j] += hd.weights[i * hd.size + j] / heads.length;
        return out;
      };
    } else {
      rows = (i) => (i < data.size ? data.weights.subarray(i * data.size, i * data.size + i + 1) : null);
    }
    $('token-text').show(data.tokens, (state.run ?? state.lastRun)?.promptIds.length ?? 0, rows);
    const now = performance.now();
    if (overview || now - state.lastOverviewAt > 1500) {
      state.lastOverviewAt = now;
      const o = await request(MSG.OVERVIEW, { size: OVERVIEW_SIZE });
      $('head-grid').show(o, state.selection);
    }
  } catch (e) {
    // A refresh racing a restart is harmless; the next token redraws.
  } finally {
    state.refreshInFlight = false;
    if (state.refreshAgain) {
      state.refreshAgain = false;
      const again = state.overviewAgain;
      state.overviewAgain = false;
      refreshAttention({ overview: again });
    }
  }
}

function fillSelectors(info) {
  const fill = (select, n, prefix) => {
    const current = Number(select.value) || 0;
    select.replaceChildren(...Array.from({ length: n }, (_, i) => new Option(`${prefix} ${i}`, String(i))));
    select.value = String(Math.min(current, n - 1));
  };
  fill($('layer'), info.n_layers, 'layer');
  fill($('head'), info.n_heads, 'head');
  updateGqaNote();
}

function updateGqaNote() {
  if (!state.info) return;
  const { n_heads: h, n_kv_heads: kv } = state.info;
  const group = h / kv;
  const head = state.selection.head;
  const kvHead = Math.floor(head / group);
  const sharing = Array.from({ length: group }, (_, k) => kvHead * group + k).join(', ');
  $('gqa-note').textContent = `Grouped-query attention: ${h} query heads share ${kv} key/value heads. Head ${head} reads key/value head ${kvHead}, shared by heads ${sharing}: their patterns differ only through their queries.`;
}

function select(layer, head) {
  state.selection = { layer, head };
  $('layer').value = String(layer);
  $('head').value = String(head);
  updateGqaNote();
  refreshAttention({ overview: true });
}

function drawLegend() {
  const c = $('legend');
  const ctx = c.getContext('2d');
  for (let x = 0; x < c.width; x++) {
    const v = VIRIDIS[Math.round((x / (c.width - 1)) * 255)];
    ctx.fillStyle = `rgb(${v[0]},${v[1]},${v[2]})`;
    ctx.fillRect(x, 0, 1, c.height);
  }
}

// ---------------------------------------------------------------- page chrome

function setBusy(busy, generating = false) {
  $('generate').disabled = busy || !state.info;
  $('stop').disabled = !generating;
  $('quant').disabled = busy;
}

function showBanner(title, text, { notice = false } = {}) {
  $('banner').hidden = false;
  $('banner').classList.toggle('notice', notice);
  $('banner-title').textContent = title;
  $('banner-text').textContent = text ?? '';
}

function hideBanner() {
  $('banner').hidden = true;
}

function wire() {
  drawLegend();
  $('generate').addEventListener('click', () => {
    const prompt = $('prompt').value;
    generate(prompt, options()).catch(() => {});
  });
  $('stop').addEventListener('click', stop);
  $('banner-close').addEventListener('click', hideBanner);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') stop();
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !$('generate').disabled) {
      e.preventDefault();
      $('generate').click();
    }
  });
  $('quant').addEventListener('change', () => loadModel($('quant').value).catch(() => {}));
  $('layer').addEventListener('change', () => select(Number($('layer').value), state.selection.head));
  $('head').addEventListener('change', () => select(state.selection.layer, Number($('head').value)));
  $('zoom').addEventListener('input', () => $('heatmap').setZoom(Number($('zoom').value)));
  $('hide-sink').addEventListener('change', () => {
    $('heatmap').setHideSink($('hide-sink').checked);
    $('legend-note').textContent = $('hide-sink').checked
      ? 'First column hidden; each row rescaled to sum to 1 over tokens 1…i, so the rest of the pattern is visible.'
      : 'Row i: how token i (the query) spreads its attention over tokens 0…i. Rows sum to 1; the future is masked.';
  });
  document.querySelectorAll('input[name=text-mode]').forEach((r) => r.addEventListener('change', () => {
    state.textMode = document.querySelector('input[name=text-mode]:checked').value;
    refreshAttention();
  }));
  $('head-grid').addEventListener('headselect', (e) => select(e.detail.layer, e.detail.head));
  $('heatmap').show(null);
}

// ---------------------------------------------------------------- scripting API

window.attnscope = {
  ready: null,
  /** Resolves to {ids, text, stats}; the same worker and UI as the Generate button. */
  async generate({ prompt, chat = false, maxTokens = 64, temperature = 0, topK = null, topP = null, repeatPenalty = 1.0, seed = null, quant = null } = {}) {
    const opts = {
      chat,
      max_tokens: maxTokens,
      temperature,
      top_k: topK,
      top_p: topP,
      repeat_penalty: repeatPenalty,
      repeat_last_n: 64,
      seed: seed ?? Math.floor(Math.random() * 2 ** 32),
    };
    $('prompt').value = prompt;
    $('chat').checked = chat;
    return generate(prompt, opts, quant);
  },
  /** {tokens, weights}: weights as rows, for the current sequence. */
  async attention({ layer = 0, head = 0 } = {}) {
    const d = await fetchAttention(layer, head);
    const weights = Array.from({ length: d.size }, (_, i) => Array.from(d.weights.subarray(i * d.size, (i + 1) * d.size)));
    return { tokens: d.tokens, weights };
  },
  stop,
  select,
};

wire();
window.attnscope.ready = loadModel($('quant').value);
window.attnscope.ready.catch(() => {});
