/**
 * The webhook outbox shared by several nodes (src/cluster/pg-webhook-outbox.ts) on a real
 * PostgreSQL, delivered by the real WebhookDispatcher to a real HTTP receiver on 127.0.0.1: two
 * "nodes" are two outboxes on two connection pools, each with its own dispatcher. Jobs are
 * recorded and transitioned in transactions of either pool, as a cluster node's job store does
 * (the outbox writing with the transaction's client).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import pg from 'pg';
import { pino } from 'pino';
import { PgWebhookOutbox } from '../../src/cluster/pg-webhook-outbox.js';
import { inTransaction, migrate } from '../../src/cluster/pg.js';
import { CLUSTER_MIGRATIONS } from '../../src/cluster/schema.js';
import type { JobRecord } from '../../src/core/jobs/job-store.js';
import { WebhookDispatcher } from '../../src/core/webhooks/dispatcher.js';
import type { WebhookEvent } from '../../src/core/webhooks/outbox.js';
import { startReceiver, type Answer, type Receiver } from '../support/webhook-receiver.js';
import { startPostgres, waitFor, type Postgres } from './services.js';

const log = pino({ level: 'silent' });
const KEY = Buffer.from('kiapi-test-signing-key-32-bytes!');
/** The first retry's backoff: short, so a test sees a few retries in well under a second each. */
const BACKOFF_MS = 200;

let db: Postgres;
let poolA: pg.Pool;
let poolB: pg.Pool;
let receiver: Receiver;
/** What each test started, stopped after it. */
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  db = await startPostgres();
  poolA = new pg.Pool({ connectionString: db.url, max: 4 });
  poolB = new pg.Pool({ connectionString: db.url, max: 4 });
  // pool.end() resolves before its clients' sockets close, so the server's shutdown notice can
  // still reach one; an idle client's error without a listener would be thrown.
  for (const pool of [poolA, poolB]) pool.on('error', () => undefined);
  await migrate(poolA, CLUSTER_MIGRATIONS);
  receiver = await startReceiver();
});

after(async () => {
  await receiver?.close();
  await poolA?.end();
  await poolB?.end();
  await db?.stop();
});

