/**
 * Cellar's JavaScript client: the v1 HTTP API (DESIGN §5) for browsers and Node 20+, with no
 * dependencies.
 *
 * It keeps NOTHING in localStorage, sessionStorage or IndexedDB (design rule
 * `sync-no-localstorage`): the bucket is the single source of truth, and a copy kept in the
 * browser would be a second one, stale as soon as another device writes. Every answer comes
 * from the server; `subscribe` tells when to ask again.
 *
 * In Node 20, `subscribe` needs the flag `--experimental-websocket` (or a `WebSocket` passed in).
 * The types are in cellar.d.ts.
 *
 * @module
 */

/** The `code` of every v1 error answer (DESIGN §5). */
export const ERROR_CODES = Object.freeze([
  'bad_request',
  'sql_error',
  'unauthorized',
  'forbidden',
  'not_found',
  'method_not_allowed',
  'query_timeout',
  'request_timeout',
  'conflict',
  'payload_too_large',
  'internal',
  'store_unavailable',
  'sync_pending',
  'insufficient_storage',
]);

/** The code of a request that got no usable answer (the server unreachable, say). */
export const NETWORK = 'network';

/** Failures that the same request, sent again later, may get past. */
const RETRYABLE_CODES = new Set(['store_unavailable', 'sync_pending', 'insufficient_storage', NETWORK]);

/** The code of an error answer without Cellar's error body (a proxy's, say), by its status. */
const CODE_OF_STATUS = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  408: 'query_timeout',
  409: 'conflict',
  413: 'payload_too_large',
  503: 'store_unavailable',
  507: 'insufficient_storage',
};

/** The close code browsers report for a connection that failed (RFC 6455 §7.4.1). */
const ABNORMAL_CLOSURE = 1006;

/** The first wait before reconnecting the events WebSocket; it doubles with each failure... */
const FIRST_RETRY_MS = 250;
/** ...up to this. */
const MAX_RETRY_MS = 10_000;
/** A connection open this long was healthy: the next failure waits the first delay again. */
const HEALTHY_CONNECTION_MS = MAX_RETRY_MS;

/** A failed request: the server's error answer, or `network` when there was none. */
export class CellarError extends Error {
  constructor(code, message, { status = 0, version = null, cause } = {}) {
    super(message, { cause });
    this.name = 'CellarError';
    this.code = code;
    this.status = status;
    this.version = version;
    this.retryable = RETRYABLE_CODES.has(code);
  }
}

/** A blob as a query parameter: `{"base64": "..."}`. */
export function encodeBlob(bytes) {
  // In chunks: spreading a large array into one call overflows the stack.
  let binary = '';
  for (let start = 0; start < bytes.length; start += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
  }
  return { base64: btoa(binary) };
}

/** The bytes of a blob as results carry it: `{"base64": "..."}`. */
export function decodeBlob(value) {
  return Uint8Array.from(atob(value.base64), (char) => char.charCodeAt(0));
}

/** A client for one user of one Cellar server. */
export class Cellar {
  #base;
  /** A JWT, or a function giving one (asked before every request and every reconnect). */
  #token;
  #userId;
  #fetch;
  #WebSocket;

  constructor({ url, token, userId, fetch, WebSocket } = {}) {
    if (typeof url !== 'string' || url === '') {
      throw new TypeError('Cellar needs `url`, the server origin (such as https://cellar.example.com)');
    }
    if ((token === undefined) === (userId === undefined)) {
      throw new TypeError('Cellar needs exactly one identity: `token` (a JWT) or `userId` (header mode)');
    }
    this.#base = url.replace(/\/+$/, '');
    this.#token = token;
    this.#userId = userId;
    // Called through a wrapper: a browser's fetch refuses to run with another `this`.
    this.#fetch = fetch ?? ((...args) => globalThis.fetch(...args));
    this.#WebSocket = WebSocket;
  }

