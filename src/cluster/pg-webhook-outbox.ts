/**
 * The webhook outbox shared by the nodes of a cluster (PostgreSQL): the same rows and states as
 * the single node's SQLite outbox, written with the job's own transaction (`subscribe` with the
 * one that records the job, `transition` with the one that writes its transition), plus a claim:
 * every node runs a dispatcher, and a due delivery is first leased to one node
 * (`locked_by`, `locked_until`, taken with FOR UPDATE SKIP LOCKED), so exactly one node POSTs each
 * attempt. The node records the attempt's result and releases the lease; a node that dies
 * mid-attempt leaves the lease to lapse, and then any node attempts the delivery again (with the
 * same `webhook-id`, which receivers dedupe on).
 *
 * A transition that makes a delivery pending also NOTIFYs `kiapi_webhooks` in its transaction, so
 * every node listening (`listen()`) looks for due deliveries once it commits; the dispatchers'
 * idle poll covers a notification lost while a listener reconnects.
 *
 * The table is migration '0004 webhook deliveries' (schema.ts). Clocks: `next_attempt_at` and the other *_at times are the writing node's clock (the dispatcher
 * compares them with its own); leases are the database's clock only, so a node whose clock runs
 * off cannot steal or keep a lease.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import type { JobRecord } from '../core/jobs/job-store.js';
import {
  eventBody,
  newDeliveryId,
  transitionEvent,
  webhookView,
  type DeliveryRow,
  type WebhookOutboxApi,
  type WebhookTarget,
  type WebhookView,
} from '../core/webhooks/outbox.js';

/** The channel a transition NOTIFYs when a delivery became pending. */
export const WEBHOOK_CHANNEL = 'kiapi_webhooks';

/** The database's clock in unix seconds, as leases are kept. */
const DB_NOW = 'extract(epoch from clock_timestamp())';
/** After a lost LISTEN connection, the next try. */
const RELISTEN_MS = 1000;

export interface PgWebhookOutboxOptions {
  /**
   * How long a claimed delivery stays this node's: longer than one attempt can take
   * (KIAPI_WEBHOOK_TIMEOUT_S plus recording it). Default 60 s.
   */
  leaseS?: number;
  /** For the LISTEN connection's losses. */
  log?: Logger;
}

type PgRow = DeliveryRow & { locked_by: string | null; locked_until: number | null };

