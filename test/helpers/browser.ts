// A headless Chromium for the browser tests that needs nothing but `npm ci`.
//
// By default the browser comes from the @sparticuz/chromium devDependency: a Chromium build shipped
// inside the npm package (brotli-compressed), unpacked once to the OS temp dir and launched by
// playwright-core. Set CHROMIUM_PATH to use another binary (e.g. Debian's /usr/bin/chromium).
import { existsSync, mkdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium as playwright, type Browser } from 'playwright-core';

// Flags this sandbox needs: without the background-networking ones Chromium's own connections
// (component updates, sync) are refused here and it stalls; no GPU, no QUIC, no setuid sandbox.
// playwright gives every launch a fresh --user-data-dir of its own.
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * @sparticuz/chromium unpacks to <tmp>/chromium and treats an existing file as done, so two test
 * files starting at once could launch a half-written binary. A mkdir lock plus a marker written
 * after a complete unpack make the first caller unpack and the others wait.
 */
async function npmChromiumPath(): Promise<string> {
  const { default: sparticuz } = await import('@sparticuz/chromium');
  const binary = join(tmpdir(), 'chromium');
  const ready = join(tmpdir(), 'chromium.autocode-ready');
  if (existsSync(ready) && existsSync(binary)) return binary;
  const lock = join(tmpdir(), 'chromium.autocode-lock');
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (existsSync(ready) && existsSync(binary)) return binary;
      // A lock left by a killed run: take it over after a minute (unpacking takes a few seconds).
      if (Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 60_000) rmdirSync(lock);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      await sleep(100);
    }
  }
  try {
    const path = await sparticuz.executablePath();
    writeFileSync(ready, `${path}\n`);
    return path;
  } finally {
    rmdirSync(lock);
  }
}

export async function chromiumPath(): Promise<string> {
  const override = process.env['CHROMIUM_PATH'];
  if (override) {
    if (!existsSync(override)) throw new Error(`CHROMIUM_PATH=${override} does not exist`);
    return override;
  }
  return npmChromiumPath();
}

export async function launchChromium(): Promise<Browser> {
  return playwright.launch({
    executablePath: await chromiumPath(),
    args: CHROMIUM_FLAGS,
    // The npm build reads its fonts through this fontconfig directory (it unpacks it next to the binary).
    env: { ...process.env, FONTCONFIG_PATH: process.env['FONTCONFIG_PATH'] ?? join(tmpdir(), 'fonts') },
  });
}
