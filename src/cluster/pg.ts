/**
 * The shared PostgreSQL database of a cluster: the connection pool, transactions, the schema
 * migrations, and the one mapping of "the database cannot be reached" to a 503.
 */
import type PgBoss from 'pg-boss';
import pg from 'pg';
import type { Logger } from 'pino';
import { UnavailableError } from '../core/errors.js';

export interface PoolOptions {
  /** Connections this node may hold (default 8: one request each in flight, plus the job runner). */
  max?: number;
  /** Shown in pg_stat_activity, so an operator can tell which node holds which connection. */
  applicationName?: string;
  /** How long to wait for a connection before the request fails (default 5 s). */
  connectTimeoutMs?: number;
}

/**
 * BIGINT (counts, file sizes, ids of job_events) comes back from node-postgres as text, because
 * a 64-bit integer may not fit a JS number. Everything kiapi stores as BIGINT stays far below
 * 2^53 (sizes in bytes, row counts), so this pool reads them as numbers, as better-sqlite3 does;
 * a value that would not fit stays text rather than being silently rounded. Event ids are read
 * as `id::text` where they are meant to stay opaque strings.
 */
const INT8_OID = 20;
const poolTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format: 'text' | 'binary' = 'text'): ((value: string) => unknown) => {
    if (oid === INT8_OID && format === 'text') {
      return (value: string) => {
        const n = Number(value);
        return Number.isSafeInteger(n) ? n : value;
      };
    }
    return pg.types.getTypeParser(oid, format) as (value: string) => unknown;
  }) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * A pool on the shared database. Its `error` listener matters: when the server goes away, each
 * idle client emits `error`, and an EventEmitter error with no listener would end the process;
 * the pool drops such clients and connects anew on the next query.
 */
export function openPool(url: string, log: Logger, opts: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 8,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
    application_name: opts.applicationName ?? 'kiapi',
    // A peer that vanished without closing the connection is noticed by TCP keepalive, not
    // only when a query times out.
    keepAlive: true,
    types: poolTypes,
  });
  pool.on('error', (err) => log.warn({ err: err.message }, 'an idle connection to the shared database failed; the pool will reconnect'));
  return pool;
}

/**
 * Runs `work` on one client of the pool, then gives it back. While held, the client has an
 * `error` listener: a checked-out pg client emits `error` when its connection dies (the pool
 * listens only to idle ones), and unheard that would end the process. The failing query rejects
 * anyway; a client that failed so, or whose last statement could not run, is destroyed instead
 * of going back to the pool.
 */
export async function withClient<T>(pool: pg.Pool, work: (client: pg.PoolClient, markBroken: (err: unknown) => void) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const markBroken = (err: unknown) => {
    broken ??= err instanceof Error ? err : new Error(String(err));
  };
  client.on('error', markBroken);
  try {
    return await work(client, markBroken);
  } finally {
    client.removeListener('error', markBroken);
    client.release(broken);
  }
}

/**
 * Runs `work` in one transaction on one client: committed when it resolves, rolled back when it
 * throws (a client whose rollback failed is destroyed, not returned to the pool half-open).
 */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (client, markBroken) => {
    try {
      await client.query('BEGIN');
      const out = await work(client);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      await client.query('ROLLBACK').catch(markBroken);
      throw err;
    }
  });
}

/** pg-boss's `db` option bound to one client: its statements join that client's transaction. */
export function onClient(client: pg.PoolClient | pg.Client): { db: PgBoss.Db } {
  return { db: { executeSql: (text, values) => client.query(text, values) } };
}

export interface Migration {
  /** Unique and never renamed: it is what the migrations table remembers. */
  name: string;
  sql: string;
}

/**
 * A fixed key for the migrations' session advisory lock (any constant works; this one spells
 * "kiapimig" in ASCII so it is recognisable in pg_locks).
 */
const MIGRATION_LOCK_KEY = '7740149414397089639';

