// Cellar's operator dashboard: the users in the bucket, one user's recent events and history
// (versions, a diff of two, restore and undo), every user's events live, and plots of the
// server's own samples, all through the admin API.
//
// The admin token lives in this module's memory only (never in localStorage,
// sessionStorage, IndexedDB or a cookie): reloading the page, or "Lock", forgets it.

import { CellarAdmin } from "/ui/cellar.js";

const PAGE_SIZE = 50;
const FEED_KEPT = 200;
const STATS_EVERY_MS = 2000;
const SEARCH_DELAY_MS = 250;
const REFRESH_DELAY_MS = 500;
// Samples a chart spans: the five minutes the server keeps.
const CHART_SLOTS = 300;
// Versions a user's history lists, newest first.
const HISTORY_LIMIT = 50;
// Rows a diff lists per table (the counts stay exact beyond them).
const DIFF_ROWS = 50;

const $ = (id) => document.getElementById(id);

// The admin API client, holding the token; `null` while locked.
let admin = null;
// What runs while the dashboard is open; `lock()` stops it.
let running = null;

// The users table: the search, and the `after` cursor of each page seen so far.
const table = { search: "", cursors: [null], page: 0 };
// The user shown in the user view, if any.
let selected = null;
// That user's history: the versions listed, their writers as far as asked, the two picked
// to compare, the version whose restore awaits confirmation, and the last restore's answer
// (what "Undo" restores).
let userHistory = null;

