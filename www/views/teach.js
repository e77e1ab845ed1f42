// The teaching views, each a small custom element fed with what the engine computed:
//
//   <attention-steps>   one query's scaled dot-product attention, step by step (Engine.explain)
//   <prediction-table>  the candidates of each generated step, raw and under the sampling settings
//   <logit-lens>        what each layer's residual stream would predict (Engine.logit_lens)
//   <token-list>        the tokenization: boundaries, ids, special tokens, chat roles
//   <head-stats>        every head summarised (Engine.head_stats), to find kinds of heads
//   <scale-legend>      the colour scale, and what the first-token ("sink") setting does to it
//
// They render with textContent only (token text is model output, never markup) and take colours
// from heatmap.js, so every view speaks the same viridis scale.

import { VIRIDIS, SINK_MODES, colour, inkOn, showToken } from '../heatmap.js';

const make = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

const fmt = (v, digits = 4) => (Number.isFinite(v) ? v.toFixed(digits) : String(v));

/** A table cell shaded by t ∈ [0, 1] on the viridis scale, with text that stays readable. */
function shaded(tag, text, t) {
  const cell = make(tag, 'shaded', text);
  cell.style.backgroundColor = colour(t);
  cell.style.color = inkOn(t);
  return cell;
}

function table(caption, headers) {
  const t = make('table', 'teach-table');
  t.append(make('caption', '', caption));
  const head = make('thead');
  const tr = make('tr');
  for (const h of headers) {
    const th = make('th', '', h);
    th.scope = 'col';
    tr.append(th);
  }
  head.append(tr);
  const body = make('tbody');
  t.append(head, body);
  return { table: t, body };
}

function empty(host, text) {
  host.replaceChildren(make('p', 'hint', text));
}

// ---------------------------------------------------------------- step view

export class AttentionSteps extends HTMLElement {
  connectedCallback() {
    if (!this.childElementCount) empty(this, 'Generate, then pick a query token (a row of the heatmap) to see its attention computed step by step.');
  }

  /** e: Engine.explain's JSON ({query, kv_head, head_dim, scale, dots, scores, pattern, out, value_norms, label, keys}). */
  show(e, { layer, head, size }) {
    this.explanation = e;
    if (!e) return empty(this, 'Generate, then pick a query token (a row of the heatmap) to see its attention computed step by step.');
    const i = e.query;
    const d = e.head_dim;
    const intro = make('p', 'teach-lead');
    intro.append(`Layer ${layer}, head ${head} (it reads key/value head ${e.kv_head}). Query: token #${i} `, make('q', 'tok-inline', showToken(e.label)), '.');
    const steps = make('ol', 'teach-steps');
    const maxScore = Math.max(...e.scores);
    const expSum = e.scores.reduce((a, s) => a + Math.exp(s - maxScore), 0);
    steps.append(
      make('li', '', `Scores: the query q (${d} numbers) is multiplied with each key k_j: q·k_j.`),
      make('li', '', `Scaled: divided by √d = √${d} = ${fmt(1 / e.scale, 3)}, so s_j = q·k_j × ${fmt(e.scale, 4)}.`),
      make('li', '', `Causal mask: only keys j ≤ ${i} take part; ${size !== undefined && size > i + 1 ? `the ${size - i - 1} later tokens get −∞, weight 0` : 'nothing comes later here'}.`),
      make('li', '', `Softmax: w_j = exp(s_j − ${fmt(maxScore, 3)}) / ${fmt(expSum, 4)} (subtracting the largest score keeps exp from overflowing); the weights sum to 1.`),
      make('li', '', `Weighted sum: the head's output is Σ_j w_j v_j, ${d} numbers (below the table).`),
    );
    const { table: t, body } = table(`Token #${i}'s attention, computed from the model's own query, keys and values`, ['key j', 'token', 'q·k_j', 's_j = q·k_j/√d', 'exp(s_j − max)', 'weight w_j', '|v_j|', 'w_j·|v_j|']);
    const maxW = Math.max(...e.pattern);
    for (let j = 0; j <= i; j++) {
      const tr = make('tr');
      tr.dataset.key = String(j);
      tr.dataset.weight = String(e.pattern[j]);
      tr.append(
        make('td', 'num', String(j)),
        make('td', 'tok-cell', showToken(e.keys?.[j] ?? '')),
        make('td', 'num', fmt(e.dots[j], 3)),
        make('td', 'num', fmt(e.scores[j], 3)),
        make('td', 'num', fmt(Math.exp(e.scores[j] - maxScore), 4)),
        shaded('td', fmt(e.pattern[j]), e.pattern[j] / (maxW || 1)),
        make('td', 'num', fmt(e.value_norms[j], 3)),
        make('td', 'num', fmt(e.pattern[j] * e.value_norms[j], 3)),
      );
      body.append(tr);
    }
    if (size !== undefined && size > i + 1) {
      const tr = make('tr', 'masked');
      const td = make('td', '', `keys ${i + 1}…${size - 1}: masked (the future), s_j = −∞, w_j = 0`);
      td.colSpan = 8;
      tr.append(td);
      body.append(tr);
    }
    const scroll = make('div', 'teach-scroll');
    scroll.tabIndex = 0;
    scroll.setAttribute('role', 'region');
    scroll.setAttribute('aria-label', 'the step-by-step table');
    scroll.append(t);
    const out = make('details', 'teach-out');
    out.append(make('summary', '', `Output: Σ_j w_j v_j (${d} numbers)`), make('p', 'mono', `[${e.out.map((v) => fmt(v, 3)).join(', ')}]`));
    this.replaceChildren(intro, steps, scroll, out);
  }
}

