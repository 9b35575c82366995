/**
 * A prototype of the cluster's job path on PostgreSQL + pg-boss, small enough to read in one go,
 * for the smoke test to exercise against a real server (it is not wired into kiapi yet):
 *
 * - `enqueue`: the job record, the pg-boss job and a wake-up NOTIFY commit in one transaction,
 *   or none of them does.
 * - `claim`: a node asks its queues in preference order (warm builds first); pg-boss's fetch
 *   (SKIP LOCKED) and the record's `running, owner, attempt + 1` commit together, so exactly one
 *   node holds an attempt.
 * - `complete`: fenced by (owner, attempt): a node that lost its job to a sweep cannot overwrite
 *   the newer attempt's record.
 * - `heartbeat` / `sweepDeadNodes`: each node renews a row; a job whose owner stopped renewing it
 *   is failed in pg-boss (its retry policy re-queues it, or fails it when the retries are spent)
 *   with the record moved back to `queued` or to `failed` with the reason. pg-boss 10 itself only
 *   knows expiration (the longest a job may run), which for a long image job is far too late.
 */
import type PgBoss from 'pg-boss';
import type pg from 'pg';

export const WAKE_CHANNEL = 'kiapi_jobs';

export const PROTO_SCHEMA = `
  CREATE TABLE IF NOT EXISTS cluster_jobs (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    owner TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
  );
  CREATE TABLE IF NOT EXISTS cluster_nodes (
    node_id TEXT PRIMARY KEY,
    heartbeat_at TIMESTAMPTZ NOT NULL
  );`;

/** pg-boss's `db` option bound to one client: its statements join that client's transaction. */
export function on(client: pg.PoolClient | pg.Client): { db: PgBoss.Db } {
  return { db: { executeSql: (text, values) => client.query(text, values) } };
}

async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const out = await work(client);
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * Creates the queues a node serves. pg-boss 10's createQueue is idempotent, but two nodes creating
 * the same queues at once deadlock (each queue is a partition attached to one table), so nodes
 * take turns under a session advisory lock.
 */
export async function createQueues(pool: pg.Pool, boss: PgBoss, names: string[]): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock(hashtext('kiapi:create-queues'))");
    try {
      for (const name of names) await boss.createQueue(name);
    } finally {
      await client.query("SELECT pg_advisory_unlock(hashtext('kiapi:create-queues'))");
    }
  } finally {
    client.release();
  }
}

export interface EnqueueOptions {
  id: string;
  queue: string;
  data: object;
  /** Attempts in all (pg-boss retryLimit = maxAttempts - 1). */
  maxAttempts: number;
  /** pg-boss expiration: the longest one attempt may stay active. */
  expireInSeconds: number;
  /** Runs inside the transaction after the inserts (a test makes it throw to see nothing stay). */
  alsoWrite?: (client: pg.PoolClient) => Promise<void>;
}

export async function enqueue(pool: pg.Pool, boss: PgBoss, o: EnqueueOptions): Promise<void> {
  await inTransaction(pool, async (client) => {
    await client.query("INSERT INTO cluster_jobs (id, queue, status, max_attempts) VALUES ($1, $2, 'queued', $3)", [o.id, o.queue, o.maxAttempts]);
    // pg-boss job ids are UUIDs; the record's id is reused so either finds the other.
    await boss.send(o.queue, { jobId: o.id, ...o.data }, { id: o.id, retryLimit: o.maxAttempts - 1, expireInSeconds: o.expireInSeconds, ...on(client) });
    await client.query('SELECT pg_notify($1, $2)', [WAKE_CHANNEL, o.queue]);
    await o.alsoWrite?.(client);
  });
}

export interface Claimed {
  id: string;
  queue: string;
  attempt: number;
}

/** Takes the first job of the first queue that has one (queues in the node's order of preference). */
export async function claim(pool: pg.Pool, boss: PgBoss, nodeId: string, queues: string[]): Promise<Claimed | null> {
  return inTransaction(pool, async (client) => {
    for (const queue of queues) {
      const [job] = await boss.fetch(queue, { batchSize: 1, ...on(client) });
      if (!job) continue;
      const row = await client.query<{ attempt: number }>(
        "UPDATE cluster_jobs SET status = 'running', owner = $2, attempt = attempt + 1 WHERE id = $1 RETURNING attempt",
        [job.id, nodeId],
      );
      return { id: job.id, queue, attempt: row.rows[0]!.attempt };
    }
    return null;
  });
}

/** Records success unless the attempt was taken away (then nothing changes and false is returned). */
export async function complete(pool: pg.Pool, boss: PgBoss, nodeId: string, job: Claimed): Promise<boolean> {
  return inTransaction(pool, async (client) => {
    const fenced = await client.query(
      "UPDATE cluster_jobs SET status = 'succeeded' WHERE id = $1 AND owner = $2 AND attempt = $3 AND status = 'running'",
      [job.id, nodeId, job.attempt],
    );
    if (fenced.rowCount === 0) return false;
    await boss.complete(job.queue, job.id, {}, on(client));
    return true;
  });
}

export async function heartbeat(pool: pg.Pool, nodeId: string): Promise<void> {
  await pool.query(
    'INSERT INTO cluster_nodes (node_id, heartbeat_at) VALUES ($1, now()) ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()',
    [nodeId],
  );
}

/**
 * Jobs running on nodes silent for longer than `leaseS`: failed in pg-boss (its retry policy
 * decides: queued again, or failed for good) and their records set to match. Rows are locked with
 * SKIP LOCKED, so every node may sweep at once without two of them failing one attempt twice.
 * The database's clock is the only one compared, so node clocks may disagree.
 */
export async function sweepDeadNodes(pool: pg.Pool, boss: PgBoss, leaseS: number): Promise<{ id: string; requeued: boolean }[]> {
  return inTransaction(pool, async (client) => {
    const dead = await client.query<{ id: string; queue: string; owner: string; attempt: number; max_attempts: number }>(
      `SELECT j.id, j.queue, j.owner, j.attempt, j.max_attempts
         FROM cluster_jobs j JOIN cluster_nodes n ON n.node_id = j.owner
        WHERE j.status = 'running' AND n.heartbeat_at < now() - make_interval(secs => $1)
        FOR UPDATE OF j SKIP LOCKED`,
      [leaseS],
    );
    const out: { id: string; requeued: boolean }[] = [];
    for (const j of dead.rows) {
      const reason = `node ${j.owner} stopped answering while it ran attempt ${j.attempt} of this job`;
      await boss.fail(j.queue, j.id, { message: reason }, on(client));
      const requeued = j.attempt < j.max_attempts;
      await client.query('UPDATE cluster_jobs SET status = $2, owner = NULL, error = $3 WHERE id = $1', [
        j.id,
        requeued ? 'queued' : 'failed',
        requeued ? null : `${reason}; no attempts left`,
      ]);
      out.push({ id: j.id, requeued });
    }
    return out;
  });
}