/**
 * Applies the migrations the database has not had yet, in list order, each in its own
 * transaction with its row in `cluster_migrations`. Nodes starting at once take turns under a
 * session advisory lock, so each migration is applied exactly once; a node that finds them all
 * applied does nothing. The lock goes with the session, so a node that dies mid-way frees it
 * (its open migration rolls back). Answers the names this call applied.
 */
export async function migrate(pool: pg.Pool, migrations: readonly Migration[]): Promise<string[]> {
  const names = new Set<string>();
  for (const m of migrations) {
    if (names.has(m.name)) throw new Error(`migration ${m.name} is listed twice`);
    names.add(m.name);
  }
  try {
    return await withClient(pool, async (client, markBroken) => {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
      try {
        await client.query(
          `CREATE TABLE IF NOT EXISTS cluster_migrations (
             name TEXT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
           )`,
        );
        const done = new Set((await client.query<{ name: string }>('SELECT name FROM cluster_migrations')).rows.map((r) => r.name));
        const applied: string[] = [];
        for (const m of migrations) {
          if (done.has(m.name)) continue;
          await client.query('BEGIN');
          try {
            await client.query(m.sql);
            await client.query('INSERT INTO cluster_migrations (name) VALUES ($1)', [m.name]);
            await client.query('COMMIT');
          } catch (err) {
            await client.query('ROLLBACK').catch(markBroken);
            throw new Error(`cluster migration ${m.name} failed: ${(err as Error).message}`, { cause: err });
          }
          applied.push(m.name);
        }
        return applied;
      } finally {
        // If this fails the session is gone, and its lock with it; the client is not reused.
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(markBroken);
      }
    });
  } catch (err) {
    throw unavailable(err, 'migrating the schema');
  }
}

/** Node's socket errors that mean the server is not there (or the network between us is not). */
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/**
 * SQLSTATEs outside class 08 (connection exception) that mean "not now": the server is shutting
 * down or was told to end this session (57P01 admin_shutdown, 57P02 crash_shutdown — another
 * backend crashed and the server resets —, 57P03 cannot_connect_now while starting or
 * recovering), or it has no connection slot left (53300).
 */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
/** node-postgres raises these as plain Errors without a code. */
const CONNECTION_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Connection is not open',
];

/** Whether `err` says the database cannot be reached now (as opposed to a bad statement). */
export function isUnavailable(err: unknown): boolean {
  return unreachableReason(err) !== null;
}

function unreachableReason(err: unknown, depth = 0): string | null {
  if (!(err instanceof Error) || depth > 3) return null;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (CONNECTION_CODES.has(code)) return code;
    if (/^[0-9A-Z]{5}$/.test(code) && (code.startsWith('08') || UNAVAILABLE_SQLSTATES.has(code))) return `${code} ${err.message}`;
  }
  const message = CONNECTION_MESSAGES.find((m) => err.message.includes(m));
  if (message) return err.message;
  // Node's happy-eyeballs connect reports one AggregateError for all the addresses it tried.
  if (err instanceof AggregateError) {
    for (const e of err.errors) {
      const r = unreachableReason(e, depth + 1);
      if (r) return r;
    }
  }
  return unreachableReason(err.cause, depth + 1);
}

/** Seconds a client is asked to wait before retrying (the pool reconnects by itself meanwhile). */
const RETRY_AFTER_S = 2;

/**
 * `err` as the 503 a request answers when the database cannot be reached; any other error is
 * answered unchanged (so `catch (e) { throw unavailable(e, 'reading the job') }` is safe
 * everywhere). The reason names the socket error or SQLSTATE, never the host or credentials.
 */
export function unavailable(err: unknown, what?: string): unknown {
  if (err instanceof UnavailableError) return err;
  const reason = unreachableReason(err);
  if (reason === null) return err;
  const e = new UnavailableError(`the shared database is unreachable${what ? ` while ${what}` : ''} (${reason}); retry shortly`);
  e.headers['retry-after'] = String(RETRY_AFTER_S);
  e.cause = err;
  return e;
}
