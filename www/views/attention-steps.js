// <attention-steps>: one query's scaled dot-product attention, step by step, on the numbers the
// model computed (Engine.explain): q·k_j for every earlier key, ÷√d, the causal mask, the softmax
// and the weighted sum of the values. Its weight column equals the heatmap's row.

import { showToken } from '../heatmap.js';
import { empty, fmt, make, noteRow, scrollRegion, shaded, table } from './teach-dom.js';

export class AttentionSteps extends HTMLElement {
  connectedCallback() {
    if (!this.childElementCount) empty(this, 'Generate, then pick a query token (a row of the heatmap) to see its attention computed step by step.');
  }

  /** e: Engine.explain's JSON ({query, kv_head, head_dim, scale, dots, scores, pattern, out, value_norms, label, keys}). */
  show(e, { layer, head, size }) {
    this.explanation = e;
    if (!e) return empty(this, 'Generate, then pick a query token (a row of the heatmap) to see its attention computed step by step.');
    const i = e.query;
    const d = e.head_dim;
    const intro = make('p', 'teach-lead');
    intro.append(`Layer ${layer}, head ${head} (it reads key/value head ${e.kv_head}). Query: token #${i} `, make('q', 'tok-inline', showToken(e.label)), '. Every number below is recomputed from the query, keys and values the model used.');
    const steps = make('ol', 'teach-steps');
    const maxScore = Math.max(...e.scores);
    const expSum = e.scores.reduce((a, s) => a + Math.exp(s - maxScore), 0);
    steps.append(
      make('li', '', `Scores: the query q (${d} numbers) is multiplied with each key k_j: q·k_j. The model keeps its keys rounded to 8 bits per block of 32 numbers and rounds q the same way, so these are the products of the rounded numbers.`),
      make('li', '', `Scaled: divided by √d = √${d} = ${fmt(1 / e.scale, 3)}, so s_j = q·k_j × ${fmt(e.scale, 4)}.`),
      make('li', '', `Causal mask: only keys j ≤ ${i} take part; ${size !== undefined && size > i + 1 ? `the ${size - i - 1} later tokens get −∞, weight 0` : 'nothing comes later here'}.`),
      make('li', '', `Softmax: w_j = exp(s_j − ${fmt(maxScore, 3)}) / ${fmt(expSum, 4)} (subtracting the largest score keeps exp from overflowing); the weights sum to 1.`),
      make('li', '', `Weighted sum: the head's output is Σ_j w_j v_j, ${d} numbers (below the table).`),
    );
    const { table: t, body } = table(`Token #${i}: its scores, weights and values`, ['key j', 'token', 'q·k_j', 's_j = q·k_j/√d', 'exp(s_j − max)', 'weight w_j', '|v_j|', 'w_j·|v_j|']);
    const maxW = Math.max(...e.pattern);
    for (let j = 0; j <= i; j++) {
      const tr = make('tr');
      tr.dataset.key = String(j);
      tr.dataset.weight = String(e.pattern[j]);
      tr.append(
        make('td', 'num', String(j)),
        make('td', 'tok-cell', showToken(e.keys?.[j] ?? '')),
        make('td', 'num', fmt(e.dots[j], 3)),
        make('td', 'num', fmt(e.scores[j], 3)),
        make('td', 'num', fmt(Math.exp(e.scores[j] - maxScore), 4)),
        shaded('td', fmt(e.pattern[j]), e.pattern[j] / (maxW || 1)),
        make('td', 'num', fmt(e.value_norms[j], 3)),
        make('td', 'num', fmt(e.pattern[j] * e.value_norms[j], 3)),
      );
      body.append(tr);
    }
    if (size !== undefined && size > i + 1) {
      body.append(noteRow('masked', `keys ${i + 1}…${size - 1}: masked (the future), s_j = −∞, w_j = 0`, 8));
    }
    const scroll = scrollRegion('the step-by-step table', t);
    const out = make('details', 'teach-out');
    out.append(make('summary', '', `Output: Σ_j w_j v_j (${d} numbers)`), make('p', 'mono', `[${e.out.map((v) => fmt(v, 3)).join(', ')}]`));
    this.replaceChildren(intro, steps, scroll, out);
  }
}

customElements.define('attention-steps', AttentionSteps);
