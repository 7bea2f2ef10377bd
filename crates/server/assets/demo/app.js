/**
 * The demo app: a video editor's projects and their clips, kept in the user's own Cellar
 * database. Every read and write is `POST /v1/query` (the `Cellar` client); `/v1/events` says
 * when another tab or device wrote, and the page reads again.
 *
 * Design rule `sync-no-localstorage`: the page keeps NOTHING in localStorage, sessionStorage,
 * IndexedDB or cookies. What it shows is the last answer of the server, and the token lives in
 * this module's memory only.
 */

import { Cellar, CellarError } from '/demo/cellar.js';

/** The tables, made on first use: every write starts with these (a no-op once they exist). */
const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS projects(
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL CHECK (length(trim(name)) > 0))`,
  `CREATE TABLE IF NOT EXISTS clips(
     id INTEGER PRIMARY KEY,
     project_id INTEGER NOT NULL REFERENCES projects(id),
     name TEXT NOT NULL CHECK (length(trim(name)) > 0),
     start_s REAL NOT NULL CHECK (start_s >= 0),
     end_s REAL NOT NULL CHECK (end_s > start_s))`,
];

/** Whether the tables exist yet. Reads never create them: `CREATE TABLE IF NOT EXISTS` counts
 * as a write even when it changes nothing, and a write uploads a new version, whose event would
 * make every other open page read, and so on. */
const TABLES_MADE = "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('projects', 'clips')";

/** What the page shows; every write ends with these too, so that its answer is the new list. */
const LIST = [
  'SELECT id, name FROM projects ORDER BY id',
  'SELECT id, project_id, name, start_s, end_s FROM clips ORDER BY project_id, start_s, id',
];

const $ = (id) => document.getElementById(id);

const state = {
  /** @type {Cellar | null} */
  cellar: null,
  /** The version of the database the page shows (-1: nothing shown yet). */
  version: -1,
  tablesMade: false,
  /** @type {{ id: number, name: string, clips: { id: number, name: string, start: number, end: number }[] }[]} */
  projects: [],
  /** Writes in flight. */
  saving: 0,
  /** What the rename dialog renames: `{ kind: 'project' | 'clip', id }`. */
  renaming: null,
};

// ---- identity -------------------------------------------------------------------------

/**
 * The token of the address (`/demo#token=…`), which is then removed from the address.
 *
 * It comes in the fragment because a browser never sends the fragment to the server: the token
 * stays out of access logs and Referer headers. It is removed at once (history.replaceState)
 * because an address is not memory: the address bar shows it to anyone looking at the screen,
 * it is copied and bookmarked with the link, a reload would bring it back, and the tab's
 * back/forward entries would keep it. The token is a credential, and this page keeps nothing
 * outside its own memory (rule `sync-no-localstorage`): a reload signs out, and the link signs
 * in again. (A browser may still have recorded the visit in its history: that is why
 * `cellar token` makes tokens that expire, after a day by default.)
 */
function takeTokenFromAddress() {
  if (location.hash === '') return null;
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  history.replaceState(null, '', location.pathname + location.search);
  return token;
}

/** The claims of a JWT, unverified (the server verifies): whom and until when, to show. */
function claimsOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    return typeof claims.sub === 'string' ? claims : null;
  } catch {
    return null;
  }
}

function showSignIn(error) {
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').hidden = error === undefined;
  $('signin-error').textContent = error ?? '';
}

/** Opens the user's projects with `token`, or says why it cannot. */
function signIn(token) {
  const claims = claimsOf(token);
  if (claims === null) return showSignIn('That is not a token: it should look like eyJhbGciOi…');
  if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) {
    return showSignIn(`That token expired at ${new Date(claims.exp * 1000).toLocaleString()}: make a new one.`);
  }
  $('signin').hidden = true;
  $('app').hidden = false;
  $('user').textContent = claims.sub;
  state.cellar = new Cellar({ url: location.origin, token });
  setConnection('connecting');
  state.cellar.subscribe(onEvent, {
    // Events sent while no subscription was open are lost: read again at every (re)open.
    onOpen: () => {
      setConnection('live');
      load();
    },
    onClose: () => setConnection('reconnecting'),
  });
  load();
}