// Shows a failure: a refused token locks the dashboard, anything else is a banner.
function report(error) {
  if (error.code === "unauthorized") {
    lock("The admin token was refused; enter it again.");
    return;
  }
  const banner = $("error");
  banner.textContent = error.message;
  banner.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

// --- unlocking -------------------------------------------------------------------------

async function unlock(event) {
  event.preventDefault();
  const input = $("token-input");
  const token = input.value.trim();
  input.value = "";
  $("login-error").hidden = true;
  try {
    admin = new CellarAdmin({ url: "", token });
    const stats = await admin.stats();
    showDashboard(stats);
  } catch (error) {
    lock(error.code === "unauthorized" ? "That is not the admin token." : error.message);
  }
}

function showDashboard(stats) {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("lock").hidden = false;
  setPill($("connection"), "unlocked", "ok");
  running = { timers: [], feed: null };
  drawStats(stats);
  running.timers.push(setInterval(refreshStats, STATS_EVERY_MS));
  loadUsers();
  follow();
}

function lock(message) {
  admin = null;
  if (running) {
    running.timers.forEach(clearInterval);
    running.feed?.close();
    running = null;
  }
  $("dashboard").hidden = true;
  $("lock").hidden = true;
  $("login").hidden = false;
  setPill($("connection"), "locked", "");
  const error = $("login-error");
  error.textContent = message ?? "";
  error.hidden = !message;
  $("token-input").focus();
}

function setPill(element, text, kind) {
  element.textContent = text;
  element.dataset.state = kind;
}

// --- users -----------------------------------------------------------------------------

async function loadUsers() {
  if (!running) return;
  const query = { q: table.search, after: table.cursors[table.page], limit: PAGE_SIZE };
  try {
    const page = await admin.users(query);
    renderUsers(page);
    clearError();
  } catch (error) {
    report(error);
  }
}

function renderUsers(page) {
  table.cursors[table.page + 1] = page.next;
  const body = $("users-table").tBodies[0];
  body.replaceChildren(...page.users.map(userRow));
  $("users-total").textContent = `${page.total} ${page.total === 1 ? "user" : "users"}`;
  $("users-empty").hidden = page.total > 0;
  $("users-page").textContent = page.total > 0 ? `page ${table.page + 1}` : "";
  $("users-prev").disabled = table.page === 0;
  $("users-next").disabled = !page.next;
}

function userRow(user) {
  const row = document.createElement("tr");
  row.className = "user-row";
  row.dataset.user = user.user_id;
  row.tabIndex = 0;
  if (user.user_id === selected) row.classList.add("selected");
  const cells = [
    user.user_id,
    user.version ?? "—",
    user.size_bytes == null ? "—" : bytes(user.size_bytes),
    user.updated_at ? when(user.updated_at) : "—",
    user.writer ?? user.problem ?? "—",
    user.conflicts,
  ];
  for (const [i, text] of cells.entries()) {
    const cell = document.createElement("td");
    cell.textContent = String(text);
    cell.className = ["user-id", "version", "size", "updated", "writer", "conflicts"][i];
    row.append(cell);
  }
  if (user.problem) row.classList.add("problem");
  if (user.conflicts > 0) row.classList.add("conflicted");
  const show = () => showUser(user.user_id);
  row.addEventListener("click", show);
  row.addEventListener("keydown", (event) => event.key === "Enter" && show());
  return row;
}

function turnPage(delta) {
  table.page = Math.max(0, table.page + delta);
  loadUsers();
}

let searching = null;
function search(event) {
  clearTimeout(searching);
  searching = setTimeout(() => {
    table.search = event.target.value.trim();
    table.cursors = [null];
    table.page = 0;
    loadUsers();
  }, SEARCH_DELAY_MS);
}

// Several events in a burst refresh the table (and the user shown, if it had one) once.
let refreshing = null;
let selectedChanged = false;
function refreshSoon(userId) {
  clearTimeout(refreshing);
  selectedChanged ||= userId === selected;
  refreshing = setTimeout(() => {
    if (!running) return;
    loadUsers();
    if (selectedChanged && selected) showUser(selected);
    selectedChanged = false;
  }, REFRESH_DELAY_MS);
}

// --- one user --------------------------------------------------------------------------

async function showUser(userId) {
  if (!running) return;
  selected = userId;
  for (const row of $("users-table").tBodies[0].rows) {
    row.classList.toggle("selected", row.dataset.user === userId);
  }
  const another = userHistory?.user !== userId;
  if (another) resetHistory(userId);
  loadHistory();
  try {
    const detail = await admin.user(userId);
    if (selected !== userId) return;
    renderUser(detail);
    // The view is below the users table: bring a newly chosen user's into sight.
    if (another) $("user-view").scrollIntoView({ block: "start" });
    clearError();
  } catch (error) {
    report(error);
  }
}

function renderUser({ user, events }) {
  $("user-view").hidden = false;
  $("user-view-id").textContent = user.user_id;
  const facts = [
    ["version", user.version ?? "—"],
    ["size", user.size_bytes == null ? "—" : bytes(user.size_bytes)],
    ["last write", user.updated_at ? when(user.updated_at) : "—"],
    ["writer", user.writer ?? "—"],
    ["conflicts seen here", user.conflicts],
  ];
  if (user.problem) facts.push(["problem", user.problem]);
  $("user-meta").replaceChildren(
    ...facts.flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      dd.dataset.field = term;
      return [dt, dd];
    }),
  );
  const list = $("user-events");
  list.replaceChildren(...events.map(eventItem));
  if (events.length === 0) {
    const none = document.createElement("li");
    none.className = "hint";
    none.textContent = "No event on this instance since it started.";
    list.append(none);
  }
}

function closeUser() {
  selected = null;
  userHistory = null;
  $("user-view").hidden = true;
  for (const row of $("users-table").tBodies[0].rows) row.classList.remove("selected");
}

// --- one user's history ----------------------------------------------------------------

function resetHistory(userId) {
  userHistory = { user: userId, versions: null, writers: new Map(), from: null, to: null, confirming: null, restored: null };
  $("history-count").textContent = "";
  setHistoryStatus("Loading versions…");
  $("history-table").tBodies[0].replaceChildren();
  $("history-restored").hidden = true;
  $("history-confirm").hidden = true;
  $("history-diff").hidden = true;
  $("history-compare").disabled = true;
}

function setHistoryStatus(text, failed = false) {
  const status = $("history-status");
  status.textContent = text;
  status.className = failed ? "error" : "hint";
  status.hidden = !text;
}

