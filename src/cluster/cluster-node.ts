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
import path from 'node:path';
import { InputCache } from './input-cache.js';
import { PgFileStore } from './pg-file-store.js';
import { PgJobStore } from './pg-job-store.js';
import { S3BlobStore } from './s3-blob-store.js';
import { migrate, openPool, unavailable } from './pg.js';
import { CLUSTER_MIGRATIONS } from './schema.js';
import type { ClusterSettings } from './settings.js';

export interface ClusterNodeOptions {
  settings: ClusterSettings;
  /** Local copies of blobs (engine inputs, downloads) live in `<dataDir>/cluster-cache`. */
  dataDir: string;
  tmpDir: string;
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

/** Local copies of blobs a node keeps (inputs reused by later jobs are not fetched again). */
const CACHE_MAX_BYTES = 8 * 1024 ** 3;

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
    readonly files: PgFileStore,
    private readonly blobs: S3BlobStore,
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
      const events = new ClusterJobEvents(bus, settings.nodeId, log.child({ component: 'cluster-events' }));
      await events.start();
      opened.unshift({ close: () => events.close() });
      const blobs = await S3BlobStore.open({ bucket: settings.s3.bucket, region: settings.s3.region, ...(settings.s3.endpoint ? { endpoint: settings.s3.endpoint } : {}) });
      opened.unshift({ close: async () => blobs.close() });
      const cache = new InputCache({ dir: path.join(o.dataDir, 'cluster-cache'), maxBytes: CACHE_MAX_BYTES });
      const files = new PgFileStore({ pool, blobs, cache, tmpDir: o.tmpDir, nodeId: settings.nodeId, log: log.child({ component: 'files' }) });
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
        releaseHolds: (nodeId) => files.releaseNode(nodeId),
      });
      return new ClusterNodeServices(settings, pool, boss, nodes, bus, events, jobs, queue, files, blobs, log);
    } catch (err) {
      for (const o2 of opened) await o2.close().catch(() => undefined);
      throw err;
    }
  }

  /** Starts taking jobs (once the services the jobs run with exist). */
  async start(): Promise<void> {
    await this.queue.start();
    this.log.info({ node_id: this.settings.nodeId, lease_s: this.settings.leaseS }, `cluster node ${this.settings.nodeId} joined`);
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
    await this.files.sweepDeleted();
    await this.files.sweepOrphans();
  }

  async close(graceMs: number): Promise<void> {
    await this.queue.close(graceMs);
    await this.events.close();
    await this.bus.close();
    await this.nodes.close();
    await this.boss.stop({ graceful: false, wait: true, close: true }).catch((err: unknown) => this.log.debug({ err }, 'pg-boss stop'));
    await this.pool.end().catch(() => undefined);
    this.blobs.close();
  }
}
