/**
 * The node lease against a real PostgreSQL: nodes see each other live with what they advertise,
 * a silent node is stale on the database's clock, a node that cannot renew stops itself after
 * half a lease, and a node whose database came back judges no one before a full lease.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { pino } from 'pino';
import { UnavailableError } from '../../src/core/errors.js';
import { NodeRegistry } from '../../src/cluster/nodes.js';
import { migrate, openPool } from '../../src/cluster/pg.js';
import { CLUSTER_MIGRATIONS } from '../../src/cluster/schema.js';
import { startPostgres, waitFor, type Postgres } from './services.js';

const log = pino({ level: 'silent' });
let db: Postgres;
let pool: pg.Pool;
const registries: NodeRegistry[] = [];

function registry(nodeId: string, leaseS: number, extra: { capable?: string[] } = {}): NodeRegistry {
  const r = new NodeRegistry(pool, { nodeId, url: `http://${nodeId}.test:8000`, version: '0.1.0', leaseS, log, ...extra });
  registries.push(r);
  return r;
}

/** A node that announced itself and then went silent (killed): its heartbeat an hour old. */
async function silentNode(nodeId: string): Promise<void> {
  await pool.query(
    `INSERT INTO cluster_nodes (node_id, url, version, heartbeat_at, started_at)
     VALUES ($1, 'http://gone:8000', '0.1.0', now() - interval '1 hour', now() - interval '2 hours')`,
    [nodeId],
  );
}

before(async () => {
  db = await startPostgres();
  pool = openPool(db.url, log);
  await migrate(pool, CLUSTER_MIGRATIONS);
});

after(async () => {
  for (const r of registries) await r.close();
  await pool?.end().catch(() => undefined);
  await db?.stop();
});

void describe('NodeRegistry', () => {
  void it('nodes list each other as live with what they advertise; an update shows at once; close removes the row', async () => {
    const a = registry('node-a', 30, { capable: ['qwen/image'] });
    const b = registry('node-b', 30);
    await a.start();
    await b.start();
    await silentNode('node-gone');
    let live = await a.live();
    assert.deepEqual(
      live.map((n) => n.nodeId),
      ['node-a', 'node-b'],
    );
    const na = live[0]!;
    assert.deepEqual(
      { url: na.url, version: na.version, capable: na.capable, warm: na.warm, busy: na.busy, runningJob: na.runningJob },
      { url: 'http://node-a.test:8000', version: '0.1.0', capable: ['qwen/image'], warm: [], busy: false, runningJob: null },
    );
    assert.ok(na.heartbeatAt instanceof Date && na.startedAt instanceof Date);
    assert.ok(na.silentS >= 0 && na.silentS < 30, String(na.silentS));

    assert.equal(await b.update({ warm: ['qwen/image'], busy: true, runningJob: 'job-1', capable: ['qwen/image', 'ideogram/v4'] }), true);
    const nb = (await a.live()).find((n) => n.nodeId === 'node-b')!;
    assert.deepEqual(
      { capable: nb.capable, warm: nb.warm, busy: nb.busy, runningJob: nb.runningJob },
      { capable: ['qwen/image', 'ideogram/v4'], warm: ['qwen/image'], busy: true, runningJob: 'job-1' },
    );
    // Updates racing each other: the last state is what stays.
    await Promise.all([b.update({ busy: false }), b.update({ runningJob: null }), b.update({ warm: [] })]);
    const nb2 = (await a.live()).find((n) => n.nodeId === 'node-b')!;
    assert.deepEqual({ busy: nb2.busy, runningJob: nb2.runningJob, warm: nb2.warm }, { busy: false, runningJob: null, warm: [] });

    await b.close();
    live = await a.live();
    assert.deepEqual(
      live.map((n) => n.nodeId),
      ['node-a'],
    );
    assert.equal((await pool.query("SELECT 1 FROM cluster_nodes WHERE node_id = 'node-b'")).rowCount, 0);
    await a.close();
  });

  void it('a silent node is stale, but only once this node has been up for a full lease', async () => {
    // A long lease: the first answer below comes well within it, however loaded the machine.
    const patient = registry('node-patient', 60);
    await patient.start();
    assert.deepEqual(await patient.stale(), [], 'a node that just connected judges no one');
    await patient.close();

    const judge = registry('node-judge', 1);
    await judge.start();
    await waitFor('node-gone to be judged stale', async () => (await judge.stale()).includes('node-gone'));
    assert.ok(!(await judge.stale()).includes('node-judge'), 'never itself');
    assert.ok(!(await judge.live()).some((n) => n.nodeId === 'node-gone'));
    await judge.close();
  });

  void it('PostgreSQL killed: the node loses its lease after half of it and says so; back, it renews and waits a lease before judging others', async () => {
    const leaseS = 6;
    const n = registry('node-k', leaseS);
    await n.start();
    let losses = 0;
    const off = n.onLeaseLost(() => losses++);
    await db.kill();
    await waitFor('the lease to be lost', async () => losses === 1, 30_000);
    assert.equal(n.lost, true);
    await assert.rejects(n.live(), (err) => err instanceof UnavailableError && /the shared database is unreachable while listing the nodes/.test(err.message));
    await db.restart();
    await waitFor('the lease to be renewed', async () => !n.lost, 30_000);
    assert.equal(losses, 1, 'fired once per loss');
    assert.ok((await n.live()).some((x) => x.nodeId === 'node-k'));
    // Every heartbeat is old right after the outage; node-gone is long dead, yet not judged until
    // this node has been back for a full lease.
    assert.deepEqual(await n.stale(), []);
    await waitFor('node-gone to be judged after a lease', async () => (await n.stale()).includes('node-gone'), 30_000);
    off();
    await n.close();
  });
});
