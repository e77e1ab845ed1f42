// <attention-heatmap>: one layer/head pattern as a grid of cells, queries down, keys across.
// Labels on both axes, viridis colours, and a hover or keyboard cursor that shows the exact weight
// and the two tokens.
//
// Windowed drawing, so 500+ tokens stay readable: the pattern is kept as an n × n image (one pixel
// per cell) and the canvas is only as large as the visible part of the scroll box. Scrolling pans
// over a spacer of the full size; each paint copies the visible cells, magnified without smoothing,
// and draws the labels of the visible rows and columns in bands that stay on the left and top
// edges. At scroll (0, 0) canvas coordinates are content coordinates: cell (i, j) is at
// (left + j·cell, top + i·cell).

import { displayMatrix, showToken, toPixels } from '../heatmap.js';

const LABEL_W = 110; // CSS px for the token labels on each axis
const MIN_LABEL_CELL = 9; // below this cell size the labels would overlap: they are left out
const PAD = 4;

export class AttentionHeatmap extends HTMLElement {
  constructor() {
    super();
    this.data = null; // {tokens, weights: Float32Array T×T, size: T, layer, head}
    this.cursor = null; // {i, j} chosen with the keyboard
    this.hovered = null; // {i, j} under the mouse
    this.cell = 16;
    this.sink = 'show';
    this.frame = 0;
  }

