// <head-grid>: every layer × head as a small thumbnail (max-pooled by the engine), so heads that
// look at the previous token (a bright sub-diagonal), at the first token (a bright left column)
// or at matching tokens stand out. Columns are grouped by the key/value head the query heads
// share (grouped-query attention), with a wider gap between groups. Click or use the arrow keys.

import { toPixels } from '../heatmap.js';

const GAP = 3; // px between thumbnails
const GROUP_GAP = 10; // px between key/value groups
const LABEL_W = 30;
const LABEL_H = 30;

export class HeadGrid extends HTMLElement {
  connectedCallback() {
    if (this.canvas) return;
    this.canvas = document.createElement('canvas');
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'all heads of all layers; the arrow keys choose the layer (up, down) and the head (left, right)');
    this.live = document.createElement('div');
    this.live.className = 'sr-only';
    this.live.setAttribute('aria-live', 'polite');
    this.replaceChildren(this.canvas, this.live);
    this.canvas.addEventListener('click', (e) => {
      const hit = this.hit(e);
      if (hit) this.select(hit.layer, hit.head);
    });
    this.canvas.addEventListener('keydown', (e) => this.key(e));
    this.selected = { layer: 0, head: 0 };
  }

  /** data: {weights (layers·heads·size²), size, layers, heads}; kvHeads: key/value heads. */
  show(data, selected, kvHeads = data?.heads) {
    this.data = data;
    this.kvHeads = kvHeads;
    if (selected) this.selected = { ...selected };
    this.draw();
  }

  columnX(head) {
    const group = this.data.heads / this.kvHeads;
    return LABEL_W + head * (this.data.size + GAP) + Math.floor(head / group) * GROUP_GAP;
  }

  rowY(layer) {
    return LABEL_H + layer * (this.data.size + GAP);
  }

  draw() {
    const d = this.data;
    if (!this.canvas) return;
    if (!d) {
      this.canvas.width = 0;
      this.canvas.height = 0;
      this.canvas.style.width = '0px';
      this.canvas.style.height = '0px';
      return;
    }
    const { size, layers, heads } = d;
    const group = heads / this.kvHeads;
    const w = this.columnX(heads - 1) + size + 2;
    const h = this.rowY(layers - 1) + size + 2;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(w * ratio);
    this.canvas.height = Math.round(h * ratio);
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${h}px`;
    const style = getComputedStyle(this);
    const muted = style.getPropertyValue('--muted').trim() || '#888';
    const mark = style.getPropertyValue('--mark').trim() || '#e5362b';
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = muted;
    ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'center';
    for (let kv = 0; kv < this.kvHeads; kv++) {
      const x0 = this.columnX(kv * group);
      const x1 = this.columnX((kv + 1) * group - 1) + size;
      ctx.fillText(`KV head ${kv}`, (x0 + x1) / 2, 10);
      ctx.fillRect(x0, 14, x1 - x0, 1);
    }
    for (let hd = 0; hd < heads; hd++) ctx.fillText(`h${hd}`, this.columnX(hd) + size / 2, 26);
    ctx.textAlign = 'right';
    const thumb = new OffscreenCanvas(size, size);
    const tctx = thumb.getContext('2d');
    for (let l = 0; l < layers; l++) {
      ctx.fillText(`L${l}`, LABEL_W - 4, this.rowY(l) + size / 2 + 3);
      for (let hd = 0; hd < heads; hd++) {
        const base = (l * heads + hd) * size * size;
        const values = d.weights.subarray(base, base + size * size);
        let max = 0;
        for (const v of values) if (v > max) max = v;
        // Each thumbnail is scaled to its own maximum: the grid compares shapes, not strengths.
        tctx.putImageData(new ImageData(toPixels(values, size, max || 1, [40, 40, 40, 255]), size, size), 0, 0);
        ctx.drawImage(thumb, this.columnX(hd), this.rowY(l));
      }
    }
    ctx.lineWidth = 2;
    ctx.strokeStyle = mark;
    const s = this.selected;
    ctx.strokeRect(this.columnX(s.head) - 1, this.rowY(s.layer) - 1, size + 2, size + 2);
  }

  hit(e) {
    const d = this.data;
    if (!d) return null;
    const r = this.canvas.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    const layer = Math.floor((y - LABEL_H) / (d.size + GAP));
    for (let head = 0; head < d.heads; head++) {
      const x0 = this.columnX(head);
      if (x >= x0 && x < x0 + d.size + GAP && layer >= 0 && layer < d.layers) return { layer, head };
    }
    return null;
  }

  select(layer, head) {
    this.selected = { layer, head };
    this.draw();
    this.live.textContent = `showing layer ${layer}, head ${head}`;
    this.dispatchEvent(new CustomEvent('headselect', { detail: { layer, head }, bubbles: true }));
  }

  key(e) {
    const d = this.data;
    if (!d) return;
    const c = { ...this.selected };
    if (e.key === 'ArrowUp') c.layer = Math.max(0, c.layer - 1);
    else if (e.key === 'ArrowDown') c.layer = Math.min(d.layers - 1, c.layer + 1);
    else if (e.key === 'ArrowLeft') c.head = Math.max(0, c.head - 1);
    else if (e.key === 'ArrowRight') c.head = Math.min(d.heads - 1, c.head + 1);
    else return;
    e.preventDefault();
    this.select(c.layer, c.head);
  }
}

customElements.define('head-grid', HeadGrid);
