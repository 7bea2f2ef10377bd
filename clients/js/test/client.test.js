// The JavaScript client against a real `cellar serve` (the binary named by CELLAR_BIN), in JWT
// mode on a folder store: queries and blobs, typed errors, the file snapshot, events, and a
// subscription that comes back by itself when the server restarts.
//
// Run: CELLAR_BIN=target/debug/cellar node --experimental-websocket --test clients/js/test/

import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';

// The server processes are shared with the browser tests (no playwright needed for them).
import { SECRET, WAIT_MS, closeServers, startServer, tempDir, within } from '../../../tests/browser/servers.js';
import { Cellar, CellarAdmin, CellarError, decodeBlob, encodeBlob } from '../cellar.js';

after(closeServers);

/** A fresh HS256 token for `userId`, valid for ten minutes (each call gives a different one). */
function tokenFor(userId, secret = SECRET) {
  const part = (json) => Buffer.from(JSON.stringify(json)).toString('base64url');
  const claims = { sub: userId, exp: Math.floor(Date.now() / 1000) + 600, jti: randomUUID() };
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

/** Collects what a callback receives, so that a test can wait (bounded) for an item. */
function recorder() {
  const items = [];
  const waiters = new Set();
  return {
    items,
    push(item) {
      items.push(item);
      for (const check of waiters) check();
    },
    waitFor(predicate, what) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = items.find(predicate);
          if (found === undefined) return;
          stop();
          resolve(found);
        };
        const timer = setTimeout(() => {
          stop();
          reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}; got ${JSON.stringify(items)}`));
        }, WAIT_MS);
        const stop = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}

/** Expects `promise` to reject with a CellarError whose fields include `expected`. */
async function assertCellarError(promise, expected) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof CellarError, `expected a CellarError, got ${err}`);
    for (const [field, value] of Object.entries(expected)) {
      assert.equal(err[field], value, `${field} of the error "${err.code}: ${err.message}"`);
    }
    return true;
  });
}

let server;
before(async () => {
  server = await startServer();
});

/** A client of the shared server, with a token of its own for `userId`. */
const clientOf = (userId) => new Cellar({ url: server.url, token: tokenFor(userId) });

test('a write answers version 1 and wrote, and a read returns the rows', async () => {
  const alice = clientOf('alice');
  const written = await alice.query([
    'CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)',
    { sql: 'INSERT INTO notes(body) VALUES (?), (?)', params: ['hello', 'world'] },
  ]);
  assert.equal(written.version, 1);
  assert.equal(written.wrote, true);
  assert.equal(written.durability, 'sync');
  assert.equal(written.results[1].rows_affected, 2);

  const read = await alice.query(['SELECT id, body FROM notes ORDER BY id']);
  assert.equal(read.wrote, false);
  assert.deepEqual(read.results[0].columns, ['id', 'body']);
  assert.deepEqual(read.results[0].rows, [
    [1, 'hello'],
    [2, 'world'],
  ]);

  const status = await alice.status();
  assert.equal(status.user_id, 'alice');
  assert.equal(status.version, 1);
  assert.ok(status.size_bytes > 0, JSON.stringify(status));
});

test('blobs round-trip through encodeBlob and decodeBlob', async () => {
  const bob = clientOf('bob');
  // Larger than one encoding chunk, and every byte value.
  const bytes = Uint8Array.from({ length: 70_000 }, (_, index) => (index * 7) % 256);
  const answer = await bob.query([
    'CREATE TABLE files(data BLOB)',
    { sql: 'INSERT INTO files VALUES (?)', params: [encodeBlob(bytes)] },
    "SELECT data, length(data), x'00ff' FROM files",
  ]);
  const [data, length, literal] = answer.results[2].rows[0];
  assert.equal(length, bytes.length);
  assert.deepEqual(decodeBlob(data), bytes);
  assert.deepEqual(decodeBlob(literal), Uint8Array.of(0x00, 0xff));
});

test('SQL errors, sandbox refusals and bad tokens reject with typed errors', async () => {
  const carol = clientOf('carol');
  await carol.query(['CREATE TABLE t(x)']);
  await assertCellarError(carol.query(['SELEC 1']), {
    code: 'sql_error',
    status: 400,
    version: 1,
    retryable: false,
  });
  await assertCellarError(carol.query(["ATTACH DATABASE 'x' AS y"]), { code: 'forbidden', status: 403 });

  const forged = new Cellar({ url: server.url, token: tokenFor('carol', 'not-the-secret-of-this-server-at-all') });
  await assertCellarError(forged.query(['SELECT 1']), { code: 'unauthorized', status: 401, version: null });
});

test('file() is not_found before the first write, then a SQLite file', async () => {
  const dave = clientOf('dave');
  await assertCellarError(dave.file(), { code: 'not_found', status: 404 });
  await dave.query(['CREATE TABLE t(x)', 'INSERT INTO t VALUES (1)']);
  const file = await dave.file();
  assert.ok(file instanceof ArrayBuffer);
  assert.equal(Buffer.from(file.slice(0, 16)).toString('latin1'), 'SQLite format 3\0');
});

test('subscribe in header mode throws, pointing to a token', () => {
  const headerClient = new Cellar({ url: 'http://127.0.0.1:9', userId: 'erin' });
  assert.throws(() => headerClient.subscribe(() => {}), /needs a token/);
});

test('a subscription sees the version another client of the same user writes', async () => {
  const events = recorder();
  const opens = recorder();
  const subscription = clientOf('frank').subscribe((event) => events.push(event), {
    onOpen: () => opens.push(opens.items.length + 1),
  });
  try {
    await opens.waitFor(() => true, 'the events WebSocket to open');
    const answer = await clientOf('frank').query(['CREATE TABLE t(x)']);
    const event = await events.waitFor(
      (event) => event.type === 'version' && event.version === answer.version,
      `the event of version ${answer.version}`,
    );
    assert.equal(event.user_id, 'frank');
  } finally {
    subscription.close();
  }
});

test('a subscription reopens by itself when the server restarts on the same port', async () => {
  const dir = tempDir();
  let restartable = await startServer({ dir });
  const client = (token) => new Cellar({ url: restartable.url, token });
  const writer = client(tokenFor('grace'));
  const events = recorder();
  const opens = recorder();
  const closes = recorder();
  const subscription = client(tokenFor('grace')).subscribe((event) => events.push(event), {
    onOpen: () => opens.push(opens.items.length + 1),
    onClose: (closed) => closes.push(closed),
  });
  try {
    await opens.waitFor((count) => count === 1, 'the events WebSocket to open');
    await writer.query(['CREATE TABLE t(x)']);
    await events.waitFor((event) => event.version === 1, 'the event of version 1');

    assert.equal(await restartable.stop(), 0, 'cellar serve exits cleanly on SIGTERM');
    await closes.waitFor((closed) => closed.code === 1001, 'the server to close the subscription as going away');
    await assertCellarError(writer.query(['SELECT 1']), { code: 'network', status: 0, retryable: true });
    // Restarted only after a reconnection failed: the client goes on after failures too.
    await closes.waitFor((closed) => closed.code === 1006, 'a reconnection to fail while the server is down');

    restartable = await startServer({ dir, listen: `127.0.0.1:${restartable.port}` });
    await opens.waitFor((count) => count === 2, 'the subscription to reopen on the new server');
    const answer = await writer.query(['INSERT INTO t VALUES (1)']);
    assert.equal(answer.version, 2);
    await events.waitFor((event) => event.version === 2, 'the event of version 2 after the restart');
  } finally {
    subscription.close();
  }
});

test('the admin client lists users, reads one and its history, restores, relays every user\'s events and is refused a wrong token', async () => {
  const adminToken = 'admin-token-for-the-js-client-test-0123';
  const admin = await startServer({ env: { CELLAR_AUTH_ADMIN_TOKEN: adminToken } });
  const operator = new CellarAdmin({ url: admin.url, token: adminToken });
  const seen = recorder();
  const opened = recorder();
  const feed = operator.subscribe((event) => seen.push(event), { onOpen: () => opened.push(true) });
  try {
    await opened.waitFor(() => true, 'the admin events socket to open');
    const user = `admin-${randomUUID()}`;
    await new Cellar({ url: admin.url, token: tokenFor(user) }).query(['CREATE TABLE t(x)']);
    await seen.waitFor((e) => e.user_id === user && e.type === 'version', 'the write in the admin feed');

    const page = await operator.users({ q: user.slice(0, 12), limit: 10 });
    const listed = page.users.find((u) => u.user_id === user);
    assert.equal(listed?.version, 1, JSON.stringify(page));
    const detail = await operator.user(user);
    assert.equal(detail.user.user_id, user);
    assert.ok(detail.events.some((e) => e.type === 'version' && e.version === 1), JSON.stringify(detail));
    assert.ok(Array.isArray((await operator.stats()).samples));

    await new Cellar({ url: admin.url, token: tokenFor(user) }).query(['INSERT INTO t VALUES (7)']);
    const { versions } = await operator.versions(user, { limit: 5, writers: true });
    assert.deepEqual(versions.map((v) => v.version), [2, 1]);
    assert.ok(versions.every((v) => typeof v.writer === 'string'), JSON.stringify(versions));
    const diff = await operator.diff(user, 1, 2, { maxRows: 1 });
    assert.equal(diff.tables[0]?.added, 1, JSON.stringify(diff));
    assert.equal(diff.tables[0].rows[0].after.x, 7);
    const restored = await operator.restore(user, { version: 1 });
    assert.deepEqual(restored, { version: 3, restored: 1, undo: 2 });
    await seen.waitFor((e) => e.user_id === user && e.restored_from === 1, 'the restore in the admin feed');
    await assert.rejects(
      operator.restore(user, { version: 99 }),
      (err) => err instanceof CellarError && err.code === 'not_found' && err.status === 404,
    );

    const wrong = new CellarAdmin({ url: admin.url, token: 'not-the-admin-token-but-long-enough-00' });
    await assert.rejects(wrong.stats(), (err) => err instanceof CellarError && err.code === 'unauthorized' && err.status === 401);
  } finally {
    feed.close();
    await admin.stop();
  }
});

test('a token given as a function is asked for each request and each connection', async () => {
  const given = [];
  const renewing = new Cellar({
    url: server.url,
    token: async () => {
      const token = tokenFor('renewed');
      given.push(token);
      return token;
    },
  });
  const seen = recorder();
  const opened = recorder();
  const feed = renewing.subscribe((event) => seen.push(event), { onOpen: () => opened.push(true) });
  try {
    await opened.waitFor(() => true, 'the subscription to open');
    await renewing.query(['CREATE TABLE IF NOT EXISTS t(x)', 'INSERT INTO t VALUES (1)']);
    await renewing.query(['INSERT INTO t VALUES (2)']);
    await seen.waitFor((event) => event.type === 'version' && event.version === 2, 'the second write');
    assert.ok(given.length >= 3, `tokens asked for: ${given.length}`);
    assert.equal(new Set(given).size, given.length, 'each one fresh');
  } finally {
    feed.close();
  }
});
