// The page side of the worker protocol, shared by the full app (main.js) and the embeddable
// element (attn-scope.js): starts the module worker, sends versioned messages, matches replies
// to requests by id, and hands everything else (progress, tokens, errors) to one callback.
//
// Every URL is resolved against this module's own URL, not the page's: a course page at
// /lessons/week3.html that loads /tools/attnscope/www/attn-scope.js must still find the worker
// beside this file and the model in ../models/ next to www/.

import { MSG, PROTOCOL_VERSION, message } from './protocol.js';
import { sha256 } from './digest.js';

/** The model folder, next to www/ (serve.rs maps /models/ beside the www/ root; a plain static
 * server that serves the repository root has /www/ and /models/ side by side). */
export const MODEL_BASE = new URL('../models/smollm2-135m-instruct/', import.meta.url).href;

const WORKER_URL = new URL('./worker.js', import.meta.url);

/** While tokens stream, a page writes the answer's text at most this often (20 times a second
 * still reads as streaming): each write is a frame to lay out, paint and composite, and at 50
 * tokens a second those frames took the cores the model needs. The app on two threads, short
 * prompt: 45–51 → 54–64 tokens/s (docs/PERFORMANCE.md). */
export const TEXT_EVERY_MS = 50;

/** Replies that answer a request (matched by `id`); everything else goes to `onEvent`. */
const REPLIES = new Set([MSG.ATTENTION, MSG.OVERVIEW, MSG.TOKENIZE, MSG.SEQUENCE, MSG.EXPLAIN, MSG.LOGIT_LENS, MSG.HEAD_STATS]);

export class WorkerClient {
  /** onEvent(msg) gets every message that is not a reply, and `{type: 'worker-failed', message}`. */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.worker = null;
    this.pending = new Map(); // request id → {resolve, reject}
    this.nextId = 1;
  }

  start() {
    this.stop();
    const worker = createWorker();
    worker.onmessage = (e) => this.receive(e.data);
    worker.onerror = (e) => {
      e.preventDefault?.();
      this.onEvent({ type: 'worker-failed', message: e.message || 'its script did not load' });
    };
    worker.onmessageerror = () => this.onEvent({ type: 'worker-failed', message: 'a message from the worker could not be read' });
    this.worker = worker;
  }

  stop() {
    if (!this.worker) return;
    this.worker.terminate();
    this.worker = null;
    for (const p of this.pending.values()) p.reject(new Error('the worker was restarted'));
    this.pending.clear();
  }

  get running() {
    return !!this.worker;
  }

  newId() {
    return this.nextId++;
  }

  send(type, body = {}) {
    this.worker.postMessage(message(type, body));
  }

  /** Sends a request and resolves with its reply (or rejects with its `error`). */
  request(type, body = {}) {
    if (!this.worker) return Promise.reject(new Error('the model is not loaded'));
    const id = this.newId();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send(type, { id, ...body });
    });
  }

  receive(msg) {
    if (msg?.v !== PROTOCOL_VERSION) {
      this.onEvent({ type: 'version-mismatch', got: msg?.v });
      return;
    }
    if (msg.type === MSG.COMPILE) {
      this.compile(msg);
      return;
    }
    const p = msg.id !== undefined ? this.pending.get(msg.id) : null;
    if (p && (REPLIES.has(msg.type) || msg.type === MSG.ERROR)) {
      this.pending.delete(msg.id);
      if (msg.type === MSG.ERROR) p.reject(Object.assign(new Error(msg.message), { fix: msg.fix }));
      else p.resolve(msg);
      if (msg.type !== MSG.ERROR || !msg.crashed) return; // a crash also concerns the page
    }
    this.onEvent(msg);
  }

  /**
   * Compiles the worker's .wasm here, for the worker: Chrome keeps the optimised machine code of a
   * module compiled from a cacheable response in its cache and reuses it on the next visit, but
   * (measured in Chromium 148) only for a page, not a worker. Compiled in the worker, every load began on the baseline
   * compiler, and the first prompt took 150 ms instead of 55. A server that does not send
   * `application/wasm` gets a plain compile (the same module, without the cache).
   */
  async compile({ id, url }) {
    const worker = this.worker;
    try {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`${new URL(url).pathname} answered ${response.status}`);
      const bytes = response.clone().arrayBuffer();
      let module;
      try {
        module = await WebAssembly.compileStreaming(response);
      } catch (e) {
        if (e instanceof WebAssembly.CompileError) throw e;
        module = await WebAssembly.compile(await bytes);
      }
      worker?.postMessage(message(MSG.COMPILED, { id, module, sha256: await sha256(await bytes) }));
    } catch (e) {
      worker?.postMessage(message(MSG.COMPILED, { id, error: e.message, name: e.name }));
    }
  }
}

/**
 * A module worker from this module's folder. Browsers only start workers from the page's own
 * origin; when this file was loaded from another origin (a course page using a copy hosted
 * elsewhere, which must then send CORS headers), a same-origin blob worker imports it instead.
 */
function createWorker() {
  if (WORKER_URL.origin === location.origin) return new Worker(WORKER_URL, { type: 'module' });
  const source = `import ${JSON.stringify(WORKER_URL.href)};`;
  return new Worker(URL.createObjectURL(new Blob([source], { type: 'text/javascript' })), { type: 'module' });
}

/** The Engine's generation options from named settings (the form's or an element's attributes). */
export function engineOptions({ chat = false, maxTokens = 64, ignoreEos = false, temperature = 0, topK = null, topP = null, repeatPenalty = 1.1, seed }) {
  return { chat, max_tokens: maxTokens, ignore_eos: ignoreEos, temperature, top_k: topK, top_p: topP, repeat_penalty: repeatPenalty, repeat_last_n: 64, seed };
}

export const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];
