// <head-grid>: every layer × head as a small thumbnail (max-pooled by the worker), so heads that
// look at the previous token (a bright sub-diagonal), at the first token (a bright left column)
// or at matching tokens stand out. Click or Enter selects; arrow keys move.

import { toPixels } from '../heatmap.js';

export class HeadGrid extends HTMLElement {
  connectedCallback() {
    if (this.canvas) return;
    this.canvas = document.createElement('canvas');
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute('role', 'grid');
    this.canvas.setAttribute('aria-label', 'all heads: arrow keys move, Enter selects');
    this.live = document.createElement('div');
    this.live.className = 'sr-only';
    this.live.setAttribute('aria-live', 'polite');
    this.append(this.canvas, this.live);
    this.canvas.addEventListener('click', (e) => {
      const hit = this.hit(e);
      if (hit) this.select(hit.layer, hit.head);
    });
    this.canvas.addEventListener('keydown', (e) => this.key(e));
    this.selected = { layer: 0, head: 0 };
  }

  /** data: {weights (layers·heads·size²), size, layers, heads} */
  show(data, selected) {
    this.data = data;
    if (selected) this.selected = selected;
    this.draw();
  }

  draw() {
    const d = this.data;
    if (!d) return;
    const { size, layers, heads } = d;
    const thumb = size;
    const gap = 3;
    const labelW = 28;
    const labelH = 16;
    const w = labelW + heads * (thumb + gap);
    const h = labelH + layers * (thumb + gap);
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = w * ratio;
    this.canvas.height = h * ratio;
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${h}px`;
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = getComputedStyle(this).getPropertyValue('--muted').trim() || '#888';
    ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'center';
    for (let hd = 0; hd < heads; hd++) ctx.fillText(`h${hd}`, labelW + hd * (thumb + gap) + thumb / 2, 11);
    ctx.textAlign = 'right';
    const off = new OffscreenCanvas(size, size);
    const octx = off.getContext('2d');
    for (let l = 0; l < layers; l++) {
      ctx.fillText(`L${l}`, labelW - 4, labelH + l * (thumb + gap) + thumb / 2 + 3);
      for (let hd = 0; hd < heads; hd++) {
        const base = (l * heads + hd) * size * size;
        const values = d.weights.subarray(base, base + size * size);
        let max = 0;
        for (const v of values) if (v > max) max = v;
        // Thumbnails are max-pooled, so the diagonal stays visible; the mask is drawn as the
        // lower triangle only when the pooled grid is square in tokens.
        octx.putImageData(new ImageData(toPixels(values, size, max || 1, [40, 40, 40, 255]), size, size), 0, 0);
        ctx.drawImage(off, labelW + hd * (thumb + gap), labelH + l * (thumb + gap), thumb, thumb);
      }
    }
    const s = this.selected;
    ctx.strokeStyle = '#ff3b30';
    ctx.lineWidth = 2;
    ctx.strokeRect(labelW + s.head * (thumb + gap) - 1, labelH + s.layer * (thumb + gap) - 1, thumb + 2, thumb + 2);
    this.geometry = { labelW, labelH, thumb, gap, layers, heads };
  }

  hit(e) {
    if (!this.geometry) return null;
    const r = this.canvas.getBoundingClientRect();
    const { labelW, labelH, thumb, gap, layers, heads } = this.geometry;
    const head = Math.floor((e.clientX - r.left - labelW) / (thumb + gap));
    const layer = Math.floor((e.clientY - r.top - labelH) / (thumb + gap));
    return layer >= 0 && head >= 0 && layer < layers && head < heads ? { layer, head } : null;
  }

  select(layer, head) {
    this.selected = { layer, head };
    this.draw();
    this.live.textContent = `layer ${layer}, head ${head}`;
    this.dispatchEvent(new CustomEvent('headselect', { detail: { layer, head }, bubbles: true }));
  }

  key(e) {
    if (!this.geometry) return;
    const { layers, heads } = this.geometry;
    const s = { ...this.selected };
    if (e.key === 'ArrowUp') s.layer = Math.max(0, s.layer - 1);
    else if (e.key === 'ArrowDown') s.layer = Math.min(layers - 1, s.layer + 1);
    else if (e.key === 'ArrowLeft') s.head = Math.max(0, s.head - 1);
    else if (e.key === 'ArrowRight') s.head = Math.min(heads - 1, s.head + 1);
    else return;
    e.preventDefault();
    this.select(s.layer, s.head);
  }
}

customElements.define('head-grid', HeadGrid);
