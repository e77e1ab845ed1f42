// The module worker: owns the WebAssembly module and the model; the page only renders.
//
// One generation at a time. Between two tokens the worker yields to its event loop, so a `stop`
// (or an `attention` request for the live heatmap) is handled before the next token is computed.
// A Rust panic traps the wasm instance for good: the worker then answers every request with a
// `crashed` error and the page offers to start a fresh worker. See docs/PROTOCOL.md.

import { MSG, PROTOCOL_VERSION, message } from './protocol.js';
import { FileError, loadModelFiles } from './weights.js';

let glue = null; // the wasm-bindgen module (www/pkg/attnscope.js), once initialised
let glueReady = null; // its initialisation, shared by every `load`
let glueDir = null; // which build it is (www/pkg, www/pkg-relaxed, …)
let engine = null;
let info = null;
let dead = null; // why the wasm instance is unusable (it trapped): {message, fix}, or null
let loading = false;
let generating = false;
let stopRequested = false;
let generatedSoFar = 0; // tokens of the running generation, so a stop can say when it arrived
let generatedAtStop = null;
let lastConsoleError = null;

const PREDICTIONS_K = 10; // candidates kept per generated step for the predictions view
const post = (type, body = {}, transfer = []) => postMessage(message(type, body), transfer);

// The panic hook prints a Rust panic through console.error just before the trap; keep its text so
// the page can show what went wrong instead of "unreachable".
const consoleError = console.error.bind(console);
console.error = (...args) => {
  lastConsoleError = args.map(String).join(' ');
  consoleError(...args);
};

const STALE_BUILD = "stale cached app files: the page's JavaScript and WebAssembly are from different builds";
const RELOAD_FIX = 'reload with cache bypass (Ctrl+Shift+R, or Cmd+Shift+R on a Mac)';

class CrashError extends Error {}

function describeError(e) {
  if (e instanceof FileError) return { message: e.message, fix: e.fix, file: e.file, fatal: true };
  // Every later request gets the crash's own message and fix: the page shows the last one.
  if (e instanceof CrashError) return { ...dead, fatal: true, crashed: true };
  if (e instanceof WebAssembly.RuntimeError) {
    // console_error_panic_hook prints "panicked at FILE:LINE:COL:\nMESSAGE\n\nStack:\n…".
    const panic = lastConsoleError?.split(/\n\s*Stack:/)[0].replace(/\s+/g, ' ').trim() || null;
    // The trap's own text ("unreachable") means nothing to a person; it goes to the console.
    console.warn(`the wasm instance trapped: ${e.message}`);
    const restart = 'restart the model: the prompt and the text so far are kept';
    dead = panic
      ? { message: `the model crashed: ${panic}`, fix: restart }
      : { message: 'the model crashed without an error message; most often this means the tab ran out of memory', fix: `${restart} (if it happens again, close other tabs, or choose q4_0 or a shorter prompt)` };
    engine = null;
    return { ...dead, fatal: true, crashed: true };
  }
  if (e instanceof WebAssembly.LinkError || e instanceof WebAssembly.CompileError) {
    return { message: `${STALE_BUILD} (${e.message})`, fix: RELOAD_FIX, fatal: true };
  }
  if (e instanceof RangeError && /memory/i.test(e.message)) {
    return { message: `out of memory: ${e.message}`, fix: 'close other tabs, or choose the smaller q4_0 weights', fatal: true };
  }
  // Engine errors are JS Errors whose message already names the problem and what to do.
  return { message: e?.message ?? String(e), fix: e?.fix ?? '', fatal: false };
}

/**
 * Which build to run. The `threads` builds need SharedArrayBuffer, which a page only has when it is
 * cross-origin isolated (COOP/COEP, as ./build.sh serve sends); everywhere else, embeds on plain
 * static hosts included, a single-thread build runs. The `-relaxed` builds use relaxed SIMD (an
 * int8 dot product instruction), which a browser without it cannot even compile, so it is checked
 * first. All four compute the same bits, so the choice changes speed only. `relaxed: false` (the
 * app's ?relaxed=0) keeps to plain SIMD, to compare.
 */
function chooseBuild(requested, relaxed = true) {
  const cores = navigator.hardwareConcurrency ?? 1;
  const threads = Math.min(requested ?? cores, cores);
  const canShare = self.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';
  const suffix = relaxed && hasRelaxedSimd() ? '-relaxed' : '';
  return threads > 1 && canShare ? { dir: `pkg-threads${suffix}`, threads } : { dir: `pkg${suffix}`, threads: 1 };
}

/** A one-function module using `i8x16.relaxed_swizzle`: valid only where relaxed SIMD is. */
function hasRelaxedSimd() {
  const module = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11]);
  return WebAssembly.validate(module);
}

