/**
 * The webhook outbox: the one owner of webhook delivery state, in SQLite so that it outlives the
 * process. A job that asks for webhooks gets one row per event (`start`, `completed`) when it is
 * recorded, in the same transaction (state `waiting`). When the job reaches that point, the row
 * becomes `pending` with its body fixed, in the same transaction as the job's own transition
 * (JobStore transition hooks): whatever stops the process afterwards, the event is in the outbox
 * and is delivered once kiapi runs again. A pending row ends `delivered` (a 2xx answer) or
 * `failed` (no 2xx within KIAPI_WEBHOOK_RETRY_FOR_S). Rows outlive their job until pruned with it.
 *
 * WebhookOutboxApi is the outbox as the routes, the queue and the dispatcher use it; several
 * nodes sharing a database implement it there (src/cluster/pg-webhook-outbox.ts), where a due
 * delivery is first claimed by one node for a short lease so exactly one node POSTs each attempt.
 */
import { randomUUID } from 'node:crypto';
import type { Db } from '../db.js';
import { FINISHED, type JobRecord } from '../jobs/job-store.js';
import { redactUserInfo } from '../files/url-safety.js';

export const WEBHOOK_EVENTS = ['start', 'completed'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];
export type DeliveryState = 'waiting' | 'pending' | 'delivered' | 'failed';

/** What a job asked for: where to POST and on which events. */
export interface WebhookTarget {
  url: string;
  events: WebhookEvent[];
  /**
   * Whether the URL came from a request (then its address is checked on every attempt, as for
   * `url` inputs) rather than from the operator's KIAPI_WEBHOOK_URL.
   */
  vet: boolean;
}

export interface DeliveryRow {
  id: string;
  job_id: string;
  event: WebhookEvent;
  url: string;
  vet: number;
  state: DeliveryState;
  type: string | null;
  payload: string | null;
  event_at: number | null;
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
  next_attempt_at: number | null;
  delivered_at: number | null;
  created_at: number;
}

/** One delivery as the job JSON shows it. */
export interface DeliveryView {
  id: string;
  event: WebhookEvent;
  type: string;
  state: Exclude<DeliveryState, 'waiting'>;
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
  next_attempt_at: number | null;
  delivered_at: number | null;
}

export interface WebhookView {
  url: string;
  events: WebhookEvent[];
  deliveries: DeliveryView[];
}

/** The Standard Webhooks `type` of an event, by the job's status when it happened. */
function eventType(event: WebhookEvent, job: JobRecord): string {
  return event === 'start' ? 'job.started' : `job.${job.status}`;
}

/**
 * The outbox as its users see it. `subscribe` and `transition` write within another owner's
 * transaction, whose handle is `tx`: the SQLite outbox ignores it and writes synchronously (the
 * job store's transactions are synchronous, so it returns nothing to await); a shared-database
 * outbox writes with the client `tx` and returns a promise its caller awaits before committing.
 */
export interface WebhookOutboxApi {
  /** Called after a row became pending (the dispatcher wakes up); runs after the transaction. */
  onPending: () => void;
  /** Records what a new job asked for, inside the transaction that records the job. */
  subscribe(jobId: string, target: WebhookTarget, tx: unknown): void | Promise<void>;
  /**
   * A job transition, inside the transaction that writes it: starting makes the `start` delivery
   * pending, reaching a final state the `completed` one. `view` is the job as GET /v1/jobs/{id}
   * shows it at that moment: the body's `data`.
   */
  transition(job: JobRecord, view: () => Record<string, unknown>, tx: unknown): void | Promise<void>;
  /**
   * Pending deliveries due by `now` (unix seconds), soonest first, that the caller now owns: on a
   * shared database each is leased to `nodeId` for a while (longer than one attempt may take), so
   * no other node attempts it meanwhile; a lease left to lapse (its node died mid-attempt) makes
   * it due again for any node. One node alone owns every due row.
   */
  claimDue(now: number, limit: number, nodeId: string): Promise<DeliveryRow[]>;
  /** When the next pending delivery not leased to a node is due (unix seconds), or null when none is pending. */
  nextDueAt(): Promise<number | null>;
  /** A 2xx answer: the delivery is done (and its lease released). */
  recordDelivered(id: string, status: number, now?: number): Promise<void>;
  /** A failed attempt: retried at `nextAt`, or given up (`failed`) when `nextAt` is null; the lease is released. */
  recordFailure(id: string, status: number | null, error: string, nextAt: number | null, now?: number): Promise<void>;
  /** The job's webhook as its JSON shows it, or null when it asked for none. */
  viewOf(jobId: string): Promise<WebhookView | null>;
  /** Forgets settled deliveries of jobs that no longer exist (deleted or pruned); returns how many. */
  prune(): Promise<number>;
}

/** A job transition's event: the delivery it makes pending, or null for none. */
export function transitionEvent(job: JobRecord): WebhookEvent | null {
  return FINISHED.has(job.status) ? 'completed' : job.status === 'running' ? 'start' : null;
}

/** What a transition fixes for its delivery: its Standard Webhooks `type` and the body every attempt sends. */
export function eventBody(event: WebhookEvent, job: JobRecord, view: () => Record<string, unknown>, now: number): { type: string; payload: string } {
  const type = eventType(event, job);
  // The delivery record itself is not part of the body: every attempt would change it.
  const { webhook: _ownRecord, ...data } = view();
  return { type, payload: JSON.stringify({ type, timestamp: new Date(now * 1000).toISOString(), data }) };
}

