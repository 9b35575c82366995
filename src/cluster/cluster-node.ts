/**
 * What a node needs to take part in a cluster, opened in order (database schema, queue engine,
 * node lease, event bus) and closed in reverse. The composition root (server/context.ts) picks
 * these instead of the single-node stores when the cluster settings are set; the HTTP layer sees
 * the same interfaces either way.
 */
import PgBoss from 'pg-boss';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { JobHandler, Runnable } from '../core/jobs/job-queue.js';
import type { JobRecord } from '../core/jobs/job-store.js';
import { ClusterJobEvents } from './cluster-events.js';
import { ClusterJobQueue } from './cluster-queue.js';
import { NodeRegistry } from './nodes.js';
import { PgEventBus } from './pg-events.js';
import { PgJobStore } from './pg-job-store.js';
import { migrate, openPool, unavailable } from './pg.js';
import { CLUSTER_MIGRATIONS } from './schema.js';
import type { ClusterSettings } from './settings.js';

export interface ClusterNodeOptions {
  settings: ClusterSettings;
  version: string;
  log: Logger;
  maxQueue: number;
  /** The longest one attempt may run before pg-boss expires it (a backstop behind the lease). */
  engineTimeoutS: number;
  build: (runnable: Runnable) => Promise<JobHandler>;
  capable: () => string[];
  warm: () => string[];
  extraFields?: (job: JobRecord) => Promise<Record<string, unknown>>;
  onTransition?: (job: JobRecord, view: Record<string, unknown>, tx: pg.PoolClient) => Promise<void>;
  /**
   * Called once the shared database is migrated, before the queue starts (its recovery already
   * writes transitions): the owners that keep their state there (webhook outbox, idempotency
   * keys) are made on the pool here, so `onTransition` and `extraFields` can reach them.
   */
  onPool?: (pool: pg.Pool) => void;
}

/** What /health shows of the cluster: this node and every node the database knows. */
export interface ClusterView {
  node_id: string;
  nodes: {
    node_id: string;
    url: string;
    version: string;
    live: boolean;
    busy: boolean;
    running_job: string | null;
    capable: string[];
    warm: string[];
    silent_s: number;
  }[];
  queued: number;
}

export class ClusterNodeServices {
  private constructor(
    readonly settings: ClusterSettings,
    readonly pool: pg.Pool,
    readonly boss: PgBoss,
    readonly nodes: NodeRegistry,
    readonly bus: PgEventBus,
    readonly events: ClusterJobEvents,
    readonly jobs: PgJobStore,
    readonly queue: ClusterJobQueue,
    private readonly log: Logger,
  ) {}

  static async open(o: ClusterNodeOptions): Promise<ClusterNodeServices> {
    const { settings, log } = o;
    const pool = openPool(settings.databaseUrl, log.child({ component: 'cluster-db' }));
    const opened: { close(): Promise<unknown> }[] = [{ close: () => pool.end() }];
    try {
      await migrate(pool, CLUSTER_MIGRATIONS).catch((err: unknown) => {
        throw unavailable(err, `preparing the shared database (KIAPI_CLUSTER_DATABASE_URL)`);
      });
      o.onPool?.(pool);
      const boss = new PgBoss({
        connectionString: settings.databaseUrl,
        max: 4,
        application_name: `kiapi ${settings.nodeId}`,
        // Maintenance expires attempts past expireInSeconds: the backstop behind the node lease.
        maintenanceIntervalSeconds: 30,
      });
      boss.on('error', (err) => log.warn({ err }, 'pg-boss'));
      await boss.start();
      opened.unshift({ close: () => boss.stop({ graceful: false, wait: true, close: true }) });
      const nodes = new NodeRegistry(pool, {
        nodeId: settings.nodeId,
        url: settings.nodeUrl,
        version: o.version,
        leaseS: settings.leaseS,
        log: log.child({ component: 'cluster-nodes' }),
        capable: o.capable(),
        warm: o.warm(),
      });
      await nodes.start();
      opened.unshift({ close: () => nodes.close() });
      const bus = new PgEventBus(pool, { url: settings.databaseUrl, log: log.child({ component: 'cluster-events' }) });
      await bus.start();
      opened.unshift({ close: () => bus.close() });
      const events = new ClusterJobEvents(pool, bus, settings.nodeId, log.child({ component: 'cluster-events' }));
      await events.start();
      opened.unshift({ close: () => events.close() });
      const jobs = new PgJobStore(pool);
      const queue = new ClusterJobQueue({
        pool,
        boss,
        store: jobs,
        events,
        nodes,
        nodeId: settings.nodeId,
        log: log.child({ component: 'queue' }),
        maxQueue: o.maxQueue,
        maxAttempts: settings.maxAttempts,
        expireInSeconds: Math.max(60, Math.ceil(o.engineTimeoutS * 2)),
        build: o.build,
        capable: o.capable,
        warm: o.warm,
        extraFields: o.extraFields,
        onTransition: o.onTransition,
      });
      await queue.start();
      log.info({ node_id: settings.nodeId, lease_s: settings.leaseS }, `cluster node ${settings.nodeId} joined`);
      return new ClusterNodeServices(settings, pool, boss, nodes, bus, events, jobs, queue, log);
    } catch (err) {
      for (const o2 of opened) await o2.close().catch(() => undefined);
      throw err;
    }
  }

  /** The cluster as this node sees it, for /health. */
  async view(): Promise<ClusterView> {
    const res = await this.pool
      .query<{ node_id: string; url: string; version: string; busy: boolean; running_job: string | null; capable: string[]; warm: string[]; silent_s: number }>(
        `SELECT node_id, url, version, busy, running_job, capable, warm, extract(epoch FROM now() - heartbeat_at)::float8 AS silent_s
           FROM cluster_nodes ORDER BY node_id`,
      )
      .catch((err: unknown) => {
        throw unavailable(err, 'reading the cluster view');
      });
    return {
      node_id: this.settings.nodeId,
      nodes: res.rows.map((n) => ({ ...n, live: n.silent_s < this.settings.leaseS, silent_s: Math.round(n.silent_s * 10) / 10 })),
      queued: this.queue.queueLength,
    };
  }

  /** Prunes the shared records (any node may; deleting twice is harmless). */
  async prune(jobRetentionS: number): Promise<void> {
    await this.jobs.prune(jobRetentionS);
    await this.bus.prune(60);
  }

  async close(graceMs: number): Promise<void> {
    await this.queue.close(graceMs);
    await this.events.close();
    await this.bus.close();
    await this.nodes.close();
    await this.boss.stop({ graceful: false, wait: true, close: true }).catch((err: unknown) => this.log.debug({ err }, 'pg-boss stop'));
    await this.pool.end().catch(() => undefined);
  }
}
