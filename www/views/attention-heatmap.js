// <attention-heatmap>: one layer/head pattern as a grid of cells, queries down, keys across.
// Labels on both axes, viridis colours, hover or keyboard cursor shows the exact weight and the
// two tokens. Zoom changes the cell size; the element scrolls for long sequences.

import { displayMatrix, showToken, toPixels } from '../heatmap.js';

const LABEL_W = 110;

export class AttentionHeatmap extends HTMLElement {
  constructor() {
    super();
    this.data = null;
    this.cursor = null;
    this.cell = 16;
    this.hideSink = false;
  }

  connectedCallback() {
    if (this.canvas) return;
    this.innerHTML = '';
    this.scroller = document.createElement('div');
    this.scroller.className = 'heatmap-scroll';
    this.canvas = document.createElement('canvas');
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'attention heatmap: use the arrow keys to move between cells');
    this.tip = document.createElement('div');
    this.tip.className = 'tooltip';
    this.tip.hidden = true;
    this.live = document.createElement('div');
    this.live.className = 'sr-only';
    this.live.setAttribute('aria-live', 'polite');
    this.scroller.append(this.canvas);
    this.append(this.scroller, this.tip, this.live);
    this.canvas.addEventListener('mousemove', (e) => this.hover(e));
    this.canvas.addEventListener('mouseleave', () => { this.tip.hidden = true; });
    this.canvas.addEventListener('keydown', (e) => this.key(e));
    this.canvas.addEventListener('focus', () => { if (!this.cursor && this.data?.size) this.moveTo(this.data.size - 1, 0); });
  }

  /** data: {tokens, weights: Float32Array (size×size), size, layer, head} */
  show(data) {
    this.data = data;
    if (this.cursor && data && (this.cursor.i >= data.size)) this.cursor = null;
    this.draw();
  }

  setZoom(cell) {
    this.cell = cell;
    this.draw();
  }

  setHideSink(hide) {
    this.hideSink = hide;
    this.draw();
  }

  draw() {
    const d = this.data;
    const ctx = this.canvas.getContext('2d');
    if (!d || !d.size) {
      this.canvas.width = 300;
      this.canvas.height = 60;
      ctx.fillStyle = getComputedStyle(this).getPropertyValue('--muted') || '#888';
      ctx.font = '14px system-ui, sans-serif';
      ctx.fillText('Generate to see attention.', 10, 30);
      return;
    }
    const n = d.size;
    const cell = this.cell;
    const showLabels = cell >= 9;
    const left = showLabels ? LABEL_W : 4;
    const top = showLabels ? LABEL_W : 4;
    const ratio = window.devicePixelRatio || 1;
    const w = left + n * cell + 4;
    const h = top + n * cell + 4;
    this.canvas.width = Math.round(w * ratio);
    this.canvas.height = Math.round(h * ratio);
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${h}px`;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const { values, max } = displayMatrix(d.weights, n, { hideSink: this.hideSink });
    this.display = { values, max };
    const img = new ImageData(toPixels(values, n, max), n, n);
    const off = new OffscreenCanvas(n, n);
    off.getContext('2d').putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, left, top, n * cell, n * cell);
    this.layout = { left, top, cell, n };
    if (showLabels) {
      const style = getComputedStyle(this);
      ctx.fillStyle = style.getPropertyValue('--fg').trim() || '#222';
      ctx.font = `${Math.min(12, cell - 2)}px ui-monospace, monospace`;
      ctx.textBaseline = 'middle';
      for (let i = 0; i < n; i++) {
        const label = clip(showToken(d.tokens[i] ?? ''), 14);
        ctx.textAlign = 'right';
        ctx.fillText(label, left - 4, top + i * cell + cell / 2);
        ctx.save();
        ctx.translate(left + i * cell + cell / 2, top - 4);
        ctx.rotate(-Math.PI / 3);
        ctx.textAlign = 'left';
        ctx.fillText(label, 0, 0);
        ctx.restore();
      }
    }
    if (this.cursor) {
      ctx.strokeStyle = '#ff3b30';
      ctx.lineWidth = 2;
      ctx.strokeRect(left + this.cursor.j * cell, top + this.cursor.i * cell, cell, cell);
    }
  }

  cellAt(e) {
    if (!this.layout) return null;
    const r = this.canvas.getBoundingClientRect();
    const { left, top, cell, n } = this.layout;
    const j = Math.floor((e.clientX - r.left - left) / cell);
    const i = Math.floor((e.clientY - r.top - top) / cell);
    return i >= 0 && j >= 0 && i < n && j < n ? { i, j } : null;
  }

  describe({ i, j }) {
    const d = this.data;
    const q = showToken(d.tokens[i]);
    const k = showToken(d.tokens[j]);
    if (j > i) return `“${q}” (#${i}) cannot see “${k}” (#${j}): it comes later`;
    const w = d.weights[i * d.size + j];
    let text = `“${q}” (#${i}) → “${k}” (#${j}): ${w.toFixed(4)}`;
    if (this.hideSink && j > 0) text += ` (rescaled without the first token: ${this.display.values[i * d.size + j].toFixed(4)})`;
    return text;
  }

  hover(e) {
    const c = this.cellAt(e);
    if (!c) {
      this.tip.hidden = true;
      return;
    }
    this.tip.textContent = this.describe(c);
    this.tip.hidden = false;
    const host = this.getBoundingClientRect();
    this.tip.style.left = `${e.clientX - host.left + 12}px`;
    this.tip.style.top = `${e.clientY - host.top + 12}px`;
    this.dispatchEvent(new CustomEvent('cellhover', { detail: c, bubbles: true }));
  }

  moveTo(i, j) {
    const n = this.data.size;
    i = Math.max(0, Math.min(n - 1, i));
    j = Math.max(0, Math.min(i, j));
    this.cursor = { i, j };
    this.draw();
    this.live.textContent = this.describe(this.cursor);
    this.tip.textContent = this.live.textContent;
    this.tip.hidden = false;
    const { left, top, cell } = this.layout;
    this.tip.style.left = `${Math.min(left + (j + 1) * cell, this.scroller.clientWidth - 40) - this.scroller.scrollLeft + 8}px`;
    this.tip.style.top = `${top + (i + 1) * cell - this.scroller.scrollTop + 8}px`;
    this.dispatchEvent(new CustomEvent('cellhover', { detail: this.cursor, bubbles: true }));
  }

  key(e) {
    if (!this.data?.size) return;
    const c = this.cursor ?? { i: this.data.size - 1, j: 0 };
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1], Home: [0, -1e9], End: [0, 1e9] };
    const m = moves[e.key];
    if (!m) return;
    e.preventDefault();
    this.moveTo(c.i + m[0], c.j + m[1]);
  }
}

function clip(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

customElements.define('attention-heatmap', AttentionHeatmap);
