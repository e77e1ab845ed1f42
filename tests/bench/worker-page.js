// attnscope's engine worker — www/worker.js, the very file and builds the app starts — driven over
// its protocol by a page that draws nothing, as wllama's page is. So the two engines are timed
// under the same conditions; the app's own figures (its views redrawing as tokens arrive, on the
// same cores) are measured separately through the app. bench.mjs calls window.ours.*.
import { MSG, message } from '/www/protocol.js';
import { engineOptions } from '/www/client.js';

let worker = null;
let pending = null; // {resolve, reject, on: the message type that answers}

function start() {
  worker?.terminate();
  worker = new Worker('/www/worker.js', { type: 'module' });
  worker.onmessage = ({ data: msg }) => {
    if (!pending) return;
    if (msg.type === MSG.ERROR) pending.reject(new Error(`${msg.message} (${msg.fix})`));
    else if (msg.type === pending.on) pending.resolve(msg);
    else return;
    pending = null;
  };
}

const ask = (type, body, on) => new Promise((resolve, reject) => {
  pending = { resolve, reject, on };
  worker.postMessage(message(type, body));
});

let id = 0;
window.ours = {
  async load(quant, threads, relaxed) {
    start();
    const base = new URL('/models/smollm2-135m-instruct/', location.href).href;
    const ready = await ask(MSG.LOAD, { quant, base, threads, relaxed }, MSG.READY);
    return ready.info;
  },
  async generate(prompt, maxTokens) {
    const options = engineOptions({ maxTokens, ignoreEos: true, temperature: 0, repeatPenalty: 1.1, seed: 1 });
    const done = await ask(MSG.GENERATE, { id: ++id, prompt, options }, MSG.DONE);
    return done.stats;
  },
};
window.oursReady = true;
