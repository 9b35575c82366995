/**
 * The composition root: opens the database and stores, recovers from an earlier crash, picks the
 * engine, registers the families, and hands routes one object. Tests build it on temp dirs.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { CapabilityRegistry, type CapabilityServices } from '../core/capability.js';
import { ConfigError, defaultMemoryBudgetGb, type Config } from '../core/config.js';
import { lockDataDir, type DataDirLock } from '../core/data-dir-lock.js';
import { openDb, type Db } from '../core/db.js';
import { WalCheckpointer } from '../core/db-checkpointer.js';
import { FileStore, type FileStoreApi } from '../core/files/file-store.js';
import { InputResolver } from '../core/files/input-resolver.js';
import { EtaModel } from '../core/jobs/eta.js';
import { IdempotencyKeys, type IdempotencyApi } from '../core/jobs/idempotency.js';
import { JobQueue, type JobQueueApi } from '../core/jobs/job-queue.js';
import { JobStore, type JobReader, type JobRecord } from '../core/jobs/job-store.js';
import { WebhookOutbox } from '../core/webhooks/outbox.js';
import { Webhooks, webhookKey } from '../core/webhooks/webhooks.js';
import { PgIdempotencyKeys } from '../cluster/pg-idempotency.js';
import { PgWebhookOutbox } from '../cluster/pg-webhook-outbox.js';
import { ModelRegistry, type ModelSpec } from '../core/models/model-spec.js';
import { weightsStatus } from '../core/models/weights.js';
import { DbBuildSizes } from '../core/models/build-sizes.js';
import { ModelRuntime } from '../core/models/model-runtime.js';
import { PACKAGE_ROOT, VERSION } from '../core/package-info.js';
import type { Engine } from '../engines/engine.js';
import { PreviewEngine } from '../engines/preview/preview-engine.js';
import { WorkerEngine } from '../engines/worker/worker-engine.js';
import { registerCapabilities } from '../capabilities/index.js';
import { readServerSettings, type ServerSettings } from './settings.js';
import { ClusterNodeServices } from '../cluster/cluster-node.js';
import { WARNED_RUNNER, warnedRunner } from './routes/capabilities.js';
import { readClusterSettings, type ClusterSettings } from '../cluster/settings.js';

export interface AppContext {
  config: Config;
  /** HTTP connection timeouts (KIAPI_REQUEST_TIMEOUT_S, KIAPI_IDLE_TIMEOUT_S). */
  server: ServerSettings;
  log: Logger;
  version: string;
  db: Db;
  files: FileStoreApi;
  jobs: JobReader;
  queue: JobQueueApi;
  /** This node's part in a cluster (KIAPI_CLUSTER_*); null on a single node. */
  cluster: ClusterNodeServices | null;
  /** Completion webhooks: what requests ask for, the outbox and its delivery. */
  webhooks: Webhooks;
  /** Idempotency-Key records of the generation routes. */
  idempotency: IdempotencyApi;
  models: ModelRegistry;
  capabilities: CapabilityRegistry;
  runtime: ModelRuntime;
  services: CapabilityServices;
  state: { warm: boolean };
  close(): Promise<void>;
}

export interface ContextOptions {
  /** Use this engine instead of choosing one from the config (tests). */
  engine?: Engine;
  env?: Record<string, string | undefined>;
}

const PRUNE_EVERY_MS = 3600_000;

export async function createContext(config: Config, log: Logger, opts: ContextOptions = {}): Promise<AppContext> {
  // Read first: a bad value stops start-up before anything is opened.
  const server = readServerSettings(opts.env ?? process.env, config.host);
  const clusterSettings = readClusterSettings(opts.env ?? process.env, { host: config.host, port: config.port });
  // Before anything in the data dir is read or changed: start-up recovery below would otherwise
  // fail another running server's jobs and delete its temp files.
  const lock = lockDataDir(config.dataDir);
  let db: Db | null = null;
  let checkpointer: WalCheckpointer | null = null;
  try {
    db = openDb(config.dataDir);
    checkpointer = new WalCheckpointer(db, log.child({ component: 'db' }));
    return await openContext(config, log, opts, server, clusterSettings, { db, checkpointer }, lock);
  } catch (err) {
    await checkpointer?.close();
    db?.close();
    lock.release();
    throw err;
  }
}