// ---- reading and writing --------------------------------------------------------------

/** A version newer than the page shows, or a conflict elsewhere: read again. */
function onEvent(event) {
  if ((event.type === 'version' && event.version > state.version) || event.type === 'conflict') load();
}

let loading = null;
let loadAgain = false;

/** Reads the list; a call while a read is in flight makes one more read after it, not many. */
function load() {
  if (loading !== null) {
    loadAgain = true;
    return loading;
  }
  loading = (async () => {
    do {
      loadAgain = false;
      await loadOnce();
    } while (loadAgain);
  })().finally(() => {
    loading = null;
  });
  return loading;
}

async function loadOnce() {
  try {
    if (!state.tablesMade) {
      const answer = await state.cellar.query([TABLES_MADE]);
      if (answer.results[0].rows[0][0] < SCHEMA.length) {
        // Not both tables: nothing written yet, so nothing to show.
        show(answer.version, []);
        return;
      }
      state.tablesMade = true;
    }
    const answer = await state.cellar.query(LIST);
    show(answer.version, answer.results);
    if (notice.kind === 'load') hideNotice();
  } catch (err) {
    explain(err, 'load');
  }
}

/**
 * Runs `statements` as ONE transaction, after the schema and before the list, so that the
 * answer shows the new state. `gone` is said when the last statement changed no row (what it
 * names was deleted meanwhile). Resolves to true when the write was kept.
 */
async function write(statements, gone) {
  state.saving += 1;
  showActivity();
  try {
    const answer = await state.cellar.query([...SCHEMA, ...statements, ...LIST]);
    state.tablesMade = true;
    const results = answer.results;
    show(answer.version, results.slice(-LIST.length));
    if (results[SCHEMA.length + statements.length - 1].rows_affected === 0) {
      showNotice('gone', 'Nothing changed', gone);
    } else {
      hideNotice();
    }
    return true;
  } catch (err) {
    explain(err, 'save');
    if (err instanceof CellarError && err.code === 'conflict') load();
    return false;
  } finally {
    state.saving -= 1;
    showActivity();
  }
}

/** Tells the user what went wrong and what to do. */
function explain(err, doing) {
  if (!(err instanceof CellarError)) {
    console.error(err);
    return showNotice(doing, 'Something went wrong in this page', String(err));
  }
  const saving = doing === 'save';
  switch (err.code) {
    case 'conflict':
      return showNotice(
        'conflict',
        'Your change was not saved',
        'Another tab or device saved a change at the same moment, and this server keeps the ' +
          'first change in such a race (strict mode). Your change was not kept. The list has been ' +
          'reloaded with the latest version: check it, then make your change again.',
      );
    case 'network':
      return showNotice(
        doing,
        saving ? 'No answer from the server: your change may not have been saved' : 'Cannot reach the server',
        'The server did not answer (it may be restarting). The list reloads by itself when the ' +
          'connection is back; check it, then try again.',
        !saving,
      );
    case 'unauthorized':
      return showNotice(
        doing,
        'Your token was refused',
        `${err.message}. Open a new link (make a token with: cellar token USER).`,
      );
    case 'sync_pending':
      return showNotice(
        doing,
        'Saved, not yet uploaded',
        'The server kept your change and uploads it before it shows anything newer. Nothing to do.',
      );
    default:
      return showNotice(
        doing,
        saving ? 'Your change was not saved' : 'The projects could not be read',
        err.retryable ? `${err.message}. Try again in a moment.` : err.message,
        err.retryable && !saving,
      );
  }
}

// ---- what the user does ---------------------------------------------------------------

function onCreateProject(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const name = form.elements.name.value.trim();
  if (name === '') return;
  write([{ sql: 'INSERT INTO projects(name) VALUES (?)', params: [name] }]).then((kept) => {
    if (kept) form.reset();
  });
}