  /** Runs `statements` in ONE transaction, all or nothing: `POST /v1/query`. */
  query(statements) {
    return this.#call(
      '/v1/query',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ statements }) },
      'json',
    );
  }

  /** The database's version, size and last update: `GET /v1/db`. */
  status() {
    return this.#call('/v1/db', { method: 'GET' }, 'json');
  }

  /** A consistent snapshot of the SQLite file: `GET /v1/db/file` (`not_found` before the first write). */
  file() {
    return this.#call('/v1/db/file', { method: 'GET' }, 'arrayBuffer');
  }

  /**
   * Relays the user's events (`{"type": "version", ...}`, `{"type": "conflict", ...}`) from
   * `GET /v1/events` to `onEvent`, reconnecting after every close or failure with
   * exponential backoff and jitter, until `close()`.
   */
  subscribe(onEvent, hooks = {}) {
    if (this.#token === undefined) {
      throw new Error(
        'subscribe needs a token: a browser WebSocket cannot send X-User-Id, so create the Cellar with `token` (auth.mode = "jwt")',
      );
    }
    const urlFor = async () => eventsUrl(this.#base, '/v1/events', await this.#currentToken());
    return follow(this.#WebSocket, urlFor, onEvent, hooks);
  }

  async #call(path, init, readAs) {
    const identity =
      this.#token === undefined
        ? { 'x-user-id': this.#userId }
        : { authorization: `Bearer ${await this.#currentToken()}` };
    return request(this.#fetch, this.#base + path, identity, init, readAs);
  }

  /** The token to send now: tokens expire, so a function is asked each time. */
  async #currentToken() {
    return typeof this.#token === 'function' ? await this.#token() : this.#token;
  }
}

/**
 * The operator's client of the admin API (`/v1/admin/…`, served when the server has
 * `auth.admin_token`): the users in the bucket, one user's recent events and history
 * (versions, diff, restore), the server's own samples, and every user's events. The dashboard at `/ui` is built on it. Like `Cellar`, it
 * keeps nothing in web storage.
 */
export class CellarAdmin {
  #base;
  #token;
  #fetch;
  #WebSocket;

  constructor({ url, token, fetch, WebSocket } = {}) {
    if (typeof url !== 'string') {
      throw new TypeError('CellarAdmin needs `url`, the server origin (or "" for the page\'s own)');
    }
    if (typeof token !== 'string' || token === '') {
      throw new TypeError('CellarAdmin needs `token`: the server\'s auth.admin_token');
    }
    this.#base = url.replace(/\/+$/, '');
    this.#token = token;
    this.#fetch = fetch ?? ((...args) => globalThis.fetch(...args));
    this.#WebSocket = WebSocket;
  }

  /** A page of users, searched by a part of their id: `GET /v1/admin/users`. */
  users({ q, after, limit } = {}) {
    const params = new URLSearchParams();
    if (q) params.set('q', q);
    if (after) params.set('after', after);
    if (limit !== undefined) params.set('limit', String(limit));
    const query = params.size > 0 ? `?${params}` : '';
    return this.#get(`/v1/admin/users${query}`);
  }

  /** One user's metadata and recent events: `GET /v1/admin/users/{user}`. */
  user(userId) {
    return this.#get(userPath(userId));
  }

  /**
   * One user's restorable versions, newest first: `GET /v1/admin/users/{user}/versions`
   * (`writers: true` also tells who wrote each one listed, at a store request apiece).
   */
  versions(userId, { limit, writers } = {}) {
    const params = new URLSearchParams();
    if (limit !== undefined) params.set('limit', String(limit));
    if (writers) params.set('writers', 'true');
    const query = params.size > 0 ? `?${params}` : '';
    return this.#get(`${userPath(userId)}/versions${query}`);
  }

  /** Two of one user's versions compared row by row: `GET /v1/admin/users/{user}/diff`. */
  diff(userId, from, to, { maxRows } = {}) {
    const params = new URLSearchParams({ from: String(from), to: String(to) });
    if (maxRows !== undefined) params.set('max_rows', String(maxRows));
    return this.#get(`${userPath(userId)}/diff?${params}`);
  }

  /**
   * Brings back `{ version }` (or the version current `{ at }` a moment) of one user's
   * database as a new version: `POST /v1/admin/users/{user}/restore`. Restoring the answer's
   * `undo` undoes it.
   */
  restore(userId, target) {
    const headers = { authorization: `Bearer ${this.#token}`, 'content-type': 'application/json' };
    const init = { method: 'POST', body: JSON.stringify(target) };
    return request(this.#fetch, this.#base + `${userPath(userId)}/restore`, headers, init, 'json');
  }

  /** The server's samples of the last minutes: `GET /v1/admin/stats`. */
  stats() {
    return this.#get('/v1/admin/stats');
  }

  /** Every user's events from `/v1/admin/events`, reconnecting like `Cellar.subscribe`. */
  subscribe(onEvent, hooks = {}) {
    const origin = this.#base === '' ? globalThis.location.origin : this.#base;
    const url = eventsUrl(origin, '/v1/admin/events', this.#token);
    return follow(this.#WebSocket, async () => url, onEvent, hooks);
  }

  #get(path) {
    const headers = { authorization: `Bearer ${this.#token}` };
    return request(this.#fetch, this.#base + path, headers, { method: 'GET' }, 'json');
  }
}

/** The admin API's path of one user. */
function userPath(userId) {
  return `/v1/admin/users/${encodeURIComponent(userId)}`;
}

/** Sends one request; answers that are not 2xx become a CellarError. */
async function request(fetchFn, url, identityHeaders, init, readAs) {
  try {
    const response = await fetchFn(url, { ...init, headers: { ...identityHeaders, ...init.headers } });
    if (!response.ok) throw await errorOf(response);
    return await response[readAs]();
  } catch (err) {
    if (err instanceof CellarError) throw err;
    // Node's fetch says only "fetch failed"; the cause says why (ECONNREFUSED, ...).
    const reason = err?.cause?.message ?? err?.message ?? String(err);
    throw new CellarError(NETWORK, `${init.method} ${url} got no usable answer: ${reason}`, { cause: err });
  }
}

/**
 * Relays the JSON messages of the WebSocket at `urlFor()` (asked before every connection: its
 * token may have been renewed) to `onEvent`, reconnecting after every close or failure with
 * exponential backoff and jitter, until `close()`.
 */
function follow(WebSocketGiven, urlFor, onEvent, { onOpen, onClose } = {}) {
  const WebSocketClass = WebSocketGiven ?? globalThis.WebSocket;
  if (WebSocketClass === undefined) {
    throw new Error('no WebSocket here: run Node 20 with --experimental-websocket, or pass `WebSocket`');
  }
  let socket;
  let retryTimer;
  let stopped = false;
  let failures = 0;
  const retry = () => {
    retryTimer = setTimeout(connect, retryDelay(failures));
    failures += 1;
  };
  const connect = async () => {
    let current;
    try {
      const url = await urlFor();
      if (stopped) return;
      current = new WebSocketClass(url);
    } catch (err) {
      onClose?.({ code: ABNORMAL_CLOSURE, reason: `could not connect: ${err?.message ?? err}` });
      if (!stopped) retry();
      return;
    }
    socket = current;
    let openedAt;
    let ended = false;
    // A failed handshake fires `error`, then in browsers `close`; Node 20's WebSocket fires
    // only `error`. Whichever comes first ends this connection, once.
    const end = (code, reason) => {
      if (ended) return;
      ended = true;
      onClose?.({ code, reason });
      if (stopped) return;
      if (openedAt !== undefined && Date.now() - openedAt >= HEALTHY_CONNECTION_MS) failures = 0;
      retry();
    };
    current.addEventListener('open', () => {
      openedAt = Date.now();
      onOpen?.();
    });
    current.addEventListener('message', (message) => onEvent(JSON.parse(message.data)));
    current.addEventListener('close', (closed) => end(closed.code, closed.reason));
    current.addEventListener('error', () => {
      if (ended) return; // Node's close() of a failed socket fires `error` again, at once
      end(ABNORMAL_CLOSURE, 'the connection failed');
      // Gone for sure: a socket given up on must not deliver events beside its successor.
      current.close();
    });
  };
  connect();
  return {
    close() {
      stopped = true;
      clearTimeout(retryTimer);
      socket?.close();
    },
  };
}

/** The CellarError of an error answer. */
async function errorOf(response) {
  const body = await response.json().catch(() => null);
  const error = body?.error;
  const code = ERROR_CODES.includes(error?.code) ? error.code : (CODE_OF_STATUS[response.status] ?? 'internal');
  const message = typeof error?.message === 'string' ? error.message : `HTTP ${response.status}`;
  const version = response.headers.get('cellar-version');
  return new CellarError(code, message, {
    status: response.status,
    version: version === null ? null : Number(version),
  });
}

/** `ws(s)://...{path}?token=...`: the events sockets are the one place a token rides in a URL. */
function eventsUrl(base, path, token) {
  const url = new URL(`${base}${path}`);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('token', token);
  return url.href;
}

/** The wait before reconnect attempt `failures + 1`: between half and all of the doubled delay, so
 * that clients dropped together by a restart do not all come back at the same instant. */
function retryDelay(failures) {
  const ceiling = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** failures);
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}
