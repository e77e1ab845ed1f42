// SHA-256 as hex, for the page (the .wasm it compiles) and the worker (model files).

export function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

export async function sha256(bytes) {
  return hex(await crypto.subtle.digest('SHA-256', bytes));
}
