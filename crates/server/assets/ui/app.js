// Cellar's operator dashboard: the users in the bucket, one user's recent events, every
// user's events live, and plots of the server's own samples, all through the admin API.
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

const $ = (id) => document.getElementById(id);

// The admin API client, holding the token; `null` while locked.
let admin = null;
// What runs while the dashboard is open; `lock()` stops it.
let running = null;

// The users table: the search, and the `after` cursor of each page seen so far.
const table = { search: "", cursors: [null], page: 0 };
// The user shown in the user view, if any.
let selected = null;

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
  try {
    const detail = await admin.user(userId);
    renderUser(detail);
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
  $("user-view").hidden = true;
  for (const row of $("users-table").tBodies[0].rows) row.classList.remove("selected");
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
    return `${event.user_id}: version ${event.version} by ${event.writer}`;
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
$("token-input").focus();
