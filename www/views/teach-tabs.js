// <teach-tabs tabs="heatmap steps predictions lens tokens stats">: the views as keyboard-operable
// tabs (WAI-ARIA tabs pattern: arrow keys move between tabs, Tab enters the panel), and the one
// place that asks the worker for what the visible view needs. Only the active tab is fetched: a
// logit lens is 30 output-head products, not something to compute for a hidden panel.
//
// The 'heatmap' and 'text' panels are left empty for the host to fill (their data comes with the
// live attention refresh); the others are the teaching views (attention-steps.js, prediction-table.js, logit-lens.js,
// token-list.js, head-stats.js).

import { MSG } from '../protocol.js';
import { empty } from './teach-dom.js';
import './attention-steps.js';
import './prediction-table.js';
import './logit-lens.js';
import './token-list.js';
import './head-stats.js';
import './scale-legend.js';

const TITLES = {
  heatmap: 'Heatmap',
  text: 'Text',
  steps: 'Step by step',
  predictions: 'Predictions',
  lens: 'Logit lens',
  tokens: 'Tokens',
  stats: 'Head stats',
};
const ELEMENTS = { steps: 'attention-steps', predictions: 'prediction-table', lens: 'logit-lens', tokens: 'token-list', stats: 'head-stats' };

let counter = 0;

export class TeachTabs extends HTMLElement {
  connectedCallback() {
    if (this.wired) return;
    this.wired = true;
    const prefix = `teach-${++counter}`;
    this.names = (this.getAttribute('tabs') || 'steps predictions lens tokens stats').split(/\s+/).filter((n) => TITLES[n]);
    this.list = document.createElement('div');
    this.list.className = 'tablist';
    this.list.setAttribute('role', 'tablist');
    this.list.setAttribute('aria-label', this.getAttribute('label') || 'views');
    this.tabs = {};
    this.panels = {};
    this.views = {};
    for (const name of this.names) {
      const tab = document.createElement('button');
      tab.type = 'button';
      tab.id = `${prefix}-tab-${name}`;
      tab.className = 'tab';
      tab.dataset.view = name;
      tab.setAttribute('role', 'tab');
      tab.setAttribute('aria-controls', `${prefix}-panel-${name}`);
      tab.textContent = TITLES[name];
      tab.addEventListener('click', () => this.select(name));
      const panel = document.createElement('div');
      panel.id = `${prefix}-panel-${name}`;
      panel.className = 'tabpanel';
      panel.dataset.view = name;
      panel.setAttribute('role', 'tabpanel');
      panel.setAttribute('aria-labelledby', tab.id);
      if (ELEMENTS[name]) {
        this.views[name] = document.createElement(ELEMENTS[name]);
        panel.append(this.views[name]);
      }
      this.tabs[name] = tab;
      this.panels[name] = panel;
      this.list.append(tab);
    }
    this.list.addEventListener('keydown', (e) => {
      const i = this.names.indexOf(this.active);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: this.names.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      const name = this.names[(next + this.names.length) % this.names.length];
      this.select(name);
      this.tabs[name].focus();
    });
    this.replaceChildren(this.list, ...Object.values(this.panels));
    this.select(this.names.includes(this.getAttribute('active')) ? this.getAttribute('active') : this.names[0], { quiet: true });
  }

  panel(name) {
    return this.panels[name];
  }

  view(name) {
    return this.views[name];
  }

  select(name, { quiet = false } = {}) {
    if (!this.tabs[name]) return;
    this.active = name;
    for (const n of this.names) {
      const on = n === name;
      this.tabs[n].setAttribute('aria-selected', String(on));
      this.tabs[n].tabIndex = on ? 0 : -1;
      this.panels[n].hidden = !on;
    }
    if (!quiet) this.dispatchEvent(new CustomEvent('viewchange', { detail: { view: name }, bubbles: true }));
  }

  /**
   * Fills the active teaching view. `source`: {request(type, body), layer, head, query (or null:
   * the last row), size (T rows read), promptLength, predictions (one per step), options, live
   * (a generation is running)}.
   */
  async refresh(source) {
    const name = this.active;
    const view = this.views[name];
    if (!view) return;
    // The lens (30 output-head products) and the statistics (every head's T×T) cost more than a
    // token: while a generation runs they wait for its end.
    if (source.live && (name === 'lens' || name === 'stats')) return;
    try {
      if (name === 'predictions') {
        view.show(source.predictions, source.options);
      } else if (!source.size) {
        view.show(null);
      } else if (name === 'steps') {
        const query = Math.min(source.query ?? source.size - 1, source.size - 1);
        const reply = await source.request(MSG.EXPLAIN, { layer: source.layer, head: source.head, query });
        view.show(reply.explanation, { layer: source.layer, head: source.head, size: source.size });
      } else if (name === 'lens') {
        view.show(await source.request(MSG.LOGIT_LENS, { k: 5 }));
      } else if (name === 'tokens') {
        view.show(await source.request(MSG.SEQUENCE), source.promptLength);
      } else if (name === 'stats') {
        view.show(await source.request(MSG.HEAD_STATS), { layer: source.layer, head: source.head });
      }
    } catch (e) {
      empty(view, `This view could not be computed: ${e.message}`);
    }
  }
}

customElements.define('teach-tabs', TeachTabs);