// A failure of a history call: a refused token locks the dashboard like any call.
function historyFailed(error) {
  if (error.code === "unauthorized") report(error);
  else setHistoryStatus(error.message, true);
}

// Lists the user's versions (a few store requests), then asks who wrote the newest ones not
// seen before (a request apiece): a version never changes, so each writer is asked once,
// however often the list refreshes.
async function loadHistory() {
  const user = userHistory.user;
  const writers = userHistory.writers;
  try {
    const { versions } = await admin.versions(user, { limit: HISTORY_LIMIT });
    const seen = versions.findIndex((entry) => writers.has(entry.version));
    const unseen = seen === -1 ? versions.length : seen;
    if (unseen > 0) {
      const signed = await admin.versions(user, { limit: unseen, writers: true });
      for (const entry of signed.versions) writers.set(entry.version, entry.writer);
    }
    if (userHistory?.user !== user) return;
    for (const entry of versions) entry.writer = writers.get(entry.version) ?? null;
    userHistory.versions = versions;
    const kept = new Set(versions.map((entry) => entry.version));
    if (!kept.has(userHistory.to)) userHistory.to = versions[0]?.version ?? null;
    if (!kept.has(userHistory.from)) userHistory.from = versions[1]?.version ?? userHistory.to;
    renderHistory();
  } catch (error) {
    if (userHistory?.user === user) historyFailed(error);
  }
}

function renderHistory() {
  const { versions } = userHistory;
  const count = versions.length;
  $("history-count").textContent =
    count === HISTORY_LIMIT ? `newest ${count}` : `${count} ${count === 1 ? "version" : "versions"}`;
  setHistoryStatus(count === 0 ? "No version kept in the bucket." : "");
  const newest = versions[0]?.version;
  $("history-table").tBodies[0].replaceChildren(...versions.map((entry) => versionRow(entry, newest)));
  $("history-compare").disabled = userHistory.from == null || userHistory.to == null;
}

const HOLDERS = { change: "change", snapshot: "snapshot", kept_snapshot: "kept snapshot" };

function versionRow(entry, newest) {
  const row = document.createElement("tr");
  row.className = "version-row";
  row.dataset.version = String(entry.version);
  if (entry.version === newest) row.classList.add("current");
  if (entry.version === userHistory.confirming) row.classList.add("confirming");
  row.append(
    pickCell("from", entry.version),
    pickCell("to", entry.version),
    cell("version", entry.version),
    cell("written", when(entry.created_at)),
    cell("writer", entry.writer ?? "—"),
    cell("size", entry.size_bytes == null ? "—" : bytes(entry.size_bytes)),
    cell("shipped", bytes(entry.shipped_bytes)),
    cell("held", entry.held_by.map((holder) => HOLDERS[holder] ?? holder).join(", ")),
  );
  row.cells[4].title = entry.writer ?? "";
  const action = document.createElement("td");
  if (entry.version === newest) {
    action.className = "hint";
    action.textContent = "current";
  } else {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "restore";
    button.textContent = "Restore";
    button.addEventListener("click", () => askToRestore(entry.version));
    action.append(button);
  }
  row.append(action);
  return row;
}

function cell(className, text) {
  const td = document.createElement("td");
  td.className = className;
  td.textContent = String(text);
  return td;
}

// A radio button picking `version` as the diff's `side` ("from" or "to").
function pickCell(side, version) {
  const td = document.createElement("td");
  td.className = "pick";
  const radio = document.createElement("input");
  radio.type = "radio";
  radio.name = `history-${side}`;
  radio.className = `pick-${side}`;
  radio.value = String(version);
  radio.checked = userHistory[side] === version;
  radio.setAttribute("aria-label", `compare ${side} version ${version}`);
  radio.addEventListener("change", () => {
    userHistory[side] = version;
    $("history-compare").disabled = userHistory.from == null || userHistory.to == null;
  });
  td.append(radio);
  return td;
}

// --- diff

