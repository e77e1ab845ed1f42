// Small DOM helpers shared by the teaching views: elements with text (never markup), tables with
// captions and column headers, and table cells shaded on the viridis scale with readable ink.

import { colour, inkOn } from '../heatmap.js';

export const make = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

export const fmt = (v, digits = 4) => (Number.isFinite(v) ? v.toFixed(digits) : String(v));

/** A table cell shaded by t ∈ [0, 1] on the viridis scale, with text that stays readable. */
export function shaded(tag, text, t) {
  const cell = make(tag, 'shaded', text);
  cell.style.backgroundColor = colour(t);
  cell.style.color = inkOn(t);
  return cell;
}

export function table(caption, headers) {
  const t = make('table', 'teach-table');
  t.append(make('caption', '', caption));
  const head = make('thead');
  const tr = make('tr');
  for (const h of headers) {
    const th = make('th', '', h);
    th.scope = 'col';
    tr.append(th);
  }
  head.append(tr);
  const body = make('tbody');
  t.append(head, body);
  return { table: t, body };
}

/** A table in a keyboard-scrollable region (wide tables scroll inside it on a phone). */
export function scrollRegion(label, table) {
  const scroll = make('div', 'teach-scroll');
  scroll.tabIndex = 0;
  scroll.setAttribute('role', 'region');
  scroll.setAttribute('aria-label', label);
  scroll.append(table);
  return scroll;
}

/** A table row of one cell across `span` columns, carrying a note. */
export function noteRow(className, text, span) {
  const tr = make('tr', className);
  const td = make('td', '', text);
  td.colSpan = span;
  tr.append(td);
  return tr;
}

export function empty(host, text) {
  host.replaceChildren(make('p', 'hint', text));
}
