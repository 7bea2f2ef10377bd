// The operator dashboard (`/ui`, auth.admin_token set) in headless Chromium against the built
// `cellar serve`: the operator unlocks it with the admin token (a wrong one is refused), a user
// is listed right after their first write and the live feed shows the write's event, search
// finds the user, the user view shows their version and events, the charts draw samples, a
// user's history lists their versions, compares two, restores one and undoes the restore, and
// nothing is kept in the browser; a screenshot of each state, checked to be non-blank.
//
// Run: CELLAR_BIN=target/debug/cellar node --test-concurrency=1 --test tests/browser/
// (after npm ci --prefix tests/browser; cargo test runs it, crates/cli/tests/browser.rs)

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { Cellar } from '../../clients/js/cellar.js';
import { assertNothingStored, closeAll, newPage, screenshot, startServer, token } from './harness.js';

after(closeAll);

/** The operator's token (at least 32 bytes); users have JWTs of their own. */
const ADMIN_TOKEN = 'operator-token-for-the-browser-tests-0123';
const TEST_MS = 30_000;

/** Writes one row for `user` through the HTTP API, as the user's app would. */
function write(server, user, value) {
  const cellar = new Cellar({ url: server.url, token: token(user) });
  return cellar.query([
    'CREATE TABLE IF NOT EXISTS notes(body TEXT)',
    { sql: 'INSERT INTO notes(body) VALUES (?)', params: [value] },
  ]);
}

/** Gives the dashboard the admin token; resolves once it shows and its live feed is open. */
async function unlock(page) {
  await page.locator('#token-input').fill(ADMIN_TOKEN);
  await page.locator('#token-submit').click();
  await page.locator('#connection[data-state="ok"]').waitFor();
  await page.locator('#feed-state[data-state="ok"]').waitFor();
}

/** The versions the history table lists, top to bottom. */
async function listedVersions(page) {
  const rows = page.locator('#history-table tbody tr.version-row');
  return (await rows.evaluateAll((all) => all.map((row) => row.dataset.version))).map(Number);
}

/** The notes `cellar` reads now. */
async function notes(cellar) {
  const answer = await cellar.query(['SELECT body FROM notes ORDER BY rowid']);
  return answer.results[0].rows.map(([body]) => body);
}

test('the dashboard lists a user after the first write and its feed shows the event', { timeout: TEST_MS }, async () => {
  const server = await startServer({ env: { CELLAR_AUTH_ADMIN_TOKEN: ADMIN_TOKEN } });
  const page = await newPage();
  await page.goto(`${server.url}/ui`);
  await page.locator('#token-form').waitFor();
  assert.equal(await page.locator('#dashboard').isHidden(), true, 'locked until the token is given');
  await screenshot(page, 'ui-0-locked');

  await page.locator('#token-input').fill('not-the-operator-token-but-long-enough-0');
  await page.locator('#token-submit').click();
  await page.locator('#login-error:not([hidden])').waitFor();
  assert.equal(await page.locator('#dashboard').isHidden(), true, 'a wrong token unlocks nothing');

  await unlock(page);
  await screenshot(page, 'ui-1-empty');

  // A user's first write: listed, and its event in the live feed, without a reload.
  const answer = await write(server, 'carol', 'first note');
  assert.equal(answer.version, 1);
  await page.locator('#event-feed li.event[data-type="version"][data-user="carol"]').waitFor();
  const row = page.locator('#users-table tbody tr.user-row[data-user="carol"]');
  await row.waitFor();
  assert.equal((await row.locator('td.version').textContent()).trim(), '1');
  await write(server, 'dave', 'another user');
  await page.locator('#users-table tbody tr.user-row[data-user="dave"]').waitFor();
  await screenshot(page, 'ui-2-users-and-feed');

  // Search narrows the list to the matching user.
  await page.locator('#user-search').fill('car');
  await page.locator('#users-table tbody tr.user-row[data-user="dave"]').waitFor({ state: 'detached' });
  assert.equal(await page.locator('#users-table tbody tr.user-row').count(), 1);

  // The user view: version and the user's own events.
  await row.click();
  await page.locator('#user-view:not([hidden])').waitFor();
  assert.equal((await page.locator('#user-view-id').textContent()).trim(), 'carol');
  await page.locator('#user-events li.event').first().waitFor();
  assert.match(await page.locator('#user-meta dd[data-field="version"]').textContent(), /1/);
  await screenshot(page, 'ui-3-user');

  // The charts draw the server's own samples (taken once a second).
  await page.locator('canvas#chart-requests[data-samples]').waitFor();
  const samples = Number(await page.locator('canvas#chart-requests').getAttribute('data-samples'));
  assert.ok(samples >= 1, `chart samples: ${samples}`);

  assert.deepEqual(page.errors, [], 'no errors thrown in the page');
  await assertNothingStored(page.context());
  await server.stop();
});