/** Loads the glue, fetches the .wasm, checks that both are from the same build, instantiates once. */
function ensureWasm(build) {
  glueReady ??= (async () => {
    let module;
    // A build that is missing on this server or that the browser refuses gives way to the next:
    // the same build on one thread, then the plain one, which runs everywhere.
    const fallbacks = [build];
    if (build.threads > 1 && build.dir.endsWith('-relaxed')) fallbacks.push({ dir: 'pkg-relaxed', threads: 1 });
    if (build.dir !== 'pkg') fallbacks.push({ dir: 'pkg', threads: 1 });
    for (const [i, candidate] of fallbacks.entries()) {
      try {
        module = await instantiate(candidate);
        glueDir = candidate.dir;
        break;
      } catch (e) {
        if (i === fallbacks.length - 1 || e instanceof FileError && e.message === STALE_BUILD) throw e;
        const what = candidate.threads > 1 ? 'running on one thread: the threads build' : 'running without relaxed SIMD: its build';
        post(MSG.STATUS, { text: `${what} did not start (${e.message})`, notice: true });
      }
    }
    module.set_panic_hook();
    glue = module;
  })();
  glueReady.catch(() => { glueReady = null; });
  return glueReady;
}

async function instantiate({ dir, threads }) {
  let module;
  try {
    module = await import(`./${dir}/attnscope.js`);
  } catch (e) {
    throw new FileError(`${dir}/attnscope.js`, `the WebAssembly build could not be loaded (${e.message})`, 'build it on the server with ./build.sh build (or ./build.sh serve), then reload');
  }
  const url = new URL(`./${dir}/attnscope_bg.wasm`, import.meta.url);
  const compiled = await compiledByPage(url);
  if (compiled.error) {
    if (compiled.name === 'CompileError') throw new WebAssembly.CompileError(compiled.error);
    throw new FileError(`${dir}/attnscope_bg.wasm`, `the WebAssembly build could not be fetched (${compiled.error})`, 'build it on the server with ./build.sh build, then reload');
  }
  // build.sh appends BUILD_ID (the SHA-256 of the .wasm) to the glue; a browser cache holding
  // one file of one build and one of another would otherwise fail with an obscure LinkError.
  if (!module.BUILD_ID || compiled.sha256 !== module.BUILD_ID) {
    throw new FileError(`${dir}/attnscope_bg.wasm`, STALE_BUILD, RELOAD_FIX);
  }
  await module.default({ module_or_path: compiled.module });
  if (threads > 1) {
    // A pool whose workers cannot start (a policy refusing them, say) would wait for ever.
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('its Web Workers did not start within 20 s')), 20_000));
    await Promise.race([module.initThreadPool(threads), timeout]);
  }
  return module;
}

const compiling = new Map(); // id → resolve, for `compile` requests to the page
let lastCompileId = 0;

/** The .wasm at `url`, compiled by the page (client.js says why): the `compiled` reply. */
function compiledByPage(url) {
  const id = ++lastCompileId;
  return new Promise((resolve) => {
    compiling.set(id, resolve);
    post(MSG.COMPILE, { id, url: url.href });
  });
}

/**
 * The `context` of a `load` (the app's `?context=` URL parameter, so a string of digits counts):
 * KV cache positions, or undefined for the engine's default (2,048). Checked here, before any
 * download, because wasm-bindgen would wrap a negative or fractional number into some u32.
 * The engine caps a valid value by the model's own limit; `ready.info.max_context` says the result.
 */
function contextPositions(context) {
  if (context === undefined || context === null) return undefined;
  const n = typeof context === 'string' && /^\s*\d+\s*$/.test(context) ? Number(context) : context;
  if (Number.isInteger(n) && n >= 2 && n <= 2 ** 32 - 1) return n;
  throw Object.assign(new Error(`context ${JSON.stringify(context)} is not a usable number of positions`), {
    fix: 'give the context as a whole number of tokens from 2 up to the model\'s limit (8,192 for SmolLM2), e.g. ?context=4096, or leave it out for 2,048',
  });
}

