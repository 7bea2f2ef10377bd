// Types of cellar.js, written by hand: keep them in step with the module.

/** The `code` of every v1 error answer (DESIGN §5). */
export declare const ERROR_CODES: readonly [
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
];

/** The code of a request that got no usable answer (the server unreachable, say). */
export declare const NETWORK: 'network';

/** A v1 error code, or `network`. */
export type CellarErrorCode = (typeof ERROR_CODES)[number] | typeof NETWORK;

/** A failed request: the server's error answer, or `network` when there was none. */
export declare class CellarError extends Error {
  constructor(
    code: CellarErrorCode,
    message: string,
    details?: { status?: number; version?: number | null; cause?: unknown },
  );
  readonly code: CellarErrorCode;
  /** The HTTP status; 0 for `network`. */
  readonly status: number;
  /** The `Cellar-Version` of the answer, when it had one. */
  readonly version: number | null;
  /** True for store_unavailable, sync_pending, insufficient_storage and network. */
  readonly retryable: boolean;
}

/** A blob, as it travels both ways. */
export interface BlobValue {
  base64: string;
}

/** A blob as a query parameter. */
export declare function encodeBlob(bytes: Uint8Array): BlobValue;
/** The bytes of a blob from a result. */
export declare function decodeBlob(value: BlobValue): Uint8Array;

/** A value in a result row; a real that is infinite comes as "Infinity" or "-Infinity". */
export type SqlValue = null | number | string | BlobValue;
/** A parameter bound to `?`; a boolean binds as 0 or 1. */
export type SqlParam = SqlValue | boolean;
/** A statement: bare SQL, or SQL with parameters. */
export type Statement = string | { sql: string; params?: SqlParam[] };

/** What one statement produced. */
export interface StatementResult {
  columns: string[];
  rows: SqlValue[][];
  rows_affected: number;
  last_insert_rowid: number | null;
}

/** The answer of `query`. */
export interface QueryAnswer {
  version: number;
  /** True exactly when the request changed the database (and so uploaded). */
  wrote: boolean;
  durability: 'sync' | 'async';
  results: StatementResult[];
}

/** The answer of `status`. */
export interface DbStatus {
  user_id: string;
  version: number;
  size_bytes: number;
  /** When the current version was uploaded; null before the first write. */
  updated_at: string | null;
}

/** A new version of the user's database landed. */
export interface VersionEvent {
  type: 'version';
  user_id: string;
  version: number;
  /** The instance that uploaded it. */
  writer: string;
  /** The version whose content it brought back, when it is a restore. */
  restored_from?: number;
}

/** An upload found another writer's version in the bucket. */
export interface ConflictEvent {
  type: 'conflict';
  user_id: string;
  policy: 'last-write-wins' | 'strict' | 'rebase';
  local_version: number;
  remote_version: number;
  local_writer: string;
  remote_writer: string;
  resolution: 'overwritten' | 'refused' | 'rebased';
}

export type CellarEvent = VersionEvent | ConflictEvent;

/** The part of a fetch Response the client reads. */
export interface FetchResponse {
  ok: boolean;
  status: number;
  headers: { get(name: string): string | null };
  json(): Promise<any>;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** The part of `fetch` the client calls. */
export type FetchFunction = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string },
) => Promise<FetchResponse>;

/** The part of a WebSocket the client uses. */
export interface WebSocketLike {
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: any) => void): void;
  close(): void;
}

/** A WebSocket class, such as the global one. */
export type WebSocketClass = new (url: string) => WebSocketLike;

export interface CellarOptions {
  /** The server's origin, such as https://cellar.example.com. */
  url: string;
  /**
   * A JWT (auth.mode = "jwt"), or a function giving one, asked before every request and every
   * reconnect of `subscribe` (so an app can renew tokens that expire). Give this or `userId`.
   */
  token?: string | (() => string | Promise<string>);
  /** The user id (auth.mode = "header"); `subscribe` is not available with it. */
  userId?: string;
  /** Defaults to the global fetch. */
  fetch?: FetchFunction;
  /** Defaults to the global WebSocket. */
  WebSocket?: WebSocketClass;
}

export interface SubscribeOptions {
  /** Each time a connection opens, the first and every reconnection. */
  onOpen?: () => void;
  /** Each time a connection closes or fails (code 1006 when it failed without a close). */
  onClose?: (closed: { code: number; reason: string }) => void;
}

export interface Subscription {
  /** Closes the connection and stops reconnecting, for good. */
  close(): void;
}

/** A client for one user of one Cellar server. Keeps nothing in browser storage. */
export declare class Cellar {
  constructor(options: CellarOptions);
  /** Runs `statements` in ONE transaction, all or nothing: `POST /v1/query`. */
  query(statements: Statement[]): Promise<QueryAnswer>;
  /** `GET /v1/db`. */
  status(): Promise<DbStatus>;
  /** A consistent snapshot of the SQLite file; rejects with `not_found` before the first write. */
  file(): Promise<ArrayBuffer>;
  /** Relays the user's events until `close()`, reconnecting with backoff; needs a token. */
  subscribe(onEvent: (event: CellarEvent) => void, options?: SubscribeOptions): Subscription;
}

