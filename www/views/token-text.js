// <token-text>: the sequence as text, one focusable span per token. Hovering or focusing a token
// shades every earlier token by how much the chosen query attends to it (one head, or the mean of
// the layer's heads). Token text is set with textContent only: model output is never HTML.

import { colour, showToken } from '../heatmap.js';

export class TokenText extends HTMLElement {
  connectedCallback() {
    this.setAttribute('role', 'list');
  }

  /** tokens: labels; promptLength: how many are the prompt; rowOf(i) → Float32Array of i+1 weights */
  show(tokens, promptLength, rowOf) {
    this.rowOf = rowOf;
    this.replaceChildren();
    tokens.forEach((label, i) => {
      const span = document.createElement('span');
      span.className = i < promptLength ? 'tok prompt' : 'tok generated';
      span.textContent = label.replace(/\n/g, '↵\n');
      span.tabIndex = 0;
      span.setAttribute('role', 'listitem');
      span.setAttribute('aria-label', `token ${i}: ${showToken(label)}`);
      span.dataset.index = String(i);
      span.addEventListener('mouseenter', () => this.focusToken(i));
      span.addEventListener('focus', () => this.focusToken(i));
      span.addEventListener('keydown', (e) => {
        const next = e.key === 'ArrowRight' ? i + 1 : e.key === 'ArrowLeft' ? i - 1 : null;
        if (next !== null && this.children[next]) {
          e.preventDefault();
          this.children[next].focus();
        }
      });
      this.append(span);
    });
  }

  focusToken(i) {
    const row = this.rowOf?.(i);
    let max = 0;
    if (row) for (const v of row) if (v > max) max = v;
    [...this.children].forEach((span, j) => {
      span.classList.toggle('query', j === i);
      if (row && j < row.length && j !== i) {
        const t = row[j] / (max || 1);
        span.style.backgroundColor = colour(t);
        span.style.color = t > 0.6 ? '#000' : '#fff';
        span.title = `${row[j].toFixed(4)}`;
      } else {
        span.style.backgroundColor = '';
        span.style.color = '';
        span.title = '';
      }
    });
    this.dispatchEvent(new CustomEvent('tokenfocus', { detail: { index: i }, bubbles: true }));
  }
}

customElements.define('token-text', TokenText);
