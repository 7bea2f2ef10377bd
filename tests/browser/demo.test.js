// The demo app (`/demo`, server.demo = true) in headless Chromium against the built
// `cellar serve`: two browser contexts of one user see each other's writes live; rename and
// delete; a real conflict in strict mode (two servers on one folder store) is shown with what
// to do; the page goes on after a server restart; nothing is kept in the browser; a screenshot
// of each state, checked to be non-blank.
//
// Run: CELLAR_BIN=target/debug/cellar node --test-concurrency=1 --test tests/browser/
// (after npm ci --prefix tests/browser; cargo test runs it, crates/cli/tests/browser.rs)

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { assertNothingStored, closeAll, newPage, screenshot, startServer, tempDir, token } from './harness.js';

after(closeAll);

const DEMO = { CELLAR_SERVER_DEMO: 'true' };
/** Each test's bound: they take a few seconds each. */
const TEST_MS = 30_000;

/** A new context (another device) with `/demo` open for `user`, subscribed to its events. */
async function openDemo(server, user) {
  const page = await newPage();
  await page.goto(`${server.url}/demo#token=${token(user)}`);
  await page.locator('#connection[data-state="live"]').waitFor();
  return page;
}

/** Submits the new-project form. */
async function createProject(page, name) {
  await page.getByLabel('New project name').fill(name);
  await page.getByRole('button', { name: 'Create project' }).click();
}

/** Renames through the dialog the button labelled `buttonLabel` opens. */
async function rename(page, buttonLabel, name) {
  await page.getByRole('button', { name: buttonLabel }).click();
  await page.locator('#rename input[name="name"]').fill(name);
  await page.locator('#rename').getByRole('button', { name: 'Save' }).click();
}

const project = (page, name) => page.locator('.project', { has: page.locator('.project-name', { hasText: name }) });
const projectNames = (page) => page.locator('.project-name');
const notice = (page) => page.locator('#notice');

/** The end of every test: no error in the pages, nothing kept in any of their browsers. */
async function checkPages(...pages) {
  for (const page of pages) {
    assert.deepEqual(page.errors, [], `errors in ${page.url()}`);
    await assertNothingStored(page.context());
  }
}

