// The module worker: owns the wasm module and the model; the page only renders.
// One generation at a time; between two tokens the worker yields to its event loop, so a `stop`
// message is seen before the next token is computed.

import init, { Engine, set_panic_hook, BUILD_ID } from './pkg/attnscope.js';
import { MSG, PROTOCOL_VERSION, message } from './protocol.js';
import { FileError, loadModelFiles, sha256 } from './weights.js';

let engine = null;
let engineInfo = null;
let stopRequested = false;
let generating = false;
let lastPanic = null;

const post = (type, body = {}, transfer = []) => postMessage(message(type, body), transfer);

// The panic hook reports a Rust panic through console.error just before the trap; keep its text
// so the page can show what actually went wrong instead of "unreachable".
const consoleError = console.error.bind(console);
console.error = (...args) => {
  lastPanic = args.map(String).join(' ');
  consoleError(...args);
};

function describeError(e) {
  if (e instanceof FileError) return { message: e.message, fix: e.fix, fatal: true };
  if (e instanceof WebAssembly.RuntimeError) {
    const panic = lastPanic ? lastPanic.split('\n')[0] : e.message;
    return { message: `the model crashed: ${panic}`, fix: 'the worker has been restarted with your prompt and text kept; try again, or use a shorter prompt', fatal: true, crashed: true };
  }
  if (e instanceof RangeError || /memory/i.test(String(e?.message))) {
    return { message: `out of memory: ${e.message}`, fix: 'close other tabs, or choose q4_0', fatal: true, crashed: true };
  }
  const text = e?.message ?? String(e);
  // Engine errors carry their own fix after a colon ("…: shorten the prompt …").
  return { message: text, fix: '', fatal: false };
}

async function loadWasm() {
  const url = new URL('./pkg/attnscope_bg.wasm', import.meta.url);
  const response = await fetch(url);
  if (!response.ok) throw new FileError('attnscope_bg.wasm', `${url} answered ${response.status}`, 'run ./build.sh on the server');
  const bytes = await response.arrayBuffer();
  if (BUILD_ID) {
    const digest = await sha256(bytes);
    if (digest !== BUILD_ID) {
      throw new FileError('attnscope_bg.wasm', "stale cached app files: the page's JavaScript and WebAssembly are from different builds", 'reload with cache bypass (Ctrl+Shift+R, or Cmd+Shift+R)');
    }
  }
  await init({ module_or_path: bytes });
  set_panic_hook();
}

async function load({ quant = 'q8_0', base }) {
  const started = performance.now();
  engine?.free();
  engine = null;
  post(MSG.STATUS, { text: 'starting WebAssembly…' });
  await loadWasm();
  const weightsName = `model.${quant}.safetensors`;
  const { files, fromCache } = await loadModelFiles(
    base,
    ['config.json', 'tokenizer.json', weightsName],
    (p) => post(MSG.PROGRESS, p),
    (text) => post(MSG.STATUS, { text, notice: true }),
  );
  post(MSG.STATUS, { text: 'building the model…' });
  engine = new Engine(files['config.json'], files['tokenizer.json'], files[weightsName]);
  engineInfo = JSON.parse(engine.info());
  post(MSG.READY, { info: engineInfo, fromCache, loadMs: performance.now() - started, buildId: BUILD_ID });
}

const yieldToEvents = () => new Promise((resolve) => {
  const channel = new MessageChannel();
  channel.port1.onmessage = resolve;
  channel.port2.postMessage(null);
});

async function generate({ id, prompt, options }) {
  if (!engine) throw new Error('the model is not loaded yet');
  generating = true;
  stopRequested = false;
  const t0 = performance.now();
  const begun = JSON.parse(engine.begin(prompt, JSON.stringify(options)));
  const prefillMs = performance.now() - t0;
  post(MSG.PROMPT, { id, ids: begun.prompt_ids, tokens: begun.prompt_tokens, prefillMs });
  const ids = [];
  let text = '';
  let reason = null;
  let firstAt = null;
  let decodeStart = null;
  const stats = () => {
    const now = performance.now();
    const decodeTokens = Math.max(0, ids.length - 1);
    return {
      prompt_tokens: begun.prompt_ids.length,
      generated_tokens: ids.length,
      prefill_tok_s: begun.prompt_ids.length / (prefillMs / 1000),
      decode_tok_s: decodeTokens > 0 && decodeStart !== null ? decodeTokens / ((now - decodeStart) / 1000) : 0,
      ttft_ms: firstAt !== null ? firstAt - t0 : null,
      seed: options.seed,
    };
  };
  for (;;) {
    await yieldToEvents();
    if (stopRequested) {
      reason = 'stopped';
      break;
    }
    const step = JSON.parse(engine.next());
    if (step.id !== null) {
      if (firstAt === null) {
        firstAt = performance.now();
        decodeStart = firstAt;
      }
      ids.push(step.id);
      text += step.text;
      post(MSG.TOKEN, { id, token: { id: step.id, text: step.text, label: step.label }, index: ids.length - 1, stats: stats() });
    }
    if (step.done) {
      reason = step.reason;
      break;
    }
  }
  generating = false;
  post(MSG.DONE, { id, reason, stats: stats(), ids, text });
}

function attention({ id, layer, head }) {
  if (!engine) throw new Error('the model is not loaded yet');
  const weights = engine.attention(layer, head);
  const size = Math.round(Math.sqrt(weights.length));
  const tokens = JSON.parse(engine.tokens()).slice(0, size);
  post(MSG.ATTENTION, { id, layer, head, size, tokens, weights }, [weights.buffer]);
}

function overview({ id, size }) {
  if (!engine) throw new Error('the model is not loaded yet');
  const weights = engine.overview(size);
  post(MSG.OVERVIEW, { id, size, layers: engineInfo.n_layers, heads: engineInfo.n_heads, tokens: engine.seq_len(), weights }, [weights.buffer]);
}

onmessage = async (event) => {
  const msg = event.data;
  if (msg?.v !== PROTOCOL_VERSION) {
    post(MSG.ERROR, { message: `protocol version ${msg?.v} from the page, the worker speaks ${PROTOCOL_VERSION}`, fix: 'reload the page with cache bypass (Ctrl+Shift+R)', fatal: true });
    return;
  }
  if (msg.type === MSG.STOP) {
    stopRequested = true;
    return;
  }
  try {
    switch (msg.type) {
      case MSG.LOAD: await load(msg); break;
      case MSG.GENERATE:
        if (generating) throw new Error('a generation is already running: stop it first');
        await generate(msg);
        break;
      case MSG.ATTENTION: attention(msg); break;
      case MSG.OVERVIEW: overview(msg); break;
      case MSG.TOKENIZE:
        post(MSG.TOKENIZE, { id: msg.id, ...JSON.parse(engine.tokenize(msg.text, msg.chat)) });
        break;
      default: throw new Error(`unknown message type ${msg.type}`);
    }
  } catch (e) {
    generating = false;
    const err = describeError(e);
    if (err.crashed) engine = null;
    post(MSG.ERROR, { id: msg.id, request: msg.type, ...err });
  }
};
