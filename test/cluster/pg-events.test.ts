/**
 * The cluster event bus against a real PostgreSQL: every node hears every event once, in one
 * global id order; a payload too large for NOTIFY arrives through the table; replay after an id;
 * a LISTEN connection lost with the server catches up on what it missed; pruning; generic
 * channels.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { pino } from 'pino';
import { inTransaction, migrate, openPool } from '../../src/cluster/pg.js';
import { insertEvent, PgEventBus, type ClusterEvent, type ClusterEventInput } from '../../src/cluster/pg-events.js';
import { CLUSTER_MIGRATIONS } from '../../src/cluster/schema.js';
import { startPostgres, waitFor, type Postgres } from './services.js';

const log = pino({ level: 'silent' });
let db: Postgres;
let pool: pg.Pool;
const buses: PgEventBus[] = [];

async function bus(reconnectMinMs = 100): Promise<{ bus: PgEventBus; got: ClusterEvent[] }> {
  const b = new PgEventBus(pool, { url: db.url, log, reconnectMinMs, reconnectMaxMs: Math.max(500, reconnectMinMs) });
  buses.push(b);
  const got: ClusterEvent[] = [];
  b.subscribe((e) => got.push(e));
  await b.start();
  return { bus: b, got };
}

function ev(jobId: string, n: number, extra: Record<string, unknown> = {}): ClusterEventInput {
  return { jobId, jobType: 'qwen', status: 'running', event: 'progress', data: { n, ...extra } };
}

function ids(events: ClusterEvent[]): bigint[] {
  return events.map((e) => BigInt(e.id));
}

function ascending(xs: bigint[]): boolean {
  return xs.every((x, i) => i === 0 || x > xs[i - 1]!);
}

before(async () => {
  db = await startPostgres();
  pool = openPool(db.url, log, { max: 10 });
  await migrate(pool, CLUSTER_MIGRATIONS);
});

after(async () => {
  for (const b of buses) await b.close();
  await pool?.end().catch(() => undefined);
  await db?.stop();
});

void describe('PgEventBus', () => {
  void it('two nodes publishing at once: each hears all events once, in the same global id order, each node’s in its publish order', async () => {
    const a = await bus();
    const b = await bus();
    const N = 60;
    // Not awaited one by one: the bus must keep each node's order by itself.
    const published = await Promise.all([
      ...Array.from({ length: N }, (_, i) => a.bus.publish(ev('job-a', i))),
      ...Array.from({ length: N }, (_, i) => b.bus.publish(ev('job-b', i))),
    ]);
    assert.ok(published.every((id) => /^[0-9]+$/.test(id)));
    await waitFor('all events on both nodes', async () => a.got.length >= 2 * N && b.got.length >= 2 * N);
    assert.equal(a.got.length, 2 * N);
    assert.deepEqual(
      a.got.map((e) => e.id),
      b.got.map((e) => e.id),
      'one order for every node',
    );
    assert.ok(ascending(ids(a.got)), 'in id order');
    assert.deepEqual(new Set(a.got.map((e) => e.id)), new Set(published));
    for (const job of ['job-a', 'job-b']) {
      const mine = a.got.filter((e) => e.jobId === job);
      assert.deepEqual(
        mine.map((e) => e.data.n),
        Array.from({ length: N }, (_, i) => i),
        `${job} in publish order`,
      );
    }
    assert.deepEqual(a.got[0] && { jobType: a.got[0].jobType, status: a.got[0].status, event: a.got[0].event }, { jobType: 'qwen', status: 'running', event: 'progress' });
  });

  void it('a payload too large for NOTIFY arrives whole, in its place between small ones', async () => {
    const a = await bus();
    const big = 'x'.repeat(20_000);
    const before = a.got.length;
    await a.bus.publish(ev('job-big', 1));
    await a.bus.publish(ev('job-big', 2, { preview: big }));
    await a.bus.publish(ev('job-big', 3));
    await waitFor('the three events', async () => a.got.length >= before + 3);
    const mine = a.got.slice(before);
    assert.deepEqual(
      mine.map((e) => e.data.n),
      [1, 2, 3],
    );
    assert.equal(mine[1]!.data.preview, big);
    assert.ok(ascending(ids(mine)));
  });

  void it('an event written inside a transaction is heard on commit, never on rollback', async () => {
    const a = await bus();
    const before = a.got.length;
    await assert.rejects(
      inTransaction(pool, async (c) => {
        await insertEvent(c, ev('job-tx', 0));
        throw new Error('the job update failed');
      }),
    );
    const committed = await inTransaction(pool, (c) => insertEvent(c, ev('job-tx', 1)));
    await waitFor('the committed event', async () => a.got.some((e) => e.id === committed));
    assert.deepEqual(
      a.got.slice(before).map((e) => e.data.n),
      [1],
    );
  });

  void it('replay answers the events after an id, of one job or all; null for an id it does not hold', async () => {
    const a = await bus();
    const first = await a.bus.publish(ev('job-r1', 0));
    const second = await a.bus.publish(ev('job-r2', 0));
    const third = await a.bus.publish(ev('job-r1', 1));
    assert.deepEqual(
      (await a.bus.replay(first))!.map((e) => e.id),
      [second, third],
    );
    assert.deepEqual(
      (await a.bus.replay(first, 'job-r1'))!.map((e) => [e.id, e.data.n]),
      [[third, 1]],
    );
    assert.deepEqual(await a.bus.replay(third), []);
    assert.equal(await a.bus.replay(second, 'job-r1'), null, "another job's id");
    assert.equal(await a.bus.replay('abc-12'), null, 'not an id of this bus');
    assert.equal(await a.bus.replay('999999999999'), null, 'never written');
    // A job's whole history, and the row behind its `<job id>.end` id once it has one.
    assert.deepEqual(
      (await a.bus.replayFrom('job-r1')).map((e) => e.id),
      [first, third],
    );
    assert.equal(await a.bus.terminalIdOf('job-r1'), null);
    const end = await a.bus.publish({ jobId: 'job-r1', jobType: 'qwen', status: 'failed', event: 'failed', data: {} });
    assert.equal(await a.bus.terminalIdOf('job-r1'), end);
    assert.deepEqual(await a.bus.replay(end, 'job-r1'), []);
  });

  void it('PostgreSQL killed and restarted: the LISTEN connection comes back and reads the events it missed, in order, once', async () => {
    // Slow to retry (2–4 s), so the writes below land while it is away, and are read back.
    const a = await bus(4000);
    let reconnects = 0;
    a.bus.onReconnect(() => reconnects++);
    const wake: string[] = [];
    await a.bus.listen('kiapi_test_wake', (p) => wake.push(p));
    const before = await a.bus.publish(ev('job-k', 0));
    await waitFor('the first event', async () => a.got.some((e) => e.id === before));
    await db.kill();
    await waitFor('the bus to notice', async () => !a.bus.connected);
    await db.restart();
    // job_events is UNLOGGED: a crash empties it, and its ids go on from the logged sequence.
    // Written from another connection while the bus may still be reconnecting: missed NOTIFYs.
    const writer = openPool(db.url, log, { max: 1 });
    const missed: string[] = [];
    try {
      await waitFor('the database to take writes', async () => (await writer.query('SELECT 1')).rowCount === 1);
      for (let i = 1; i <= 5; i++) missed.push(await insertEvent(writer, ev('job-k', i)));
    } finally {
      await writer.end();
    }
    assert.ok(BigInt(missed[0]!) > BigInt(before), 'ids never go back after a crash');
    await waitFor('the bus to reconnect', async () => a.bus.connected && reconnects === 1, 30_000);
    const after = await a.bus.publish(ev('job-k', 6));
    await waitFor('the missed and the new events', async () => a.got.some((e) => e.id === after));
    const mine = a.got.filter((e) => e.jobId === 'job-k');
    assert.deepEqual(
      mine.map((e) => e.data.n),
      [0, 1, 2, 3, 4, 5, 6],
    );
    assert.ok(ascending(ids(mine)));
    assert.ok(a.bus.stats.caughtUp >= 5, `read back after reconnecting: ${a.bus.stats.caughtUp}`);
    assert.equal(a.bus.stats.reconnects, 1);
    // The generic channel is listened to again too.
    await a.bus.notify('kiapi_test_wake', 'queue-1');
    await waitFor('the wake-up', async () => wake.includes('queue-1'));
  });

  void it('prune removes the events of jobs finished long enough ago, and of jobs whose record is gone', async () => {
    const a = await bus();
    await pool.query(
      `INSERT INTO jobs (id, type, params, status, artifacts, created_at, progress_label, queue, runnable)
       VALUES ('job-live', 'qwen', '{}', 'running', '[]', 1, '', 'qwen/image', '{}')`,
    );
    await a.bus.publish(ev('job-live', 0));
    await a.bus.publish(ev('job-done', 0));
    await a.bus.publish({ jobId: 'job-done', jobType: 'qwen', status: 'succeeded', event: 'succeeded', data: {} });
    await a.bus.publish(ev('job-deleted', 0));
    // Nothing is old enough yet.
    assert.equal(await a.bus.prune(3600), 0);
    // Everything is older than -1 s: finished and record-less jobs go, the running job stays.
    await a.bus.prune(-1);
    const left = await pool.query<{ job_id: string }>('SELECT DISTINCT job_id FROM job_events ORDER BY job_id');
    assert.deepEqual(
      left.rows.map((r) => r.job_id),
      ['job-live'],
    );
  });

  void it('generic channels: notify reaches listeners on every node; unlisten stops it', async () => {
    const a = await bus();
    const b = await bus();
    const got: string[] = [];
    const off = await b.bus.listen('kiapi_cancel', (p) => got.push(p));
    await a.bus.notify('kiapi_cancel', 'node-x job-1');
    await waitFor('the cancel request', async () => got.length === 1);
    assert.deepEqual(got, ['node-x job-1']);
    await off();
    await a.bus.notify('kiapi_cancel', 'node-x job-2');
    // A marker on a channel still listened to proves the second cancel had time to arrive.
    const marks: string[] = [];
    await b.bus.listen('kiapi_mark', (p) => marks.push(p));
    await a.bus.notify('kiapi_mark', 'm');
    await waitFor('the marker', async () => marks.length === 1);
    assert.deepEqual(got, ['node-x job-1']);
    await assert.rejects(b.bus.listen('kiapi_events', () => undefined), /use subscribe/);
  });
});
