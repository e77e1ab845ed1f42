// <attn-scope>: the compact, embeddable attnscope. A course page needs two lines:
//
//   <script type="module" src="…/www/attn-scope.js"></script>
//   <attn-scope prompt="The capital of France is" max-tokens="24" seed="1" layer="5" head="4" autorun></attn-scope>
//
// It runs the same worker, engine and views as the full app (index.html): the settings are those
// of share.js (attributes here, URL parameters in embed.html and index.html), so the same prompt,
// seed and settings give the same tokens and the same picture on every machine. Everything it
// loads is found relative to this module's URL. The element keeps to its own light DOM and its
// own stylesheet (scope.css; its colours are set on `attn-scope`, its class rules are not
// prefixed, see there).
//
// Each element runs its own worker and model (~250 MB of memory while loaded): a page with many
// should leave `autorun` off so that only the ones a reader starts are loaded.

import { MSG } from './protocol.js';
import { MODEL_BASE, TEXT_EVERY_MS, WorkerClient, engineOptions } from './client.js';
import { FIELD_NAMES, readSettings, elementSnippet, iframeSnippet, viewLink, copyText } from './share.js';
import { SINK_MODES } from './heatmap.js';
import { make } from './views/teach-dom.js';
import { OnScreen } from './on-screen.js';
import { patternCSV, patternJSON, patternPNG, patternSVG, exportName, download } from './export.js';
import './views/attention-heatmap.js';
import './views/token-text.js';
import './views/teach-tabs.js';

const STYLESHEET = new URL('./scope.css', import.meta.url).href;
// The live views are redrawn at most this often while generating, and a millisecond longer for
// each token they show (their cost grows with it; main.js's REDRAW_EVERY_MS says what it costs).
const REFRESH_EVERY_MS = 400;

function ensureStylesheet() {
  if ([...document.querySelectorAll('link[rel=stylesheet]')].some((l) => l.href === STYLESHEET)) return;
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = STYLESHEET;
  document.head.append(link);
}


let counter = 0;

export class AttnScope extends HTMLElement {
  static get observedAttributes() {
    return FIELD_NAMES;
  }

