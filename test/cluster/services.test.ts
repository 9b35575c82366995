/**
 * Smoke test of the cluster's shared services, real servers started here (PostgreSQL from
 * Debian's package, S3Proxy from Maven Central; test/cluster/install.sh installs them):
 *
 * - a job record and its pg-boss job commit together or not at all;
 * - one process enqueues, another claims; a claimer killed with SIGKILL mid-job has its job
 *   recovered, by pg-boss expiration (short jobs) and by the node-lease sweep (long jobs), and the
 *   dead node's late completion is fenced off;
 * - LISTEN/NOTIFY crosses connections, only on commit, in order; a payload over 8000 bytes is refused;
 * - PostgreSQL killed and restarted: a pool reports the loss, then works again, nothing committed lost;
 * - a multi-MB object is streamed up (multipart) and down through @aws-sdk/client-s3 without
 *   being held whole, and S3Proxy killed mid-way answers an error, then serves again.
 *
 * Timings (time to ready, time to recover) are printed as diagnostics, never asserted.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import PgBoss from 'pg-boss';
import pg from 'pg';
import { PROTO_SCHEMA, WAKE_CHANNEL, complete, createQueues, enqueue, sweepDeadNodes } from './proto.js';
import { startPostgres, startS3, waitFor, type Postgres, type S3Server } from './services.js';

const MIB = 1024 * 1024;
// A full collection on demand, for measuring live memory (the test runner gives no --expose-gc).
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const CLAIMER = path.join(import.meta.dirname, 'claimer.js');

let db: Postgres;
let s3: S3Server;
let pool: pg.Pool;
let boss: PgBoss;
const children = new Set<ChildProcess>();

function note(what: string, ms: number): void {
  process.stdout.write(`# ${what}: ${Math.round(ms)} ms\n`);
}

before(async () => {
  let t = performance.now();
  db = await startPostgres();
  note('PostgreSQL initdb + start until it answers', performance.now() - t);
  t = performance.now();
  s3 = await startS3();
  note('S3Proxy start until it answers', performance.now() - t);
  pool = new pg.Pool({ connectionString: db.url, max: 8 });
  // A pool's idle clients report a lost server here; without a listener that would be thrown.
  pool.on('error', () => undefined);
  await pool.query(PROTO_SCHEMA);
  // This instance supervises: maintenance (expiration included) every second.
  boss = new PgBoss({ connectionString: db.url, maintenanceIntervalSeconds: 1 });
  boss.on('error', () => undefined);
  t = performance.now();
  await boss.start();
  note('pg-boss schema create + start', performance.now() - t);
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await boss?.stop({ graceful: false, wait: true, close: true }).catch(() => undefined);
  await pool?.end().catch(() => undefined);
  await db?.stop();
  await s3?.stop();
});

interface ClaimerHandle {
  child: ChildProcess;
  /** Resolves with the first JSON line that has `key`. */
  next(key: 'claimed' | 'completed'): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

function startClaimer(nodeId: string, queues: string[], mode: 'hold' | 'complete'): ClaimerHandle {
  const child = spawn(process.execPath, [CLAIMER, db.url, nodeId, queues.join(','), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    children.delete(child);
    resolve(code);
  }));
  const lines: Record<string, unknown>[] = [];
  const waiting: { key: string; resolve: (v: Record<string, unknown>) => void }[] = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line) as Record<string, unknown>;
    const w = waiting.findIndex((x) => x.key in msg);
    if (w >= 0) waiting.splice(w, 1)[0]!.resolve(msg);
    else lines.push(msg);
  });
  return {
    child,
    exited,
    next(key) {
      const i = lines.findIndex((m) => key in m);
      if (i >= 0) return Promise.resolve(lines.splice(i, 1)[0]!);
      return new Promise((resolve, reject) => {
        waiting.push({ key, resolve });
        void exited.then((code) => reject(new Error(`claimer ${nodeId} exited (${code}) before '${key}'`)));
      });
    },
  };
}

async function recordOf(id: string): Promise<{ status: string; owner: string | null; attempt: number; error: string | null }> {
  const r = await pool.query<{ status: string; owner: string | null; attempt: number; error: string | null }>(
    'SELECT status, owner, attempt, error FROM cluster_jobs WHERE id = $1',
    [id],
  );
  return r.rows[0]!;
}