async function compare() {
  const { user, from, to } = userHistory;
  const shown = $("history-diff");
  shown.hidden = false;
  shown.dataset.from = String(from);
  shown.dataset.to = String(to);
  delete shown.dataset.loaded;
  $("history-diff-title").textContent = `Version ${from} → version ${to}`;
  const body = $("history-diff-body");
  body.replaceChildren(paragraph("Comparing…", "hint"));
  try {
    const diff = await admin.diff(user, from, to, { maxRows: DIFF_ROWS });
    if (userHistory?.user !== user) return;
    body.replaceChildren(...diffParts(diff));
    shown.dataset.loaded = "true";
  } catch (error) {
    if (error.code === "unauthorized") report(error);
    else body.replaceChildren(paragraph(error.message, "error"));
  }
}

function diffParts({ from, to, tables, schema }) {
  if (tables.length === 0 && schema.length === 0) {
    return [paragraph(`No differences: versions ${from} and ${to} hold the same schema and rows.`, "no-diff")];
  }
  const parts = [];
  if (schema.length > 0) {
    const section = document.createElement("div");
    section.className = "diff-schema";
    section.append(heading("h5", "Schema"));
    for (const change of schema) {
      const item = paragraph(`${change.kind} ${change.name}: ${change.change}`, "schema-change");
      item.dataset.change = change.change;
      section.append(item);
      for (const sql of [change.sql_before, change.sql_after]) {
        if (sql == null) continue;
        const pre = document.createElement("pre");
        pre.textContent = sql;
        section.append(pre);
      }
    }
    parts.push(section);
  }
  for (const table of tables) parts.push(tableDiff(table));
  return parts;
}

function tableDiff(table) {
  const section = document.createElement("div");
  section.className = "diff-table";
  section.dataset.table = table.table;
  const counts = `${table.added} added, ${table.removed} removed, ${table.changed} changed`;
  section.append(heading("h5", `Table ${table.table}: ${counts}`));
  const rows = document.createElement("table");
  const head = rows.createTHead().insertRow();
  for (const title of ["", "Key", "Before", "After"]) {
    const th = document.createElement("th");
    th.textContent = title;
    head.append(th);
  }
  const body = rows.createTBody();
  for (const change of table.rows) {
    const row = body.insertRow();
    row.className = "diff-row";
    row.dataset.change = change.change;
    // A changed row: its key has a column of its own; before and after show what differs.
    const shown = (values) =>
      values == null ? "—" : columns(change.change === "changed" ? withoutKey(values, change.key) : values);
    row.append(
      cell("change", change.change),
      cell("key", columns(change.key)),
      cell("before", shown(change.before)),
      cell("after", shown(change.after)),
    );
  }
  section.append(rows);
  if (table.truncated) {
    const total = table.added + table.removed + table.changed;
    section.append(paragraph(`The first ${table.rows.length} of ${total} rows.`, "hint"));
  }
  return section;
}

function withoutKey(values, key) {
  return Object.fromEntries(Object.entries(values).filter(([name]) => !(name in key)));
}

// A row's columns as `name = value`, values as SQL would show them.
function columns(values) {
  return Object.entries(values)
    .map(([name, value]) => `${name} = ${sqlValue(value)}`)
    .join(", ");
}

function sqlValue(value) {
  if (value === null) return "NULL";
  if (typeof value === "string") return `'${value.replaceAll("'", "''")}'`;
  if (typeof value === "object" && "blob_hex" in value) {
    const shown = value.blob_hex.length / 2 < value.len ? "…" : "";
    return `x'${value.blob_hex}${shown}' (${bytes(value.len)})`;
  }
  if (typeof value === "object" && "real" in value) return value.real;
  return String(value);
}

function paragraph(text, className) {
  const p = document.createElement("p");
  p.className = className;
  p.textContent = text;
  return p;
}

function heading(tag, text) {
  const h = document.createElement(tag);
  h.textContent = text;
  return h;
}

// --- restore

