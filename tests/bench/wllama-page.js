// The peer: wllama (llama.cpp compiled to wasm with SIMD) in the same browser, on a GGUF of the
// same model. bench.mjs calls window.peer.* and reads llama.cpp's own timings.
import { Wllama } from '/wllama/esm/index.js';

let wllama = null;

window.peer = {
  async load(modelUrl, nThreads) {
    if (wllama) await wllama.exit();
    wllama = new Wllama({ default: '/wllama/esm/wasm/wllama.wasm' }, { suppressNativeLog: true, allowOffline: true });
    const t0 = performance.now();
    await wllama.loadModelFromUrl(modelUrl, { n_threads: nThreads, n_ctx: 2048, n_gpu_layers: 0, useCache: false });
    return { loadMs: performance.now() - t0, crossOriginIsolated: self.crossOriginIsolated };
  },
  async complete(prompt, maxTokens) {
    const t0 = performance.now();
    const r = await wllama.createCompletion({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, cache_prompt: false });
    return { wallMs: performance.now() - t0, timings: r.timings ?? null, text: r.choices?.[0]?.text ?? '' };
  },
};
window.peerReady = true;