// ---------------------------------------------------------------- predictions

export class PredictionTable extends HTMLElement {
  connectedCallback() {
    if (this.wired) return;
    this.wired = true;
    this.steps = [];
    this.index = 0;
    this.label = make('label', 'teach-step');
    this.slider = make('input');
    this.slider.type = 'range';
    this.slider.min = '0';
    this.slider.value = '0';
    this.caption = make('span', 'mono');
    this.label.append('step ', this.slider, this.caption);
    this.body = make('div');
    this.slider.addEventListener('input', () => this.render(Number(this.slider.value)));
    this.replaceChildren(this.label, this.body);
    this.render(0);
  }

  /** steps: one Engine.predictions() JSON per generated token; settings: the run's options. */
  show(steps, settings, { follow = true } = {}) {
    this.steps = steps ?? [];
    this.settings = settings;
    const last = Math.max(0, this.steps.length - 1);
    if (this.wired) this.render(follow ? last : Math.min(this.index, last));
  }

  render(index) {
    this.index = index;
    const n = this.steps.length;
    this.label.hidden = n === 0;
    this.slider.max = String(Math.max(0, n - 1));
    this.slider.value = String(index);
    this.slider.setAttribute('aria-label', 'generated step');
    const p = this.steps[index];
    if (!p) return empty(this.body, 'Generate to see, for every new token, what the model considered.');
    this.caption.textContent = ` ${index + 1} of ${n}: at position ${p.position} it chose “${showToken(p.sampled_label)}”`;
    const s = this.settings ?? {};
    const how = s.temperature === 0
      ? 'temperature 0 is greedy: the most likely token (after the repeat penalty) gets all the probability'
      : `temperature ${s.temperature}${s.top_k ? `, top-k ${s.top_k}` : ''}${s.top_p ? `, top-p ${s.top_p}` : ''}`;
    const { table: t, body } = table(`The ${p.top.length} most likely next tokens. Raw: softmax of the logits. Used: after repeat penalty ${s.repeat_penalty ?? 1.1}, ${how}.`, ['rank', 'token', 'id', 'logit', 'p raw', 'p used', 'sampled']);
    const maxP = Math.max(...p.top.map((c) => Math.max(c.prob, c.prob_final)), 1e-9);
    p.top.forEach((c, r) => {
      const tr = make('tr', c.id === p.sampled ? 'sampled' : '');
      tr.dataset.id = String(c.id);
      tr.append(
        make('td', 'num', String(r + 1)),
        make('td', 'tok-cell', showToken(c.label)),
        make('td', 'num', String(c.id)),
        make('td', 'num', fmt(c.logit, 3)),
        shaded('td', fmt(c.prob), c.prob / maxP),
        shaded('td', fmt(c.prob_final), c.prob_final / maxP),
        make('td', '', c.id === p.sampled ? '✓ sampled' : ''),
      );
      body.append(tr);
    });
    if (!p.top.some((c) => c.id === p.sampled)) {
      const tr = make('tr', 'sampled');
      const td = make('td', '', `sampled: “${showToken(p.sampled_label)}” (outside the raw top ${p.top.length}: the settings moved it up)`);
      td.colSpan = 7;
      tr.append(td);
      body.append(tr);
    }
    const scroll = make('div', 'teach-scroll');
    scroll.tabIndex = 0;
    scroll.setAttribute('role', 'region');
    scroll.setAttribute('aria-label', 'candidates table');
    scroll.append(t);
    this.body.replaceChildren(scroll);
  }
}

