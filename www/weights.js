// Model files: fetch with progress, verify size and SHA-256 against the manifest, keep verified
// files in the Cache API. Runs in the worker.
//
// Every file lands in a buffer the caller opens (the engine's `FileBuffer`, in wasm memory): a
// cached file streams into it piece by piece, so the weights are copied once and the check runs
// while the next piece is read. Nothing is cached before it is verified, and a cached file is
// checked again before use: a corrupt or truncated entry is deleted and downloaded afresh, with a
// note saying so. The check on reading is against a fingerprint (src/fingerprint.rs) stored with
// the entry when its SHA-256 was verified: Chromium's SHA-256 of 143 MB took 300–400 ms of the
// worker, the fingerprint runs while the next piece is read, and it still catches any damaged
// word.
// Entries without one get the SHA-256. Entries are keyed by URL plus `?sha256=<hex>` (a query,
// not a fragment: the Cache API ignores fragments when matching), so a new model version never
// reads an old file, and storing a new version deletes the old ones. If the storage quota is
// full the app still runs, uncached, and says so.

import { sha256 } from './digest.js';

export const CACHE_NAME = 'attnscope-models-v1';

export class FileError extends Error {
  constructor(file, message, fix) {
    super(message);
    this.file = file;
    this.fix = fix;
  }
}

const FINGERPRINT = 'x-attnscope-fingerprint';

async function openCache() {
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return null; // e.g. an opaque origin: run without a cache
  }
}

/** The manifest: from the network when reachable (and cached), else the cached copy (offline). */
async function loadManifest(base, cache, note) {
  const url = new URL('manifest.json', base).href;
  let response;
  try {
    response = await fetch(url, { cache: 'no-cache' });
  } catch {
    const cached = cache && (await cache.match(url));
    if (cached) {
      note('offline: using the cached model');
      return await cached.json();
    }
    throw new FileError('manifest.json', `cannot reach ${url}`, 'check the network connection and that the server is running, then reload');
  }
  if (!response.ok) {
    throw new FileError('manifest.json', `${url} answered ${response.status} ${response.statusText}`, 'run ./build.sh model on the server, or check the model path');
  }
  const text = await response.text();
  let manifest;
  try {
    manifest = JSON.parse(text);
  } catch {
    throw new FileError('manifest.json', `${url} is not JSON (the server sent ${describe(text)})`, 'check the model path; the server may be returning an error page');
  }
  if (manifest.format !== 'attnscope-model/1' || typeof manifest.files !== 'object') {
    throw new FileError('manifest.json', `${url} is not an attnscope model manifest`, 'convert the model with attnscope-convert');
  }
  if (cache) {
    try {
      await cache.put(url, new Response(text, { headers: { 'content-type': 'application/json' } }));
    } catch { /* quota: the manifest will be fetched again next time */ }
  }
  return manifest;
}

function describe(text) {
  const start = text.slice(0, 60).replace(/\s+/g, ' ');
  return /<html|<!doctype/i.test(start) ? 'an HTML page' : `"${start}…"`;
}

function cacheKey(url, sha) {
  const key = new URL(url);
  key.search = `?sha256=${sha}`;
  return key.href;
}

/** Deletes cached versions of `url` other than `keep` (an older model would otherwise stay forever). */
async function deleteOtherVersions(cache, url, keep) {
  const path = new URL(url).pathname;
  for (const request of await cache.keys()) {
    const key = new URL(request.url);
    if (key.pathname === path && key.href !== keep) await cache.delete(request);
  }
}

/**
 * Loads `names` from the model folder at `base`, each into `open(name, size, files)` (`files`: the
 * buffers loaded so far, by name): a buffer with append(Uint8Array), fingerprint() and free(). Returns {files: {name: buffer},
 * manifest, fromCache}; on failure the buffers it opened are freed.
 * onProgress({file, loaded, total, phase, overallLoaded, overallTotal}) with phase download /
 * verify / cached; note(text) for things a person should read.
 */
export async function loadModelFiles(base, names, open, onProgress, note) {
  const cache = await openCache();
  const manifest = await loadManifest(base, cache, note);
  for (const name of names) {
    if (!manifest.files[name]) throw new FileError(name, `the manifest does not list ${name}`, 'convert the model again so its manifest lists every file');
  }
  const overallTotal = names.reduce((sum, name) => sum + manifest.files[name].size, 0);
  let done = 0; // bytes of the files already loaded
  const files = {};
  let allFromCache = true;
  let cacheUsable = !!cache;
  try {
    for (const name of names) {
      const entry = manifest.files[name];
      const report = (p) => onProgress({ ...p, overallLoaded: done + p.loaded, overallTotal });
      const url = new URL(name, base).href;
      const key = cacheKey(url, entry.sha256);
      const cached = cache && (await cache.match(key));
      if (cached) {
        const buffer = open(name, entry.size, files);
        const damage = await readCached(cached, name, entry, buffer, report).catch((e) => `it could not be read: ${e.message}`);
        if (damage) {
          buffer.free();
          await cache.delete(key);
          note(`the cached copy of ${name} was damaged (${damage}); it was deleted and is being downloaded again`);
        } else {
          files[name] = buffer;
        }
      }
      if (!files[name]) {
        allFromCache = false;
        const bytes = await download(url, name, entry, report, note);
        const buffer = open(name, entry.size, files);
        files[name] = buffer;
        buffer.append(bytes);
        if (cacheUsable) {
          try {
            await cache.put(key, new Response(bytes, { headers: { 'content-type': 'application/octet-stream', [FINGERPRINT]: buffer.fingerprint() } }));
            await deleteOtherVersions(cache, url, key);
          } catch (e) {
            cacheUsable = false;
            note(`could not keep ${name} for next time (${e.name === 'QuotaExceededError' ? 'storage is full' : e.message}); running without the cache`);
          }
        }
      }
      done += entry.size;
    }
  } catch (e) {
    for (const buffer of Object.values(files)) buffer.free();
    throw e;
  }
  return { files, manifest, fromCache: allFromCache };
}

