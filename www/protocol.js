// The messages between the page (main.js) and the worker (worker.js), shared by both sides.
// Every message is `{v: PROTOCOL_VERSION, type, …fields}`; a side that receives another version
// says so instead of misreading it (a stale cached page beside a new worker). Fields and replies
// are documented in docs/PROTOCOL.md; bump the version when a field changes meaning.

export const PROTOCOL_VERSION = 3;

export const MSG = Object.freeze({
  // page → worker
  LOAD: 'load', // {quant, base, threads, relaxed, context}
  GENERATE: 'generate', // {id, prompt, options}
  STOP: 'stop', // {}
  ATTENTION: 'attention', // {id, layer, head, mean}  (also the reply, with the data)
  OVERVIEW: 'overview', // {id, size}                (also the reply)
  TOKENIZE: 'tokenize', // {id, text, chat}          (also the reply)
  SEQUENCE: 'sequence', // {id}                      (reply: {ids, labels, special})
  EXPLAIN: 'explain', // {id, layer, head, query}    (reply: {explanation})
  LOGIT_LENS: 'logit-lens', // {id, k}               (reply: {layers, position})
  HEAD_STATS: 'head-stats', // {id}                  (reply: {stats, names, layers, heads, size})
  CRASH_FOR_TESTS: 'crash-for-tests', // {id, kind, message}  test-only: a real panic or OOM (reply: a crashed error)
  READ_WEIGHTS: 'read-weights', // {id, passes}      bench: reads every weight matrix `passes` times (reply: {bytes, ms} per read)
  COMPILED: 'compiled', // {id, module, sha256} or {id, error, name}: the reply to `compile`
  // worker → page
  PROGRESS: 'progress', // {file, loaded, total, phase, overallLoaded, overallTotal}
  STATUS: 'status', // {text, notice}
  READY: 'ready', // {info, fromCache, loadMs, phasesMs, buildId}
  PROMPT: 'prompt', // {id, ids, tokens, prefillMs}
  TOKEN: 'token', // {id, token: {id, text, label}, index, seqLen, stats, predictions}
  DONE: 'done', // {id, reason, stats, ids, text, seqLen, tokensAfterStop}
  ERROR: 'error', // {id?, request?, message, fix, file?, fatal, crashed?}
  COMPILE: 'compile', // {id, url}: the worker asks the page to compile its .wasm (reply: `compiled`)
});

export function message(type, body = {}) {
  return { v: PROTOCOL_VERSION, type, ...body };
}
