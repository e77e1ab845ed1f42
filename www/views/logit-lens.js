// <logit-lens>: the final RMSNorm and the tied output head applied to the residual stream after
// each layer (Engine.logit_lens): what each layer "would say" next. Layers down, top tokens across.

import { showToken } from '../heatmap.js';
import { empty, fmt, make, scrollRegion, shaded, table } from './teach-dom.js';

export class LogitLens extends HTMLElement {
  connectedCallback() {
    if (!this.childElementCount) empty(this, 'Generate to see what each layer would predict.');
  }

  /** lens: {position, label, layers: [{layer, top: [{id, label, prob}]}]}. */
  show(lens) {
    this.lens = lens;
    if (!lens) return empty(this, 'Generate to see what each layer would predict.');
    const k = lens.layers[0]?.top.length ?? 0;
    const lead = make('p', 'teach-lead');
    lead.append(`After token #${lens.position} `, make('q', 'tok-inline', showToken(lens.label ?? '')), ': the final RMSNorm and the (tied) output head applied to the residual stream after each layer — what the model would say next if it stopped there. The last row is its real prediction.');
    const { table: t, body } = table('Layers down, the most likely next tokens across', ['layer', ...Array.from({ length: k }, (_, r) => `#${r + 1}`)]);
    for (const row of lens.layers) {
      const tr = make('tr');
      const th = make('th', 'num', String(row.layer));
      th.scope = 'row';
      tr.append(th);
      for (const c of row.top) {
        const td = shaded('td', '', c.prob);
        td.append(make('span', 'tok-cell', showToken(c.label)), make('span', 'prob', ` ${fmt(c.prob, 3)}`));
        td.dataset.id = String(c.id);
        tr.append(td);
      }
      body.append(tr);
    }
    this.replaceChildren(lead, scrollRegion('logit lens table', t));
  }
}

customElements.define('logit-lens', LogitLens);