export interface CellarAdminOptions {
  /** The server's origin, or "" for the page's own (the dashboard at /ui). */
  url: string;
  /** The server's auth.admin_token. */
  token: string;
  /** Defaults to the global fetch. */
  fetch?: FetchFunction;
  /** Defaults to the global WebSocket. */
  WebSocket?: WebSocketClass;
}

/** A user as the admin API lists it. */
export interface AdminUser {
  user_id: string;
  version: number | null;
  size_bytes: number | null;
  updated_at: string | null;
  writer: string | null;
  /** Conflicts this instance saw for the user since it started. */
  conflicts: number;
  /** Why the user's metadata could not be read, if it could not. */
  problem: string | null;
}

export interface AdminUsersPage {
  users: AdminUser[];
  /** The `after` of the next page; null on the last one. */
  next: string | null;
  /** Users matching the search, in all pages. */
  total: number;
}

/** An event as the admin API relays it: a user's event and when this instance saw it. */
export type AdminEvent = CellarEvent & { at: string };

export interface AdminUserDetail {
  user: AdminUser;
  /** This instance's recent events of the user, newest first. */
  events: AdminEvent[];
}

/** The server's own samples of the last minutes (one a second). */
export interface AdminStats {
  interval_ms: number;
  samples: Array<Record<string, number | string>>;
}

/** One restorable version of a user's database. */
export interface VersionEntry {
  version: number;
  /** When it was written (RFC 3339). */
  created_at: string;
  /** What holds it in the bucket. */
  held_by: Array<'change' | 'snapshot' | 'kept_snapshot'>;
  /** Bytes uploaded to write it. */
  shipped_bytes: number;
  /** The database's size at this version, where a snapshot of it tells. */
  size_bytes: number | null;
  /** The instance that wrote it, where known. */
  writer: string | null;
}

export interface VersionsAnswer {
  user_id: string;
  /** Newest first. */
  versions: VersionEntry[];
}

/** A value in a diff: a blob shows its first 64 bytes in hex, a real JSON cannot hold as text. */
export type DiffValue = null | number | string | { blob_hex: string; len: number } | { real: string };

/** One row of a table's diff: a changed row shows its key and the columns that differ. */
export interface RowDiff {
  key: Record<string, DiffValue>;
  change: 'added' | 'removed' | 'changed';
  before: Record<string, DiffValue> | null;
  after: Record<string, DiffValue> | null;
}

export interface TableDiff {
  table: string;
  /** The columns that identify a row. */
  key: string[];
  added: number;
  removed: number;
  changed: number;
  /** The first rows (`max_rows`); the counts are exact beyond them. */
  rows: RowDiff[];
  truncated: boolean;
}

export interface SchemaChange {
  kind: string;
  name: string;
  change: 'added' | 'removed' | 'changed';
  sql_before: string | null;
  sql_after: string | null;
}

export interface DiffAnswer {
  user_id: string;
  from: number;
  to: number;
  /** Empty, like `schema`, when the versions hold the same rows. */
  tables: TableDiff[];
  schema: SchemaChange[];
}

/** What a restore did: restoring `undo` undoes it. */
export interface RestoreAnswer {
  version: number;
  restored: number;
  undo: number;
}

/** The operator's client of the admin API (served when auth.admin_token is set). */
export declare class CellarAdmin {
  constructor(options: CellarAdminOptions);
  /** A page of users, searched by a part of their id: `GET /v1/admin/users`. */
  users(query?: { q?: string; after?: string | null; limit?: number }): Promise<AdminUsersPage>;
  /** One user's metadata and recent events: `GET /v1/admin/users/{user}`. */
  user(userId: string): Promise<AdminUserDetail>;
  /** One user's versions, newest first: `GET /v1/admin/users/{user}/versions`. */
  versions(userId: string, query?: { limit?: number; writers?: boolean }): Promise<VersionsAnswer>;
  /** Two of one user's versions compared: `GET /v1/admin/users/{user}/diff`. */
  diff(userId: string, from: number, to: number, options?: { maxRows?: number }): Promise<DiffAnswer>;
  /** Restores a version (or the one current at a moment) as a new version; any user, any setting. */
  restore(userId: string, target: { version: number } | { at: string }): Promise<RestoreAnswer>;
  /** `GET /v1/admin/stats`. */
  stats(): Promise<AdminStats>;
  /** Every user's events from `/v1/admin/events` until `close()`, reconnecting with backoff. */
  subscribe(onEvent: (event: AdminEvent) => void, options?: SubscribeOptions): Subscription;
}
