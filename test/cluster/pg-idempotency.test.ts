/**
 * Idempotency keys shared by several nodes (src/cluster/pg-idempotency.ts) on a real PostgreSQL:
 * two "nodes" are two PgIdempotencyKeys on two connection pools, and a submission records its
 * jobs in a transaction of its own pool as a cluster node's job store does (the key recorded with
 * the transaction's client, so both commit or neither).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import pg from 'pg';
import { PgIdempotencyKeys } from '../../src/cluster/pg-idempotency.js';
import { migrate } from '../../src/cluster/pg.js';
import { CLUSTER_MIGRATIONS } from '../../src/cluster/schema.js';
import { RuleError } from '../../src/core/errors.js';
import type { KeyRecorder } from '../../src/core/jobs/idempotency.js';
import { startPostgres, waitFor, type Postgres } from './services.js';

let db: Postgres;
let poolA: pg.Pool;
let poolB: pg.Pool;

before(async () => {
  db = await startPostgres();
  poolA = new pg.Pool({ connectionString: db.url, max: 4 });
  poolB = new pg.Pool({ connectionString: db.url, max: 4 });
  // pool.end() resolves before its clients' sockets close, so the server's shutdown notice can
  // still reach one; an idle client's error without a listener would be thrown.
  for (const pool of [poolA, poolB]) pool.on('error', () => undefined);
  await migrate(poolA, CLUSTER_MIGRATIONS);
});

after(async () => {
  await poolA?.end();
  await poolB?.end();
  await db?.stop();
});

beforeEach(async () => {
  await poolA.query('TRUNCATE idempotency_keys, jobs');
});

/** A node's job store creating jobs: one transaction for the jobs and what `record` writes. */
async function createJobs(pool: pg.Pool, node: string, n: number, record: KeyRecorder): Promise<string[]> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const ids = Array.from({ length: n }, () => `job_${randomUUID().replaceAll('-', '')}`);
    for (const id of ids) {
      // A job row as the cluster's store writes it, reduced to what these tests look at: which node made it (owner).
      await client.query(
        `INSERT INTO jobs (id, type, params, status, artifacts, created_at, progress_label, queue, runnable, owner)
         VALUES ($1, 'qwen', '{}', 'queued', '[]', extract(epoch from now()), 'queued', 'qwen', '{}', $2)`,
        [id, node],
      );
    }
    await record(ids, client);
    await client.query('COMMIT');
    return ids;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}