  connectedCallback() {
    if (this.canvas) return;
    this.scroller = document.createElement('div');
    this.scroller.className = 'heatmap-scroll';
    const stage = document.createElement('div');
    stage.className = 'heatmap-stage';
    this.canvas = document.createElement('canvas');
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-roledescription', 'attention heatmap');
    this.canvas.setAttribute('aria-label', 'attention heatmap; focus it and use the arrow keys to read the weights cell by cell');
    this.sizer = document.createElement('div');
    this.sizer.className = 'heatmap-sizer';
    stage.append(this.canvas, this.sizer);
    this.scroller.append(stage);
    this.tip = document.createElement('div');
    this.tip.className = 'tooltip';
    this.tip.hidden = true;
    this.live = document.createElement('div');
    this.live.className = 'sr-only';
    this.live.setAttribute('aria-live', 'polite');
    this.replaceChildren(this.scroller, this.tip, this.live);
    this.canvas.addEventListener('mousemove', (e) => this.hover(e));
    this.canvas.addEventListener('mouseleave', () => {
      this.hovered = null;
      this.tip.hidden = true;
      this.paint();
    });
    this.canvas.addEventListener('keydown', (e) => this.key(e));
    this.canvas.addEventListener('click', (e) => {
      const c = this.cellAt(e);
      if (c) this.moveTo(c.i, c.j);
    });
    this.canvas.addEventListener('focus', () => {
      if (!this.cursor && this.data?.size) this.moveTo(this.data.size - 1, 0);
    });
    this.canvas.addEventListener('blur', () => { this.tip.hidden = true; });
    this.scroller.addEventListener('scroll', () => {
      this.tip.hidden = true;
      this.schedulePaint();
    });
    // A narrower or wider column (a phone turned, a panel resized) changes the visible window.
    new ResizeObserver(() => this.fit()).observe(this.scroller);
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

  /** 'show', 'hide' or 'clip' (heatmap.js SINK_MODES). */
  setSink(mode) {
    this.sink = mode;
    this.draw();
  }

  /** Renders the pattern image and the layout (on data, zoom, sink or theme changes), then paints. */
  draw() {
    if (!this.canvas) return;
    const d = this.data;
    const style = getComputedStyle(this);
    this.colours = {
      fg: style.getPropertyValue('--fg').trim() || '#222',
      muted: style.getPropertyValue('--muted').trim() || '#888',
      mark: style.getPropertyValue('--mark').trim() || '#e5362b',
    };
    if (!d || !d.size) {
      this.layout = null;
      this.cells = null;
      this.display = null;
      this.sizer.style.width = '320px';
      this.sizer.style.height = '60px';
      this.fit();
      return;
    }
    const n = d.size;
    const cell = Math.max(1, this.cell);
    const labels = cell >= MIN_LABEL_CELL;
    const left = labels ? LABEL_W : PAD;
    const top = labels ? LABEL_W : PAD;
    const w = left + n * cell + PAD;
    const h = top + n * cell + PAD;
    this.layout = { left, top, cell, n, w, h, labels, ratio: window.devicePixelRatio || 1 };
    const { values, max } = displayMatrix(d.weights, n, { sink: this.sink });
    this.display = { values, max };
    this.cells = new OffscreenCanvas(n, n);
    this.cells.getContext('2d').putImageData(new ImageData(toPixels(values, n, max), n, n), 0, 0);
    this.sizer.style.width = `${w}px`;
    this.sizer.style.height = `${h}px`;
    this.canvas.setAttribute('aria-label', `attention heatmap of layer ${d.layer}, head ${d.head}: ${n} tokens; focus it and use the arrow keys to read the weights cell by cell`);
    this.fit();
  }

  /** Sizes the canvas to the visible part of the scroll box, then paints. */
  fit() {
    if (!this.canvas) return;
    const w = parseFloat(this.sizer.style.width) || 320;
    const h = parseFloat(this.sizer.style.height) || 60;
    const viewW = Math.max(1, Math.min(w, this.scroller.clientWidth || w));
    const viewH = Math.max(1, Math.min(h, this.scroller.clientHeight || h));
    const ratio = window.devicePixelRatio || 1;
    if (this.layout) this.layout.ratio = ratio;
    this.view = { w: viewW, h: viewH };
    const bw = Math.round(viewW * ratio);
    const bh = Math.round(viewH * ratio);
    if (this.canvas.width !== bw || this.canvas.height !== bh) {
      this.canvas.width = bw;
      this.canvas.height = bh;
    }
    this.canvas.style.width = `${viewW}px`;
    this.canvas.style.height = `${viewH}px`;
    this.paint();
  }

  schedulePaint() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.paint();
    });
  }

  /** The visible cells, the axis labels of the visible rows and columns, and the marks. */
  paint() {
    if (!this.canvas || !this.view) return;
    const ratio = window.devicePixelRatio || 1;
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, this.view.w, this.view.h);
    if (!this.layout || !this.cells) {
      ctx.fillStyle = this.colours?.muted ?? '#888';
      ctx.font = '14px system-ui, sans-serif';
      ctx.fillText('Generate to see attention.', 12, 34);
      return;
    }
    const { left, top, cell, n, labels } = this.layout;
    const { w: vw, h: vh } = this.view;
    const sx = this.scroller.scrollLeft;
    const sy = this.scroller.scrollTop;
    const j0 = Math.max(0, Math.floor(sx / cell));
    const j1 = Math.min(n, Math.ceil((sx + vw - left) / cell));
    const i0 = Math.max(0, Math.floor(sy / cell));
    const i1 = Math.min(n, Math.ceil((sy + vh - top) / cell));
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, vw - left, vh - top);
    ctx.clip();
    if (j1 > j0 && i1 > i0) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(this.cells, j0, i0, j1 - j0, i1 - i0, left + j0 * cell - sx, top + i0 * cell - sy, (j1 - j0) * cell, (i1 - i0) * cell);
    }
    ctx.strokeStyle = this.colours.mark;
    for (const c of [this.hovered, this.cursor]) {
      if (!c) continue;
      ctx.lineWidth = 2;
      ctx.strokeRect(left + c.j * cell - sx, top + c.i * cell - sy, cell, cell);
    }
    ctx.restore();
    if (labels) {
      ctx.fillStyle = this.colours.fg;
      ctx.font = `${Math.min(12, cell - 2)}px ui-monospace, monospace`;
      ctx.textBaseline = 'middle';
      ctx.save();
      ctx.beginPath();
      ctx.rect(0, top, left, vh - top);
      ctx.clip();
      ctx.textAlign = 'right';
      for (let i = i0; i < i1; i++) ctx.fillText(clip(showToken(this.data.tokens[i] ?? ''), 14), left - 4, top + i * cell - sy + cell / 2);
      ctx.restore();
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, 0, vw - left, top);
      ctx.clip();
      ctx.textAlign = 'left';
      for (let j = j0; j < j1; j++) {
        ctx.save();
        ctx.translate(left + j * cell - sx + cell / 2, top - 4);
        ctx.rotate(-Math.PI / 3);
        ctx.fillText(clip(showToken(this.data.tokens[j] ?? ''), 14), 0, 0);
        ctx.restore();
      }
      ctx.restore();
    }
    // Ticks on both axes point at the marked query's row and key's column.
    ctx.strokeStyle = this.colours.mark;
    ctx.lineWidth = 2;
    ctx.beginPath();
    for (const c of [this.hovered, this.cursor]) {
      if (!c) continue;
      const y = top + c.i * cell - sy + cell / 2;
      const x = left + c.j * cell - sx + cell / 2;
      if (y >= top && y <= vh) ctx.moveTo(left - 3, y), ctx.lineTo(left, y);
      if (x >= left && x <= vw) ctx.moveTo(x, top - 3), ctx.lineTo(x, top);
    }
    ctx.stroke();
  }

  cellAt(e) {
    if (!this.layout) return null;
    const r = this.canvas.getBoundingClientRect();
    const { left, top, cell, n } = this.layout;
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    if (x < left || y < top) return null;
    const j = Math.floor((x - left + this.scroller.scrollLeft) / cell);
    const i = Math.floor((y - top + this.scroller.scrollTop) / cell);
    return i >= 0 && j >= 0 && i < n && j < n ? { i, j } : null;
  }

  describe({ i, j }) {
    const d = this.data;
    const q = showToken(d.tokens[i] ?? '');
    const k = showToken(d.tokens[j] ?? '');
    if (j > i) return `“${q}” (#${i}) cannot see “${k}” (#${j}): it comes later`;
    const w = d.weights[i * d.size + j];
    let text = `“${q}” (#${i}) attends to “${k}” (#${j}): ${w.toFixed(4)}`;
    if (this.sink === 'hide' && j > 0) text += `\nrescaled without the first token: ${this.display.values[i * d.size + j].toFixed(4)}`;
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
    const { left, top, cell } = this.layout;
    const { w: vw, h: vh } = this.view;
    // Keep the cursor's cell inside the window, clear of the label bands.
    const x = j * cell;
    const y = i * cell;
    if (x < this.scroller.scrollLeft) this.scroller.scrollLeft = x;
    else if (x + cell > this.scroller.scrollLeft + vw - left) this.scroller.scrollLeft = x + cell - (vw - left);
    if (y < this.scroller.scrollTop) this.scroller.scrollTop = y;
    else if (y + cell > this.scroller.scrollTop + vh - top) this.scroller.scrollTop = y + cell - (vh - top);
    this.paint();
    this.live.textContent = this.describe(this.cursor);
    this.tip.textContent = this.live.textContent;
    this.placeTip(left + x - this.scroller.scrollLeft + cell + 8, top + y - this.scroller.scrollTop + cell + 8);
    this.dispatchEvent(new CustomEvent('cellhover', { detail: this.cursor, bubbles: true }));
    this.dispatchEvent(new CustomEvent('cellselect', { detail: this.cursor, bubbles: true }));
  }

  key(e) {
    if (!this.data?.size) return;
    const c = this.cursor ?? { i: this.data.size - 1, j: 0 };
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1], Home: [0, -Infinity], End: [0, Infinity], PageUp: [-10, 0], PageDown: [10, 0] };
    if ((e.ctrlKey || e.metaKey) && (e.key === 'Home' || e.key === 'End')) {
      e.preventDefault();
      const k = e.key === 'Home' ? 0 : this.data.size - 1;
      this.moveTo(k, k);
      return;
    }
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