beforeEach(async () => {
  await poolA.query('TRUNCATE webhook_deliveries, jobs');
  receiver.received.length = 0;
  receiver.answer = () => 200;
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A node: its outbox (listening for other nodes' events) and its dispatcher, started unless told otherwise. */
async function node(pool: pg.Pool, nodeId: string, opts: { leaseS?: number; dispatch?: boolean } = {}) {
  const outbox = new PgWebhookOutbox(pool, { leaseS: opts.leaseS ?? 30, log });
  await outbox.listen();
  cleanups.push(() => outbox.close());
  const n = {
    outbox,
    dispatcher: null as WebhookDispatcher | null,
    start(): WebhookDispatcher {
      const dispatcher = new WebhookDispatcher(outbox, {
        key: KEY,
        timeoutMs: 30_000,
        backoffMs: BACKOFF_MS,
        retryForMs: 600_000,
        allowPrivate: true,
        log,
        nodeId,
        idlePollMs: 1000,
      });
      cleanups.push(() => dispatcher.close());
      dispatcher.start();
      return (n.dispatcher = dispatcher);
    },
  };
  if (opts.dispatch !== false) n.start();
  return n;
}

function jobRecord(id: string, status: JobRecord['status']): JobRecord {
  const now = Date.now() / 1000;
  return {
    id,
    type: 'qwen',
    params: {},
    status,
    result: null,
    artifacts: [],
    error: null,
    created_at: now,
    started_at: status === 'queued' ? null : now,
    finished_at: status === 'succeeded' ? now : null,
    progress: null,
    progress_label: status,
  };
}

/** Records a job with its webhook on one node's pool, then moves it through `statuses`, each transition on `on`'s pool. */
async function runJob(outbox: PgWebhookOutbox, pool: pg.Pool, events: WebhookEvent[], transitions: { status: JobRecord['status']; outbox: PgWebhookOutbox; pool: pg.Pool }[]): Promise<string> {
  const id = `job_${randomUUID().replaceAll('-', '')}`;
  await inTransaction(pool, async (tx) => {
    // A job row as the cluster's store writes it, reduced to what these tests look at (prune reads it).
    await tx.query(
      `INSERT INTO jobs (id, type, params, status, artifacts, created_at, progress_label, queue, runnable)
       VALUES ($1, 'qwen', '{}', 'queued', '[]', extract(epoch from now()), 'queued', 'qwen', '{}')`,
      [id],
    );
    await outbox.subscribe(id, { url: receiver.url, events, vet: false }, tx);
  });
  for (const t of transitions) {
    await inTransaction(t.pool, async (tx) => {
      await tx.query('UPDATE jobs SET status = $2 WHERE id = $1', [id, t.status]);
      const job = jobRecord(id, t.status);
      await t.outbox.transition(job, () => ({ ...job, webhook: 'not part of the body' }), tx);
    });
  }
  return id;
}

interface Row {
  id: string;
  job_id: string;
  state: string;
  attempts: number;
  last_status: number | null;
  locked_by: string | null;
}

async function deliveries(): Promise<Row[]> {
  return (await poolA.query<Row>('SELECT id, job_id, state, attempts, last_status, locked_by FROM webhook_deliveries ORDER BY created_at')).rows;
}

async function allSettled(n: number): Promise<void> {
  await waitFor(`${n} deliveries settled`, async () => {
    const rows = await deliveries();
    return rows.length === n && rows.every((r) => r.state === 'delivered' || r.state === 'failed');
  });
}

void describe('PgWebhookOutbox with a dispatcher on each of two nodes', () => {
  void it('delivers each event exactly once, whichever node made it pending', async () => {
    const a = await node(poolA, 'node-a');
    const b = await node(poolB, 'node-b');
    const jobs = 6;
    for (let i = 0; i < jobs; i++) {
      // Recorded on one node, started on one, finished on the other: as a cluster spreads work.
      const [first, second] = i % 2 === 0 ? [a, b] : [b, a];
      const firstPool = i % 2 === 0 ? poolA : poolB;
      const secondPool = i % 2 === 0 ? poolB : poolA;
      await runJob(first.outbox, firstPool, ['start', 'completed'], [
        { status: 'running', outbox: first.outbox, pool: firstPool },
        { status: 'succeeded', outbox: second.outbox, pool: secondPool },
      ]);
    }
    await allSettled(jobs * 2);
    // Both dispatchers stopped: nothing is left in flight that could still arrive.
    await a.dispatcher!.close();
    await b.dispatcher!.close();
    const rows = await deliveries();
    assert.ok(rows.every((r) => r.state === 'delivered' && r.attempts === 1 && r.last_status === 200 && r.locked_by === null));
    const ids = receiver.received.map((r) => r.headers['webhook-id']);
    assert.equal(ids.length, jobs * 2, 'one POST per event');
    assert.deepEqual(new Set(ids), new Set(rows.map((r) => r.id)));
    const types = receiver.received.map((r) => (JSON.parse(r.body) as { type: string; data: Record<string, unknown> }));
    assert.equal(types.filter((t) => t.type === 'job.started').length, jobs);
    assert.equal(types.filter((t) => t.type === 'job.succeeded').length, jobs);
    assert.ok(types.every((t) => !('webhook' in t.data)), 'the delivery record is not part of the body');
  });

  void it('retries a failing receiver with backoff, one POST per attempt, and records each attempt', async () => {
    await node(poolA, 'node-a');
    const b = await node(poolB, 'node-b');
    const answers: Answer[] = [500, { status: 503, headers: {} }, 200];
    receiver.answer = (i) => answers[i] ?? 200;
    const jobId = await runJob(b.outbox, poolB, ['completed'], [{ status: 'failed', outbox: b.outbox, pool: poolB }]);
    await allSettled(1);
    const [row] = await deliveries();
    assert.equal(row!.job_id, jobId);
    assert.equal(row!.state, 'delivered');
    assert.equal(row!.attempts, 3);
    assert.equal(row!.last_status, 200);
    assert.equal(receiver.received.length, 3);
    assert.ok(receiver.received.every((r) => r.headers['webhook-id'] === row!.id), 'every attempt sends the same webhook-id');
    // Each retry waited at least half its backoff (equal jitter), doubled per attempt.
    const [first, second, third] = receiver.received.map((r) => r.at);
    assert.ok(second! - first! >= BACKOFF_MS / 2, `first retry after ${second! - first!} ms`);
    assert.ok(third! - second! >= BACKOFF_MS, `second retry after ${third! - second!} ms`);
    const view = await b.outbox.viewOf(jobId);
    assert.equal(view?.deliveries[0]?.attempts, 3);
    assert.equal(view?.deliveries[0]?.state, 'delivered');
    assert.equal(view?.events.join(), 'completed');
  });

  void it('a claim held by a node that stopped mid-attempt lapses with its lease; then another node delivers', async () => {
    // Node A claims the delivery and POSTs it; the receiver holds the request open.
    receiver.answer = (i) => (i === 0 ? 'hang' : 200);
    const a = await node(poolA, 'node-a', { leaseS: 1 });
    await runJob(a.outbox, poolA, ['completed'], [{ status: 'succeeded', outbox: a.outbox, pool: poolA }]);
    await waitFor('node A to be attempting the delivery', async () => receiver.holding === 1);
    assert.equal((await deliveries())[0]!.locked_by, 'node-a');
    // While A's lease holds, no other node may take the delivery.
    const b = await node(poolB, 'node-b', { dispatch: false });
    assert.deepEqual(await b.outbox.claimDue(Date.now() / 1000 + 3600, 10, 'node-b'), []);
    // Node A stops without recording anything (its attempt is cut off, as when it dies).
    await a.dispatcher!.close();
    b.start();
    await allSettled(1);
    const [row] = await deliveries();
    assert.equal(row!.state, 'delivered');
    // A's attempt never got an answer recorded; B's is the one counted.
    assert.equal(row!.attempts, 1);
    assert.equal(receiver.received.length, 2);
    assert.equal(receiver.received[0]!.headers['webhook-id'], receiver.received[1]!.headers['webhook-id']);
    // A late result from A (its lease long lapsed) does not reopen the delivery.
    await a.outbox.recordFailure(row!.id, 500, 'late', Date.now() / 1000 + 1);
    assert.equal((await deliveries())[0]!.state, 'delivered');
  });

  void it('prunes settled deliveries of jobs that are gone, never pending ones', async () => {
    const a = await node(poolA, 'node-a', { dispatch: false });
    const settled = await runJob(a.outbox, poolA, ['completed'], [{ status: 'succeeded', outbox: a.outbox, pool: poolA }]);
    await waitFor('the delivery to be claimed', async () => (await a.outbox.claimDue(Date.now() / 1000, 10, 'node-a')).length === 1);
    await a.outbox.recordDelivered((await deliveries())[0]!.id, 204);
    const pending = await runJob(a.outbox, poolA, ['completed'], [{ status: 'succeeded', outbox: a.outbox, pool: poolA }]);
    await poolA.query('DELETE FROM jobs');
    assert.equal(await a.outbox.prune(), 1);
    assert.deepEqual((await deliveries()).map((r) => r.job_id), [pending]);
    assert.equal(await a.outbox.viewOf(settled), null);
  });
  // Last: it kills the database the other tests share (it comes back on the same port and data).
  void it('PostgreSQL killed and restarted: a delivery pending before is retried, new events are delivered', async () => {
    const a = await node(poolA, 'node-a');
    const b = await node(poolB, 'node-b');
    // The first attempt fails and asks for the retry a while later, after the database's restart.
    receiver.answer = (i) => (i === 0 ? { status: 503, headers: { 'retry-after': '2' } } : 200);
    await runJob(a.outbox, poolA, ['completed'], [{ status: 'succeeded', outbox: a.outbox, pool: poolA }]);
    await waitFor('the first attempt to be recorded', async () => (await deliveries())[0]?.attempts === 1);
    await db.kill();
    await db.restart();
    for (const pool of [poolA, poolB]) await waitFor('the pool to reconnect', async () => (await pool.query('SELECT 1')).rowCount === 1);
    await runJob(b.outbox, poolB, ['completed'], [{ status: 'failed', outbox: b.outbox, pool: poolB }]);
    await allSettled(2);
    await a.dispatcher!.close();
    await b.dispatcher!.close();
    const [before, afterRestart] = await deliveries();
    assert.equal(before!.state, 'delivered');
    assert.equal(afterRestart!.state, 'delivered');
    const posts = (id: string) => receiver.received.filter((r) => r.headers['webhook-id'] === id).length;
    // At least once: should the retry have been claimed just before the kill, its result was not
    // recorded and the lapsed lease brings one more attempt (same webhook-id).
    assert.ok(posts(before!.id) >= 2);
    assert.equal(posts(afterRestart!.id), 1);
  });

});