async function load({ quant = 'q8_0', base, threads, relaxed, context }) {
  if (dead) throw new CrashError(dead.message); // a trapped instance cannot be trusted: a new worker is needed
  if (generating) throw new Error('a generation is running: stop it before switching weights');
  if (loading) throw new Error('the model is already loading: wait for it to finish');
  const positions = contextPositions(context);
  loading = true;
  try {
    const started = performance.now();
    post(MSG.STATUS, { text: 'starting WebAssembly…' });
    await ensureWasm(chooseBuild(threads, relaxed !== false));
    const wasmReady = performance.now();
    // Give the old model's memory back to the allocator before the new weights arrive.
    engine?.free();
    engine = null;
    info = null;
    const weightsName = `model.${quant}.safetensors`;
    const open = (name, size, loaded) => {
      // One growth of wasm memory for what loading will hold, rather than one per allocation
      // (config.json comes first).
      if (name === weightsName) glue.reserve_memory(loaded['config.json'], size, positions);
      return new glue.FileBuffer(name, size);
    };
    const { files, fromCache } = await loadModelFiles(
      base,
      ['config.json', 'tokenizer.json', weightsName],
      open,
      (p) => post(MSG.PROGRESS, p),
      (text) => post(MSG.STATUS, { text, notice: true }),
    );
    post(MSG.STATUS, { text: 'building the model…' });
    const filesReady = performance.now();
    try {
      // Takes the weights' buffer (freed with the engine, or at once if building fails).
      engine = new glue.Engine(files['config.json'], files['tokenizer.json'], files[weightsName], positions);
    } finally {
      files['config.json'].free();
      files['tokenizer.json'].free();
    }
    info = { ...JSON.parse(engine.info()), threads: glue.threads(), relaxed_simd: glueDir.endsWith('-relaxed'), wasm_memory_bytes: glue.memory_bytes() };
    const end = performance.now();
    const phasesMs = { wasm: wasmReady - started, files: filesReady - wasmReady, build: end - filesReady };
    post(MSG.READY, { info, fromCache, loadMs: end - started, phasesMs, buildId: glue.BUILD_ID });
  } finally {
    loading = false;
  }
}

// A MessageChannel round trip is a macrotask without setTimeout's 4 ms clamp for nested timers.
const yieldToEvents = () => new Promise((resolve) => {
  const channel = new MessageChannel();
  channel.port1.onmessage = resolve;
  channel.port2.postMessage(null);
});

function requireEngine() {
  if (dead) throw new CrashError(dead.message);
  if (!engine) throw new Error(loading ? 'the model is still loading' : 'the model is not loaded');
  return engine;
}

async function generate({ id, prompt, options }) {
  if (generating) throw new Error('a generation is already running: stop it first');
  const model = requireEngine();
  generating = true;
  stopRequested = false;
  generatedSoFar = 0;
  generatedAtStop = null;
  try {
    const t0 = performance.now();
    const begun = JSON.parse(model.begin(prompt, JSON.stringify(options)));
    const prefillMs = performance.now() - t0;
    post(MSG.PROMPT, { id, ids: begun.prompt_ids, tokens: begun.prompt_tokens, prefillMs });
    const ids = [];
    let text = '';
    let firstAt = null;
    const stats = () => {
      const decoded = Math.max(0, ids.length - 1); // tokens after the first: the decode rate
      const decodeMs = firstAt === null ? 0 : performance.now() - firstAt;
      return {
        prompt_tokens: begun.prompt_ids.length,
        generated_tokens: ids.length,
        prefill_tok_s: begun.prompt_ids.length / (prefillMs / 1000),
        decode_tok_s: decoded > 0 && decodeMs > 0 ? decoded / (decodeMs / 1000) : 0,
        ttft_ms: firstAt === null ? null : firstAt - t0, // prefill + the first step
        seed: options.seed,
        threads: info.threads,
        wasm_memory_bytes: glue.memory_bytes(),
      };
    };
    let reason;
    for (;;) {
      await yieldToEvents();
      if (stopRequested) {
        reason = 'stopped';
        break;
      }
      if (dead) throw new CrashError(dead.message);
      const step = JSON.parse(model.next());
      if (step.id !== null) {
        firstAt ??= performance.now();
        ids.push(step.id);
        generatedSoFar = ids.length;
        text += step.text;
        // The candidates of this step (raw and under the sampling settings, and which was
        // sampled) exist only until the next step: they travel with the token.
        const predictions = JSON.parse(model.predictions(PREDICTIONS_K));
        post(MSG.TOKEN, { id, token: { id: step.id, text: step.text, label: step.label }, index: ids.length - 1, seqLen: model.seq_len(), stats: stats(), predictions });
      }
      if (step.done) {
        reason = step.reason;
        break;
      }
    }
    // How many tokens were computed after the stop arrived: 0, or 1 if it came mid-step.
    const afterStop = generatedAtStop === null ? null : ids.length - generatedAtStop;
    post(MSG.DONE, { id, reason, stats: stats(), ids, text, seqLen: model.seq_len(), tokensAfterStop: afterStop });
  } finally {
    generating = false;
  }
}

