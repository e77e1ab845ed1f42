// embed.html: one <attn-scope> whose attributes are the page's URL parameters (share.js names:
// prompt, chat, max-tokens, seed, temperature, top-k, top-p, repeat-penalty, quant, layer, head,
// view, sink, query, autorun). Unknown parameters are ignored; bad values fall back to defaults.
//
// Talking to the page around the iframe is off unless that page names itself with
// `parent-origin=<scheme://host:port>`. Then, and only with that exact origin (strict equality,
// and only the parent window), the embed posts {source: 'attnscope', v: 1, type, …} messages
// (`resize` {height}, `done` {ids, text, seed}) and accepts {source: 'attnscope-host', v: 1, type,
// …} commands: `select` {layer, head}, `view` {view}, `sink` {sink}, `query` {query}. Anything
// else — another origin, another window, another shape — is ignored.

import { FIELD_NAMES, VIEWS, SINKS } from './share.js';
import './attn-scope.js';

const params = new URLSearchParams(location.search);
const scope = document.createElement('attn-scope');
for (const name of FIELD_NAMES) {
  if (params.has(name)) scope.setAttribute(name, params.get(name));
}
document.getElementById('embed').append(scope);

/** The parent's origin when it is a well-formed http(s) origin, else null. */
function parentOrigin() {
  const raw = params.get('parent-origin');
  if (!raw || window.parent === window) return null;
  try {
    const url = new URL(raw);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.origin === raw ? raw : null;
  } catch {
    return null;
  }
}

const isIndex = (v, max) => Number.isInteger(v) && v >= 0 && v < max;

/** A checked command from the host page as [attribute, value] pairs, or null. */
export function commandOf(data) {
  if (!data || typeof data !== 'object' || data.source !== 'attnscope-host' || data.v !== 1) return null;
  switch (data.type) {
    case 'select': return isIndex(data.layer, 30) && isIndex(data.head, 9) ? [['layer', data.layer], ['head', data.head]] : null;
    case 'view': return VIEWS.includes(data.view) ? [['view', data.view]] : null;
    case 'sink': return SINKS.includes(data.sink) ? [['sink', data.sink]] : null;
    case 'query': return isIndex(data.query, 100_000) ? [['query', data.query]] : null;
    default: return null;
  }
}

const origin = parentOrigin();
if (origin) {
  const post = (type, body) => window.parent.postMessage({ source: 'attnscope', v: 1, type, ...body }, origin);
  window.addEventListener('message', (event) => {
    if (event.origin !== origin || event.source !== window.parent) return;
    const command = commandOf(event.data);
    if (!command) return;
    for (const [name, value] of command) scope.setAttribute(name, String(value));
  });
  new ResizeObserver(() => post('resize', { height: Math.ceil(document.documentElement.scrollHeight) })).observe(document.body);
  scope.addEventListener('attnscope:done', (e) => post('done', { ids: e.detail.ids, text: e.detail.text, seed: e.detail.stats.seed }));
}
