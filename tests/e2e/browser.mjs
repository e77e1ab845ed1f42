// Shared set-up for the browser tests: Debian's Chromium driven by playwright-core, the app served
// over real HTTP (ATTNSCOPE_URL, started by ./build.sh test), and the native CLI's answers that
// the page must reproduce (ATTNSCOPE_NATIVE_REF, or the CLI itself when that is not set).

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BASE_URL = process.env.ATTNSCOPE_URL ?? 'http://127.0.0.1:8080';
export const CACHE_NAME = 'attnscope-models-v1';
const MODEL_DIR = join(ROOT, 'models/smollm2-135m-instruct');
const CLI = join(ROOT, 'target/release/attnscope');

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// Messages a test provokes on purpose (aborted model requests, a file served damaged): the
// browser logs them as errors, and they are not problems of the app.
const EXPECTED = [/net::ERR_INTERNET_DISCONNECTED/, /Failed to load resource/, /internetdisconnected/i];

/**
 * A browser with its own fresh profile in a temporary folder, so the Cache API survives reloads
 * within one test file and nothing leaks between files. Collects page errors and console errors.
 */
export async function freshContext() {
  const dir = mkdtempSync(join(tmpdir(), 'attnscope-e2e-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  });
  context.setDefaultTimeout(120_000);
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    problems: watchProblems(page),
    async close() {
      await context.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The page's errors and console errors (of its workers too), as they happen. */
function watchProblems(page) {
  const problems = [];
  const watch = (target, where) => {
    target.on('console', (m) => {
      if (m.type() === 'error' && !EXPECTED.some((re) => re.test(m.text()))) problems.push(`${where} console: ${m.text()}`);
    });
  };
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  watch(page, 'page');
  page.on('worker', (w) => watch(w, 'worker'));
  return problems;
}

/**
 * Like freshContext, but its pages can really be hidden, as a tab is when another tab is in
 * front. A browser Playwright launches cannot do that: Playwright turns on focus emulation
 * (Emulation.setFocusEmulationEnabled) for every page, which keeps the page visible whatever is
 * in front of it, and adds switches that turn backgrounding off. So Chromium is started here, with
 * freshContext's switches only, and Playwright attaches over CDP without its defaults; bringing
 * another page to the front then makes this one `document.visibilityState === 'hidden'`, with
 * no animation frames and timers throttled to one a second, as in a person's browser.
 */
export async function hideableContext() {
  const dir = mkdtempSync(join(tmpdir(), 'attnscope-e2e-hidden-'));
  const browserProcess = spawn('/usr/bin/chromium', [
    ...CHROMIUM_ARGS, `--user-data-dir=${dir}`, '--remote-debugging-port=0', '--window-size=1280,900', 'about:blank',
  ], { stdio: 'ignore' });
  const exited = new Promise((resolve) => browserProcess.once('exit', resolve));
  // With port 0 Chromium picks a free port and writes it as the first line of this file.
  const portFile = join(dir, 'DevToolsActivePort');
  const deadline = Date.now() + 30_000;
  while (!existsSync(portFile) || !readFileSync(portFile, 'utf8').includes('\n')) {
    if (browserProcess.exitCode !== null || Date.now() > deadline) {
      browserProcess.kill();
      throw new Error(`Chromium (/usr/bin/chromium) did not open its DevTools port within 30 s (exit code ${browserProcess.exitCode})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const port = readFileSync(portFile, 'utf8').split('\n')[0];
  const browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`, { noDefaults: true });
  const context = browser.contexts()[0];
  context.setDefaultTimeout(120_000);
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    problems: watchProblems(page),
    async close() {
      // Over CDP, browser.close() only disconnects: ask Chromium itself to quit, and kill it if
      // it does not. Its helper processes may still be writing to the profile for a moment after.
      await (await browser.newBrowserCDPSession()).send('Browser.close').catch(() => {});
      const quit = setTimeout(() => browserProcess.kill(), 10_000);
      await exited;
      clearTimeout(quit);
      await browser.close();
      rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
    },
  };
}

/** Opens the app and waits for `window.attnscope.ready`; returns the model's info. */
export async function openApp(page, path = '/') {
  await page.goto(new URL(path, BASE_URL).href);
  await page.waitForFunction(() => window.attnscope?.ready);
  return page.evaluate(() => window.attnscope.ready);
}

/** The page's error banner, or null when it is hidden. */
export async function bannerText(page) {
  return page.evaluate(() => (document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent.replace(/\s+/g, ' ').trim()));
}

// The CLI's defaults (src/sampler.rs), for the fields a reference file leaves out.
const CLI_DEFAULTS = { chat: false, temperature: 0, repeat_penalty: 1.1, seed: 299_792_458, quant: 'q8_0' };

/**
 * The native reference: {prompt, chat, max_tokens, temperature, repeat_penalty, seed, quant, ids}.
 * From the JSON file named by ATTNSCOPE_NATIVE_REF when set, else by running the CLI; null when
 * neither is available (the parity tests are then skipped, saying why).
 */
export function nativeReference() {
  const file = process.env.ATTNSCOPE_NATIVE_REF;
  if (file) return { ...CLI_DEFAULTS, ...JSON.parse(readFileSync(file, 'utf8')) };
  if (!existsSync(CLI)) return null;
  return runNative({ prompt: 'The capital of France is', max_tokens: 24 });
}

/**
 * Runs the native CLI (target/release/attnscope generate --json) with the given settings; the
 * optional `top_p`, `ignore_eos`, `context` and `capture` become the flags of the same names.
 */
export function runNative(settings) {
  const s = { ...CLI_DEFAULTS, ...settings };
  if (!existsSync(CLI)) return null;
  const args = [
    'generate', '--model', MODEL_DIR, '--quant', s.quant, '--prompt', s.prompt,
    '--max-tokens', String(s.max_tokens), '--temperature', String(s.temperature),
    '--repeat-penalty', String(s.repeat_penalty), '--seed', String(s.seed), '--json',
  ];
  if (s.chat) args.push('--chat');
  if (s.top_p != null) args.push('--top-p', String(s.top_p));
  if (s.ignore_eos) args.push('--ignore-eos');
  if (s.context != null) args.push('--context', String(s.context));
  if (s.capture) args.push('--capture');
  const out = execFileSync(CLI, args, { encoding: 'utf8' });
  const ids = out.trim().split('\n').map((line) => JSON.parse(line)).filter((line) => 'id' in line).map((line) => line.id);
  return { ...s, ids };
}

/**
 * The CLI's logits for the reference's prompt (`logits --top k`): the k largest, as [id, logit]
 * pairs, largest first; null without the CLI.
 */
export function nativeTopLogits(ref, k = 10) {
  if (!existsSync(CLI)) return null;
  const args = ['logits', '--model', MODEL_DIR, '--quant', ref.quant, '--prompt', ref.prompt, '--top', String(k)];
  if (ref.chat) args.push('--chat');
  return JSON.parse(execFileSync(CLI, args, { encoding: 'utf8' })).top;
}

/** The CLI's captured patterns of one layer after `prompt` (`attention --layer`): [head][query][key]. */
export function nativeAttention(prompt, layer, quant = 'q8_0') {
  if (!existsSync(CLI)) return null;
  const args = ['attention', '--model', MODEL_DIR, '--quant', quant, '--prompt', prompt, '--layer', String(layer)];
  return JSON.parse(execFileSync(CLI, args, { encoding: 'utf8', maxBuffer: 1 << 26 })).weights[0];
}

/** The page's logits after the prompt of its last run, as `nativeTopLogits` gives the CLI's. */
export async function pageTopLogits(page) {
  const [first] = await page.evaluate(() => window.attnscope.predictions());
  return first.top.map((c) => [c.id, c.logit]);
}

/** The reference's settings as `window.attnscope.generate` arguments. */
export function generateArgs(ref, overrides = {}) {
  return {
    prompt: ref.prompt, chat: ref.chat, maxTokens: ref.max_tokens, temperature: ref.temperature,
    repeatPenalty: ref.repeat_penalty, seed: ref.seed, quant: ref.quant, ...overrides,
  };
}