/** The pattern of one head, or the mean over the layer's heads (`mean: true`), as T×T rows. */
function attention({ id, layer, head, mean = false }) {
  const model = requireEngine();
  let weights;
  if (mean) {
    for (let h = 0; h < info.n_heads; h++) {
      const one = model.attention(layer, h);
      if (!weights) weights = new Float32Array(one.length);
      for (let k = 0; k < one.length; k++) weights[k] += one[k] / info.n_heads;
    }
  } else {
    weights = model.attention(layer, head);
  }
  const size = Math.round(Math.sqrt(weights.length));
  // The sequence can be longer than T: the newest token is not fed to the model until the next
  // step, and only the first `capture_tokens` positions are captured.
  const tokens = JSON.parse(model.tokens()).slice(0, size);
  post(MSG.ATTENTION, { id, layer, head, mean, size, tokens, weights, seqLen: model.seq_len(), captureTokens: info.capture_tokens }, [weights.buffer]);
}

function overview({ id, size }) {
  const model = requireEngine();
  const weights = model.overview(size);
  post(MSG.OVERVIEW, { id, size, layers: info.n_layers, heads: info.n_heads, seqLen: model.seq_len(), weights }, [weights.buffer]);
}

function sequence({ id }) {
  post(MSG.SEQUENCE, { id, ...JSON.parse(requireEngine().sequence()) });
}

function explain({ id, layer, head, query }) {
  post(MSG.EXPLAIN, { id, layer, head, query, explanation: JSON.parse(requireEngine().explain(layer, head, query)) });
}

function logitLens({ id, k = 5 }) {
  post(MSG.LOGIT_LENS, { id, k, ...JSON.parse(requireEngine().logit_lens(k)) });
}

// The names of Engine.head_stats' floats per head, in order (src/wasm.rs, head_stats_of).
const HEAD_STAT_NAMES = ['entropy', 'first', 'previous', 'self', 'same'];

function headStats({ id }) {
  const model = requireEngine();
  const stats = model.head_stats();
  const size = Math.min(Math.max(0, model.seq_len() - 1), info.capture_tokens);
  post(MSG.HEAD_STATS, { id, stats, names: HEAD_STAT_NAMES, layers: info.n_layers, heads: info.n_heads, size }, [stats.buffer]);
}

/** For the bench (docs/PROTOCOL.md): how long a plain read of every weight matrix takes here. */
function readWeights({ id, passes = 1 }) {
  const model = requireEngine();
  const t0 = performance.now();
  const bytes = model.read_weights(passes);
  post(MSG.READ_WEIGHTS, { id, bytes, ms: (performance.now() - t0) / passes });
}

/**
 * Test-only (docs/PROTOCOL.md): a real panic or out-of-memory inside the wasm instance, through
 * the same error handling as every engine call, so the tests see what a person would.
 */
function crashForTests({ kind, message: text }) {
  if (dead) throw new CrashError(dead.message);
  if (!glue) throw new Error('the WebAssembly module is not loaded yet: send `load` first');
  glue.crash_for_tests(kind, text ?? 'crash requested by a test');
}

function tokenize({ id, text, chat }) {
  post(MSG.TOKENIZE, { id, ...JSON.parse(requireEngine().tokenize(text, chat)) });
}

onmessage = async (event) => {
  const msg = event.data;
  if (msg?.v !== PROTOCOL_VERSION) {
    post(MSG.ERROR, { id: msg?.id, message: `the page speaks protocol version ${msg?.v}, this worker ${PROTOCOL_VERSION}: ${STALE_BUILD}`, fix: RELOAD_FIX, fatal: true });
    return;
  }
  if (msg.type === MSG.COMPILED) {
    compiling.get(msg.id)?.(msg);
    compiling.delete(msg.id);
    return;
  }
  if (msg.type === MSG.STOP) {
    if (generating && !stopRequested) {
      stopRequested = true;
      generatedAtStop = generatedSoFar;
    }
    return;
  }
  lastConsoleError = null;
  try {
    switch (msg.type) {
      case MSG.LOAD: await load(msg); break;
      case MSG.GENERATE: await generate(msg); break;
      case MSG.ATTENTION: attention(msg); break;
      case MSG.OVERVIEW: overview(msg); break;
      case MSG.TOKENIZE: tokenize(msg); break;
      case MSG.SEQUENCE: sequence(msg); break;
      case MSG.EXPLAIN: explain(msg); break;
      case MSG.LOGIT_LENS: logitLens(msg); break;
      case MSG.HEAD_STATS: headStats(msg); break;
      case MSG.CRASH_FOR_TESTS: crashForTests(msg); break;
      case MSG.READ_WEIGHTS: readWeights(msg); break;
      default: throw new Error(`unknown message type "${msg.type}"`);
    }
  } catch (e) {
    post(MSG.ERROR, { id: msg.id, request: msg.type, ...describeError(e) });
  }
};