function askToRestore(version) {
  userHistory.confirming = version;
  const newest = userHistory.versions[0]?.version;
  $("history-confirm-text").textContent =
    `Restore version ${version} of ${userHistory.user}? Its content becomes a new version on top ` +
    `of version ${newest}, for every instance; nothing is deleted, and it can be undone.`;
  $("history-confirm-yes").textContent = `Restore version ${version}`;
  $("history-confirm").hidden = false;
  renderHistory();
  $("history-confirm-no").focus();
}

function cancelRestore() {
  userHistory.confirming = null;
  $("history-confirm").hidden = true;
  renderHistory();
}

// Restores `version` of the user shown; `undoing` says it undoes the previous restore.
async function restore(version, undoing) {
  const user = userHistory.user;
  for (const button of [$("history-confirm-yes"), $("history-undo")]) button.disabled = true;
  try {
    const done = await admin.restore(user, { version });
    if (userHistory?.user !== user) return;
    userHistory.restored = done;
    userHistory.confirming = null;
    $("history-confirm").hidden = true;
    const text = undoing
      ? `Undone: version ${done.restored}'s content is back, as version ${done.version}.`
      : `Restored version ${done.restored} as version ${done.version}.`;
    $("history-restored-text").textContent = text;
    $("history-undo").textContent = `Undo (restore version ${done.undo})`;
    const notice = $("history-restored");
    notice.dataset.version = String(done.version);
    notice.hidden = false;
    showUser(user);
  } catch (error) {
    if (userHistory?.user === user) historyFailed(error);
  } finally {
    for (const button of [$("history-confirm-yes"), $("history-undo")]) button.disabled = false;
  }
}

// --- events ----------------------------------------------------------------------------

// Follows every user's events (the client reconnects with a growing delay). The server
// replays its recent events first, so the feed is rebuilt on each connection.
function follow() {
  setPill($("feed-state"), "connecting", "");
  running.feed = admin.subscribe(
    (event) => {
      const feed = $("event-feed");
      feed.prepend(eventItem(event));
      while (feed.children.length > FEED_KEPT) feed.lastElementChild.remove();
      refreshSoon(event.user_id);
    },
    {
      onOpen: () => {
        $("event-feed").replaceChildren();
        setPill($("feed-state"), "live", "ok");
      },
      onClose: () => {
        if (running) setPill($("feed-state"), "reconnecting", "warn");
      },
    },
  );
}

function eventItem(event) {
  const item = document.createElement("li");
  item.className = `event event-${event.type}`;
  item.dataset.type = event.type;
  item.dataset.user = event.user_id;
  const time = document.createElement("time");
  time.dateTime = event.at;
  time.textContent = new Date(event.at).toLocaleTimeString();
  const text = document.createElement("span");
  text.textContent = describe(event);
  item.append(time, text);
  return item;
}

function describe(event) {
  if (event.type === "version") {
    const restore = event.restored_from == null ? "" : `, a restore of version ${event.restored_from},`;
    return `${event.user_id}: version ${event.version}${restore} by ${event.writer}`;
  }
  if (event.type === "conflict") {
    return `${event.user_id}: conflict (${event.policy}, ${event.resolution}): ` +
      `local v${event.local_version} by ${event.local_writer}, ` +
      `remote v${event.remote_version} by ${event.remote_writer}`;
  }
  return `${event.user_id}: ${event.type}`;
}

// --- plots -----------------------------------------------------------------------------

const COLORS = { green: "#2f9e44", amber: "#e8890c", red: "#e03131", blue: "#1c7ed6", violet: "#7048e8", grey: "#868e96" };

