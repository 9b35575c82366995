/**
 * Idempotency keys shared by the nodes of a cluster (PostgreSQL). A single node keeps a second
 * request with a key waiting in memory while the first is still being submitted; across nodes
 * that waiting is a row instead:
 *
 * - the first request *claims* the key: a `pending` row naming the claim, inserted only when no
 *   live row holds the key (a row past its lifetime, or a `pending` one older than the lease, whose
 *   node died while the request resolved its inputs, is taken over);
 * - the jobs' transaction turns the row `done` with their ids, but only while the claim is still
 *   this request's, so the key and the jobs commit together; a request whose claim was taken over
 *   meanwhile has its jobs' transaction rolled back and replays the request that took it over;
 * - a failed submission deletes its claim, so the key is free again at once;
 * - another request with the key, on any node: `done` → replay; `pending` with the same
 *   fingerprint → wait (polled with a short backoff) and look again; another fingerprint → 422.
 *
 * The table is migration '0005 idempotency keys' (schema.ts). `claimed_by` names the claim: the
 * node and a fresh id per request, so two requests of one node are told apart too. Times are the
 * database's clock (`clock_timestamp()`), so the nodes' clocks may disagree.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { reusedError, type IdempotencyApi, type KeyRecorder, type KeyedOutcome } from '../core/jobs/idempotency.js';

/** The database's clock in unix seconds, as the rows hold times. */
const NOW = 'extract(epoch from clock_timestamp())';

export interface PgIdempotencyOptions {
  /** This node's name, recorded with its claims (diagnostics). */
  nodeId: string;
  /** KIAPI_IDEMPOTENCY_TTL_H in seconds: how long a key is remembered after its first use. */
  ttlS: number;
  /**
   * How old a `pending` claim may grow before another request takes the key over: its node is
   * taken to have died while the request resolved its inputs. Default 30 s.
   */
  leaseS?: number;
  /** The longest pause between two looks at a key another request is submitting. Default 500 ms. */
  maxPollMs?: number;
}

interface KeyRow {
  request_hash: string;
  state: 'pending' | 'done';
  job_ids: string;
  created_at: number;
  /** Whether the row no longer holds the key: past its lifetime, or a pending claim past the lease. */
  lapsed: boolean;
}

/** The recorder found the claim gone (taken over): the jobs' transaction must not commit. */
class LostClaim extends Error {
  constructor() {
    super('the Idempotency-Key claim of this request was taken over by another request');
  }
}

const FIRST_POLL_MS = 20;

export class PgIdempotencyKeys implements IdempotencyApi {
  private readonly leaseS: number;
  private readonly maxPollMs: number;

  constructor(
    private readonly pool: pg.Pool,
    private readonly opts: PgIdempotencyOptions,
  ) {
    this.leaseS = opts.leaseS ?? 30;
    this.maxPollMs = opts.maxPollMs ?? 500;
  }

  async once<T>(scope: string, key: string, hash: string, submit: (record: KeyRecorder) => Promise<T>): Promise<KeyedOutcome<T>> {
    let pollMs = FIRST_POLL_MS;
    for (;;) {
      const claim = await this.claim(scope, key, hash);
      if (claim !== null) {
        try {
          return { fresh: await submit(this.recorder(scope, key, claim)) };
        } catch (err) {
          await this.release(scope, key, claim);
          // Another request took the key over while this one resolved its inputs: its answer is
          // this request's too (or its refusal, for another body).
          if (err instanceof LostClaim) continue;
          throw err;
        }
      }
      const row = await this.read(scope, key);
      // Freed (a failed submission) or lapsed since the claim was refused: claim it now.
      if (!row || row.lapsed) continue;
      if (row.request_hash !== hash) {
        throw reusedError(scope, key, row.state === 'done' ? `at ${new Date(row.created_at * 1000).toISOString()}` : 'by a request that is still being submitted');
      }
      if (row.state === 'done') return { replay: JSON.parse(row.job_ids) as string[] };
      // The same request, still being submitted (here or on another node): wait for it. Bounded:
      // a claim older than the lease is taken over above.
      await new Promise((r) => setTimeout(r, pollMs));
      pollMs = Math.min(this.maxPollMs, pollMs * 2);
    }
  }

  /**
   * Claims the key for this request; returns the claim's id, or null when a live row holds it.
   * One statement, so two nodes racing for a free or lapsed key cannot both win.
   */
  private async claim(scope: string, key: string, hash: string): Promise<string | null> {
    const claim = `${this.opts.nodeId} ${randomUUID()}`;
    const res = await this.pool.query<{ claimed_by: string }>(
      `INSERT INTO idempotency_keys AS k (scope, key, request_hash, state, job_ids, claimed_by, claimed_at, created_at, expires_at)
       VALUES ($1, $2, $3, 'pending', '[]', $4, ${NOW}, ${NOW}, ${NOW} + $5)
       ON CONFLICT (scope, key) DO UPDATE SET
         request_hash = EXCLUDED.request_hash, state = 'pending', job_ids = '[]', claimed_by = EXCLUDED.claimed_by,
         claimed_at = EXCLUDED.claimed_at, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
       WHERE k.expires_at <= ${NOW} OR (k.state = 'pending' AND k.claimed_at <= ${NOW} - $6)
       RETURNING claimed_by`,
      [scope, key, hash, claim, this.opts.ttlS, this.leaseS],
    );
    return res.rows[0]?.claimed_by === claim ? claim : null;
  }

  private async read(scope: string, key: string): Promise<KeyRow | null> {
    const res = await this.pool.query<KeyRow>(
      `SELECT request_hash, state, job_ids, created_at,
              (expires_at <= ${NOW} OR (state = 'pending' AND claimed_at <= ${NOW} - $3)) AS lapsed
       FROM idempotency_keys WHERE scope = $1 AND key = $2`,
      [scope, key, this.leaseS],
    );
    return res.rows[0] ?? null;
  }

  /** Turns the claim `done` with the jobs, on the jobs' own transaction (`tx`: its pg client). */
  private recorder(scope: string, key: string, claim: string): KeyRecorder {
    return async (jobIds, tx) => {
      if (!isClient(tx)) throw new Error('PgIdempotencyKeys records keys only within a PostgreSQL transaction (its client as tx)');
      const res = await tx.query(
        `UPDATE idempotency_keys SET state = 'done', job_ids = $4, created_at = ${NOW}, expires_at = ${NOW} + $5
         WHERE scope = $1 AND key = $2 AND claimed_by = $3 AND state = 'pending'`,
        [scope, key, claim, JSON.stringify(jobIds), this.opts.ttlS],
      );
      if (res.rowCount !== 1) throw new LostClaim();
    };
  }

  /**
   * Frees the key after a failed submission (only this request's own pending claim). Should the
   * database be away now, the claim lapses with the lease instead.
   */
  private async release(scope: string, key: string, claim: string): Promise<void> {
    await this.pool
      .query(`DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND claimed_by = $3 AND state = 'pending'`, [scope, key, claim])
      .catch(() => undefined);
  }

  /** Forgets keys past their lifetime (any node may run it; deleting twice is harmless). */
  async prune(): Promise<number> {
    const res = await this.pool.query(`DELETE FROM idempotency_keys WHERE expires_at <= ${NOW}`);
    return res.rowCount ?? 0;
  }
}

function isClient(tx: unknown): tx is pg.ClientBase {
  return typeof tx === 'object' && tx !== null && typeof (tx as { query?: unknown }).query === 'function';
}