/**
 * Reads a cached entry into `buffer`: streamed and fingerprinted piece by piece when the entry
 * has a fingerprint, else whole and checked by SHA-256. Returns what is wrong with it, or null.
 */
async function readCached(cached, name, entry, buffer, report) {
  report({ file: name, loaded: 0, total: entry.size, phase: 'verify' });
  const recorded = cached.headers.get(FINGERPRINT);
  if (!recorded) {
    const bytes = new Uint8Array(await cached.arrayBuffer());
    if (bytes.byteLength !== entry.size) return `${bytes.byteLength} bytes instead of ${entry.size}`;
    if ((await sha256(bytes)) !== entry.sha256) return 'its content changed since it was verified';
    buffer.append(bytes);
  } else {
    const loaded = await readBody(cached.body, entry.size, (piece) => buffer.append(piece), (n) => report({ file: name, loaded: n, total: entry.size, phase: 'verify' }));
    if (loaded > entry.size) return `more than the ${entry.size} bytes it should have`;
    if (loaded !== entry.size) return `${loaded} bytes instead of ${entry.size}`;
    if (buffer.fingerprint() !== recorded) return 'its content changed since it was verified';
  }
  report({ file: name, loaded: entry.size, total: entry.size, phase: 'cached' });
  return null;
}

const ATTEMPTS = 3;

/** Downloads one file with progress, retrying a broken transfer; verifies before returning. */
async function download(url, name, entry, onProgress, note) {
  let lastError;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    try {
      const bytes = await fetchWithProgress(url, name, entry.size, onProgress);
      if (bytes.byteLength !== entry.size) {
        throw new FileError(name, `${name} arrived with ${bytes.byteLength} bytes, the manifest says ${entry.size}`, 'the download was cut short or the file on the server changed: reload to try again');
      }
      onProgress({ file: name, loaded: entry.size, total: entry.size, phase: 'verify' });
      const digest = await sha256(bytes);
      if (digest !== entry.sha256) {
        throw new FileError(name, `${name} has SHA-256 ${digest.slice(0, 12)}…, the manifest says ${entry.sha256.slice(0, 12)}…`, 'the file on the server does not match its manifest: convert the model again on the server, then reload');
      }
      return bytes;
    } catch (e) {
      lastError = e;
      const retriable = e instanceof TypeError || e.retriable; // network failure or cut-off body
      if (!retriable || attempt === ATTEMPTS) break;
      note(`the download of ${name} was interrupted (${e.message}); retrying (${attempt + 1}/${ATTEMPTS})`);
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
  if (lastError instanceof FileError) throw lastError;
  throw new FileError(name, `could not download ${name}: ${lastError?.message ?? lastError}`, 'check the network connection, then reload');
}

async function fetchWithProgress(url, name, expected, onProgress) {
  const response = await fetch(url, { cache: 'no-store' });
  if (!response.ok) {
    throw new FileError(name, `${url} answered ${response.status} ${response.statusText}`, 'run ./build.sh model on the server, or check the model path');
  }
  const type = response.headers.get('content-type') || '';
  if (type.includes('text/html')) {
    throw new FileError(name, `${url} returned an HTML page instead of the file`, 'check the model path; the server may be answering with an error page');
  }
  const out = new Uint8Array(expected);
  let loaded;
  try {
    loaded = await readBody(response.body, expected, (piece, at) => out.set(piece, at), (n) => onProgress({ file: name, loaded: n, total: expected, phase: 'download' }));
  } catch (e) {
    const err = new Error(`connection lost after ${e.loaded} of ${expected} bytes`);
    err.retriable = true;
    throw err;
  }
  if (loaded > expected) {
    throw new FileError(name, `${name} is larger than the ${expected} bytes the manifest says`, 'the file on the server does not match its manifest: convert the model again');
  }
  if (loaded !== expected) {
    const err = new Error(`the transfer ended after ${loaded} of ${expected} bytes`);
    err.retriable = true;
    throw err;
  }
  onProgress({ file: name, loaded, total: expected, phase: 'download' });
  return out;
}

/**
 * Reads `body` piece by piece into `append(piece, at)`, with `progress(loaded)` at most every
 * 50 ms. Returns the bytes read; a body longer than `expected` is cancelled at the first piece
 * past it, and the count returned is then more than `expected`. A failed read throws, with the
 * bytes read before it as the error's `loaded`.
 */
async function readBody(body, expected, append, progress) {
  const reader = body.getReader();
  let loaded = 0;
  let last = 0;
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      throw Object.assign(e instanceof Error ? e : new Error(String(e)), { loaded });
    }
    if (chunk.done) return loaded;
    const piece = chunk.value;
    if (loaded + piece.byteLength > expected) {
      await reader.cancel();
      return loaded + piece.byteLength;
    }
    append(piece, loaded);
    loaded += piece.byteLength;
    const now = performance.now();
    if (now - last > 50) {
      last = now;
      progress(loaded);
    }
  }
}
