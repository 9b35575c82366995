/**
 * The composition root: opens the database and stores, recovers from an earlier crash, picks the
 * engine, registers the families, and hands routes one object. Tests build it on temp dirs.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { CapabilityRegistry, type CapabilityServices } from '../core/capability.js';
import { defaultMemoryBudgetGb, type Config } from '../core/config.js';
import { openDb, type Db } from '../core/db.js';
import { FileStore } from '../core/files/file-store.js';
import { InputResolver } from '../core/files/input-resolver.js';
import { JobQueue } from '../core/jobs/job-queue.js';
import { JobStore } from '../core/jobs/job-store.js';
import { ModelRegistry } from '../core/models/model-spec.js';
import { ModelRuntime } from '../core/models/model-runtime.js';
import { VERSION } from '../core/package-info.js';
import type { Engine } from '../engines/engine.js';
import { PreviewEngine } from '../engines/preview/preview-engine.js';
import { registerCapabilities } from '../capabilities/index.js';

export interface AppContext {
  config: Config;
  log: Logger;
  version: string;
  db: Db;
  files: FileStore;
  jobs: JobStore;
  queue: JobQueue;
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
  fs.mkdirSync(config.dataDir, { recursive: true });
  const db = openDb(config.dataDir);
  const files = new FileStore(db, config.filesRoot, config.tmpDir, log.child({ component: 'files' }));
  const jobs = new JobStore(db);

  const interrupted = jobs.failInterrupted();
  if (interrupted > 0) log.warn({ jobs: interrupted }, 'marked jobs left unfinished by the previous run as failed');
  const { orphanBlobs } = await files.reconcile();
  if (orphanBlobs > 0) log.warn({ blobs: orphanBlobs }, 'removed file blobs that were never recorded (interrupted writes)');
  const pruned = jobs.prune(config.jobRetentionS);
  if (pruned > 0) log.info({ jobs: pruned }, 'pruned finished jobs past KIAPI_JOB_RETENTION_S');

  const models = new ModelRegistry();
  const capabilities = new CapabilityRegistry(models);
  registerCapabilities(capabilities, opts.env ?? process.env);

  const engine = opts.engine ?? selectEngine(config, log);
  const runtime = new ModelRuntime(engine, { budgetGb: config.memoryLimitGb ?? defaultMemoryBudgetGb() });
  const queue = new JobQueue(jobs, log.child({ component: 'queue' }), config.maxQueue);
  const inputs = new InputResolver(files, config);
  const services: CapabilityServices = { config, files, inputs, models, runtime, log };

  const pruneTimer = setInterval(() => {
    try {
      jobs.prune(config.jobRetentionS);
    } catch (err) {
      log.error({ err }, 'job pruning failed');
    }
  }, Math.min(PRUNE_EVERY_MS, Math.max(1000, config.jobRetentionS * 1000)));
  pruneTimer.unref();

  return {
    config,
    log,
    version: VERSION,
    db,
    files,
    jobs,
    queue,
    models,
    capabilities,
    runtime,
    services,
    state: { warm: true },
    async close() {
      clearInterval(pruneTimer);
      await queue.close(config.shutdownGraceS * 1000);
      await runtime.close();
      db.close();
    },
  };
}

/** `auto`: the mflux worker when a real engine is installed, else the preview engine — said in one line. */
function selectEngine(config: Config, log: Logger): Engine {
  const venv = path.join(config.dataDir, 'venv');
  const realInstalled = config.python !== null || fs.existsSync(venv);
  if (config.engine === 'mflux' || (config.engine === 'auto' && realInstalled)) {
    throw new Error('the mflux engine is not available in this build yet; set KIAPI_ENGINE=preview');
  }
  if (config.engine === 'auto') {
    log.info('engine: preview — no real engine is installed (run `kiapi activate` for mflux); images are previews drawn from the request');
  } else {
    log.info('engine: preview (KIAPI_ENGINE=preview); images are previews drawn from the request');
  }
  return new PreviewEngine({ stepMs: config.previewStepMs });
}