// ---------------------------------------------------------------- logit lens

export class LogitLens extends HTMLElement {
  connectedCallback() {
    if (!this.childElementCount) empty(this, 'Generate to see what each layer would predict.');
  }

  /** lens: {position, label, layers: [{layer, top: [{id, label, prob}]}]}. */
  show(lens) {
    this.lens = lens;
    if (!lens) return empty(this, 'Generate to see what each layer would predict.');
    const k = lens.layers[0]?.top.length ?? 0;
    const lead = make('p', 'teach-lead');
    lead.append(`After token #${lens.position} `, make('q', 'tok-inline', showToken(lens.label ?? '')), ': the final RMSNorm and the (tied) output head applied to the residual stream after each layer — what the model would say next if it stopped there. The last row is its real prediction.');
    const { table: t, body } = table('The logit lens: layers down, the most likely next tokens across', ['layer', ...Array.from({ length: k }, (_, r) => `#${r + 1}`)]);
    for (const row of lens.layers) {
      const tr = make('tr');
      const th = make('th', 'num', String(row.layer));
      th.scope = 'row';
      tr.append(th);
      for (const c of row.top) {
        const td = shaded('td', '', c.prob);
        td.append(make('span', 'tok-cell', showToken(c.label)), make('span', 'prob', ` ${fmt(c.prob, 3)}`));
        td.dataset.id = String(c.id);
        tr.append(td);
      }
      body.append(tr);
    }
    const scroll = make('div', 'teach-scroll');
    scroll.tabIndex = 0;
    scroll.setAttribute('role', 'region');
    scroll.setAttribute('aria-label', 'logit lens table');
    scroll.append(t);
    this.replaceChildren(lead, scroll);
  }
}

// ---------------------------------------------------------------- tokenization

const ROLES = new Set(['system', 'user', 'assistant']);

export class TokenList extends HTMLElement {
  connectedCallback() {
    if (!this.childElementCount) empty(this, 'Generate to see how the prompt was cut into tokens.');
  }

  /** seq: {ids, labels, special}; promptLength: how many are the prompt. */
  show(seq, promptLength) {
    this.sequence = seq;
    if (!seq || !seq.ids.length) return empty(this, 'Generate to see how the prompt was cut into tokens.');
    const list = make('ol', 'token-list');
    list.setAttribute('aria-label', 'tokens with their ids');
    let role = null;
    let specials = 0;
    const roleTokens = new Map(); // index → role name, for the tokens that spell a role
    seq.labels.forEach((label, i) => {
      if (label !== '<|im_start|>') return;
      let name = '';
      let j = i + 1;
      while (j < seq.labels.length && j < i + 4 && !seq.labels[j].includes('\n') && !seq.special[j]) name += seq.labels[j++];
      if (ROLES.has(name.trim())) for (let k = i + 1; k < j; k++) roleTokens.set(k, name.trim());
    });
    seq.ids.forEach((id, i) => {
      const label = seq.labels[i];
      const li = make('li', 'chip');
      const special = seq.special[i];
      if (special) {
        specials += 1;
        li.classList.add('special');
        if (label === '<|im_end|>') role = null;
      }
      // ChatML: <|im_start|> ROLE ↵ …text… <|im_end|>; a role can take two tokens ("ass", "istant").
      const isRole = roleTokens.has(i);
      if (isRole) {
        role = roleTokens.get(i);
        li.classList.add('role');
      }
      if (role && !special) li.dataset.role = role;
      if (i >= promptLength) li.classList.add('generated');
      li.append(make('span', 'chip-text', showToken(label)), make('span', 'chip-id', String(id)));
      const kind = special ? 'special token' : isRole ? `chat role “${role}”` : i >= promptLength ? 'generated' : 'prompt';
      li.setAttribute('aria-label', `token ${i}: ${showToken(label)}, id ${id}, ${kind}${role && !special && !isRole ? `, in the ${role} turn` : ''}`);
      list.append(li);
    });
    const lead = make('p', 'teach-lead', `${seq.ids.length} tokens: ${promptLength} read from the prompt (${specials} special), ${seq.ids.length - promptLength} generated. Each box is one token; the number under it is its id in the 49,152-token vocabulary. · marks a space, ↵ a newline.`);
    const key = make('p', 'hint token-key');
    key.append(make('span', 'chip special', 'special'), ' ', make('span', 'chip role', 'role'), ' ', make('span', 'chip', 'prompt'), ' ', make('span', 'chip generated', 'generated'));
    this.replaceChildren(lead, key, list);
  }
}