async function openContext(
  config: Config,
  log: Logger,
  opts: ContextOptions,
  server: ServerSettings,
  clusterSettings: ClusterSettings | null,
  { db, checkpointer }: { db: Db; checkpointer: WalCheckpointer },
  lock: DataDirLock,
): Promise<AppContext> {
  const env = opts.env ?? process.env;
  const models = new ModelRegistry();
  const capabilities = new CapabilityRegistry(models);
  registerCapabilities(capabilities, env);
  capabilities.registerRunner(WARNED_RUNNER, warnedRunner(capabilities));
  checkWarmupNames(config.warmup, models, log);
  const unknownOffered = (clusterSettings?.models ?? []).filter((k) => !models.all().some((m) => modelKey(m) === k));
  if (unknownOffered.length > 0) {
    throw new ConfigError([
      `KIAPI_CLUSTER_MODELS names ${unknownOffered.join(', ')}, which this kiapi does not serve; use family/name of: ${models.all().map(modelKey).join(', ')}`,
    ]);
  }

  const engine = opts.engine ?? selectEngine(config, log, env);
  const budgetGb = config.memoryLimitGb ?? defaultMemoryBudgetGb();
  if (engine.holdsWeights) log.info({ budget_gb: Math.round(budgetGb * 10) / 10 }, 'memory budget for resident models');
  const runtime = new ModelRuntime(engine, {
    budgetGb,
    defaultTtlS: config.defaultTtlS,
    ttlSweepIntervalS: config.ttlSweepIntervalS,
    log: log.child({ component: 'models' }),
    locate: (spec) => weightsStatus(spec.repo, env),
    sizes: new DbBuildSizes(db),
  });

  // Filled in once the stores exist; the cluster's queue runs jobs with them only after start().
  const ready: { services?: CapabilityServices } = {};
  // The shared webhook outbox and idempotency keys, made on the cluster's pool once it is open.
  const shared: { outbox?: PgWebhookOutbox; idempotency?: PgIdempotencyKeys } = {};
  // Cluster mode: the jobs, their queue and events are the cluster's (the shared database);
  // the single-node queue above is never used then.
  const cluster = clusterSettings
    ? await ClusterNodeServices.open({
        settings: clusterSettings,
        dataDir: config.dataDir,
        tmpDir: config.tmpDir,
        version: VERSION,
        log,
        maxQueue: config.maxQueue,
        engineTimeoutS: config.engineTimeoutS,
        build: async (runnable) => {
          if (!ready.services) throw new Error('a job was claimed before this node finished starting');
          return capabilities.handler(runnable, ready.services);
        },
        capable: () =>
          models
            .all()
            .filter((m) => runtime.readiness(m) === null && fitsBudget(runtime, m))
            .map(modelKey)
            .filter((k) => clusterSettings.models === null || clusterSettings.models.includes(k)),
        warm: () => runtime.warmModels(),
        extraFields: async (job) => {
          const webhook = await shared.outbox?.viewOf(job.id);
          return webhook ? { webhook } : {};
        },
        onTransition: async (job, view, tx) => shared.outbox?.transition(job, () => view, tx),
      })
    : null;
  if (cluster && clusterSettings) {
    // Longer than one delivery attempt may take, recording included.
    shared.outbox = new PgWebhookOutbox(cluster.pool, { leaseS: server.webhooks.timeoutS * 2 + 30, log: log.child({ component: 'webhooks' }) });
    shared.idempotency = new PgIdempotencyKeys(cluster.pool, { nodeId: clusterSettings.nodeId, ttlS: config.idempotencyTtlS });
  }
  const localFiles = new FileStore(db, config.filesRoot, config.tmpDir, log.child({ component: 'files' }));
  const jobs = new JobStore(db);
  const outbox = new WebhookOutbox(db);
  const webhookLog = log.child({ component: 'webhooks' });
  const key = webhookKey(server.webhooks, config.dataDir, log);
  // A cluster node delivers from the shared outbox (its dispatcher is made below, once the
  // cluster has started); the SQLite one is then left alone.
  const localWebhooks = clusterSettings ? null : new Webhooks(outbox, server.webhooks, config.netAllowPrivateUrls, key, webhookLog);
  // Before recovery: a job failed below still sends its `completed` webhook. The queue does not
  // exist yet then; a final job shows no queue position or ETA anyway.
  let viewJob = (job: JobRecord): Record<string, unknown> => ({ ...job, queue_position: null, eta_s: null });
  localWebhooks?.attach(jobs, (job) => viewJob(job));

  const interrupted = await jobs.failInterrupted(async (job) => {
    // The image was stored; only the success record was lost: the file's meta is the result.
    const file = await localFiles.artifactOf(job.id);
    return file ? { result: { file_id: file.file_id, image_bytes: file.size, ...file.meta }, artifacts: [file.file_id] } : null;
  });
  if (interrupted.failed > 0) log.warn({ jobs: interrupted.failed }, 'marked jobs left unfinished by the previous run as failed');
  if (interrupted.recovered > 0) log.warn({ jobs: interrupted.recovered }, 'completed jobs whose image was saved just before the previous run stopped');
  const { orphanBlobs } = await localFiles.reconcile();
  if (orphanBlobs > 0) log.warn({ blobs: orphanBlobs }, 'removed file blobs that were never recorded (interrupted writes)');
  const pruned = jobs.prune(config.jobRetentionS);
  if (pruned > 0) log.info({ jobs: pruned }, 'pruned finished jobs past KIAPI_JOB_RETENTION_S');
  const localIdempotency = new IdempotencyKeys(db, config.idempotencyTtlS);
  await localIdempotency.prune();

  const localQueue = new JobQueue(jobs, log.child({ component: 'queue' }), config.maxQueue, {
    eta: new EtaModel(db),
    extraFields: (job) => {
      // Synchronous: the queue's terminal event and the outbox's own transaction carry this view.
      const webhook = outbox.viewOfNow(job.id);
      return webhook ? { webhook } : {};
    },
  });
  viewJob = (job) => ({ ...localQueue.viewNow(job) });
  const files: FileStoreApi = cluster ? cluster.files : localFiles;
  const inputs = new InputResolver(files, config);
  const services: CapabilityServices = { config, files, inputs, models, runtime, log };
  ready.services = services;
  await cluster?.start();

  const queue: JobQueueApi = cluster ? cluster.queue : localQueue;
  const webhooks =
    localWebhooks ??
    new Webhooks(shared.outbox!, server.webhooks, config.netAllowPrivateUrls, key, webhookLog, {
      nodeId: clusterSettings!.nodeId,
      // A fallback only: other nodes' events wake this one through the outbox's LISTEN.
      idlePollMs: 5000,
    });
  await shared.outbox?.listen();
  const idempotency: IdempotencyApi = shared.idempotency ?? localIdempotency;
  const jobReader: JobReader = cluster ? cluster.jobs : jobs;

  const pruneTimer = setInterval(() => {
    const failed = (err: unknown) => log.error({ err }, 'job pruning failed');
    try {
      jobs.prune(config.jobRetentionS);
      if (cluster) void cluster.prune(config.jobRetentionS).catch((err: unknown) => log.warn({ err }, 'pruning the shared records failed'));
      webhooks.outbox.prune().catch(failed);
      // Expired keys already act as new (lookups skip them); this only keeps the table small.
      idempotency.prune().catch(failed);
    } catch (err) {
      failed(err);
    }
  }, Math.min(PRUNE_EVERY_MS, Math.max(1000, config.jobRetentionS * 1000)));
  pruneTimer.unref();
  const filePruneTimer = config.fileRetentionS === null ? null : startFilePruning(files, config.fileRetentionS, log);

  const state = { warm: config.warmup.length === 0 };
  if (!state.warm) void warmUp(config.warmup, models, runtime, log).finally(() => (state.warm = true));
  webhooks.start();

  return {
    config,
    server,
    log,
    version: VERSION,
    db,
    files,
    jobs: jobReader,
    queue,
    cluster,
    webhooks,
    idempotency,
    models,
    capabilities,
    runtime,
    services,
    state,
    async close() {
      clearInterval(pruneTimer);
      if (filePruneTimer) clearInterval(filePruneTimer);
      if (cluster) {
        // Before the shared pool closes. Events written after this (the running job's end) stay
        // in the shared outbox for the other nodes' dispatchers.
        await webhooks.close();
        await shared.outbox?.close();
        await cluster.close(config.shutdownGraceS * 1000);
      }
      await localQueue.close(config.shutdownGraceS * 1000);
      // After the queue: the jobs it failed on the way out have their events in the outbox.
      if (!cluster) await webhooks.close();
      await runtime.close();
      await checkpointer.close();
      db.close();
      lock.release();
    },
  };
}

