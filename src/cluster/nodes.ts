/**
 * The node lease: this node's row in `cluster_nodes`, renewed about every second, which tells
 * the other nodes that it is alive, what it can run and what it holds warm.
 *
 * Two clocks, used for different questions:
 * - Whether *another* node is silent is judged on the database's clock only (`now()` against
 *   its `heartbeat_at`), so node clocks may disagree.
 * - Whether *this* node may have lost its lease is judged on its own monotonic clock, from the
 *   moment it sent its last renewal that succeeded. After half a lease without one, the node must
 *   assume another node's sweep may soon take its job away, and stop the job itself
 *   (`onLeaseLost`): the other half of the lease is the margin before anyone else may run it.
 *   Since the timestamp the database records is taken after the request was sent, counting from
 *   the sending errs on the early side.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { unavailable } from './pg.js';

export interface NodeRegistryOptions {
  nodeId: string;
  url: string;
  version: string;
  /** Seconds: another node silent this long is stale; half of it without renewal, this node stops its job. */
  leaseS: number;
  log: Logger;
  /** How often the row is renewed (default 1000 ms; never more than a quarter of the lease). */
  renewMs?: number;
  capable?: string[];
  warm?: string[];
}

/** What a node advertises, changed with `update()`. */
export interface NodeState {
  capable: string[];
  warm: string[];
  busy: boolean;
  runningJob: string | null;
}

export interface ClusterNode extends NodeState {
  nodeId: string;
  url: string;
  version: string;
  heartbeatAt: Date;
  startedAt: Date;
  /** Seconds since its last renewal, on the database's clock. */
  silentS: number;
}

interface NodeRow {
  node_id: string;
  url: string;
  version: string;
  capable: string[];
  warm: string[];
  busy: boolean;
  running_job: string | null;
  heartbeat_at: Date;
  started_at: Date;
  silent_s: number;
}

