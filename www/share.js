// One description of "a view", shared by URL parameters (index.html?…, embed.html?…) and the
// <attn-scope> element's attributes, so a link, an iframe and an element built from the same
// settings show the same tokens and the same picture. Names are the attribute names; values are
// parsed and checked here once (a bad value falls back to the default, never to an exception).

export const VIEWS = Object.freeze(['heatmap', 'steps', 'predictions', 'lens', 'tokens', 'stats', 'text']);
export const SINKS = Object.freeze(['show', 'hide', 'clip']);
export const QUANTS = Object.freeze(['q8_0', 'q4_0']);

/** name → [parse(string) → value or undefined, default]. */
const FIELDS = {
  prompt: [(s) => s, 'The capital of France is'],
  chat: [bool, false],
  'max-tokens': [int(1, 2000), 24],
  seed: [int(0, 2 ** 32 - 1), 1],
  temperature: [num(0, 5), 0],
  'top-k': [int(1, 100000), null],
  'top-p': [num(0.01, 1), null],
  'repeat-penalty': [num(0.5, 3), 1.1],
  quant: [(s) => (QUANTS.includes(s) ? s : undefined), 'q8_0'],
  layer: [int(0, 1000), 0],
  head: [int(0, 1000), 0],
  view: [(s) => (VIEWS.includes(s) ? s : undefined), 'heatmap'],
  sink: [(s) => (SINKS.includes(s) ? s : undefined), 'show'],
  query: [int(0, 100000), null],
  autorun: [bool, false],
};

export const FIELD_NAMES = Object.freeze(Object.keys(FIELDS));

function bool(s) {
  if (s === '' || s === '1' || s === 'true' || s === 'yes' || s === 'on') return true;
  if (s === '0' || s === 'false' || s === 'no' || s === 'off') return false;
  return undefined;
}

function int(min, max) {
  return (s) => (/^\s*\d+\s*$/.test(s) && Number(s) >= min && Number(s) <= max ? Number(s) : undefined);
}

function num(min, max) {
  return (s) => {
    const v = Number(s);
    return s.trim() !== '' && Number.isFinite(v) && v >= min && v <= max ? v : undefined;
  };
}

/** Settings from a getter of raw strings (URLSearchParams.get, or an element's getAttribute). */
export function readSettings(get) {
  const out = {};
  for (const [name, [parse, fallback]] of Object.entries(FIELDS)) {
    const raw = get(name);
    const value = raw === null || raw === undefined ? undefined : parse(String(raw));
    out[name] = value === undefined ? fallback : value;
  }
  return out;
}

/** Settings that differ from the defaults, and always those that decide the tokens (so a default
 * changed in a later version cannot change an old link's text), as [name, string] pairs. */
function pairs(settings, { always = ['prompt', 'max-tokens', 'temperature', 'seed'] } = {}) {
  const out = [];
  for (const [name, [, fallback]] of Object.entries(FIELDS)) {
    const v = settings[name];
    if (v === undefined || v === null) continue;
    if (!always.includes(name) && v === fallback) continue;
    if (typeof v === 'boolean') out.push([name, v ? '1' : '0']);
    else out.push([name, String(v)]);
  }
  return out;
}

/** A link to `page` (index.html or embed.html beside this module) that reproduces the view. */
export function viewLink(settings, page = 'index.html') {
  const url = new URL(page, import.meta.url);
  for (const [k, v] of pairs(settings)) url.searchParams.set(k, v);
  return url.href;
}

const attr = (s) => String(s).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The <script> + <attn-scope> snippet for a page that can load this module (same site, or CORS). */
export function elementSnippet(settings) {
  const script = new URL('attn-scope.js', import.meta.url).href;
  const attrs = pairs({ ...settings, autorun: true }).map(([k, v]) => (k === 'autorun' ? ' autorun' : ` ${k}="${attr(v)}"`)).join('');
  return `<script type="module" src="${attr(script)}"></script>\n<attn-scope${attrs}></attn-scope>\n`;
}

/** The <iframe> snippet: works from any site, the embed page loads everything itself. */
export function iframeSnippet(settings) {
  const src = viewLink({ ...settings, autorun: true }, 'embed.html');
  const title = `attnscope: attention of SmolLM2 on “${String(settings.prompt).slice(0, 60)}”`;
  return `<iframe src="${attr(src)}" title="${attr(title)}" width="100%" height="720" loading="lazy" allow="clipboard-write"></iframe>\n`;
}

/** Copies text to the clipboard; falls back to selecting it in `field` for Ctrl+C. */
export async function copyText(text, field) {
  if (field) field.value = text;
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (field) {
      field.hidden = false;
      field.focus();
      field.select();
    }
    return false;
  }
}