test('the dashboard shows a user\'s versions, a diff of two, and restores one and undoes it', { timeout: TEST_MS }, async () => {
  const server = await startServer({ env: { CELLAR_AUTH_ADMIN_TOKEN: ADMIN_TOKEN } });
  const erin = new Cellar({ url: server.url, token: token('erin') });
  await erin.query(['CREATE TABLE notes(body TEXT)', "INSERT INTO notes(body) VALUES ('one')"]);
  await erin.query(["INSERT INTO notes(body) VALUES ('two')"]);
  const third = await erin.query(["UPDATE notes SET body = 'uno' WHERE body = 'one'", 'CREATE TABLE tags(name TEXT)']);
  assert.equal(third.version, 3);

  const page = await newPage();
  await page.goto(`${server.url}/ui`);
  await unlock(page);
  await page.locator('#users-table tbody tr.user-row[data-user="erin"]').click();
  await page.locator('#history-table tbody tr.version-row[data-version="1"]').waitFor();
  assert.deepEqual(await listedVersions(page), [3, 2, 1], 'newest first');
  assert.match(await page.locator('#history-count').textContent(), /3 versions/);
  const current = page.locator('#history-table tr.version-row[data-version="3"]');
  assert.equal(await current.locator('button.restore').count(), 0, 'the current version is not restorable');
  assert.match(await current.locator('td.shipped').textContent(), /\d+ (B|KB)/);
  // Compared by default: the newest and the version before it.
  assert.equal(await page.locator('#history-table tr[data-version="2"] input.pick-from').isChecked(), true);
  assert.equal(await current.locator('input.pick-to').isChecked(), true);
  await screenshot(page, 'ui-4-history');

  await page.locator('#history-compare').click();
  await page.locator('#history-diff[data-loaded][data-from="2"][data-to="3"]').waitFor();
  assert.equal((await page.locator('#history-diff-title').textContent()).trim(), 'Version 2 → version 3');
  const notesDiff = page.locator('#history-diff .diff-table[data-table="notes"]');
  assert.match(await notesDiff.locator('h5').textContent(), /0 added, 0 removed, 1 changed/);
  const changed = notesDiff.locator('tr.diff-row[data-change="changed"]');
  assert.equal(await changed.count(), 1);
  assert.equal((await changed.locator('td.before').textContent()).trim(), "body = 'one'");
  assert.equal((await changed.locator('td.after').textContent()).trim(), "body = 'uno'");
  assert.match(await page.locator('#history-diff .schema-change[data-change="added"]').textContent(), /table tags: added/);
  await screenshot(page, 'ui-5-diff');

  // The same version on both sides: nothing differs, and the page says so.
  await page.locator('#history-table tr[data-version="2"] input.pick-to').check();
  await page.locator('#history-compare').click();
  await page.locator('#history-diff[data-loaded][data-from="2"][data-to="2"]').waitFor();
  assert.match(await page.locator('#history-diff .no-diff').textContent(), /No differences/);
  assert.equal(await page.locator('#history-diff .diff-table').count(), 0);

  // A restore asks first; cancelled, nothing happens.
  const restoreFirst = page.locator('#history-table tr[data-version="1"] button.restore');
  await restoreFirst.click();
  await page.locator('#history-confirm:not([hidden])').waitFor();
  assert.match(await page.locator('#history-confirm-text').textContent(), /Restore version 1 of erin\?/);
  await page.locator('#history-confirm-no').click();
  assert.equal(await page.locator('#history-confirm').isHidden(), true);
  assert.equal((await erin.status()).version, 3, 'a cancelled restore restores nothing');

  await restoreFirst.click();
  await page.locator('#history-confirm-yes').click();
  await page.locator('#history-restored[data-version="4"]').waitFor();
  assert.equal((await page.locator('#history-restored-text').textContent()).trim(), 'Restored version 1 as version 4.');
  assert.deepEqual(await notes(erin), ['one'], 'the user reads the restored version');
  await page.locator('#history-table tbody tr.version-row[data-version="4"]').waitFor();
  assert.deepEqual(await listedVersions(page), [4, 3, 2, 1]);
  await page.locator('#user-meta dd[data-field="version"]', { hasText: '4' }).waitFor();
  const restoreLine = page.locator('#event-feed li.event[data-user="erin"]', { hasText: 'a restore of version 1' });
  await restoreLine.waitFor();
  assert.match(await restoreLine.textContent(), /erin: version 4, a restore of version 1, by /);
  assert.equal(await page.locator('#history-confirm').isHidden(), true);
  await screenshot(page, 'ui-6-restored');

  // Undo restores the version before the restore.
  assert.match(await page.locator('#history-undo').textContent(), /restore version 3/);
  await page.locator('#history-undo').click();
  await page.locator('#history-restored[data-version="5"]').waitFor();
  assert.match(await page.locator('#history-restored-text').textContent(), /Undone: version 3's content is back, as version 5/);
  assert.deepEqual(await notes(erin), ['uno', 'two']);
  await page.locator('#history-table tbody tr.version-row[data-version="5"]').waitFor();
  assert.deepEqual(await listedVersions(page), [5, 4, 3, 2, 1]);
  const writers = await page.locator('#history-table tbody td.writer').allTextContents();
  assert.ok(writers.every((writer) => writer.startsWith('cellar-')), `every writer asked once, shown: ${writers}`);
  await screenshot(page, 'ui-7-undone');

  assert.deepEqual(page.errors, [], 'no errors thrown in the page');
  await assertNothingStored(page.context());
  await server.stop();
});

test('without auth.admin_token the dashboard does not exist', { timeout: TEST_MS }, async () => {
  const server = await startServer();
  const page = await newPage();
  const response = await page.goto(`${server.url}/ui`);
  assert.equal(response.status(), 404);
  const body = await response.json();
  assert.equal(body.error.code, 'not_found');
  await server.stop();
});
