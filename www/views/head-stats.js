// <head-stats>: every head summarised (Engine.head_stats: entropy, weight on the first, previous,
// same-position and same-id tokens) as one small layers × heads chart per statistic, plus the
// strongest examples in words, so kinds of heads can be found and taught. Click or arrow keys.

import { VIRIDIS } from '../heatmap.js';
import { empty, fmt, make } from './teach-dom.js';

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
    if (selected) this.selected = { ...selected };
    if (this.canvases && sameStats(this.data, data)) {
      // Only the chosen head moved (a click or an arrow key here, or the app's selectors): keep
      // the charts, and with them the keyboard focus, and move the mark.
      this.draw();
      return;
    }
    this.data = data;
    this.canvases = null;
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

const sameStats = (a, b) => !!a && !!b && a.size === b.size && a.stats.length === b.stats.length && a.stats.every((v, i) => v === b.stats[i]);

customElements.define('head-stats', HeadStats);
