// The operator dashboard (`/ui`, auth.admin_token set) in headless Chromium against the built
// `cellar serve`: the operator unlocks it with the admin token (a wrong one is refused), a user
// is listed right after their first write and the live feed shows the write's event, search
// finds the user, the user view shows their version and events, the charts draw samples, and
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

  await page.locator('#token-input').fill(ADMIN_TOKEN);
  await page.locator('#token-submit').click();
  await page.locator('#connection[data-state="ok"]').waitFor();
  await page.locator('#feed-state[data-state="ok"]').waitFor();
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

test('without auth.admin_token the dashboard does not exist', { timeout: TEST_MS }, async () => {
  const server = await startServer();
  const page = await newPage();
  const response = await page.goto(`${server.url}/ui`);
  assert.equal(response.status(), 404);
  const body = await response.json();
  assert.equal(body.error.code, 'not_found');
  await server.stop();
});
