// <prediction-table>: for every generated step, the most likely next tokens with their
// probabilities before (softmax of the logits) and after the sampling settings (repeat penalty,
// temperature, top-k, top-p), and which token was sampled (Engine.predictions, kept per step).

import { showToken } from '../heatmap.js';
import { empty, fmt, make, noteRow, scrollRegion, shaded, table } from './teach-dom.js';

export class PredictionTable extends HTMLElement {
  connectedCallback() {
    if (this.wired) return;
    this.wired = true;
    this.steps = [];
    this.index = 0;
    this.label = make('label', 'teach-step');
    this.slider = make('input');
    this.slider.type = 'range';
    this.slider.min = '0';
    this.slider.value = '0';
    this.caption = make('span', 'mono');
    this.label.append('step ', this.slider, this.caption);
    this.body = make('div');
    this.slider.addEventListener('input', () => this.render(Number(this.slider.value)));
    this.replaceChildren(this.label, this.body);
    this.render(0);
  }

  /** steps: one Engine.predictions() JSON per generated token; settings: the run's options. */
  show(steps, settings, { follow = true } = {}) {
    this.steps = steps ?? [];
    this.settings = settings;
    const last = Math.max(0, this.steps.length - 1);
    if (this.wired) this.render(follow ? last : Math.min(this.index, last));
  }

  render(index) {
    this.index = index;
    const n = this.steps.length;
    this.label.hidden = n === 0;
    this.slider.max = String(Math.max(0, n - 1));
    this.slider.value = String(index);
    this.slider.setAttribute('aria-label', 'generated step');
    const p = this.steps[index];
    if (!p) return empty(this.body, 'Generate to see, for every new token, what the model considered.');
    this.caption.textContent = ` ${index + 1} of ${n}: at position ${p.position} it chose “${showToken(p.sampled_label)}”`;
    const s = this.settings ?? {};
    const how = s.temperature === 0
      ? 'temperature 0 is greedy: the most likely token (after the repeat penalty) gets all the probability'
      : `temperature ${s.temperature}${s.top_k ? `, top-k ${s.top_k}` : ''}${s.top_p ? `, top-p ${s.top_p}` : ''}`;
    const lead = make('p', 'teach-lead', `The ${p.top.length} most likely next tokens. p raw: the softmax of the logits. p used: after repeat penalty ${s.repeat_penalty ?? 1.1}, ${how}.`);
    const { table: t, body } = table(`Candidates of step ${index + 1}`, ['rank', 'token', 'id', 'logit', 'p raw', 'p used', 'sampled']);
    const maxP = Math.max(...p.top.map((c) => Math.max(c.prob, c.prob_final)), 1e-9);
    p.top.forEach((c, r) => {
      const tr = make('tr', c.id === p.sampled ? 'sampled' : '');
      tr.dataset.id = String(c.id);
      tr.append(
        make('td', 'num', String(r + 1)),
        make('td', 'tok-cell', showToken(c.label)),
        make('td', 'num', String(c.id)),
        make('td', 'num', fmt(c.logit, 3)),
        shaded('td', fmt(c.prob), c.prob / maxP),
        shaded('td', fmt(c.prob_final), c.prob_final / maxP),
        make('td', '', c.id === p.sampled ? '✓ sampled' : ''),
      );
      body.append(tr);
    });
    if (!p.top.some((c) => c.id === p.sampled)) {
      body.append(noteRow('sampled', `sampled: “${showToken(p.sampled_label)}” (outside the raw top ${p.top.length}: the settings moved it up)`, 7));
    }
    this.body.replaceChildren(lead, scrollRegion('candidates table', t));
  }
}

customElements.define('prediction-table', PredictionTable);