void describe('PostgreSQL + pg-boss', () => {
  void it('records a job and enqueues it in one transaction, or neither', async () => {
    await boss.createQueue('tx-build');
    const kept = randomUUID();
    const dropped = randomUUID();
    await enqueue(pool, boss, { id: kept, queue: 'tx-build', data: {}, maxAttempts: 1, expireInSeconds: 60 });
    await assert.rejects(
      enqueue(pool, boss, {
        id: dropped,
        queue: 'tx-build',
        data: {},
        maxAttempts: 1,
        expireInSeconds: 60,
        alsoWrite: async () => {
          throw new Error('the idempotency key write failed');
        },
      }),
      /idempotency key write failed/,
    );
    assert.equal((await pool.query('SELECT id FROM cluster_jobs WHERE id = ANY($1)', [[kept, dropped]])).rowCount, 1);
    assert.ok(await boss.getJobById('tx-build', kept));
    assert.equal(await boss.getJobById('tx-build', dropped), null);
    assert.equal(await boss.getQueueSize('tx-build'), 1);
  });

  void it('a claimer killed mid-job: pg-boss expiration hands the job to another node', async () => {
    // Short jobs: expiration alone recovers them, after expireInSeconds + up to one maintenance interval.
    await boss.createQueue('short-build');
    const id = randomUUID();
    const a = startClaimer('node-a', ['short-build'], 'hold');
    await enqueue(pool, boss, { id, queue: 'short-build', data: {}, maxAttempts: 2, expireInSeconds: 2 });
    const claimedA = await a.next('claimed');
    assert.deepEqual(claimedA.claimed, { id, queue: 'short-build', attempt: 1 });
    a.child.kill('SIGKILL');
    await a.exited;
    const killedAt = performance.now();
    const b = startClaimer('node-b', ['short-build'], 'complete');
    const claimedB = await b.next('claimed');
    note('kill -9 → re-claimed by pg-boss expiration (expireInSeconds 2, maintenance every 1 s)', performance.now() - killedAt);
    assert.deepEqual(claimedB.claimed, { id, queue: 'short-build', attempt: 2 });
    assert.equal((await b.next('completed')).ok, true);
    assert.equal(await b.exited, 0);
    const job = await boss.getJobById('short-build', id);
    assert.equal(job?.state, 'completed');
    assert.equal(job?.retryCount, 1);
    assert.equal((await recordOf(id)).status, 'succeeded');
  });

  void it('a claimer killed mid-job: the node-lease sweep hands a long job to another node, and fences the dead one off', async () => {
    // A long job: expiration (an hour) would keep it stuck; the owner's stale heartbeat frees it.
    await boss.createQueue('long-build');
    const id = randomUUID();
    const a = startClaimer('node-c', ['long-build'], 'hold');
    await enqueue(pool, boss, { id, queue: 'long-build', data: {}, maxAttempts: 2, expireInSeconds: 3600 });
    assert.deepEqual((await a.next('claimed')).claimed, { id, queue: 'long-build', attempt: 1 });
    const b = startClaimer('node-d', ['long-build'], 'complete');
    a.child.kill('SIGKILL');
    await a.exited;
    const killedAt = performance.now();
    const LEASE_S = 2;
    // What every node would run on a timer: here the test is the sweeping node.
    const sweeper = setInterval(() => void sweepDeadNodes(pool, boss, LEASE_S).catch(() => undefined), 250);
    try {
      const claimedB = await b.next('claimed');
      note(`kill -9 → re-claimed via node lease (lease ${LEASE_S} s, sweep every 250 ms)`, performance.now() - killedAt);
      assert.deepEqual(claimedB.claimed, { id, queue: 'long-build', attempt: 2 });
      assert.equal((await b.next('completed')).ok, true);
    } finally {
      clearInterval(sweeper);
    }
    // The dead node's attempt 1, had it come back, may not overwrite attempt 2.
    assert.equal(await complete(pool, boss, 'node-c', { id, queue: 'long-build', attempt: 1 }), false);
    assert.deepEqual(await recordOf(id), { status: 'succeeded', owner: 'node-d', attempt: 2, error: null });
  });

  void it('a job whose node dies on its last attempt is failed with the reason, never left running', async () => {
    await boss.createQueue('last-build');
    const id = randomUUID();
    const a = startClaimer('node-e', ['last-build'], 'hold');
    await enqueue(pool, boss, { id, queue: 'last-build', data: {}, maxAttempts: 1, expireInSeconds: 3600 });
    await a.next('claimed');
    a.child.kill('SIGKILL');
    await a.exited;
    await waitFor('the sweep to fail the job', async () => (await sweepDeadNodes(pool, boss, 1)).some((s) => s.id === id));
    const rec = await recordOf(id);
    assert.equal(rec.status, 'failed');
    assert.match(rec.error ?? '', /node node-e stopped answering while it ran attempt 1 of this job; no attempts left/);
    assert.equal((await boss.getJobById('last-build', id))?.state, 'failed');
  });

  void it('three nodes starting at once: pg-boss start is safe; queue creation is, taking turns', async () => {
    const nodes = [1, 2, 3].map(() => {
      const b = new PgBoss({ connectionString: db.url, supervise: false, schedule: false });
      b.on('error', () => undefined);
      return b;
    });
    try {
      await Promise.all(nodes.map((b) => b.start()));
      const names = ['race-a', 'race-b', 'race-c'];
      // Unserialized, pg-boss 10 answers some of these "deadlock detected" (seen here); each node
      // then retries or, as here, takes its turn under an advisory lock.
      await Promise.all(nodes.map((b) => createQueues(pool, b, names)));
      for (const name of names) assert.ok(await boss.getQueue(name), name);
      // A canceled queued job is never handed out.
      const id = await nodes[0]!.send('race-a', {});
      assert.ok(id);
      await nodes[1]!.cancel('race-a', id);
      assert.deepEqual(await nodes[2]!.fetch('race-a'), []);
      assert.equal((await boss.getJobById('race-a', id))?.state, 'cancelled');
    } finally {
      await Promise.all(nodes.map((b) => b.stop({ graceful: false, wait: true, close: true })));
    }
  });

  void it('a node takes its warm build’s queue first, then the others', async () => {
    await boss.createQueue('warm-build');
    await boss.createQueue('cold-build');
    const cold = randomUUID();
    const warm = randomUUID();
    await enqueue(pool, boss, { id: cold, queue: 'cold-build', data: {}, maxAttempts: 1, expireInSeconds: 60 });
    await enqueue(pool, boss, { id: warm, queue: 'warm-build', data: {}, maxAttempts: 1, expireInSeconds: 60 });
    const n = startClaimer('node-f', ['warm-build', 'cold-build'], 'complete');
    const claimed = (await n.next('claimed')).claimed as { id: string };
    assert.equal(claimed.id, warm);
    assert.equal(await n.exited, 0);
    assert.equal((await recordOf(cold)).status, 'queued');
  });

  void it('LISTEN/NOTIFY: delivered to another connection on commit only, in order; payloads over 8000 bytes refused', async () => {
    const listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    const got: string[] = [];
    listener.on('notification', (n) => got.push(n.payload ?? ''));
    await listener.query('LISTEN job_events');
    const sender = await pool.connect();
    try {
      await sender.query('BEGIN');
      await sender.query("SELECT pg_notify('job_events', 'rolled back')");
      await sender.query('ROLLBACK');
      await sender.query('BEGIN');
      await sender.query("SELECT pg_notify('job_events', 'first')");
      await sender.query("SELECT pg_notify('job_events', 'second')");
      await sender.query('COMMIT');
      await waitFor('both notifications', async () => got.length >= 2);
      assert.deepEqual(got, ['first', 'second']);
      await assert.rejects(sender.query("SELECT pg_notify('job_events', repeat('x', 8000))"), /payload string too long/);
    } finally {
      sender.release();
      await listener.end();
    }
    assert.equal(WAKE_CHANNEL, 'kiapi_jobs');
  });

  void it('PostgreSQL killed and restarted: queries fail meanwhile, then succeed; nothing committed is lost', async () => {
    await pool.query("INSERT INTO cluster_nodes (node_id, heartbeat_at) VALUES ('before-kill', now())");
    await db.kill();
    const err = await pool.query('SELECT 1').then(
      () => null,
      (e: unknown) => e as Error & { code?: string },
    );
    assert.ok(err, 'a query with the server down fails');
    process.stdout.write(`# query while PostgreSQL is down: ${err.code ?? ''} ${err.message}\n`);
    const t = performance.now();
    await db.restart();
    note('PostgreSQL restart after kill -9 (crash recovery) until it answers', performance.now() - t);
    // The pool drops broken clients and connects anew.
    await waitFor('the pool to work again', async () => (await pool.query('SELECT 1')).rowCount === 1);
    assert.equal((await pool.query("SELECT 1 FROM cluster_nodes WHERE node_id = 'before-kill'")).rowCount, 1);
    // pg-boss's own pool recovers the same way.
    await boss.createQueue('after-restart');
    assert.ok(await boss.send('after-restart', {}));
  });
});