function onAddClip(form) {
  const projectId = Number(form.dataset.projectId);
  const { name, start, end } = form.elements;
  write(
    [
      {
        // Only into a project that still exists: another tab may have deleted it.
        sql: 'INSERT INTO clips(project_id, name, start_s, end_s) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM projects WHERE id = ?)',
        params: [projectId, name.value.trim(), Number(start.value), Number(end.value), projectId],
      },
    ],
    'That project was deleted in another tab or device; the clip was not added.',
  ).then((kept) => {
    if (kept) form.reset();
  });
}

/** Clicks on the list's buttons: `data-action` with `data-project-id` or `data-clip-id`. */
function onListClick(event) {
  const button = event.target.closest('button[data-action]');
  if (button === null) return;
  const { action, projectId, clipId } = button.dataset;
  const project = Number(projectId);
  const clip = Number(clipId);
  switch (action) {
    case 'rename-project':
      return openRename('project', project);
    case 'rename-clip':
      return openRename('clip', clip);
    case 'delete-project':
      return write(
        [
          { sql: 'DELETE FROM clips WHERE project_id = ?', params: [project] },
          { sql: 'DELETE FROM projects WHERE id = ?', params: [project] },
        ],
        'That project was already deleted in another tab or device.',
      );
    case 'delete-clip':
      return write(
        [{ sql: 'DELETE FROM clips WHERE id = ?', params: [clip] }],
        'That clip was already deleted in another tab or device.',
      );
  }
}

function openRename(kind, id) {
  const current =
    kind === 'project'
      ? state.projects.find((project) => project.id === id)
      : state.projects.flatMap((project) => project.clips).find((clip) => clip.id === id);
  if (current === undefined) return;
  state.renaming = { kind, id };
  $('rename-label').textContent = `New name for the ${kind} “${current.name}”`;
  $('rename-form').elements.name.value = current.name;
  $('rename').showModal();
}

function onRename(event) {
  event.preventDefault();
  const dialog = $('rename');
  const renaming = state.renaming;
  dialog.close();
  state.renaming = null;
  const name = event.currentTarget.elements.name.value.trim();
  if (event.submitter?.value !== 'save' || renaming === null || name === '') return;
  const table = renaming.kind === 'project' ? 'projects' : 'clips';
  write(
    [{ sql: `UPDATE ${table} SET name = ? WHERE id = ?`, params: [name, renaming.id] }],
    `That ${renaming.kind} was deleted in another tab or device; nothing was renamed.`,
  );
}

// ---- showing it -----------------------------------------------------------------------

/** Shows the list of `version` (from the results of LIST), unless a newer one is shown. */
function show(version, [projects, clips] = []) {
  // Answers may arrive out of order: never go back to an older version.
  if (version < state.version) return;
  state.version = version;
  const byId = new Map(
    (projects?.rows ?? []).map(([id, name]) => [id, { id, name, clips: [] }]),
  );
  for (const [id, projectId, name, start, end] of clips?.rows ?? []) {
    byId.get(projectId)?.clips.push({ id, name, start, end });
  }
  state.projects = [...byId.values()];
  $('version').textContent = `version ${version}`;
  render();
}

/** Project cards by id, kept across renders so that a half-typed clip survives a live update. */
const cards = new Map();