// ---------------------------------------------------------------- head statistics

const STAT_TEXT = {
  entropy: ['entropy', 'how spread out a row is (0 = one key; shown as a share of ln T)'],
  first: ['first token', 'weight on token 0 (an attention sink)'],
  previous: ['previous token', 'weight on token i−1'],
  self: ['itself', 'weight on token i'],
  same: ['same token', 'weight on keys with the query’s token id, itself included'],
};
const CELL = 11;

export class HeadStats extends HTMLElement {
  connectedCallback() {
    if (this.wired) return;
    this.wired = true;
    this.selected = { layer: 0, head: 0 };
    empty(this, 'Generate to compare the heads.');
  }

  /** data: {stats (Float32Array layers·heads·names), names, layers, heads, size}. */
  show(data, selected) {
    this.data = data;
    if (selected) this.selected = { ...selected };
    if (!data || data.size < 2) return empty(this, 'Generate to compare the heads.');
    const { names, layers, heads, size } = data;
    const value = (l, h, k) => data.stats[(l * heads + h) * names.length + k];
    const scale = (k) => (names[k] === 'entropy' ? Math.log(size) || 1 : 1);
    const lead = make('p', 'teach-lead', `Each head summarised over the ${size} tokens read (the mean over query rows 1…${size - 1}). One panel per statistic: layers down, heads across; brighter = more. Click a cell or use the arrow keys to show that head.`);
    const panels = make('div', 'stat-panels');
    this.canvases = names.map((name, k) => {
      const fig = make('figure', 'stat-panel');
      const canvas = make('canvas');
      canvas.tabIndex = 0;
      const w = 22 + heads * CELL;
      const h = 14 + layers * CELL;
      const ratio = window.devicePixelRatio || 1;
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
      canvas.style.width = `${w}px`;
      canvas.style.height = `${h}px`;
      canvas.setAttribute('role', 'img');
      canvas.setAttribute('aria-label', `${STAT_TEXT[name]?.[0] ?? name} of every head: ${layers} layers by ${heads} heads; arrow keys choose a head`);
      canvas.dataset.stat = name;
      const cap = make('figcaption', '');
      cap.append(make('strong', '', STAT_TEXT[name]?.[0] ?? name), make('span', 'hint', ` ${STAT_TEXT[name]?.[1] ?? ''}`));
      fig.append(canvas, cap);
      panels.append(fig);
      canvas.addEventListener('click', (e) => {
        const r = canvas.getBoundingClientRect();
        const head = Math.floor((e.clientX - r.left - 22) / CELL);
        const layer = Math.floor((e.clientY - r.top - 14) / CELL);
        if (head >= 0 && head < heads && layer >= 0 && layer < layers) this.select(layer, head);
      });
      canvas.addEventListener('keydown', (e) => {
        const c = { ...this.selected };
        if (e.key === 'ArrowUp') c.layer = Math.max(0, c.layer - 1);
        else if (e.key === 'ArrowDown') c.layer = Math.min(layers - 1, c.layer + 1);
        else if (e.key === 'ArrowLeft') c.head = Math.max(0, c.head - 1);
        else if (e.key === 'ArrowRight') c.head = Math.min(heads - 1, c.head + 1);
        else return;
        e.preventDefault();
        this.select(c.layer, c.head);
      });
      return { canvas, k, w, h, ratio };
    });
    // Kinds of heads, in words: the strongest examples of each statistic.
    const kinds = make('div', 'stat-kinds');
    names.forEach((name, k) => {
      const all = [];
      for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) all.push({ l, h, v: value(l, h, k) });
      all.sort((a, b) => (name === 'entropy' ? a.v - b.v : b.v - a.v));
      const p = make('p', '', `${name === 'entropy' ? 'most focused (lowest entropy)' : `most on the ${STAT_TEXT[name]?.[0] ?? name}`}: `);
      for (const { l, h, v } of all.slice(0, 3)) {
        const b = make('button', 'small', `L${l} H${h} · ${fmt(v, 2)}`);
        b.type = 'button';
        b.addEventListener('click', () => this.select(l, h));
        p.append(b, ' ');
      }
      kinds.append(p);
    });
    this.live = make('div', 'sr-only');
    this.live.setAttribute('aria-live', 'polite');
    this.replaceChildren(lead, panels, kinds, this.live);
    this.values = { value, scale };
    this.draw();
  }

  draw() {
    if (!this.canvases || !this.data) return;
    const { names, layers, heads } = this.data;
    const style = getComputedStyle(this);
    const muted = style.getPropertyValue('--muted').trim() || '#888';
    const mark = style.getPropertyValue('--mark').trim() || '#e5362b';
    for (const { canvas, k, w, h, ratio } of this.canvases) {
      const ctx = canvas.getContext('2d');
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, w, h);
      ctx.fillStyle = muted;
      ctx.font = '9px system-ui, sans-serif';
      ctx.textAlign = 'right';
      for (let l = 0; l < layers; l += 5) ctx.fillText(`L${l}`, 20, 14 + l * CELL + 8);
      ctx.textAlign = 'center';
      for (let hd = 0; hd < heads; hd++) ctx.fillText(String(hd), 22 + hd * CELL + CELL / 2, 10);
      for (let l = 0; l < layers; l++) {
        for (let hd = 0; hd < heads; hd++) {
          const t = Math.max(0, Math.min(1, this.values.value(l, hd, k) / this.values.scale(k)));
          const c = VIRIDIS[Math.round(t * 255)];
          ctx.fillStyle = `rgb(${c[0]},${c[1]},${c[2]})`;
          ctx.fillRect(22 + hd * CELL, 14 + l * CELL, CELL - 1, CELL - 1);
        }
      }
      ctx.strokeStyle = mark;
      ctx.lineWidth = 2;
      ctx.strokeRect(22 + this.selected.head * CELL - 1, 14 + this.selected.layer * CELL - 1, CELL + 1, CELL + 1);
      canvas.title = names[k];
    }
  }

  select(layer, head) {
    this.selected = { layer, head };
    this.draw();
    const { names } = this.data;
    this.live.textContent = `layer ${layer}, head ${head}: ${names.map((n, k) => `${STAT_TEXT[n]?.[0] ?? n} ${fmt(this.values.value(layer, head, k), 3)}`).join(', ')}`;
    this.dispatchEvent(new CustomEvent('headselect', { detail: { layer, head }, bubbles: true }));
  }
}