/**
 * KIAPI_FILE_RETENTION_S: a sweep at a tenth of the retention (between 1 s and an hour), so a
 * file outlives its retention by at most that. The first sweep runs at once: a server started
 * after a long pause clears its backlog before it grows further. One sweep at a time.
 */
function startFilePruning(files: FileStoreApi, retentionS: number, log: Logger): NodeJS.Timeout {
  let running = false;
  const sweep = () => {
    if (running) return;
    running = true;
    files
      .prune(retentionS)
      .then((n) => {
        if (n > 0) log.info({ files: n }, 'deleted files past KIAPI_FILE_RETENTION_S');
      })
      .catch((err: unknown) => log.error({ err }, 'file pruning failed'))
      .finally(() => (running = false));
  };
  sweep();
  const timer = setInterval(sweep, Math.min(PRUNE_EVERY_MS, Math.max(1000, retentionS * 100)));
  timer.unref();
  return timer;
}

function modelKey(m: ModelSpec): string {
  return `${m.family}/${m.name}`;
}

/** Whether the model's default build can ever fit this node's memory budget. */
function fitsBudget(runtime: ModelRuntime, m: ModelSpec): boolean {
  try {
    runtime.assertFits(m);
    return true;
  } catch {
    return false;
  }
}

/** `auto`: the mflux worker when a real engine is installed, else the preview engine — said in one line. */
function selectEngine(config: Config, log: Logger, env: NodeJS.ProcessEnv): Engine {
  const venvPython = path.join(config.dataDir, 'venv', 'bin', 'python');
  const python = config.python ?? (fs.existsSync(venvPython) ? venvPython : null);
  if (config.engine === 'mflux' || (config.engine === 'auto' && python)) {
    if (!python) {
      throw new ConfigError([
        `KIAPI_ENGINE=mflux but no engine is installed: run \`kiapi activate\` (creates ${venvPython}) or set KIAPI_PYTHON to a Python where \`import mflux\` works`,
      ]);
    }
    log.info({ python }, `engine: mflux via ${python} (KIAPI_ENGINE=${config.engine})`);
    return new WorkerEngine({
      python,
      workerDir: path.join(PACKAGE_ROOT, 'worker'),
      // Weights load from the local cache only: a request never triggers a surprise download.
      env: { ...env, HF_HUB_OFFLINE: env.HF_HUB_OFFLINE ?? '1' },
      log: log.child({ component: 'engine' }),
      engineTimeoutS: config.engineTimeoutS,
    });
  }
  if (config.engine === 'auto') {
    log.info('engine: preview — no real engine is installed (run `kiapi activate` for mflux); images are previews drawn from the request');
  } else {
    log.info('engine: preview (KIAPI_ENGINE=preview); images are previews drawn from the request');
  }
  return new PreviewEngine({ stepMs: config.previewStepMs });
}

