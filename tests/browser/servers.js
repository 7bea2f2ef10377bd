// `cellar serve` processes for the Node tests (the JavaScript client's and the browser
// tests): started from the built binary (CELLAR_BIN) in JWT mode on a folder store under a
// temp dir, each wait bounded, every process killed and every temp dir removed at the end.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

if (!process.env.CELLAR_BIN) {
  throw new Error('CELLAR_BIN is not set: name the cellar binary (cargo test sets it, crates/cli/tests/browser.rs)');
}
/** The `cellar` binary, absolute: the servers run in folders of their own. */
export const CELLAR_BIN = resolve(process.env.CELLAR_BIN);

/** The servers' HS256 secret (at least 32 bytes). */
export const SECRET = 'browser-test-secret-0123456789abcdef';
/** The bound on every wait: a broken page or server fails the test instead of hanging it. */
export const WAIT_MS = 10_000;
/** Every `cellar serve` started and not yet exited, with the promise of its exit. */
const running = new Map();
const tempDirs = [];

/** Whatever happened, no server outlives the tests (also when this process dies of an error). */
function killServers() {
  for (const child of running.keys()) child.kill('SIGKILL');
}
process.on('exit', killServers);

/** Kills the servers and removes the temp dirs (a test file's `after`). */
export async function closeServers() {
  const exits = [...running.values()];
  killServers();
  await within(Promise.all(exits), 'the servers to exit after SIGKILL');
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** A new temp dir, removed by `closeServers`. */
export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), 'cellar-test-'));
  tempDirs.push(dir);
  return dir;
}

/** `promise`, or a rejection naming `what` after `ms`. */
export async function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The environment of a `cellar` process: the caller's, less its CELLAR_* variables, plus `env`. */
export function cellarEnv(env) {
  const inherited = Object.entries(process.env).filter(([name]) => !name.startsWith('CELLAR_'));
  return { ...Object.fromEntries(inherited), RUST_LOG: 'warn', ...env };
}

/**
 * Starts `cellar serve` in JWT mode (with SECRET), its data dir and folder store under `dir`
 * unless `env` says otherwise (`env` is added last: CELLAR_SERVER_DEMO, CELLAR_SYNC_CONFLICT,
 * CELLAR_DATA_DIR, ...). Resolves once it has announced its address. `restart()` stops it and
 * starts it again on the same port with the same settings.
 */
export async function startServer({ dir = tempDir(), env = {}, listen = '127.0.0.1:0' } = {}) {
  const settings = {
    CELLAR_AUTH_MODE: 'jwt',
    CELLAR_AUTH_JWT_SECRET: SECRET,
    CELLAR_DATA_DIR: join(dir, 'local'),
    CELLAR_STORE_URL: `file://${join(dir, 'bucket')}`,
    ...env,
  };
  const child = spawn(CELLAR_BIN, ['serve', '--listen', listen, '--json'], {
    cwd: dir,
    env: cellarEnv(settings),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (text) => (log += text));
  const exited = new Promise((resolve) =>
    child.on('close', (code, signal) => {
      running.delete(child);
      resolve(code ?? signal);
    }),
  );
  running.set(child, exited);
  const firstLine = new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (text) => {
      stdout += text;
      if (stdout.includes('\n')) resolve(stdout.slice(0, stdout.indexOf('\n')));
    });
    child.on('error', (err) => reject(new Error(`cannot run CELLAR_BIN=${CELLAR_BIN}: ${err.message}`)));
    exited.then((how) => reject(new Error(`cellar serve exited (${how}) before announcing its address:\n${log}`)));
  });
  let line;
  try {
    line = await within(firstLine, `cellar serve on ${listen} to announce its address`);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const { listening } = JSON.parse(line);
  const port = Number(listening.slice(listening.lastIndexOf(':') + 1));
  const server = {
    url: `http://${listening}`,
    port,
    /** What it logged on stderr so far, for failure messages. */
    log: () => log,
    /** SIGTERM, then the exit code once it has stopped. */
    async stop() {
      child.kill('SIGTERM');
      return within(exited, 'cellar serve to stop after SIGTERM');
    },
    /** A new `cellar serve` on the same port, dir and settings; the old one must be stopped. */
    restart: () => startServer({ dir, env, listen: `127.0.0.1:${port}` }),
  };
  return server;
}

