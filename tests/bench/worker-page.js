// attnscope's engine worker — www/worker.js, the very file and builds the app starts — driven over
// its protocol by a page that draws nothing, as wllama's page is. So the two engines are timed
// under the same conditions; the app's own figures (its views redrawing as tokens arrive, on the
// same cores) are measured separately through the app. bench.mjs calls window.ours.*.
import { MSG } from '/www/protocol.js';
import { MODEL_BASE, WorkerClient, engineOptions } from '/www/client.js';

let waiting = null; // {on: the event that ends the current step, resolve, reject}

// The app's own client: it starts the worker and checks the protocol version.
const client = new WorkerClient((msg) => {
  if (!waiting) return;
  if (msg.type === MSG.ERROR) waiting.reject(new Error(`${msg.message} (${msg.fix})`));
  else if (msg.type === 'worker-failed' || msg.type === 'version-mismatch') waiting.reject(new Error(`the worker failed: ${msg.message ?? msg.type}`));
  else if (msg.type === waiting.on) waiting.resolve(msg);
  else return;
  waiting = null;
});

/** Sends a message and resolves with the event `on` that ends it (or rejects with an error). */
const until = (on, type, body) => new Promise((resolve, reject) => {
  waiting = { on, resolve, reject };
  client.send(type, body);
});

window.ours = {
  async load(quant, threads, relaxed) {
    client.start();
    const ready = await until(MSG.READY, MSG.LOAD, { quant, base: MODEL_BASE, threads, relaxed });
    return ready.info;
  },
  async generate(prompt, maxTokens) {
    const options = engineOptions({ maxTokens, ignoreEos: true, temperature: 0, repeatPenalty: 1.1, seed: 1 });
    const done = await until(MSG.DONE, MSG.GENERATE, { id: client.newId(), prompt, options });
    return done.stats;
  },
  /** {bytes, ms}: a plain read of every weight matrix, in this worker (the read bound), `passes` times. */
  async readWeights(passes) {
    const { bytes, ms } = await until(MSG.READ_WEIGHTS, MSG.READ_WEIGHTS, { id: client.newId(), passes });
    return { bytes, ms };
  },
};
window.oursReady = true;
