// Exports of the pattern on screen: the picture (PNG, SVG) as it is drawn, and the numbers (CSV,
// JSON) exactly as the model computed them, with their tokens.
//
// Numbers are written with JavaScript's shortest round-trip formatting of the float32 value the
// engine returned, so reading a file back and rounding to float32 gives the same bits. Token text
// is data: CSV fields are quoted, the SVG is built with DOM calls and serialised (escaped) by
// XMLSerializer, never by pasting strings into markup.

import { VIRIDIS, displayMatrix, showToken, SINK_MODES } from './heatmap.js';

/**
 * What every export describes. `pattern`: {layer, head, size, tokens, weights (Float32Array, T×T)};
 * `context`: {prompt, settings, quant, ids} of the run, included in JSON.
 */

const csvField = (s) => `"${String(s).replace(/"/g, '""')}"`;

/** Rows are queries, columns keys; the header and the first column carry "index:token". */
export function patternCSV({ size, tokens, weights }) {
  const label = (i) => csvField(`${i}:${tokens[i] ?? ''}`);
  const lines = [[csvField('query \\ key'), ...Array.from({ length: size }, (_, j) => label(j))].join(',')];
  for (let i = 0; i < size; i++) {
    const row = [label(i)];
    for (let j = 0; j < size; j++) row.push(String(weights[i * size + j]));
    lines.push(row.join(','));
  }
  return `${lines.join('\r\n')}\r\n`;
}

export function patternJSON({ layer, head, size, tokens, weights }, context = {}) {
  return JSON.stringify({
    format: 'attnscope-pattern/1',
    hook: `blocks.${layer}.attn.hook_pattern`,
    layer,
    head,
    model: 'SmolLM2-135M-Instruct',
    ...context,
    tokens: tokens.slice(0, size),
    // weights[i][j]: how much token i (the query) attends to token j (the key); rows sum to 1.
    weights: Array.from({ length: size }, (_, i) => Array.from(weights.subarray(i * size, (i + 1) * size))),
  });
}

/** The cell size of a picture export: every label readable when it fits, at most ~4000 px. */
function exportCell(size) {
  return Math.max(2, Math.min(16, Math.floor(4000 / Math.max(1, size))));
}

function pictureLayout(size) {
  const cell = exportCell(size);
  const labels = cell >= 9;
  const margin = labels ? 110 : 4;
  return { cell, labels, margin, w: margin + size * cell + 4, h: margin + size * cell + 4 + 24 };
}

function caption({ layer, head, size }, sink) {
  return `attnscope · SmolLM2-135M-Instruct · layer ${layer}, head ${head} · ${size} tokens · viridis, ${SINK_MODES[sink] ?? SINK_MODES.show}`;
}

/** A PNG of the pattern as drawn (with the sink mode's colours), labels and a caption. */
export async function patternPNG(pattern, { sink = 'show', fg = '#1d1d1f', bg = '#ffffff' } = {}) {
  const { size, tokens } = pattern;
  const { cell, labels, margin, w, h } = pictureLayout(size);
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = bg;
  ctx.fillRect(0, 0, w, h);
  const { values, max } = displayMatrix(pattern.weights, size, { sink });
  for (let i = 0; i < size; i++) {
    for (let j = 0; j <= i; j++) {
      const c = VIRIDIS[Math.max(0, Math.min(255, Math.round((values[i * size + j] / max) * 255)))];
      ctx.fillStyle = `rgb(${c[0]},${c[1]},${c[2]})`;
      ctx.fillRect(margin + j * cell, margin + i * cell, cell, cell);
    }
  }
  ctx.fillStyle = fg;
  if (labels) {
    ctx.font = `${Math.min(12, cell - 2)}px monospace`;
    ctx.textBaseline = 'middle';
    for (let i = 0; i < size; i++) {
      const label = clip(showToken(tokens[i] ?? ''), 14);
      ctx.textAlign = 'right';
      ctx.fillText(label, margin - 4, margin + i * cell + cell / 2);
      ctx.save();
      ctx.translate(margin + i * cell + cell / 2, margin - 4);
      ctx.rotate(-Math.PI / 3);
      ctx.textAlign = 'left';
      ctx.fillText(label, 0, 0);
      ctx.restore();
    }
  }
  ctx.font = '12px sans-serif';
  ctx.textAlign = 'left';
  ctx.textBaseline = 'alphabetic';
  ctx.fillText(caption(pattern, sink), 4, h - 8);
  return canvas.convertToBlob({ type: 'image/png' });
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG of the pattern as drawn: one <rect> per visible cell (with its weight in a <title>). */
export function patternSVG(pattern, { sink = 'show', fg = '#1d1d1f', bg = '#ffffff' } = {}) {
  const { size, tokens } = pattern;
  const { cell, labels, margin, w, h } = pictureLayout(size);
  const doc = document.implementation.createDocument(SVG, 'svg', null);
  const svg = doc.documentElement;
  const el = (name, attrs, parent = svg) => {
    const node = doc.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    parent.append(node);
    return node;
  };
  svg.setAttribute('width', String(w));
  svg.setAttribute('height', String(h));
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  el('title', {}).textContent = caption(pattern, sink);
  el('rect', { width: w, height: h, fill: bg });
  const { values, max } = displayMatrix(pattern.weights, size, { sink });
  const cells = el('g', { class: 'cells', 'shape-rendering': 'crispEdges' });
  for (let i = 0; i < size; i++) {
    for (let j = 0; j <= i; j++) {
      const c = VIRIDIS[Math.max(0, Math.min(255, Math.round((values[i * size + j] / max) * 255)))];
      const r = el('rect', { x: margin + j * cell, y: margin + i * cell, width: cell, height: cell, fill: `rgb(${c[0]},${c[1]},${c[2]})`, 'data-i': i, 'data-j': j, 'data-weight': pattern.weights[i * size + j] }, cells);
      if (size <= 64) el('title', {}, r).textContent = `${showToken(tokens[i] ?? '')} → ${showToken(tokens[j] ?? '')}: ${pattern.weights[i * size + j]}`;
    }
  }
  const text = el('g', { fill: fg, 'font-family': 'monospace', 'font-size': Math.min(12, cell - 2) });
  if (labels) {
    for (let i = 0; i < size; i++) {
      const label = clip(showToken(tokens[i] ?? ''), 14);
      el('text', { x: margin - 4, y: margin + i * cell + cell / 2, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, text).textContent = label;
      el('text', { transform: `translate(${margin + i * cell + cell / 2} ${margin - 4}) rotate(-60)`, 'dominant-baseline': 'middle' }, text).textContent = label;
    }
  }
  el('text', { x: 4, y: h - 8, fill: fg, 'font-family': 'sans-serif', 'font-size': 12 }).textContent = caption(pattern, sink);
  return new XMLSerializer().serializeToString(doc);
}

/** The file name stem of an export: the layer, head and first words of the prompt. */
export function exportName({ layer, head }, prompt = '') {
  const words = String(prompt).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 32);
  return `attnscope-L${layer}-H${head}${words ? `-${words}` : ''}`;
}

/** Saves a Blob or string as a download. */
export function download(content, filename, type) {
  const blob = content instanceof Blob ? content : new Blob([content], { type });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

function clip(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
