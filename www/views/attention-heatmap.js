// <attention-heatmap>: one layer/head pattern as a grid of cells, queries down, keys across.
// Labels on both axes, viridis colours, and a hover or keyboard cursor that shows the exact weight
// and the two tokens. The pattern and its labels are rendered once per change into an offscreen
// canvas; moving the cursor only repaints that image plus the marks, so hovering stays cheap at
// 512 × 512 cells.

import { displayMatrix, showToken, toPixels } from '../heatmap.js';

const LABEL_W = 110; // CSS px for the token labels on each axis
const MAX_SIDE = 3000; // CSS px: long sequences get smaller cells instead of a huge canvas
const MAX_BACKING = 4096; // device px per side of the canvas' backing store
const MIN_LABEL_CELL = 9; // below this cell size the labels would overlap: they are left out

export class AttentionHeatmap extends HTMLElement {
  constructor() {
    super();
    this.data = null; // {tokens, weights: Float32Array T×T, size: T, layer, head}
    this.cursor = null; // {i, j} chosen with the keyboard
    this.hovered = null; // {i, j} under the mouse
    this.cell = 16;
    this.hideSink = false;
  }

  connectedCallback() {
    if (this.canvas) return;
    this.scroller = document.createElement('div');
    this.scroller.className = 'heatmap-scroll';
    this.canvas = document.createElement('canvas');
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'attention heatmap; focus it and use the arrow keys to read the weights cell by cell');
    this.tip = document.createElement('div');
    this.tip.className = 'tooltip';
    this.tip.hidden = true;
    this.live = document.createElement('div');
    this.live.className = 'sr-only';
    this.live.setAttribute('aria-live', 'polite');
    this.scroller.append(this.canvas);
    this.replaceChildren(this.scroller, this.tip, this.live);
    this.canvas.addEventListener('mousemove', (e) => this.hover(e));
    this.canvas.addEventListener('mouseleave', () => {
      this.hovered = null;
      this.tip.hidden = true;
      this.paint();
    });
    this.canvas.addEventListener('keydown', (e) => this.key(e));
    this.canvas.addEventListener('focus', () => {
      if (!this.cursor && this.data?.size) this.moveTo(this.data.size - 1, 0);
    });
    this.canvas.addEventListener('blur', () => { this.tip.hidden = true; });
  }

  show(data) {
    this.data = data;
    if (this.cursor && (!data || this.cursor.i >= data.size)) this.cursor = null;
    if (this.hovered && (!data || this.hovered.i >= data.size)) this.hovered = null;
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

  /** Renders the pattern and labels (on data, zoom, sink or theme changes), then paints. */
  draw() {
    if (!this.canvas) return;
    const d = this.data;
    const style = getComputedStyle(this);
    const fg = style.getPropertyValue('--fg').trim() || '#222';
    const muted = style.getPropertyValue('--muted').trim() || '#888';
    this.mark = style.getPropertyValue('--mark').trim() || '#e5362b';
    if (!d || !d.size) {
      this.layout = null;
      this.base = null;
      const ratio = window.devicePixelRatio || 1;
      this.canvas.width = 320 * ratio;
      this.canvas.height = 60 * ratio;
      this.canvas.style.width = '320px';
      this.canvas.style.height = '60px';
      const ctx = this.canvas.getContext('2d');
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.fillStyle = muted;
      ctx.font = '14px system-ui, sans-serif';
      ctx.fillText('Generate to see attention.', 12, 34);
      return;
    }
    const n = d.size;
    const cell = Math.max(1, Math.min(this.cell, Math.floor(MAX_SIDE / n)));
    const labels = cell >= MIN_LABEL_CELL;
    const left = labels ? LABEL_W : 4;
    const top = labels ? LABEL_W : 4;
    const w = left + n * cell + 4;
    const h = top + n * cell + 4;
    const ratio = Math.min(window.devicePixelRatio || 1, MAX_BACKING / Math.max(w, h));
    this.layout = { left, top, cell, n, w, h, ratio };

    const base = new OffscreenCanvas(Math.round(w * ratio), Math.round(h * ratio));
    const ctx = base.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const { values, max } = displayMatrix(d.weights, n, { hideSink: this.hideSink });
    this.display = { values, max };
    const cells = new OffscreenCanvas(n, n);
    cells.getContext('2d').putImageData(new ImageData(toPixels(values, n, max), n, n), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(cells, left, top, n * cell, n * cell);
    if (labels) {
      ctx.fillStyle = fg;
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
    this.base = base;
    this.canvas.width = base.width;
    this.canvas.height = base.height;
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${h}px`;
    this.canvas.setAttribute('aria-label', `attention heatmap of layer ${d.layer}, head ${d.head}: ${n} tokens; focus it and use the arrow keys to read the weights cell by cell`);
    this.paint();
  }

  /** The rendered pattern plus the hover and keyboard marks. */
  paint() {
    if (!this.base || !this.layout) return;
    const { left, top, cell, ratio } = this.layout;
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.drawImage(this.base, 0, 0);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.strokeStyle = this.mark;
    for (const c of [this.hovered, this.cursor]) {
      if (!c) continue;
      ctx.lineWidth = 2;
      ctx.strokeRect(left + c.j * cell, top + c.i * cell, cell, cell);
      // Ticks on both axes point at the query's row and the key's column.
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(left - 3, top + c.i * cell + cell / 2);
      ctx.lineTo(left + c.j * cell, top + c.i * cell + cell / 2);
      ctx.moveTo(left + c.j * cell + cell / 2, top - 3);
      ctx.lineTo(left + c.j * cell + cell / 2, top + c.i * cell);
      ctx.stroke();
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
    const q = showToken(d.tokens[i] ?? '');
    const k = showToken(d.tokens[j] ?? '');
    if (j > i) return `“${q}” (#${i}) cannot see “${k}” (#${j}): it comes later`;
    const w = d.weights[i * d.size + j];
    let text = `“${q}” (#${i}) attends to “${k}” (#${j}): ${w.toFixed(4)}`;
    if (this.hideSink && j > 0) text += `\nrescaled without the first token: ${this.display.values[i * d.size + j].toFixed(4)}`;
    return text;
  }

  placeTip(x, y) {
    const host = this.getBoundingClientRect();
    this.tip.hidden = false;
    const maxX = host.width - Math.min(this.tip.offsetWidth, host.width) - 4;
    this.tip.style.left = `${Math.max(0, Math.min(x, maxX))}px`;
    this.tip.style.top = `${y}px`;
  }

  hover(e) {
    const c = this.cellAt(e);
    const same = c && this.hovered && c.i === this.hovered.i && c.j === this.hovered.j;
    if (!c) {
      this.tip.hidden = true;
      if (this.hovered) {
        this.hovered = null;
        this.paint();
      }
      return;
    }
    const host = this.getBoundingClientRect();
    if (!same) {
      this.hovered = c;
      this.tip.textContent = this.describe(c);
      this.paint();
      this.dispatchEvent(new CustomEvent('cellhover', { detail: c, bubbles: true }));
    }
    this.placeTip(e.clientX - host.left + 14, e.clientY - host.top + 14);
  }

  moveTo(i, j) {
    const n = this.data.size;
    i = Math.max(0, Math.min(n - 1, i));
    j = Math.max(0, Math.min(i, j));
    this.cursor = { i, j };
    this.paint();
    this.live.textContent = this.describe(this.cursor);
    this.tip.textContent = this.live.textContent;
    const { left, top, cell } = this.layout;
    const x = left + (j + 1) * cell;
    const y = top + (i + 1) * cell;
    // Keep the cursor in view when the heatmap scrolls.
    if (x > this.scroller.scrollLeft + this.scroller.clientWidth || x - cell < this.scroller.scrollLeft) this.scroller.scrollLeft = x - this.scroller.clientWidth / 2;
    if (y > this.scroller.scrollTop + this.scroller.clientHeight || y - cell < this.scroller.scrollTop) this.scroller.scrollTop = y - this.scroller.clientHeight / 2;
    this.placeTip(x - this.scroller.scrollLeft + 8, y - this.scroller.scrollTop + 8);
    this.dispatchEvent(new CustomEvent('cellhover', { detail: this.cursor, bubbles: true }));
  }

  key(e) {
    if (!this.data?.size) return;
    const c = this.cursor ?? { i: this.data.size - 1, j: 0 };
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1], Home: [0, -Infinity], End: [0, Infinity], PageUp: [-10, 0], PageDown: [10, 0] };
    const m = moves[e.key];
    if (!m) return;
    e.preventDefault();
    this.moveTo(c.i + m[0], Math.max(-1, Math.min(1e9, c.j + m[1])));
  }
}

function clip(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

customElements.define('attention-heatmap', AttentionHeatmap);
