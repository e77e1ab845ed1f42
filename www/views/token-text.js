// <token-text>: the sequence as text, one span per token. Hovering or focusing a token shades every
// earlier token by how much that token (the query) attends to it, for one head or the mean of the
// layer's heads. Token text is set with textContent only: model output is never HTML.
//
// During a generation the view is updated token by token: spans are appended, not rebuilt, so the
// token under the mouse or the keyboard focus stays put. One span is in the tab order at a time
// (a roving tabindex); the arrow keys move between tokens.

import { colour, inkOn, showToken } from '../heatmap.js';

export class TokenText extends HTMLElement {
  connectedCallback() {
    if (this.wired) return;
    this.wired = true;
    this.setAttribute('role', 'list');
    this.setAttribute('aria-label', 'the sequence, token by token');
    this.labels = [];
    this.active = null;
    this.addEventListener('mouseover', (e) => {
      const i = indexOf(e.target);
      if (i !== null && i !== this.active) this.focusToken(i);
    });
    this.addEventListener('focusin', (e) => {
      const i = indexOf(e.target);
      if (i !== null) this.focusToken(i);
    });
    this.addEventListener('keydown', (e) => {
      const i = indexOf(e.target);
      if (i === null) return;
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: this.children.length - 1 }[e.key];
      if (next !== undefined && this.children[next]) {
        e.preventDefault();
        this.children[next].focus();
      }
    });
  }

  /**
   * labels: every token of the sequence; promptLength: how many are the prompt; rows: how many
   * tokens have an attention row (the rest are not read yet, or past the capture window);
   * rowOf(i) → Float32Array of i+1 weights, or null.
   */
  show(labels, promptLength, rows, rowOf) {
    this.rowOf = rowOf;
    this.rows = rows;
    const extends_ = this.promptLength === promptLength && this.labels.length <= labels.length && this.labels.every((l, i) => l === labels[i]);
    if (!extends_) {
      this.replaceChildren();
      this.active = null;
    }
    for (let i = extends_ ? this.labels.length : 0; i < labels.length; i++) {
      const span = document.createElement('span');
      span.className = i < promptLength ? 'tok prompt' : 'tok generated';
      span.textContent = labels[i].replace(/\n/g, '↵\n');
      span.tabIndex = i === 0 ? 0 : -1;
      span.setAttribute('role', 'listitem');
      span.dataset.index = String(i);
      this.append(span);
    }
    this.labels = labels.slice();
    this.promptLength = promptLength;
    [...this.children].forEach((span, i) => {
      const pending = i >= rows;
      span.classList.toggle('pending', pending);
      span.setAttribute('aria-label', `token ${i}: ${showToken(labels[i])}${pending ? ' (no attention row yet)' : ''}`);
    });
    if (this.active !== null && this.active < labels.length) this.focusToken(this.active, { quiet: true });
    else this.shade(null);
  }

  focusToken(i, { quiet = false } = {}) {
    this.active = i;
    for (const span of this.children) span.tabIndex = Number(span.dataset.index) === i ? 0 : -1;
    this.shade(i);
    if (!quiet) this.dispatchEvent(new CustomEvent('tokenfocus', { detail: { index: i }, bubbles: true }));
  }

  shade(i) {
    const row = i === null ? null : this.rowOf?.(i);
    let max = 0;
    if (row) for (const v of row) if (v > max) max = v;
    [...this.children].forEach((span, j) => {
      span.classList.toggle('query', j === i);
      if (row && j < row.length) {
        const t = row[j] / (max || 1);
        span.style.backgroundColor = colour(t);
        span.style.color = inkOn(t);
        span.title = j === i ? `attention to itself: ${row[j].toFixed(4)}` : `attention from token ${i}: ${row[j].toFixed(4)}`;
      } else {
        span.style.backgroundColor = '';
        span.style.color = '';
        span.title = j === i && !row ? 'no attention row yet: the model reads this token at the next step' : '';
      }
    });
  }
}

function indexOf(target) {
  const span = target?.closest?.('.tok');
  return span ? Number(span.dataset.index) : null;
}

customElements.define('token-text', TokenText);