test("two contexts of one user see each other's writes live; rename and delete work", { timeout: TEST_MS }, async () => {
  const server = await startServer({ env: DEMO });
  const a = await openDemo(server, 'alice');
  const b = await openDemo(server, 'alice');
  assert.equal(new URL(a.url()).hash, '', 'the token is taken out of the address');
  await a.locator('#empty').waitFor();
  await screenshot(a, 'demo-1-first-open');
  // A reload would clear this: the updates below must come without one.
  await b.evaluate(() => {
    window.notReloaded = true;
  });

  await createProject(a, 'Holiday film');
  await project(b, 'Holiday film').waitFor();

  const card = project(b, 'Holiday film');
  await card.getByLabel('Clip name').fill('Beach');
  await card.getByLabel('Start, seconds').fill('0');
  await card.getByLabel('End, seconds').fill('12.5');
  await card.getByRole('button', { name: 'Add clip' }).click();
  await a.locator('.clip-name', { hasText: 'Beach' }).waitFor();
  assert.equal(await project(a, 'Holiday film').locator('.meta').textContent(), '1 clip · 0:12.5');

  await rename(a, 'Rename project Holiday film', 'Summer holiday');
  await project(b, 'Summer holiday').waitFor();
  await rename(b, 'Rename clip Beach', 'Beach at dawn');
  await a.locator('.clip-name', { hasText: 'Beach at dawn' }).waitFor();
  await createProject(b, 'Wedding');
  await project(a, 'Wedding').waitFor();
  assert.deepEqual(await projectNames(a).allTextContents(), ['Summer holiday', 'Wedding']);
  await screenshot(a, 'demo-2-projects-tab-a');
  await screenshot(b, 'demo-3-projects-tab-b');

  await a.getByRole('button', { name: 'Delete clip Beach at dawn' }).click();
  await project(b, 'Summer holiday').locator('.no-clips').waitFor();
  await b.getByRole('button', { name: 'Delete project Summer holiday' }).click();
  await project(a, 'Summer holiday').waitFor({ state: 'detached' });
  assert.deepEqual(await projectNames(a).allTextContents(), ['Wedding']);
  assert.deepEqual(await projectNames(b).allTextContents(), ['Wedding']);
  assert.equal(await b.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
  await checkPages(a, b);
});

test('a conflict in strict mode is shown with what to do, and the next write works', { timeout: TEST_MS }, async () => {
  // Two servers on one folder store, like two instances behind a load balancer. Server A paces
  // its uploads (one per 5 s per user): its second write checks the version, then waits for
  // its upload slot; a write through server B meanwhile makes that upload lose.
  const dir = tempDir();
  const store = { CELLAR_STORE_URL: `file://${join(dir, 'bucket')}`, CELLAR_SYNC_CONFLICT: 'strict', ...DEMO };
  const serverA = await startServer({
    dir,
    env: { ...store, CELLAR_DATA_DIR: join(dir, 'a'), CELLAR_SYNC_MIN_UPLOAD_INTERVAL_MS: '5000' },
  });
  const serverB = await startServer({ dir, env: { ...store, CELLAR_DATA_DIR: join(dir, 'b') } });
  const a = await openDemo(serverA, 'carol');
  const b = await openDemo(serverB, 'carol');

  await createProject(a, 'First cut');
  await project(a, 'First cut').waitFor();
  await createProject(a, 'Second cut');
  await a.locator('#activity', { hasText: 'Saving…' }).waitFor();
  await a.waitForTimeout(1000); // its version check is done: it waits for its upload slot

  await createProject(b, "Director's cut");
  await project(b, "Director's cut").waitFor();
  assert.deepEqual(await projectNames(b).allTextContents(), ['First cut', "Director's cut"]);

  await a.locator('#notice[data-kind="conflict"]').waitFor();
  const told = await notice(a).textContent();
  assert.match(told, /Your change was not saved/);
  assert.match(told, /reloaded with the latest version/);
  assert.match(told, /make your change again/);
  await project(a, "Director's cut").waitFor();
  assert.deepEqual(await projectNames(a).allTextContents(), ['First cut', "Director's cut"]);
  assert.equal(await a.getByLabel('New project name').inputValue(), 'Second cut', 'what was typed is kept');
  await screenshot(a, 'demo-4-conflict');

  await a.getByRole('button', { name: 'Create project' }).click();
  await project(a, 'Second cut').waitFor();
  await notice(a).waitFor({ state: 'hidden' });
  assert.deepEqual(await projectNames(a).allTextContents(), ['First cut', "Director's cut", 'Second cut']);
  await checkPages(a, b);
});

test('the page goes on after the server restarts on the same port', { timeout: TEST_MS }, async () => {
  let server = await startServer({ env: DEMO });
  const page = await openDemo(server, 'dave');
  await createProject(page, 'Before the restart');
  await project(page, 'Before the restart').waitFor();

  assert.equal(await server.stop(), 0, 'cellar serve exits cleanly on SIGTERM');
  await page.locator('#connection[data-state="reconnecting"]').waitFor();
  await createProject(page, 'While it is down');
  await notice(page).waitFor();
  assert.match(await notice(page).textContent(), /No answer from the server/);
  await screenshot(page, 'demo-5-server-down');

  server = await server.restart();
  await page.locator('#connection[data-state="live"]').waitFor();
  await page.getByRole('button', { name: 'Create project' }).click();
  await project(page, 'While it is down').waitFor();
  await notice(page).waitFor({ state: 'hidden' });
  assert.deepEqual(await projectNames(page).allTextContents(), ['Before the restart', 'While it is down']);
  await screenshot(page, 'demo-6-after-restart');
  await checkPages(page);
});

test('without a token the page says how to get one, and takes a pasted one', { timeout: TEST_MS }, async () => {
  const server = await startServer({ env: DEMO });
  const page = await newPage();
  await page.goto(`${server.url}/demo`);
  await page.locator('#signin').waitFor();
  assert.match(await page.locator('#signin').textContent(), /cellar token alice/);
  await screenshot(page, 'demo-0-no-token');

  await page.getByLabel('Token').fill(token('erin'));
  await page.getByRole('button', { name: 'Open projects' }).click();
  await page.locator('#connection[data-state="live"]').waitFor();
  assert.equal(await page.locator('#user').textContent(), 'erin');
  await checkPages(page);
});

test('/demo serves the client of clients/js, and is an unknown route without server.demo', { timeout: TEST_MS }, async () => {
  const [on, off] = await Promise.all([startServer({ env: DEMO }), startServer()]);
  const client = await fetch(`${on.url}/demo/cellar.js`);
  assert.equal(client.status, 200);
  assert.match(client.headers.get('content-type'), /^text\/javascript/);
  const shipped = readFileSync(new URL('../../clients/js/cellar.js', import.meta.url), 'utf8');
  assert.equal(await client.text(), shipped);
  const page = await fetch(`${on.url}/demo`);
  assert.match(page.headers.get('content-security-policy'), /default-src 'self'/);

  for (const path of ['/demo', '/demo/app.js', '/demo/cellar.js']) {
    const answer = await fetch(`${off.url}${path}`);
    assert.equal(answer.status, 404, path);
    assert.equal((await answer.json()).error.code, 'not_found', path);
  }
});