// ---------------------------------------------------------------- legend

export class ScaleLegend extends HTMLElement {
  connectedCallback() {
    if (this.wired) return;
    this.wired = true;
    const bar = make('div', 'legend');
    this.low = make('span', '', '0');
    this.canvas = make('canvas');
    this.canvas.width = 200;
    this.canvas.height = 10;
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'colour scale: viridis, dark purple for 0 through green to yellow for the largest weight');
    this.high = make('span', '', 'max');
    bar.append(this.low, this.canvas, this.high);
    this.note = make('p', 'hint legend-note');
    this.replaceChildren(bar, this.note);
    const ctx = this.canvas.getContext('2d');
    for (let x = 0; x < this.canvas.width; x++) {
      const [r, g, b] = VIRIDIS[Math.round((x / (this.canvas.width - 1)) * 255)];
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(x, 0, 1, this.canvas.height);
    }
    this.show({ sink: 'show' });
  }

  /** max: the weight drawn as yellow (null: unknown yet); sink: 'show' | 'hide' | 'clip'. */
  show({ max = null, sink = 'show' }) {
    if (!this.wired) return;
    const m = max === null ? 'max' : max.toFixed(3);
    this.high.textContent = sink === 'hide' ? `${m} (rescaled rows)` : sink === 'clip' ? `${m} (largest outside the first column)` : m;
    this.note.textContent = `Colour scale: viridis (perceptually uniform, colour-blind safe). ${SINK_MODES[sink] ?? SINK_MODES.show}.`;
  }
}

customElements.define('attention-steps', AttentionSteps);
customElements.define('prediction-table', PredictionTable);
customElements.define('logit-lens', LogitLens);
customElements.define('token-list', TokenList);
customElements.define('head-stats', HeadStats);
customElements.define('scale-legend', ScaleLegend);
