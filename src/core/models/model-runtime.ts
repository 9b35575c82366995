/**
 * Runs tasks on the engine for the job queue: checks that a model can be served, keeps the
 * engine's progress flowing into the job, decides residency under the memory budget, and reports
 * memory for /health. One task or warmup at a time touches the engine (the device is one).
 */
import type { Logger } from 'pino';
import { modelBuild, type Engine, type EngineOutput, type ImageTask, type TaskModel } from '../../engines/engine.js';
import { UnavailableError } from '../errors.js';
import type { JobContext } from '../jobs/job-queue.js';
import type { BuildSizes } from './build-sizes.js';
import type { ModelSpec } from './model-spec.js';
import { Residency, type ResidentModelStats } from './residency.js';

export type { ResidentModelStats } from './residency.js';

export interface MemoryStats {
  loaded: ResidentModelStats[];
  resident_gb: number;
  budget_gb: number;
}

export interface RuntimeOptions {
  budgetGb: number;
  defaultTtlS: number;
  ttlSweepIntervalS: number;
  log: Logger;
  /**
   * Where `spec`'s weights are: the directory the engine must load (for a Hub repo, the snapshot
   * of the revision the engine expects), or null with the reason it cannot be served yet.
   */
  locate?: (spec: ModelSpec) => { path: string | null; revision?: string | null; detail: string };
  /** Measured build sizes, kept across restarts. */
  sizes?: BuildSizes;
}

export class ModelRuntime {
  private readonly residency: Residency | null;
  private lock: Promise<void> = Promise.resolve();
  private sweepTimer: NodeJS.Timeout | null = null;

  /** The model of the latest run (see warmModels). */
  private lastModel: string | null = null;

  constructor(
    readonly engine: Engine,
    private readonly opts: RuntimeOptions,
  ) {
    this.residency = engine.holdsWeights
      ? new Residency(engine, { budgetGb: opts.budgetGb, defaultTtlS: opts.defaultTtlS, log: opts.log, ...(opts.sizes ? { sizes: opts.sizes } : {}) })
      : null;
    if (this.residency && opts.ttlSweepIntervalS > 0) {
      this.sweepTimer = setInterval(() => void this.exclusive(() => this.residency!.sweep()), opts.ttlSweepIntervalS * 1000);
      this.sweepTimer.unref();
    }
  }

  /** Throws 503 with the command that fixes it when the model cannot be served. */
  assertReady(spec: ModelSpec, task?: Pick<ImageTask, 'model' | 'loras'>): void {
    this.assertFits(spec, task);
    this.weightsOf(spec);
  }

  /**
   * Where `spec`'s weights are (undefined when the engine loads none); throws 503 with the command
   * that fixes it when they are not there.
   */
  private weightsOf(spec: ModelSpec): { path: string; revision: string | null } | undefined {
    const where = this.where(spec);
    if (!where) return undefined;
    if (where.path === null) {
      throw new UnavailableError(
        `model '${spec.name}' (${spec.family}) is not activated: ${where.detail}. Run: kiapi activate --model ${spec.name}`,
      );
    }
    return { path: where.path, revision: where.revision ?? null };
  }

  /** One look at `spec`'s weights on disk; null when the engine loads none (the preview engine). */
  private where(spec: ModelSpec): ReturnType<NonNullable<RuntimeOptions['locate']>> | null {
    return this.engine.holdsWeights && this.opts.locate ? this.opts.locate(spec) : null;
  }

  /**
   * A build that can never fit the budget is refused before it is queued, sync and async alike;
   * it is judged by its measured size once it was ever loaded.
   */
  assertFits(spec: ModelSpec, task?: Pick<ImageTask, 'model' | 'loras'>): void {
    const model = task?.model ?? { family: spec.family, name: spec.name, repo: spec.repo, quantize: spec.defaultQuantize };
    this.residency?.assertFits(spec, modelBuild(model, task?.loras ?? []).key);
  }

  /** Why `spec` cannot be served yet (weights not activated), or null when it can. */
  readiness(spec: ModelSpec): string | null {
    const where = this.where(spec);
    return where && where.path === null ? where.detail : null;
  }

  /**
   * The Hub commit the engine loads `spec` from right now (the snapshot readiness found), for a
   * job's reproducibility record. Null when the engine loads no weights (the preview engine), the
   * weights are a local directory, or they are not there.
   */
  revisionOf(spec: ModelSpec): string | null {
    return this.where(spec)?.revision ?? null;
  }

  /** The model as the engine must load it: the local directory readiness judged, not the repo name. */
  private located(spec: ModelSpec, model: TaskModel): TaskModel {
    const path = this.where(spec)?.path;
    return path ? { ...model, repo: path } : model;
  }

  /**
   * Runs `task` on the engine. The output's `revision` is the Hub commit of the weights this run
   * found (null when the engine loads none or they are a local directory): the reproducibility
   * record's, looked up once with the readiness check rather than again after the run.
   */
  async run(spec: ModelSpec, task: ImageTask, ctx: JobContext, outputPath: string): Promise<EngineOutput & { revision: string | null }> {
    return this.exclusive(async () => {
      // Re-checked at run time: the weights may have been removed while the job was queued.
      this.assertFits(spec, task);
      const weights = this.weightsOf(spec);
      const located = { ...task, model: weights ? { ...task.model, repo: weights.path } : task.model };
      this.lastModel = `${spec.family}/${spec.name}`;
      const build = modelBuild(located.model, located.loras);
      const lease = await this.residency?.acquire(spec, build, () => ctx.progress(0, 'loading'));
      try {
        const out = await this.engine.run(located, {
          buildKey: build.key,
          outputPath,
          signal: ctx.signal,
          onProgress: (p) => ctx.progress(p.total > 0 ? p.step / p.total : 0, p.label, { step: p.step, total: p.total }),
          previews: ctx.previews,
          onPreview: (p) => ctx.preview(p),
        });
        return { ...out, revision: weights?.revision ?? null };
      } finally {
        if (lease) this.residency?.release(lease);
      }
    });
  }

  /** Loads a model ahead of use (KIAPI_WARMUP). */
  async warm(spec: ModelSpec): Promise<void> {
    await this.exclusive(async () => {
      const model = { family: spec.family, name: spec.name, repo: spec.repo, quantize: spec.defaultQuantize };
      const build = modelBuild(this.located(spec, model), []);
      const lease = await this.residency?.acquire(spec, build);
      if (lease) this.residency?.release(lease);
    });
  }

  /**
   * The models (`family/name`) this node holds ready: those with a resident build; for an engine
   * that loads no weights (the preview engine), the model of the last run, which is what a real
   * engine with one model resident looks like to the cluster's placement.
   */
  warmModels(): string[] {
    if (this.residency) return [...new Set(this.residency.stats().loaded.map((m) => `${m.family}/${m.name}`))];
    return this.lastModel ? [this.lastModel] : [];
  }

  stats(): MemoryStats {
    return this.residency?.stats() ?? { loaded: [], resident_gb: 0, budget_gb: this.opts.budgetGb };
  }

  loads(key: string): number {
    return this.residency?.loads(key) ?? 0;
  }

  async close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await this.exclusive(async () => {
      await this.residency?.evictAll();
    });
    await this.engine.close();
  }

  /** Serialises engine work: jobs, warmups and TTL sweeps never overlap. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.lock.then(fn);
    this.lock = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