/** A warmup name must name one model; unknown or ambiguous names are reported, never guessed (docs/compatibility.md §11.23). */
function resolveWarmup(name: string, models: ModelRegistry): ModelSpec | string {
  const found = models.find(name);
  if (found.length === 0) return `unknown model '${name}' in KIAPI_WARMUP`;
  if (found.length > 1) {
    return `'${name}' in KIAPI_WARMUP matches ${found.map((m) => `${m.family}/${m.name}`).join(', ')}; write <family>/<name>`;
  }
  return found[0]!;
}

function checkWarmupNames(names: string[], models: ModelRegistry, log: Logger): void {
  for (const name of names) {
    const r = resolveWarmup(name, models);
    if (typeof r === 'string') log.warn(r);
  }
}

async function warmUp(names: string[], models: ModelRegistry, runtime: ModelRuntime, log: Logger): Promise<void> {
  for (const name of names) {
    const spec = resolveWarmup(name, models);
    if (typeof spec === 'string') continue;
    const missing = runtime.readiness(spec);
    if (missing) {
      log.warn(`warmup skipped for ${spec.family}/${spec.name}: not activated (${missing}); run: kiapi activate --model ${spec.name}`);
      continue;
    }
    try {
      await runtime.warm(spec);
      log.info(`warmup: ${spec.family}/${spec.name} loaded`);
    } catch (err) {
      log.warn({ err }, `warmup of ${spec.family}/${spec.name} failed`);
    }
  }
}