void describe('S3Proxy + @aws-sdk/client-s3', () => {
  // Large enough that holding it whole would stand far above the parts in flight (2 × 5 MiB).
  const TOTAL_MIB = 192;
  const bucket = 'kiapi-blobs';
  let client: S3Client;

  before(async () => {
    client = new S3Client({
      endpoint: s3.endpoint,
      region: s3.region,
      // Path-style URLs: S3Proxy, MinIO and most self-hosted servers have no per-bucket DNS names.
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      maxAttempts: 1,
    });
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    // A first small transfer loads the SDK's modules, so their memory is not counted below.
    await new Upload({ client, params: { Bucket: bucket, Key: 'warm.bin', Body: Readable.from(chunks(1)) } }).done();
  });

  after(() => client?.destroy());

  /** A 1 MiB chunk that depends on its index, so a dropped or misordered chunk changes the hash. */
  function* chunks(n: number): Generator<Buffer> {
    for (let i = 0; i < n; i++) {
      const b = Buffer.alloc(MIB, i % 251);
      b.writeUInt32BE(i, 0);
      yield b;
    }
  }

  void it(`streams a ${TOTAL_MIB} MiB object up (multipart) and down without holding it whole`, async () => {
    const upHash = createHash('sha256');
    const source = Readable.from(
      (function* () {
        for (const c of chunks(TOTAL_MIB)) {
          upHash.update(c);
          yield c;
        }
      })(),
    );
    // Live memory, not RSS: right after a full collection, what the transfer still holds (heap and
    // Buffers). RSS also counts garbage not yet collected, which varied by 40 MiB run to run.
    const live = () => {
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const base = live();
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, live())), 100);
    try {
      let t = performance.now();
      // Unknown length: Upload sends 5 MiB parts, two at a time, so at most ~10 MiB is buffered.
      const upload = new Upload({ client, params: { Bucket: bucket, Key: 'big.bin', Body: source }, partSize: 5 * MIB, queueSize: 2 });
      await upload.done();
      note(`${TOTAL_MIB} MiB multipart upload`, performance.now() - t);
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'big.bin' }));
      assert.equal(head.ContentLength, TOTAL_MIB * MIB);
      t = performance.now();
      const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'big.bin' }));
      const downHash = createHash('sha256');
      await pipeline(got.Body as Readable, downHash);
      note(`${TOTAL_MIB} MiB streamed download`, performance.now() - t);
      assert.equal(downHash.digest('hex'), upHash.digest('hex'));
      // A range read (a resumed download, an HTTP Range request passed through).
      const part = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'big.bin', Range: `bytes=${MIB}-${MIB + 3}` }));
      assert.deepEqual([...(await part.Body!.transformToByteArray())], [0, 0, 0, 1]);
    } finally {
      clearInterval(sampler);
    }
    const growth = peak - base;
    process.stdout.write(`# peak live memory growth during the transfers: ${(growth / MIB).toFixed(1)} MiB\n`);
    assert.ok(growth < (TOTAL_MIB * MIB) / 2, `live memory grew by ${(growth / MIB).toFixed(1)} MiB while moving ${TOTAL_MIB} MiB`);
  });

  void it('S3Proxy killed: requests fail with an error; restarted, it serves the stored objects again', async () => {
    await s3.kill();
    await assert.rejects(client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'big.bin' })), (err: Error & { code?: string }) => {
      process.stdout.write(`# request while S3Proxy is down: ${err.name} ${err.code ?? ''} ${err.message}\n`);
      return true;
    });
    await s3.restart();
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'big.bin' }));
    assert.equal(head.ContentLength, TOTAL_MIB * MIB);
  });
});