const CHARTS = [
  ["chart-requests", (n) => n.toFixed(1), [
    ["2xx", COLORS.green, (s) => s.requests["2xx"]],
    ["4xx", COLORS.amber, (s) => s.requests["4xx"]],
    ["5xx", COLORS.red, (s) => s.requests["5xx"]],
  ]],
  ["chart-uploads", (n) => n.toFixed(1), [["uploads", COLORS.blue, (s) => s.uploads]]],
  ["chart-bytes", (n) => `${bytes(n)}/s`, [
    ["up", COLORS.violet, (s) => s.bytes_up],
    ["down", COLORS.blue, (s) => s.bytes_down],
  ]],
  ["chart-latency", (n) => `${n.toFixed(n < 10 ? 2 : 0)} ms`, [
    ["p50", COLORS.green, (s) => s.p50_ms],
    ["p99", COLORS.red, (s) => s.p99_ms],
  ]],
  ["chart-conflicts", (n) => n.toFixed(1), [["conflicts", COLORS.red, (s) => s.conflicts]]],
  ["chart-cached", (n) => n.toFixed(0), [["databases", COLORS.grey, (s) => s.cached_databases]]],
];

async function refreshStats() {
  if (!running) return;
  try {
    drawStats(await admin.stats());
  } catch (error) {
    report(error);
  }
}

function drawStats({ samples }) {
  for (const [id, format, lines] of CHARTS) {
    const canvas = $(id);
    const series = lines.map(([label, color, value]) => ({ label, color, values: samples.map(value) }));
    drawChart(canvas, series, format);
    canvas.dataset.samples = String(samples.length);
    legend(canvas.nextElementSibling, series, format);
  }
}

// Lines of `series` on `canvas`, newest at the right edge, scaled to a round maximum.
function drawChart(canvas, series, format) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const values = series.flatMap((line) => line.values).filter((v) => v != null);
  const top = roundUp(Math.max(0, ...values));
  const [left, right, upper, lower] = [2, width - 2, 16, height - 2];
  g.strokeStyle = "#e9ecef";
  g.lineWidth = 1;
  for (const y of [upper, (upper + lower) / 2, lower]) {
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(right, y);
    g.stroke();
  }
  g.fillStyle = "#868e96";
  g.font = "11px system-ui, sans-serif";
  g.fillText(format(top), left, 11);
  const step = (right - left) / (CHART_SLOTS - 1);
  for (const line of series) {
    const offset = CHART_SLOTS - line.values.length;
    g.strokeStyle = line.color;
    g.lineWidth = 1.5;
    g.beginPath();
    let drawing = false;
    line.values.forEach((value, i) => {
      if (value == null) {
        drawing = false;
        return;
      }
      const x = left + (offset + i) * step;
      const y = lower - (value / top) * (lower - upper);
      if (drawing) g.lineTo(x, y);
      else g.moveTo(x, y);
      drawing = true;
    });
    g.stroke();
  }
}

// 1, 2 or 5 times a power of ten, at least `n` (and at least 1).
function roundUp(n) {
  if (n <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= n);
}

function legend(element, series, format) {
  element.replaceChildren(
    ...series.map((line) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = line.color;
      const last = line.values.at(-1);
      item.append(swatch, `${line.label} ${last == null ? "—" : format(last)}`);
      return item;
    }),
  );
}

// --- formatting ------------------------------------------------------------------------

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let unit = 0;
  while (n >= 1000 && unit < units.length - 1) {
    n /= 1000;
    unit += 1;
  }
  return `${n.toFixed(unit === 0 || n >= 100 ? 0 : 1)} ${units[unit]}`;
}

function when(rfc3339) {
  return new Date(rfc3339).toLocaleString();
}

// --- wiring ----------------------------------------------------------------------------

$("token-form").addEventListener("submit", unlock);
$("lock").addEventListener("click", () => lock());
$("user-search").addEventListener("input", search);
$("users-prev").addEventListener("click", () => turnPage(-1));
$("users-next").addEventListener("click", () => turnPage(1));
$("user-view-close").addEventListener("click", closeUser);
$("history-compare").addEventListener("click", compare);
$("history-confirm-yes").addEventListener("click", () => restore(userHistory.confirming, false));
$("history-confirm-no").addEventListener("click", cancelRestore);
$("history-undo").addEventListener("click", () => restore(userHistory.restored.undo, true));
$("token-input").focus();