async function count(sql: string, params: unknown[] = []): Promise<number> {
  return Number((await poolA.query<{ n: string }>(`SELECT COUNT(*) AS n FROM (${sql}) q`, params)).rows[0]!.n);
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function nodes(leaseS?: number): { a: PgIdempotencyKeys; b: PgIdempotencyKeys } {
  return {
    a: new PgIdempotencyKeys(poolA, { nodeId: 'node-a', ttlS: 3600, leaseS }),
    b: new PgIdempotencyKeys(poolB, { nodeId: 'node-b', ttlS: 3600, leaseS }),
  };
}

const reused = (pattern: RegExp) => (err: unknown) => err instanceof RuleError && err.status === 422 && pattern.test(err.message);

void describe('PgIdempotencyKeys across two nodes', () => {
  void it('racing requests with one key make one submission; the others, on both nodes, replay its jobs', async () => {
    const { a, b } = nodes();
    const gate = deferred();
    let runs = 0;
    const submit = (pool: pg.Pool, node: string) => async (record: KeyRecorder) => {
      runs++;
      await gate.promise; // still resolving its inputs
      return createJobs(pool, node, 2, record);
    };
    const racing = [
      ...Array.from({ length: 3 }, () => a.once('/v1/x', 'k1', 'h', submit(poolA, 'node-a'))),
      ...Array.from({ length: 3 }, () => b.once('/v1/x', 'k1', 'h', submit(poolB, 'node-b'))),
    ];
    await waitFor('the key to be claimed', async () => (await count("SELECT 1 FROM idempotency_keys WHERE state = 'pending'")) === 1);
    // Another body while the first is still being submitted: refused on either node.
    await assert.rejects(b.once('/v1/x', 'k1', 'other', submit(poolB, 'node-b')), reused(/still being submitted/));
    await assert.rejects(a.once('/v1/x', 'k1', 'other', submit(poolA, 'node-a')), reused(/still being submitted/));
    gate.resolve();
    const outcomes = await Promise.all(racing);
    assert.equal(runs, 1);
    const fresh = outcomes.filter((o) => 'fresh' in o);
    assert.equal(fresh.length, 1);
    const ids = (fresh[0] as { fresh: string[] }).fresh;
    for (const o of outcomes.filter((o) => 'replay' in o)) assert.deepEqual(o, { replay: ids });
    assert.equal(await count('SELECT 1 FROM jobs'), 2);
    // Done: the same body replays, another is refused, on both nodes.
    assert.deepEqual(await b.once('/v1/x', 'k1', 'h', submit(poolB, 'node-b')), { replay: ids });
    await assert.rejects(a.once('/v1/x', 'k1', 'other', submit(poolA, 'node-a')), reused(/different request body \(at \d{4}-/));
    // Another route is another key.
    assert.ok('fresh' in (await b.once('/v1/y', 'k1', 'other', submit(poolB, 'node-b'))));
    assert.equal(runs, 2);
  });

  void it('the key commits with the jobs: a jobs transaction that fails leaves neither, and the key is free again', async () => {
    const { a, b } = nodes();
    await assert.rejects(
      a.once('/v1/x', 'k2', 'h', (record) =>
        createJobs(poolA, 'node-a', 1, async (ids, tx) => {
          await record(ids, tx);
          throw new Error('disk gone');
        }),
      ),
      /disk gone/,
    );
    assert.equal(await count('SELECT 1 FROM jobs'), 0);
    assert.equal(await count('SELECT 1 FROM idempotency_keys'), 0);
    const again = await b.once('/v1/x', 'k2', 'other', (record) => createJobs(poolB, 'node-b', 1, record));
    assert.ok('fresh' in again);
    assert.equal(await count("SELECT 1 FROM idempotency_keys WHERE state = 'done'"), 1);
  });

  void it('a failed submission frees the key: the request waiting on another node submits in turn', async () => {
    const { a, b } = nodes();
    const failing = deferred();
    const first = a.once('/v1/x', 'k3', 'h', async () => {
      await failing.promise;
      throw new RuleError('422 from the rules');
    });
    await waitFor('the key to be claimed', async () => (await count("SELECT 1 FROM idempotency_keys WHERE state = 'pending'")) === 1);
    let secondRan = false;
    const second = b.once('/v1/x', 'k3', 'h', async (record) => {
      secondRan = true;
      return createJobs(poolB, 'node-b', 1, record);
    });
    failing.resolve();
    await assert.rejects(first, /422 from the rules/);
    const out = await second;
    assert.ok(secondRan && 'fresh' in out);
    assert.deepEqual((await poolA.query('SELECT owner AS node FROM jobs')).rows, [{ node: 'node-b' }]);
  });

  void it('a pending claim older than the lease (its node died mid-submission) is taken over; the late first request replays', async () => {
    const { a, b } = nodes(1);
    const stalled = deferred();
    let firstRecorded = false;
    // Node A claims, then stops answering while it "resolves its inputs".
    const first = a.once('/v1/x', 'k4', 'h', async (record) => {
      await stalled.promise;
      return createJobs(poolA, 'node-a', 1, async (ids, tx) => {
        await record(ids, tx);
        firstRecorded = true;
      });
    });
    await waitFor('the key to be claimed', async () => (await count("SELECT 1 FROM idempotency_keys WHERE state = 'pending'")) === 1);
    // Node B waits on the claim until it is older than the lease, then submits itself.
    const second = await b.once('/v1/x', 'k4', 'h', (record) => createJobs(poolB, 'node-b', 1, record));
    assert.ok('fresh' in second);
    const ids = second.fresh;
    // Node A comes back: its jobs' transaction is refused (the claim is B's) and it answers B's jobs.
    stalled.resolve();
    assert.deepEqual(await first, { replay: ids });
    assert.equal(firstRecorded, false);
    assert.deepEqual((await poolA.query('SELECT id, owner AS node FROM jobs')).rows, [{ id: ids[0], node: 'node-b' }]);
  });

  void it('a stale claim with another body is taken over too; an expired key acts as new and is pruned', async () => {
    const { a, b } = nodes(1);
    // A claim left behind by a node that died long ago.
    await poolA.query(
      `INSERT INTO idempotency_keys (scope, key, request_hash, state, claimed_by, claimed_at, created_at, expires_at)
       VALUES ('/v1/x', 'k5', 'old', 'pending', 'node-dead c', 0, 0, extract(epoch from now()) + 3600)`,
    );
    const out = await a.once('/v1/x', 'k5', 'h', (record) => createJobs(poolA, 'node-a', 1, record));
    assert.ok('fresh' in out);
    await poolA.query("UPDATE idempotency_keys SET expires_at = extract(epoch from now()) - 1 WHERE key = 'k5'");
    assert.ok('fresh' in (await b.once('/v1/x', 'k5', 'other', (record) => createJobs(poolB, 'node-b', 1, record))));
    assert.equal(await count('SELECT 1 FROM jobs'), 2);
    await poolA.query("UPDATE idempotency_keys SET expires_at = extract(epoch from now()) - 1 WHERE key = 'k5'");
    assert.equal(await b.prune(), 1);
    assert.equal(await count('SELECT 1 FROM idempotency_keys'), 0);
  });
});
