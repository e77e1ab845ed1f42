// <scale-legend>: the viridis colour bar with its range, and a sentence stating what the
// first-token ("sink") setting does to the picture.

import { VIRIDIS, SINK_MODES } from '../heatmap.js';
import { make } from './teach-dom.js';

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
    const mode = SINK_MODES[sink] ?? SINK_MODES.show;
    this.note.textContent = `Colour scale: viridis (perceptually uniform, colour-blind safe). ${mode[0].toUpperCase()}${mode.slice(1)}.`;
  }
}

customElements.define('scale-legend', ScaleLegend);
