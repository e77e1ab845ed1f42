// The messages between the page (main.js) and the worker (worker.js), shared by both sides.
// Every message carries `v: PROTOCOL_VERSION`; a side that receives another version says so
// instead of misreading it (a stale cached page beside a new worker). See docs/PROTOCOL.md.

export const PROTOCOL_VERSION = 1;

export const MSG = Object.freeze({
  // page → worker
  LOAD: 'load', // {quant, base}
  GENERATE: 'generate', // {id, prompt, options}
  STOP: 'stop', // {}
  ATTENTION: 'attention', // {id, layer, head}  (also the reply, with the data)
  OVERVIEW: 'overview', // {id, size}          (also the reply)
  TOKENIZE: 'tokenize', // {id, text, chat}    (also the reply)
  // worker → page
  PROGRESS: 'progress', // {file, loaded, total, phase}
  STATUS: 'status', // {text}
  READY: 'ready', // {info, fromCache, loadMs, buildId}
  PROMPT: 'prompt', // {id, ids, tokens, prefillMs}
  TOKEN: 'token', // {id, token: {id, text, label}, index, stats}
  DONE: 'done', // {id, reason, stats, ids, text}
  ERROR: 'error', // {id?, message, fix, fatal}
});

export function message(type, body = {}) {
  return { v: PROTOCOL_VERSION, type, ...body };
}
