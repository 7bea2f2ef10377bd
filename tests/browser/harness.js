// The harness of the browser tests: built `cellar serve` processes (servers.js), tokens from
// `cellar token`, browser contexts in Debian's headless Chromium driven by playwright-core (no
// browser download), screenshots checked to be non-blank, and the check that a page kept
// nothing in the browser (design rule `sync-no-localstorage`).
//
// A test file imports what it needs and ends with `after(closeAll)`:
//
//   const server = await startServer({ env: { CELLAR_SERVER_DEMO: 'true' } });
//   const page = await newPage();
//   await page.goto(`${server.url}/demo#token=${token('alice')}`);
//   await screenshot(page, 'demo-empty');
//   await assertNothingStored(page.context());

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { CELLAR_BIN, SECRET, WAIT_MS, cellarEnv, closeServers, tempDir, within } from './servers.js';

export { SECRET, startServer, tempDir, within } from './servers.js';

/** Debian's chromium package: the tests never download a browser of their own. */
const CHROMIUM = '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) {
  throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (bash scripts/test.sh does, as root)`);
}

/** Where screenshots go: CELLAR_SCREENSHOTS, or target/browser-screenshots of the repository. */
export const SCREENSHOTS =
  process.env.CELLAR_SCREENSHOTS ?? join(dirname(fileURLToPath(import.meta.url)), '../../target/browser-screenshots');

/** A screenshot with fewer distinct colours is blank (a page with text has hundreds). */
const MIN_COLOURS = 16;

/** The one browser, launched on first use. */
let launched;

/** Closes the browser, kills the servers, removes the temp dirs: `after(closeAll)`. */
export async function closeAll() {
  if (launched !== undefined) await within(launched.then((open) => open.close()), 'the browser to close');
  launched = undefined;
  await closeServers();
}

/** A token for `userId` from `cellar token`, signed with SECRET. */
export function token(userId) {
  const made = spawnSync(CELLAR_BIN, ['token', userId, '--json'], {
    // No cellar.toml there: only the settings below.
    cwd: tempDir(),
    env: cellarEnv({ CELLAR_AUTH_MODE: 'jwt', CELLAR_AUTH_JWT_SECRET: SECRET }),
    encoding: 'utf8',
  });
  assert.equal(made.status, 0, `cellar token ${userId} failed: ${made.stderr}`);
  return JSON.parse(made.stdout).token;
}

/** The browser, launched once: Debian's chromium, headless. */
function browser() {
  launched ??= chromium.launch({
    executablePath: CHROMIUM,
    // As root, Chromium runs only without its sandbox. This machine's network is closed:
    // without the background-networking flags Chromium keeps trying Google's hosts.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking'],
    timeout: WAIT_MS,
  });
  return launched;
}

/**
 * A page in a new browser context (its own storage and cookies: another device). Waits are
 * bounded by WAIT_MS; errors thrown in the page are collected in `page.errors`.
 */
export async function newPage() {
  const context = await (await browser()).newContext({ viewport: { width: 1100, height: 760 } });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  return page;
}

/**
 * Saves a screenshot of the whole page as SCREENSHOTS/`name`.png and checks that it is not
 * blank: at least MIN_COLOURS distinct pixel colours (decoded by the browser itself). Names are
 * shared by every test file: start them with the page (`demo-…`, `ui-…`).
 */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  const png = await page.screenshot({ fullPage: true });
  writeFileSync(path, png);
  const colours = await distinctColours(png);
  assert.ok(colours >= MIN_COLOURS, `${path} looks blank: ${colours} distinct colours`);
  return path;
}

/** The number of distinct pixel colours of a PNG, decoded in a blank page of its own. */
async function distinctColours(png) {
  const context = await (await browser()).newContext();
  try {
    const page = await context.newPage();
    return await page.evaluate(async (base64) => {
      const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
      const bitmap = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const drawing = canvas.getContext('2d');
      drawing.drawImage(bitmap, 0, 0);
      const pixels = drawing.getImageData(0, 0, bitmap.width, bitmap.height).data;
      return new Set(new Uint32Array(pixels.buffer)).size;
    }, png.toString('base64'));
  } finally {
    await context.close();
  }
}

/**
 * Checks that the pages of `context` kept nothing in the browser: no localStorage,
 * sessionStorage, IndexedDB database or cookie, as each page sees it and as the browser holds
 * it (the context's storage state: cookies, and every origin's local storage and IndexedDB).
 */
export async function assertNothingStored(context) {
  for (const page of context.pages()) {
    const kept = await page.evaluate(async () => ({
      localStorage: localStorage.length,
      sessionStorage: sessionStorage.length,
      indexedDB: (await indexedDB.databases()).map((database) => database.name),
      cookie: document.cookie,
    }));
    assert.deepEqual(
      kept,
      { localStorage: 0, sessionStorage: 0, indexedDB: [], cookie: '' },
      `${page.url()} kept something in the browser`,
    );
  }
  const held = await context.storageState({ indexedDB: true });
  assert.deepEqual(held, { cookies: [], origins: [] }, 'the browser holds cookies or storage for an origin');
}