/** A new delivery's id: the `webhook-id` every attempt of it sends. */
export function newDeliveryId(): string {
  return `msg_${randomUUID().replaceAll('-', '')}`;
}

/** The job's webhook as its JSON shows it, from its delivery rows (in creation order); null for none. */
export function webhookView(rows: DeliveryRow[]): WebhookView | null {
  const first = rows[0];
  if (!first) return null;
  return {
    url: redactUserInfo(first.url),
    events: WEBHOOK_EVENTS.filter((e) => rows.some((r) => r.event === e)),
    deliveries: rows
      .filter((r) => r.state !== 'waiting')
      .map((r) => ({
        id: r.id,
        event: r.event,
        type: r.type ?? '',
        state: r.state as DeliveryView['state'],
        attempts: r.attempts,
        last_status: r.last_status,
        last_error: r.last_error,
        last_attempt_at: r.last_attempt_at,
        next_attempt_at: r.next_attempt_at,
        delivered_at: r.delivered_at,
      })),
  };
}

/** The SQLite outbox of a single node: every call answers at once from the one database. */
export class WebhookOutbox implements WebhookOutboxApi {
  private readonly stmts;
  /** Deliveries handed out by claimDue and not recorded yet (in flight). */
  private readonly claimed = new Set<string>();
  onPending: () => void = () => undefined;

  constructor(db: Db) {
    this.stmts = {
      insert: db.prepare(
        `INSERT INTO webhook_deliveries (id, job_id, event, url, vet, state, created_at)
         VALUES (?, ?, ?, ?, ?, 'waiting', ?)`,
      ),
      activate: db.prepare(
        `UPDATE webhook_deliveries SET state = 'pending', type = ?, payload = ?, event_at = ?, next_attempt_at = ?
         WHERE job_id = ? AND event = ? AND state = 'waiting'`,
      ),
      waiting: db.prepare<[string, string], { one: number }>(
        "SELECT 1 AS one FROM webhook_deliveries WHERE job_id = ? AND event = ? AND state = 'waiting'",
      ),
      ofJob: db.prepare<[string], DeliveryRow>('SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, event DESC'),
      due: db.prepare<[number, number], DeliveryRow>(
        "SELECT * FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
      ),
      nextDue: db.prepare<[], { at: number | null }>("SELECT MIN(next_attempt_at) AS at FROM webhook_deliveries WHERE state = 'pending'"),
      delivered: db.prepare(
        `UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, last_status = ?, last_error = NULL,
           last_attempt_at = ?, next_attempt_at = NULL, delivered_at = ? WHERE id = ? AND state = 'pending'`,
      ),
      failedAttempt: db.prepare(
        `UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, last_status = ?, last_error = ?,
           last_attempt_at = ?, next_attempt_at = ? WHERE id = ? AND state = 'pending'`,
      ),
      prune: db.prepare("DELETE FROM webhook_deliveries WHERE state != 'pending' AND job_id NOT IN (SELECT id FROM jobs)"),
    };
  }

  /** WebhookOutboxApi.subscribe, synchronous: the job store's SQLite transaction is. */
  subscribe(jobId: string, target: WebhookTarget, _tx?: unknown, now = Date.now() / 1000): void {
    for (const event of new Set(target.events)) {
      this.stmts.insert.run(newDeliveryId(), jobId, event, target.url, target.vet ? 1 : 0, now);
    }
  }

  /** WebhookOutboxApi.transition, synchronous: the job store's SQLite transaction is (JobStore.onTransition). */
  transition(job: JobRecord, view: () => Record<string, unknown>, _tx?: unknown): void {
    const event = transitionEvent(job);
    // Most jobs ask for no webhook: their transitions skip building a body nobody is sent.
    if (event === null || this.stmts.waiting.get(job.id, event) === undefined) return;
    const now = Date.now() / 1000;
    const { type, payload } = eventBody(event, job, view, now);
    if (this.stmts.activate.run(type, payload, now, now, job.id, event).changes > 0) queueMicrotask(() => this.onPending());
  }

  /**
   * The due rows not yet claimed. One process delivers them all, so a claim needs no lease: it
   * lasts until the attempt is recorded (an attempt cut short by shutdown is due at the next start).
   */
  async claimDue(now: number, limit: number, _nodeId?: string): Promise<DeliveryRow[]> {
    const rows = this.stmts.due.all(now, limit + this.claimed.size).filter((r) => !this.claimed.has(r.id)).slice(0, limit);
    for (const r of rows) this.claimed.add(r.id);
    return rows;
  }

  async nextDueAt(): Promise<number | null> {
    return this.stmts.nextDue.get()?.at ?? null;
  }

  async recordDelivered(id: string, status: number, now = Date.now() / 1000): Promise<void> {
    this.claimed.delete(id);
    this.stmts.delivered.run(status, now, now, id);
  }

  async recordFailure(id: string, status: number | null, error: string, nextAt: number | null, now = Date.now() / 1000): Promise<void> {
    this.claimed.delete(id);
    this.stmts.failedAttempt.run(nextAt === null ? 'failed' : 'pending', status, error, now, nextAt, id);
  }

  async viewOf(jobId: string): Promise<WebhookView | null> {
    return this.viewOfNow(jobId);
  }

  /** `viewOf` within one synchronous step: the single-node queue's views (its terminal event) carry it. */
  viewOfNow(jobId: string): WebhookView | null {
    return webhookView(this.stmts.ofJob.all(jobId));
  }

  async prune(): Promise<number> {
    return this.stmts.prune.run().changes;
  }
}