export class PgWebhookOutbox implements WebhookOutboxApi {
  onPending: () => void = () => undefined;
  private readonly leaseS: number;
  /** This node's claims not recorded yet: delivery id → its lease's end, which fences the recording. */
  private readonly claims = new Map<string, { nodeId: string; until: number }>();
  private listener: pg.PoolClient | null = null;
  private listening = false;
  private relisten: NodeJS.Timeout | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly opts: PgWebhookOutboxOptions = {},
  ) {
    this.leaseS = opts.leaseS ?? 60;
  }

  /** Records what a new job asked for, with `tx`, the client of the transaction recording the job. */
  async subscribe(jobId: string, target: WebhookTarget, tx: unknown): Promise<void> {
    const client = clientOf(tx);
    const now = Date.now() / 1000;
    for (const event of new Set(target.events)) {
      await client.query(
        `INSERT INTO webhook_deliveries (id, job_id, event, url, vet, state, created_at) VALUES ($1, $2, $3, $4, $5, 'waiting', $6)`,
        [newDeliveryId(), jobId, event, target.url, target.vet ? 1 : 0, now],
      );
    }
  }

  /** A job transition, with `tx`, the client of the transaction writing it (WebhookOutboxApi.transition). */
  async transition(job: JobRecord, view: () => Record<string, unknown>, tx: unknown): Promise<void> {
    const event = transitionEvent(job);
    if (event === null) return;
    const client = clientOf(tx);
    const now = Date.now() / 1000;
    const { type, payload } = eventBody(event, job, view, now);
    const res = await client.query(
      `UPDATE webhook_deliveries SET state = 'pending', type = $1, payload = $2, event_at = $3, next_attempt_at = $3
       WHERE job_id = $4 AND event = $5 AND state = 'waiting'`,
      [type, payload, now, job.id, event],
    );
    // Delivered on commit only, to every listening node (this one included).
    if ((res.rowCount ?? 0) > 0) await client.query('SELECT pg_notify($1, $2)', [WEBHOOK_CHANNEL, job.id]);
  }

  async claimDue(now: number, limit: number, nodeId: string): Promise<DeliveryRow[]> {
    if (limit <= 0) return [];
    const res = await this.pool.query<PgRow>(
      `UPDATE webhook_deliveries SET locked_by = $3, locked_until = ${DB_NOW} + $4
       WHERE id IN (
         SELECT id FROM webhook_deliveries
         WHERE state = 'pending' AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until < ${DB_NOW})
         ORDER BY next_attempt_at LIMIT $2
         FOR UPDATE SKIP LOCKED)
       RETURNING *`,
      [now, limit, nodeId, this.leaseS],
    );
    const rows = res.rows.sort((a, b) => (a.next_attempt_at ?? 0) - (b.next_attempt_at ?? 0));
    for (const r of rows) this.claims.set(r.id, { nodeId, until: r.locked_until ?? 0 });
    return rows;
  }

  /** The soonest a pending delivery is due and not leased, in this node's clock. */
  async nextDueAt(): Promise<number | null> {
    const res = await this.pool.query<{ at: number | null }>(
      `SELECT MIN(GREATEST(next_attempt_at, COALESCE(locked_until - ${DB_NOW} + $1, 0))) AS at
       FROM webhook_deliveries WHERE state = 'pending'`,
      [Date.now() / 1000],
    );
    return res.rows[0]?.at ?? null;
  }

  /** A 2xx answer counts whoever holds the lease now: the receiver has the event. */
  async recordDelivered(id: string, status: number, now = Date.now() / 1000): Promise<void> {
    this.claims.delete(id);
    await this.pool.query(
      `UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, last_status = $1, last_error = NULL,
         last_attempt_at = $2, next_attempt_at = NULL, delivered_at = $2, locked_by = NULL, locked_until = NULL
       WHERE id = $3 AND state = 'pending'`,
      [status, now, id],
    );
  }

  /**
   * A failed attempt, recorded only while this node's lease on it holds: a node whose lease
   * lapsed (another may be attempting the delivery now) must not reschedule it under that node.
   */
  async recordFailure(id: string, status: number | null, error: string, nextAt: number | null, now = Date.now() / 1000): Promise<void> {
    const claim = this.claims.get(id);
    this.claims.delete(id);
    if (!claim) return;
    await this.pool.query(
      `UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, last_status = $2, last_error = $3,
         last_attempt_at = $4, next_attempt_at = $5, locked_by = NULL, locked_until = NULL
       WHERE id = $6 AND state = 'pending' AND locked_by = $7 AND locked_until = $8`,
      [nextAt === null ? 'failed' : 'pending', status, error, now, nextAt, id, claim.nodeId, claim.until],
    );
  }

  async viewOf(jobId: string): Promise<WebhookView | null> {
    const res = await this.pool.query<PgRow>('SELECT * FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at, event DESC', [jobId]);
    return webhookView(res.rows);
  }

  /** Forgets settled deliveries of jobs whose record (the shared `jobs` table) is gone. */
  async prune(): Promise<number> {
    const res = await this.pool.query(
      `DELETE FROM webhook_deliveries d WHERE d.state != 'pending' AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = d.job_id)`,
    );
    return res.rowCount ?? 0;
  }

  /**
   * Wakes `onPending` whenever any node's transition made a delivery pending (after its commit).
   * Holds one connection of the pool; a lost one is replaced, followed by one wake-up for what
   * may have been missed meanwhile.
   */
  async listen(): Promise<void> {
    this.listening = true;
    const client = await this.pool.connect();
    if (!this.listening) {
      client.release();
      return;
    }
    const lost = (err?: Error) => {
      if (this.listener !== client) return;
      this.listener = null;
      client.release(err ?? true);
      this.opts.log?.warn({ err }, 'lost the webhook LISTEN connection; reconnecting');
      this.relistenSoon();
    };
    this.listener = client;
    client.on('notification', (msg) => {
      if (msg.channel === WEBHOOK_CHANNEL) this.onPending();
    });
    client.on('error', lost);
    client.on('end', () => lost());
    try {
      await client.query(`LISTEN ${WEBHOOK_CHANNEL}`);
    } catch (err) {
      lost(err as Error);
    }
  }

  private relistenSoon(): void {
    if (!this.listening || this.relisten) return;
    this.relisten = setTimeout(() => {
      this.relisten = null;
      this.listen()
        .then(() => this.onPending())
        .catch(() => this.relistenSoon());
    }, RELISTEN_MS);
    this.relisten.unref();
  }

  /** Stops listening; the connection is closed rather than pooled again (it still LISTENs). */
  async close(): Promise<void> {
    this.listening = false;
    if (this.relisten) clearTimeout(this.relisten);
    this.relisten = null;
    const client = this.listener;
    this.listener = null;
    client?.release(true);
  }
}

function clientOf(tx: unknown): pg.ClientBase {
  if (typeof tx === 'object' && tx !== null && typeof (tx as { query?: unknown }).query === 'function') return tx as pg.ClientBase;
  throw new Error('PgWebhookOutbox writes only within a PostgreSQL transaction (its client as tx)');
}