export class NodeRegistry {
  readonly nodeId: string;
  private readonly leaseMs: number;
  private readonly renewMs: number;
  private state: NodeState;
  private renewTimer: NodeJS.Timeout | null = null;
  private watchTimer: NodeJS.Timeout | null = null;
  /** The renewal in flight, if any, and the one queued behind it. */
  private inFlight: Promise<boolean> | null = null;
  private next: Promise<boolean> | null = null;
  /** Monotonic ms when the last successful renewal was sent. */
  private lastRenewedAt: number;
  /** Monotonic ms since when every renewal succeeded; null while the database is unreachable. */
  private upSince: number | null = null;
  private leaseLost = false;
  private readonly leaseLostListeners = new Set<() => void>();
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly opts: NodeRegistryOptions,
  ) {
    this.nodeId = opts.nodeId;
    this.leaseMs = opts.leaseS * 1000;
    this.renewMs = Math.min(opts.renewMs ?? 1000, this.leaseMs / 4);
    this.state = { capable: opts.capable ?? [], warm: opts.warm ?? [], busy: false, runningJob: null };
    this.lastRenewedAt = performance.now();
  }

  /**
   * Writes this node's row (a restart under the same id takes its old row over, with a new
   * start time) and starts renewing it. Throws (503 when the database is unreachable) if the
   * first write fails: a node that cannot announce itself must not start claiming jobs.
   */
  async start(): Promise<void> {
    if (this.renewTimer || this.closed) return;
    const sentAt = performance.now();
    try {
      await this.pool.query(
        `INSERT INTO cluster_nodes (node_id, url, version, capable, warm, busy, running_job, heartbeat_at, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now())
         ON CONFLICT (node_id) DO UPDATE SET url = $2, version = $3, capable = $4, warm = $5, busy = $6,
           running_job = $7, heartbeat_at = now(), started_at = now()`,
        [this.nodeId, this.opts.url, this.opts.version, this.state.capable, this.state.warm, this.state.busy, this.state.runningJob],
      );
    } catch (err) {
      throw unavailable(err, 'announcing this node');
    }
    this.lastRenewedAt = sentAt;
    this.upSince = sentAt;
    this.renewTimer = setInterval(() => void this.renew(), this.renewMs);
    this.renewTimer.unref();
    // The lease is watched more often than it is renewed, so a lost lease is noticed promptly
    // even while a renewal hangs on a dead connection.
    this.watchTimer = setInterval(() => this.checkLease(), Math.max(50, Math.min(250, this.leaseMs / 8)));
    this.watchTimer.unref();
  }

  /**
   * Changes what this node advertises and renews at once (other nodes place jobs by it).
   * Resolves true once a renewal carrying the change succeeded, false if it failed (the next
   * periodic renewal carries it again); it never throws.
   */
  async update(patch: Partial<NodeState>): Promise<boolean> {
    this.state = { ...this.state, ...patch };
    return this.renew();
  }

  /** What this node advertises now. */
  get advertised(): Readonly<NodeState> {
    return this.state;
  }

  /** Nodes whose lease is current (this one included while it renews), by node id. */
  async live(): Promise<ClusterNode[]> {
    try {
      const rows = await this.pool.query<NodeRow>(
        `SELECT node_id, url, version, capable, warm, busy, running_job, heartbeat_at, started_at,
                extract(epoch FROM now() - heartbeat_at)::float8 AS silent_s
           FROM cluster_nodes WHERE heartbeat_at >= now() - make_interval(secs => $1)
          ORDER BY node_id`,
        [this.opts.leaseS],
      );
      return rows.rows.map(toNode);
    } catch (err) {
      throw unavailable(err, 'listing the nodes');
    }
  }

  /**
   * Ids of other nodes silent for longer than the lease: their running jobs may be taken away.
   * Answers none until this node's own connection has been up for a full lease: after the
   * database (or this node's link to it) comes back, every node's heartbeat looks old until
   * each has had a lease's time to renew, and judging earlier would call them all dead.
   */
  async stale(): Promise<string[]> {
    if (this.leaseLost || this.upSince === null || performance.now() - this.upSince < this.leaseMs) return [];
    try {
      const rows = await this.pool.query<{ node_id: string }>(
        `SELECT node_id FROM cluster_nodes
          WHERE node_id <> $1 AND heartbeat_at < now() - make_interval(secs => $2)
          ORDER BY node_id`,
        [this.nodeId, this.opts.leaseS],
      );
      return rows.rows.map((r) => r.node_id);
    } catch (err) {
      throw unavailable(err, 'looking for silent nodes');
    }
  }

  /**
   * `cb` runs once each time this node goes half a lease without a successful renewal (and again
   * after a later loss, once renewals had resumed). Whoever runs a job must abort it then.
   * Answers a function that removes the listener.
   */
  onLeaseLost(cb: () => void): () => void {
    this.leaseLostListeners.add(cb);
    return () => this.leaseLostListeners.delete(cb);
  }

  /** Whether the lease counts as lost right now (no successful renewal for half a lease). */
  get lost(): boolean {
    return this.leaseLost;
  }

  /** Stops renewing and removes this node's row, so it leaves the live list at once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.watchTimer) clearInterval(this.watchTimer);
    this.renewTimer = this.watchTimer = null;
    // A renewal in flight is let finish first (bounded: its connection may be dead), so its
    // write does not land after the delete; a renewal that finds the row gone while closing
    // does not write it anew.
    await waitAtMost(this.inFlight, this.leaseMs / 2);
    try {
      await this.pool.query('DELETE FROM cluster_nodes WHERE node_id = $1', [this.nodeId]);
    } catch (err) {
      // Shutdown goes on: the row simply ages out of the live list after a lease.
      this.opts.log.warn({ err: (err as Error).message }, 'could not remove this node from cluster_nodes');
    }
  }

  /**
   * Renews the row with the current state. Renewals never overlap: while one is in flight, callers
   * share one follow-up renewal that starts when it ends and carries the newest state (so a hung
   * connection does not pile up renewals, and an update is never lost behind an older write).
   */
  private renew(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.inFlight) {
      this.next ??= this.inFlight.then(() => {
        this.next = null;
        return this.renew();
      });
      return this.next;
    }
    this.inFlight = this.write().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private async write(): Promise<boolean> {
    const sentAt = performance.now();
    const s = this.state;
    try {
      const res = await this.pool.query(
        `UPDATE cluster_nodes SET capable = $2, warm = $3, busy = $4, running_job = $5, heartbeat_at = now()
          WHERE node_id = $1`,
        [this.nodeId, s.capable, s.warm, s.busy, s.runningJob],
      );
      // The row is gone (an operator removed it, a database restored from a backup): write it
      // anew rather than renew nothing.
      if (res.rowCount === 0 && !this.closed) {
        await this.pool.query(
          `INSERT INTO cluster_nodes (node_id, url, version, capable, warm, busy, running_job, heartbeat_at, started_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now()) ON CONFLICT (node_id) DO NOTHING`,
          [this.nodeId, this.opts.url, this.opts.version, s.capable, s.warm, s.busy, s.runningJob],
        );
      }
    } catch (err) {
      if (this.upSince !== null) this.opts.log.warn({ err: (err as Error).message }, 'could not renew the node lease in the shared database');
      this.upSince = null;
      return false;
    }
    this.lastRenewedAt = sentAt;
    this.upSince ??= sentAt;
    if (this.leaseLost) {
      this.leaseLost = false;
      this.opts.log.info('node lease renewed again');
    }
    return true;
  }

  private checkLease(): void {
    if (this.leaseLost || this.closed) return;
    if (performance.now() - this.lastRenewedAt < this.leaseMs / 2) return;
    this.leaseLost = true;
    this.opts.log.error(
      { leaseS: this.opts.leaseS },
      'no successful node lease renewal for half a lease: stopping the running job, since another node may take it over',
    );
    for (const cb of [...this.leaseLostListeners]) {
      try {
        cb();
      } catch (err) {
        this.opts.log.error({ err }, 'a lease-lost listener failed');
      }
    }
  }
}

function toNode(r: NodeRow): ClusterNode {
  return {
    nodeId: r.node_id,
    url: r.url,
    version: r.version,
    capable: r.capable,
    warm: r.warm,
    busy: r.busy,
    runningJob: r.running_job,
    heartbeatAt: r.heartbeat_at,
    startedAt: r.started_at,
    silentS: r.silent_s,
  };
}

async function waitAtMost(p: Promise<unknown> | null, ms: number): Promise<void> {
  if (!p) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
