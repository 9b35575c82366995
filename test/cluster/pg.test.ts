/**
 * The shared-database plumbing against a real PostgreSQL (test/cluster/services.ts):
 * migrations applied once by three nodes starting at once, transactions, BIGINT as numbers, the
 * schema's generated and ordered columns, and the mapping of real connection failures to 503.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { pino } from 'pino';
import { UnavailableError } from '../../src/core/errors.js';
import { inTransaction, isUnavailable, migrate, openPool, unavailable } from '../../src/cluster/pg.js';
import { CLUSTER_MIGRATIONS } from '../../src/cluster/schema.js';
import { freePort, startPostgres, waitFor, type Postgres } from './services.js';

const log = pino({ level: 'silent' });
let db: Postgres;
let pool: pg.Pool;

before(async () => {
  db = await startPostgres();
  pool = openPool(db.url, log);
});

after(async () => {
  await pool?.end().catch(() => undefined);
  await db?.stop();
});

/** The error a promise rejects with (the test fails if it resolves). */
async function failure(p: Promise<unknown>): Promise<Error & { code?: string }> {
  return p.then(
    () => assert.fail('expected a failure'),
    (err: unknown) => err as Error & { code?: string },
  );
}

void describe('migrate', () => {
  void it('three nodes starting at once apply each migration exactly once', async () => {
    const pools = [1, 2, 3].map(() => openPool(db.url, log, { max: 2 }));
    try {
      const applied = await Promise.all(pools.map((p) => migrate(p, CLUSTER_MIGRATIONS)));
      const all = applied.flat();
      assert.deepEqual([...all].sort(), CLUSTER_MIGRATIONS.map((m) => m.name).sort(), `applied: ${JSON.stringify(applied)}`);
      const rows = await pool.query<{ name: string }>('SELECT name FROM cluster_migrations ORDER BY name');
      assert.deepEqual(
        rows.rows.map((r) => r.name),
        CLUSTER_MIGRATIONS.map((m) => m.name),
      );
      // A later start finds nothing to do; a new migration appended is applied alone.
      assert.deepEqual(await migrate(pool, CLUSTER_MIGRATIONS), []);
      const extra = { name: '9999 test extra', sql: 'CREATE TABLE test_extra (x INTEGER)' };
      assert.deepEqual(await migrate(pool, [...CLUSTER_MIGRATIONS, extra]), [extra.name]);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  void it('a failing migration leaves nothing of itself and names itself', async () => {
    const bad = { name: '9999 test broken', sql: 'CREATE TABLE test_half (x INTEGER); SELECT no_such_function()' };
    const err = await failure(migrate(pool, [...CLUSTER_MIGRATIONS, bad]));
    assert.match(err.message, /cluster migration 9999 test broken failed: function no_such_function\(\) does not exist/);
    assert.equal((await pool.query("SELECT 1 FROM pg_tables WHERE tablename = 'test_half'")).rowCount, 0);
    assert.equal((await pool.query("SELECT 1 FROM cluster_migrations WHERE name = '9999 test broken'")).rowCount, 0);
    // The lock was released: the next run proceeds.
    assert.deepEqual(await migrate(pool, CLUSTER_MIGRATIONS), []);
  });
});

void describe('schema', () => {
  void it('files.content_family is the part before the slash, empty without one (as in SQLite); sizes past 2^31 come back as numbers', async () => {
    const big = 6 * 1024 ** 3;
    await pool.query(
      `INSERT INTO files (id, filename, content_type, size, created_at, meta) VALUES
         ('f1', 'a.png', 'image/png', $1, 1.5, '{}'), ('f2', 'x', 'weird', 1, 2.25, '{}')`,
      [big],
    );
    const rows = await pool.query<{ id: string; content_family: string; size: number; created_at: number }>(
      'SELECT id, content_family, size, created_at FROM files ORDER BY id',
    );
    assert.deepEqual(rows.rows, [
      { id: 'f1', content_family: 'image', size: big, created_at: 1.5 },
      { id: 'f2', content_family: '', size: 1, created_at: 2.25 },
    ]);
    assert.equal((await pool.query<{ n: number }>('SELECT count(*) AS n FROM files')).rows[0]!.n, 2);
  });
});

void describe('inTransaction', () => {
  void it('commits what the work wrote, or nothing when it throws', async () => {
    await pool.query('CREATE TABLE IF NOT EXISTS tx_probe (key TEXT PRIMARY KEY)');
    await inTransaction(pool, async (c) => {
      await c.query("INSERT INTO tx_probe (key) VALUES ('kept')");
    });
    await assert.rejects(
      inTransaction(pool, async (c) => {
        await c.query("INSERT INTO tx_probe (key) VALUES ('dropped')");
        throw new Error('later step failed');
      }),
      /later step failed/,
    );
    const keys = (await pool.query<{ key: string }>('SELECT key FROM tx_probe ORDER BY key')).rows.map((r) => r.key);
    assert.deepEqual(keys, ['kept']);
  });
});

void describe('unavailable', () => {
  void it('a refused connection is a 503 naming the shared database, with Retry-After', async () => {
    const nobody = openPool(`postgres://postgres@127.0.0.1:${await freePort()}/kiapi`, log, { connectTimeoutMs: 2000 });
    try {
      const err = await failure(nobody.query('SELECT 1'));
      assert.equal(isUnavailable(err), true, `${err.code} ${err.message}`);
      const mapped = unavailable(err, 'reading the job');
      assert.ok(mapped instanceof UnavailableError);
      assert.equal(mapped.status, 503);
      assert.match(mapped.message, /^the shared database is unreachable while reading the job \(ECONNREFUSED\); retry shortly$/);
      assert.equal(mapped.headers['retry-after'], '2');
    } finally {
      await nobody.end();
    }
  });

  void it('a server that accepts the connection and never answers is a 503 after the connect timeout', async () => {
    // The hang a real server cannot be told to do: a socket that accepts and stays silent.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const stuck = openPool(`postgres://postgres@127.0.0.1:${port}/kiapi`, log, { connectTimeoutMs: 300 });
    try {
      const err = await failure(stuck.query('SELECT 1'));
      assert.equal(isUnavailable(err), true, err.message);
      assert.match((unavailable(err) as Error).message, /^the shared database is unreachable \(.*timeout.*\); retry shortly$/);
    } finally {
      await stuck.end();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  void it('a session the server terminates (57P01) and a server killed mid-query are unavailable; a bad statement is not', async () => {
    const c = new pg.Client({ connectionString: db.url });
    c.on('error', () => undefined);
    await c.connect();
    const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const query = failure(c.query('SELECT pg_sleep(60)'));
    await waitFor('the sleep to run', async () => (await pool.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", [pid])).rowCount === 1);
    await pool.query('SELECT pg_terminate_backend($1)', [pid]);
    const terminated = await query;
    assert.equal(terminated.code, '57P01');
    assert.equal(isUnavailable(terminated), true);
    assert.match((unavailable(terminated) as Error).message, /unreachable \(57P01 terminating connection due to administrator command\)/);
    await c.end().catch(() => undefined);

    const syntax = await failure(pool.query('SELEC 1'));
    assert.equal(isUnavailable(syntax), false);
    assert.equal(unavailable(syntax), syntax);
    assert.equal(isUnavailable(new Error('x', { cause: Object.assign(new Error('y'), { code: 'ECONNRESET' }) })), true);

    // The server dies under an open connection: the pool's client reports it, the pool survives
    // (its idle clients' errors go to the listener, not to the process), and works after a restart.
    const held = await pool.connect();
    // A held client reports its dead connection as an event too (withClient listens for it).
    held.on('error', () => undefined);
    const sleeping = failure(held.query('SELECT pg_sleep(60)'));
    // A transaction in flight: its client's error event is heard (no crash), its promise rejects.
    const transaction = failure(inTransaction(pool, (c) => c.query('SELECT pg_sleep(60)')));
    await waitFor('both sleeps to run', async () => (await pool.query("SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")).rowCount === 2);
    await db.kill();
    assert.equal(isUnavailable(await transaction), true);
    const killed = await sleeping;
    held.release(killed);
    assert.equal(isUnavailable(killed), true, `${killed.code} ${killed.message}`);
    const down = await failure(pool.query('SELECT 1'));
    assert.equal(isUnavailable(down), true, `${down.code} ${down.message}`);
    await db.restart();
    await waitFor('the pool to work again', async () => (await pool.query('SELECT 1')).rowCount === 1);
  });
});
