// Shared set-up for the browser tests: Debian's Chromium driven by playwright-core, the served
// app, and the native CLI whose answers the page must reproduce.

import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BASE_URL = process.env.ATTNSCOPE_URL ?? 'http://127.0.0.1:8080';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** A browser context with its own fresh profile (so the Cache API survives reloads within it). */
export async function freshContext() {
  const dir = mkdtempSync(join(tmpdir(), 'attnscope-e2e-'));
  const context = await chromium.launchPersistentContext(dir, { executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, viewport: { width: 1280, height: 900 } });
  const page = context.pages()[0] ?? (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  return { context, page, problems };
}

export async function openApp(page, path = '/') {
  await page.goto(new URL(path, BASE_URL).href);
  return page.evaluate(() => window.attnscope.ready);
}

/** The native CLI's token ids for a greedy generation. */
export function nativeIds({ prompt, maxTokens, quant = 'q8_0' }) {
  const out = execFileSync(join(ROOT, 'target/release/attnscope'), [
    'generate', '--model', join(ROOT, 'models/smollm2-135m-instruct'), '--quant', quant, '--prompt', prompt,
    '--max-tokens', String(maxTokens), '--temperature', '0', '--repeat-penalty', '1.0', '--seed', '1', '--json',
  ], { encoding: 'utf8' });
  return out.trim().split('\n').map((l) => JSON.parse(l)).filter((l) => 'id' in l).map((l) => l.id);
}