function render() {
  const list = $('projects');
  const shown = new Set();
  state.projects.forEach((project, index) => {
    shown.add(project.id);
    let card = cards.get(project.id);
    if (card === undefined) {
      card = makeCard(project.id);
      cards.set(project.id, card);
    }
    fillCard(card, project);
    if (list.children[index] !== card.root) list.insertBefore(card.root, list.children[index] ?? null);
  });
  for (const [id, card] of cards) {
    if (!shown.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  $('empty').hidden = state.projects.length > 0;
}

/** An element with attributes (`text` sets its text) and children. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === 'text') element.textContent = value;
    else if (name === 'data') Object.assign(element.dataset, value);
    else element.setAttribute(name, value);
  }
  element.append(...children);
  return element;
}

function makeCard(projectId) {
  const data = { projectId };
  const head = h('div', { class: 'project-head' });
  const clips = h('tbody');
  const noClips = h('p', { class: 'no-clips', text: 'No clips yet.' });
  const form = h(
    'form',
    { class: 'add-clip', autocomplete: 'off', data },
    h('input', { name: 'name', required: '', maxlength: '200', placeholder: 'Clip name', 'aria-label': 'Clip name' }),
    h('input', { name: 'start', type: 'number', required: '', min: '0', step: '0.1', placeholder: 'Start (s)', 'aria-label': 'Start, seconds' }),
    h('input', { name: 'end', type: 'number', required: '', min: '0', step: '0.1', placeholder: 'End (s)', 'aria-label': 'End, seconds' }),
    h('button', { text: 'Add clip' }),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    onAddClip(form);
  });
  const table = h(
    'table',
    { class: 'clips' },
    h('thead', {}, h('tr', {}, ...['Clip', 'Start', 'End', 'Length', ''].map((text) => h('th', { text })))),
    clips,
  );
  const root = h('li', { class: 'project', data }, head, table, noClips, form);
  return { root, head, table, clips, noClips };
}

function fillCard(card, project) {
  const data = { projectId: project.id };
  const total = project.clips.reduce((sum, clip) => sum + (clip.end - clip.start), 0);
  const count = project.clips.length;
  card.head.replaceChildren(
    h('h2', { class: 'project-name', text: project.name }),
    h('span', { class: 'meta', text: `${count} clip${count === 1 ? '' : 's'} · ${duration(total)}` }),
    h('button', { type: 'button', data: { ...data, action: 'rename-project' }, 'aria-label': `Rename project ${project.name}`, text: 'Rename' }),
    h('button', { type: 'button', class: 'danger', data: { ...data, action: 'delete-project' }, 'aria-label': `Delete project ${project.name}`, text: 'Delete' }),
  );
  card.clips.replaceChildren(
    ...project.clips.map((clip) => {
      const clipData = { clipId: clip.id };
      return h(
        'tr',
        { class: 'clip', data: clipData },
        h('td', { class: 'clip-name', text: clip.name }),
        h('td', { text: duration(clip.start) }),
        h('td', { text: duration(clip.end) }),
        h('td', { text: duration(clip.end - clip.start) }),
        h(
          'td',
          { class: 'actions' },
          h('button', { type: 'button', data: { ...clipData, action: 'rename-clip' }, 'aria-label': `Rename clip ${clip.name}`, text: 'Rename' }),
          h('button', { type: 'button', class: 'danger', data: { ...clipData, action: 'delete-clip' }, 'aria-label': `Delete clip ${clip.name}`, text: 'Delete' }),
        ),
      );
    }),
  );
  card.table.hidden = count === 0;
  card.noClips.hidden = count > 0;
}

/** Seconds as m:ss.s. */
function duration(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, '0')}`;
}

function setConnection(connection) {
  const element = $('connection');
  element.dataset.state = connection;
  element.textContent = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' }[connection];
}

function showActivity() {
  $('activity').textContent = state.saving > 0 ? 'Saving…' : '';
}

/** The notice shown, by what caused it (`load`, `save`, `conflict`, `gone`). */
const notice = { kind: null };

function showNotice(kind, title, text, retry = false) {
  notice.kind = kind;
  $('notice').dataset.kind = kind;
  $('notice-title').textContent = title;
  $('notice-text').textContent = text;
  $('notice-retry').hidden = !retry;
  $('notice').hidden = false;
}

function hideNotice() {
  notice.kind = null;
  $('notice').hidden = true;
}

// ---- start ----------------------------------------------------------------------------

$('new-project').addEventListener('submit', onCreateProject);
$('projects').addEventListener('click', onListClick);
$('rename-form').addEventListener('submit', onRename);
$('notice-dismiss').addEventListener('click', hideNotice);
$('notice-retry').addEventListener('click', () => {
  hideNotice();
  load();
});
$('signin-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const field = event.currentTarget.elements.token;
  const token = field.value.trim();
  field.value = '';
  signIn(token);
});

const token = takeTokenFromAddress();
if (token === null) showSignIn();
else signIn(token);