  constructor() {
    super();
    this.client = null;
    this.info = null;
    this.loaded = null; // promise of the loaded model, per quantization
    this.loadedQuant = null;
    this.run = null; // the generation in progress or last finished
    this.pattern = null; // the attention on screen: {layer, head, size, tokens, weights}
    this.refreshing = false;
    this.refreshAgain = false;
    this.lastRefresh = 0;
    this.textTimer = null; // the answer's text waiting for TEXT_EVERY_MS to pass
    /** Resolves with {ids, text, stats} of the first run (autorun or Run). */
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => {});
  }

  get settings() {
    return readSettings((name) => this.getAttribute(name));
  }

  connectedCallback() {
    if (this.root) return;
    ensureStylesheet();
    this.uid = `attn-scope-${++counter}`;
    this.build();
    // Scrolled out of sight, the element does not redraw while tokens arrive (on-screen.js).
    this.onScreen = new OnScreen(() => this.run && !this.run.finished && this.refresh());
    this.onScreen.watch(this);
    this.applySelection();
    if (this.settings.autorun) this.start();
  }

  disconnectedCallback() {
    // A run in progress ends with its worker, so start() can finish and Run works on re-insertion.
    if (this.run && !this.run.finished) this.run.reject(new Error('the element was removed from the page'));
    this.client?.stop();
    this.client = null;
    this.loaded = null;
  }

  attributeChangedCallback(name, old, value) {
    if (!this.root || old === value || this.quiet) return;
    if (['layer', 'head', 'sink', 'view', 'query'].includes(name)) this.applySelection();
    else if (name === 'autorun' && this.settings.autorun && !this.run) this.start();
  }

  build() {
    const s = this.settings;
    this.root = make('div', 'as-root');
    this.root.setAttribute('role', 'group');
    this.root.setAttribute('aria-label', 'attnscope: a language model’s attention');

    const head = make('div', 'as-head');
    const promptLabel = make('label', 'as-prompt-label', 'Prompt');
    this.promptField = make('textarea', 'as-prompt');
    this.promptField.rows = 2;
    this.promptField.id = `${this.uid}-prompt`;
    this.promptField.value = s.prompt;
    this.promptField.spellcheck = false;
    promptLabel.htmlFor = this.promptField.id;
    this.runButton = make('button', 'primary', 'Run');
    this.runButton.type = 'button';
    this.runButton.addEventListener('click', () => this.start());
    this.runInfo = make('p', 'as-hint');
    head.append(promptLabel, this.promptField, this.runButton, this.runInfo);
    this.status = make('p', 'as-status', 'Press Run to load the model (143 MB, cached after the first time) and generate.');
    this.status.setAttribute('role', 'status');
    this.progress = make('progress');
    this.progress.max = 1;
    this.progress.value = 0;
    this.progress.hidden = true;
    this.progress.setAttribute('aria-label', 'model download progress');
    this.output = make('div', 'as-output');
    this.output.setAttribute('aria-label', 'the text: prompt and answer');
    this.output.setAttribute('role', 'region');
    this.output.tabIndex = 0;
    this.echo = make('span', 'echo');
    this.answer = make('span', 'answer');
    this.output.append(this.echo, this.answer);

    const controls = make('div', 'as-controls');
    const select = (label, options) => {
      const wrap = make('label', '', `${label} `);
      const el = make('select');
      for (const [value, text] of options) el.append(new Option(text, value));
      wrap.append(el);
      controls.append(wrap);
      return el;
    };
    this.layerSelect = select('layer', Array.from({ length: 30 }, (_, i) => [String(i), String(i)]));
    this.headSelect = select('head', Array.from({ length: 9 }, (_, i) => [String(i), String(i)]));
    this.sinkSelect = select('first token', [['show', 'shown'], ['hide', 'hidden, rows rescaled'], ['clip', 'colour range without it']]);
    const zoomLabel = make('label', '', 'zoom ');
    this.zoom = make('input');
    this.zoom.type = 'range';
    this.zoom.min = '1';
    this.zoom.max = '28';
    this.zoom.value = '16';
    zoomLabel.append(this.zoom);
    controls.append(zoomLabel);
    this.layerSelect.addEventListener('change', () => this.setAttribute('layer', this.layerSelect.value));
    this.headSelect.addEventListener('change', () => this.setAttribute('head', this.headSelect.value));
    this.sinkSelect.addEventListener('change', () => this.setAttribute('sink', this.sinkSelect.value));
    this.zoom.addEventListener('input', () => this.heatmap.setZoom(Number(this.zoom.value)));

    this.tabs = make('teach-tabs');
    this.tabs.setAttribute('tabs', 'heatmap steps predictions lens tokens stats text');
    this.tabs.setAttribute('label', 'attnscope views');
    this.tabs.setAttribute('active', s.view);
    this.heatmap = make('attention-heatmap');
    this.legend = make('scale-legend');
    this.queryNote = make('p', 'as-hint', 'Rows are queries (the token that looks), columns keys (the tokens looked at). Click a cell, or focus the heatmap and use the arrow keys; the chosen row is the query of “Step by step”.');
    this.text = make('token-text');

    const actions = make('div', 'as-actions');
    const button = (text, fn, title) => {
      const b = make('button', '', text);
      b.type = 'button';
      if (title) b.title = title;
      b.addEventListener('click', fn);
      actions.append(b);
      return b;
    };
    button('Copy embed code', () => this.copy('embed'), 'An <attn-scope> snippet that reproduces this view');
    button('Copy link to this view', () => this.copy('link'), 'A link to embed.html with these settings');
    this.exportButtons = ['PNG', 'SVG', 'CSV', 'JSON'].map((f) => button(f, () => this.export(f.toLowerCase()), `Download the heatmap as ${f}`));
    this.appLink = make('a', 'as-applink', 'Open in the full app');
    this.appLink.target = '_blank';
    this.appLink.rel = 'noopener';
    actions.append(this.appLink);
    this.copyField = make('textarea', 'as-copy');
    this.copyField.readOnly = true;
    this.copyField.rows = 3;
    this.copyField.hidden = true;
    this.copyField.setAttribute('aria-label', 'the copied code or link');
    // The element needs its script from the page's own site (or a CORS host); an iframe works
    // from anywhere, so its code is offered beside the element's.
    this.iframeBox = make('div', 'as-iframe');
    this.iframeBox.hidden = true;
    const iframeLabel = make('label', 'as-hint', 'For a page on another site, an iframe:');
    this.iframeField = make('textarea', 'as-copy');
    this.iframeField.readOnly = true;
    this.iframeField.rows = 3;
    this.iframeField.id = `${this.uid}-iframe`;
    iframeLabel.htmlFor = this.iframeField.id;
    this.iframeBox.append(iframeLabel, this.iframeField);
    this.copyNote = make('p', 'as-hint');
    this.copyNote.setAttribute('aria-live', 'polite');

    this.root.append(head, this.status, this.progress, this.output, controls, this.tabs, actions, this.copyNote, this.copyField, this.iframeBox);
    this.replaceChildren(this.root);
    this.tabs.panel('heatmap').append(this.heatmap, this.legend, this.queryNote);
    this.tabs.panel('text').append(make('p', 'as-hint', 'Hover or focus a token (arrow keys move): the tokens it attends to light up.'), this.text);
    this.heatmap.show(null);
    this.heatmap.addEventListener('cellselect', (e) => {
      this.query = e.detail.i;
      // Kept in the attribute, so copied links and snippets carry the chosen query row.
      this.quiet = true;
      this.setAttribute('query', String(e.detail.i));
      this.quiet = false;
    });
    this.tabs.addEventListener('viewchange', (e) => {
      this.setAttribute('view', e.detail.view);
    });
    this.tabs.addEventListener('headselect', (e) => {
      this.setAttribute('layer', String(e.detail.layer));
      this.setAttribute('head', String(e.detail.head));
    });
    this.describeRun();
  }

  /** Layer, head, sink, view and query from the attributes to the controls and the views. */
  applySelection() {
    const s = this.settings;
    const layer = Math.min(s.layer, (this.info?.n_layers ?? 30) - 1);
    const head = Math.min(s.head, (this.info?.n_heads ?? 9) - 1);
    this.selection = { layer, head };
    this.layerSelect.value = String(layer);
    this.headSelect.value = String(head);
    this.sinkSelect.value = s.sink;
    if (this.query === undefined || this.getAttribute('query') !== null) this.query = s.query;
    this.heatmap.setSink(s.sink);
    this.legend.show({ sink: s.sink, max: this.heatmap.display?.max ?? null });
    if (this.tabs.active !== s.view) this.tabs.select(s.view, { quiet: true });
    this.appLink.href = viewLink(this.currentSettings(), 'index.html');
    this.refresh();
  }

  describeRun() {
    const s = this.settings;
    const how = s.temperature === 0 ? 'greedy (temperature 0)' : `temperature ${s.temperature}, seed ${s.seed}`;
    this.runInfo.textContent = `${s.chat ? 'chat' : 'raw completion'}, ${how}, up to ${s['max-tokens']} tokens, ${s.quant} weights`;
  }

  /** The settings that reproduce what is on screen (the prompt as run, the current selection). */
  currentSettings() {
    const s = this.settings;
    return {
      ...s,
      prompt: this.run?.prompt ?? this.promptField?.value ?? s.prompt,
      layer: this.selection?.layer ?? s.layer,
      head: this.selection?.head ?? s.head,
      view: this.tabs?.active ?? s.view,
      query: this.query ?? null,
      autorun: true,
    };
  }

  // ------------------------------------------------------------ model and generation

  onEvent(msg) {
    switch (msg.type) {
      case MSG.PROGRESS: {
        const all = msg.overallTotal || msg.total;
        const done = msg.overallTotal ? msg.overallLoaded : msg.loaded;
        this.progress.hidden = false;
        this.progress.value = all ? done / all : 0;
        this.status.textContent = msg.phase === 'download' ? `downloading the model: ${(done / 1e6).toFixed(0)} / ${(all / 1e6).toFixed(0)} MB` : `checking ${msg.file}…`;
        return;
      }
      case MSG.STATUS:
        if (!msg.notice) this.status.textContent = msg.text;
        return;
      case MSG.READY:
        this.info = msg.info;
        this.progress.hidden = true;
        this.loadCallbacks?.resolve(msg.info);
        return;
      case MSG.PROMPT:
        if (this.run?.id === msg.id) {
          this.run.promptIds = msg.ids;
          this.run.promptTokens = msg.tokens;
          this.status.textContent = 'generating…';
          this.refresh();
        }
        return;
      case MSG.TOKEN:
        if (this.run?.id !== msg.id) return;
        this.run.ids.push(msg.token.id);
        this.run.labels.push(msg.token.label);
        this.run.predictions.push(msg.predictions);
        this.run.text += msg.token.text;
        this.textTimer ??= setTimeout(() => this.showText(), TEXT_EVERY_MS);
        if (performance.now() - this.lastRefresh > REFRESH_EVERY_MS + (this.pattern?.size ?? 0)) this.refresh();
        return;
      case MSG.DONE:
        if (this.run?.id !== msg.id) return;
        this.run.finished = true;
        this.run.resolve({ ids: msg.ids, text: msg.text, stats: { ...msg.stats, stop_reason: msg.reason } });
        return;
      case MSG.ERROR:
      case 'worker-failed':
      case 'version-mismatch': {
        const text = msg.message ?? 'the page and its worker are from different versions of attnscope';
        const error = Object.assign(new Error(text), { fix: msg.fix });
        if (!msg.request || msg.request === MSG.LOAD || msg.type !== MSG.ERROR || msg.crashed) this.loadCallbacks?.reject(error);
        if (this.run && !this.run.finished && (msg.id === this.run.id || msg.crashed || msg.type !== MSG.ERROR)) this.run.reject(error);
        this.status.textContent = `${text}${msg.fix ? `. Fix: ${msg.fix}` : ''}`;
        if (msg.crashed || msg.type !== MSG.ERROR) {
          this.client?.stop();
          this.loaded = null;
        }
        return;
      }
    }
  }

  load(quant) {
    if (this.loaded && this.loadedQuant === quant) return this.loaded;
    if (!this.client) this.client = new WorkerClient((msg) => this.onEvent(msg));
    if (!this.client.running) this.client.start();
    this.loadedQuant = quant;
    this.status.textContent = `loading the ${quant} weights…`;
    this.loaded = new Promise((resolve, reject) => {
      this.loadCallbacks = { resolve, reject };
    });
    this.loaded.catch(() => {
      this.loaded = null;
    });
    this.client.send(MSG.LOAD, { quant, base: MODEL_BASE });
    return this.loaded;
  }

  /** Loads the model if needed and generates with the element's settings. */
  async start() {
    if (this.run && !this.run.finished) return this.run.promise;
    this.runButton.disabled = true;
    const s = this.settings;
    const prompt = this.promptField.value;
    try {
      await this.load(s.quant);
      const options = engineOptions({ chat: s.chat, maxTokens: s['max-tokens'], temperature: s.temperature, topK: s['top-k'], topP: s['top-p'], repeatPenalty: s['repeat-penalty'], seed: s.seed });
      const id = this.client.newId();
      let resolve;
      let reject;
      const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.run = { id, prompt, options, ids: [], labels: [], predictions: [], text: '', promptIds: [], promptTokens: [], finished: false, promise, resolve, reject };
      this.echo.textContent = s.chat ? '' : prompt;
      this.answer.textContent = '';
      this.status.textContent = 'reading the prompt…';
      this.client.send(MSG.GENERATE, { id, prompt, options });
      const result = await promise;
      this.showText();
      this.run.finished = true;
      this.status.textContent = `${result.stats.prompt_tokens} prompt tokens + ${result.stats.generated_tokens} generated (${{ eos: 'the model ended its answer', max_tokens: 'max tokens reached', context_full: 'context full', stopped: 'stopped' }[result.stats.stop_reason] ?? result.stats.stop_reason}), seed ${result.stats.seed}.`;
      this.lastRefresh = 0;
      await this.refresh();
      this.resolveDone(result);
      this.dispatchEvent(new CustomEvent('attnscope:done', { detail: result, bubbles: true }));
      return result;
    } catch (e) {
      this.showText(); // what it wrote before the error stays
      if (this.run) this.run.finished = true;
      this.rejectDone(e);
      this.status.textContent = `${e.message}${e.fix ? `. Fix: ${e.fix}` : ''}`;
      throw e;
    } finally {
      this.runButton.disabled = false;
      this.appLink.href = viewLink(this.currentSettings(), 'index.html');
    }
  }

  /** Writes the run's text so far (see TEXT_EVERY_MS). */
  showText() {
    clearTimeout(this.textTimer);
    this.textTimer = null;
    if (this.run) this.answer.textContent = this.run.text;
  }

  /** {tokens, weights}: the current pattern of one head as rows, like window.attnscope.attention. */
  async attention({ layer = 0, head = 0 } = {}) {
    const d = await this.client.request(MSG.ATTENTION, { layer, head });
    return { tokens: d.tokens, weights: Array.from({ length: d.size }, (_, i) => Array.from(d.weights.subarray(i * d.size, (i + 1) * d.size))) };
  }

  /** Redraws the heatmap, the text view and the active teaching view; one refresh in flight. */
  async refresh() {
    if (!this.client?.running || !this.info || !this.run) return;
    if (!this.run.finished && !this.onScreen.has(this)) return;
    if (this.refreshing) {
      this.refreshAgain = true;
      return;
    }
    this.refreshing = true;
    this.lastRefresh = performance.now();
    try {
      const { layer, head } = this.selection;
      const d = await this.client.request(MSG.ATTENTION, { layer, head });
      this.pattern = { layer, head, size: d.size, tokens: d.tokens, weights: d.weights };
      this.heatmap.show(this.pattern);
      this.legend.show({ sink: this.settings.sink, max: this.heatmap.display?.max ?? null }); // the range show() just computed
      const run = this.run;
      const labels = [...run.promptTokens, ...run.labels];
      this.text.show(labels, run.promptTokens.length, d.size, (i) => (i < d.size ? d.weights.subarray(i * d.size, i * d.size + i + 1) : null));
      await this.tabs.refresh({
        request: (type, body) => this.client.request(type, body),
        layer, head, query: this.query, size: d.size,
        promptLength: run.promptTokens.length, predictions: run.predictions, options: run.options, live: !run.finished,
      });
    } catch {
      // A refresh racing a restart is harmless: the next one redraws.
    } finally {
      this.refreshing = false;
      if (this.refreshAgain) {
        this.refreshAgain = false;
        this.refresh();
      }
    }
  }

  // ------------------------------------------------------------ sharing and export

  async copy(what) {
    const text = what === 'embed' ? elementSnippet(this.currentSettings()) : viewLink(this.currentSettings(), 'embed.html');
    const ok = await copyText(text, this.copyField);
    this.copyField.hidden = false;
    this.iframeBox.hidden = what !== 'embed';
    if (what === 'embed') this.iframeField.value = iframeSnippet(this.currentSettings());
    this.copyNote.textContent = ok ? `${what === 'embed' ? 'Embed code' : 'Link'} copied to the clipboard (also shown below).` : 'Select the text below and copy it (Ctrl+C).';
    return text;
  }

  async export(format) {
    const p = this.pattern;
    if (!p || !p.size) {
      this.copyNote.textContent = 'Generate first: there is no attention to export yet.';
      return;
    }
    const sink = this.settings.sink;
    const style = getComputedStyle(this);
    const colours = { sink, fg: style.getPropertyValue('--fg').trim() || '#1d1d1f', bg: style.getPropertyValue('--panel').trim() || '#ffffff' };
    const name = exportName(p, this.run?.prompt);
    const context = { prompt: this.run?.prompt, settings: this.run?.options, quant: this.info?.quant, ids: [...(this.run?.promptIds ?? []), ...(this.run?.ids ?? [])].slice(0, p.size), sink_display: SINK_MODES[sink] };
    if (format === 'png') download(await patternPNG(p, colours), `${name}.png`);
    else if (format === 'svg') download(patternSVG(p, colours), `${name}.svg`, 'image/svg+xml');
    else if (format === 'csv') download(patternCSV(p), `${name}.csv`, 'text/csv');
    else download(patternJSON(p, context), `${name}.json`, 'application/json');
    this.copyNote.textContent = `Saved ${name}.${format}.`;
  }
}

customElements.define('attn-scope', AttnScope);
