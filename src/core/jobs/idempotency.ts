/**
 * Idempotency keys: a client that sends a generation request with an `Idempotency-Key` header
 * and sends it again (a retry after a lost answer, a timeout, a crash of either side) gets the
 * first request's job(s), never new ones.
 *
 * A key is scoped by route and remembered with the fingerprint of the request and the ids of the
 * jobs it made. The row is written in the same SQLite transaction as those jobs (JobStore
 * createAll), so a crash at any moment leaves both or neither. Between the claim and that
 * transaction the request may still be resolving its inputs (a URL download, an upload read): a
 * second request with the key meanwhile waits for the first in memory, then replays what it
 * recorded. Both the check and the claim run without an await between them, in the one process
 * that holds the data dir, so two racing requests cannot both pass.
 *
 * IdempotencyApi is what the routes use; several nodes sharing a database implement it with a
 * claim row instead of the in-memory map (src/cluster/pg-idempotency.ts).
 */
import { createHash } from 'node:crypto';
import stringify from 'safe-stable-stringify';
import type { Db } from '../db.js';
import { InputError, RuleError, clip } from '../errors.js';

/** The header's name as messages and documents spell it. */
export const IDEMPOTENCY_HEADER = 'Idempotency-Key';
export const MAX_KEY_CHARS = 255;
/** Visible ASCII: what fits in any header and log line unchanged (a UUID, a hash, a name). */
const KEY_CHARS = /^[\x21-\x7e]+$/;

/**
 * The key sent on a request, null when there is none. A key that cannot be one (empty, too long,
 * spaces or non-ASCII, the header given twice) is the client's 400 naming the header.
 */
export function readIdempotencyKey(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  if (Array.isArray(value)) throw keyError(`send one ${IDEMPOTENCY_HEADER} header, not ${value.length}`);
  if (value.length === 0) throw keyError(`${IDEMPOTENCY_HEADER} is empty; send 1 to ${MAX_KEY_CHARS} visible ASCII characters (a UUID is a good key), or no header`);
  if (value.length > MAX_KEY_CHARS) throw keyError(`${IDEMPOTENCY_HEADER} is ${value.length} characters long; at most ${MAX_KEY_CHARS} are allowed (a UUID is a good key)`);
  if (!KEY_CHARS.test(value)) {
    throw keyError(`${IDEMPOTENCY_HEADER} may hold only visible ASCII characters (! to ~, no spaces); a UUID is a good key`);
  }
  return value;
}

function keyError(message: string): InputError {
  return Object.assign(new InputError(message), { param: IDEMPOTENCY_HEADER, code: 'invalid_idempotency_key' });
}

/**
 * The fingerprint of a request: SHA-256 of its canonical JSON (object keys sorted at every depth,
 * arrays in order), so key order and whitespace do not make two bodies different.
 */
export function requestFingerprint(request: unknown): string {
  return createHash('sha256').update(stringify(request) ?? 'null').digest('hex');
}

/** What a keyed submission turned out to be: this request's own work, or a replay of the jobs the key names. */
export type KeyedOutcome<T> = { fresh: T } | { replay: string[] };

/**
 * Writes the key as done with the ids of the jobs it made. Called by the store that records the
 * jobs, inside that transaction; `tx` is that transaction's handle (unused by SQLite, whose
 * recorder is synchronous; a shared database's client otherwise, which the recorder writes with).
 */
export type KeyRecorder = (jobIds: string[], tx: unknown) => void | Promise<void>;

/** Idempotency keys as the generation routes use them. */
export interface IdempotencyApi {
  /**
   * Runs `submit` once per (scope, key) within the key's lifetime. `submit` must call `record`
   * with the ids of the jobs it creates, inside the transaction that inserts them. A request with
   * the same fingerprint gets `replay` with those ids, waiting first when the key's first request
   * is still being submitted; one with another fingerprint is refused (422). A `submit` that
   * fails records nothing: the key stays free and a request waiting on it submits in turn.
   */
  once<T>(scope: string, key: string, hash: string, submit: (record: KeyRecorder) => Promise<T>): Promise<KeyedOutcome<T>>;
  /** Forgets keys past their lifetime; returns how many. */
  prune(): Promise<number>;
}

interface KeyRow {
  request_hash: string;
  job_ids: string;
  created_at: number;
}

interface InFlight {
  hash: string;
  settled: Promise<void>;
}

export class IdempotencyKeys implements IdempotencyApi {
  private readonly stmts;
  /** Keys whose first request is still being submitted (`scope \0 key`). */
  private readonly inFlight = new Map<string, InFlight>();

  constructor(
    db: Db,
    /** KIAPI_IDEMPOTENCY_TTL_H in seconds: how long a key is remembered after its first use. */
    readonly ttlS: number,
  ) {
    this.stmts = {
      get: db.prepare<[string, string, number], KeyRow>(
        'SELECT request_hash, job_ids, created_at FROM idempotency_keys WHERE scope = ? AND key = ? AND expires_at > ?',
      ),
      // REPLACE: an expired row of the same key is still there until the next prune.
      put: db.prepare(
        'INSERT OR REPLACE INTO idempotency_keys (scope, key, request_hash, job_ids, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      prune: db.prepare('DELETE FROM idempotency_keys WHERE expires_at <= ?'),
    };
  }

  /** IdempotencyApi.once; the recorder writes synchronously through the SQLite handle. */
  async once<T>(scope: string, key: string, hash: string, submit: (record: KeyRecorder) => Promise<T>): Promise<KeyedOutcome<T>> {
    const id = `${scope}\0${key}`;
    for (;;) {
      const row = this.stmts.get.get(scope, key, Date.now() / 1000);
      if (row) {
        if (row.request_hash !== hash) throw reusedError(scope, key, `at ${new Date(row.created_at * 1000).toISOString()}`);
        return { replay: JSON.parse(row.job_ids) as string[] };
      }
      const flight = this.inFlight.get(id);
      if (!flight) break;
      if (flight.hash !== hash) throw reusedError(scope, key, 'by a request that is still being submitted');
      await flight.settled;
    }
    let settle!: () => void;
    this.inFlight.set(id, { hash, settled: new Promise<void>((r) => (settle = r)) });
    try {
      const fresh = await submit((jobIds) => {
        const now = Date.now() / 1000;
        this.stmts.put.run(scope, key, hash, JSON.stringify(jobIds), now, now + this.ttlS);
      });
      return { fresh };
    } finally {
      this.inFlight.delete(id);
      settle();
    }
  }

  /** Forgets keys past their lifetime; returns how many. Cheap: a range delete on the expiry index. */
  async prune(now = Date.now() / 1000): Promise<number> {
    return this.stmts.prune.run(now).changes;
  }
}

/** The 422 for a key sent again with another body; `when` says when the key was first used. */
export function reusedError(scope: string, key: string, when: string): RuleError {
  return Object.assign(
    new RuleError(
      `${IDEMPOTENCY_HEADER} '${clip(key, 100)}' was already used on POST ${scope} with a different request body (${when}); ` +
        'send the same body to get that request\'s answer again, or a new key for a new request',
    ),
    { param: IDEMPOTENCY_HEADER, code: 'idempotency_key_reused' },
  );
}
