/**
 * Runs tasks on the engine for the job queue: checks that a model can be served, keeps the
 * engine's progress flowing into the job, decides residency under the memory budget, and reports
 * memory for /health. One task or warmup at a time touches the engine (the device is one).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { Logger } from 'pino';
import type { Engine, EngineOutput, ImageTask, LoraInput } from '../../engines/engine.js';
import { UnavailableError } from '../errors.js';
import type { JobContext } from '../jobs/job-queue.js';
import type { ModelSpec } from './model-spec.js';
import { Residency } from './residency.js';

export interface ResidentModelStats {
  name: string;
  family: string;
  domain: string;
  repo: string;
  key: string;
  weight_gb: number;
  priority: number;
  idle_s: number;
  ttl_s: number | null;
  expires_in_s: number | null;
  loads: number;
  in_use: boolean;
}

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
  /** Why `spec` cannot be served yet (e.g. weights not activated), or null when it can. */
  readiness?: (spec: ModelSpec) => string | null;
}

export class ModelRuntime {
  private readonly residency: Residency | null;
  private lock: Promise<void> = Promise.resolve();
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly digests = new Map<string, string>();

  constructor(
    readonly engine: Engine,
    private readonly opts: RuntimeOptions,
  ) {
    this.residency = engine.holdsWeights
      ? new Residency(engine, { budgetGb: opts.budgetGb, defaultTtlS: opts.defaultTtlS, log: opts.log })
      : null;
    if (this.residency && opts.ttlSweepIntervalS > 0) {
      this.sweepTimer = setInterval(() => void this.exclusive(() => this.residency!.sweep()), opts.ttlSweepIntervalS * 1000);
      this.sweepTimer.unref();
    }
  }

  /** Throws 503 with the command that fixes it when the model cannot be served. */
  assertReady(spec: ModelSpec): void {
    this.assertFits(spec);
    const missing = this.readiness(spec);
    if (missing) {
      throw new UnavailableError(
        `model '${spec.name}' (${spec.family}) is not activated: ${missing}. Run: kiapi activate --model ${spec.name}`,
      );
    }
  }

  /** A build that can never fit the budget is refused before it is queued, sync and async alike. */
  assertFits(spec: ModelSpec): void {
    if (!this.residency) return;
    const need = spec.weightGb + spec.peakHeadroomGb;
    if (need > this.opts.budgetGb) {
      throw new UnavailableError(
        `model '${spec.name}' needs ~${need.toFixed(1)} GB (weights ${spec.weightGb.toFixed(1)} + headroom ${spec.peakHeadroomGb.toFixed(1)}) but the memory budget is ${this.opts.budgetGb.toFixed(1)} GB; raise KIAPI_MEMORY_LIMIT_GB if the machine has the memory`,
      );
    }
  }

  readiness(spec: ModelSpec): string | null {
    return this.engine.holdsWeights ? (this.opts.readiness?.(spec) ?? null) : null;
  }

  async run(spec: ModelSpec, task: ImageTask, ctx: JobContext, outputPath: string): Promise<EngineOutput> {
    return this.exclusive(async () => {
      // Re-checked at run time: the weights may have been removed while the job was queued.
      this.assertReady(spec);
      const withDigests: ImageTask = { ...task, loras: await this.digestLoras(task.loras) };
      const lease = await this.residency?.acquire(spec, withDigests.model, withDigests.loras, () => ctx.progress(0, 'loading'));
      try {
        return await this.engine.run(withDigests, {
          outputPath,
          signal: ctx.signal,
          onProgress: (p) => ctx.progress(p.total > 0 ? p.step / p.total : 0, p.label),
        });
      } finally {
        if (lease) this.residency?.release(lease);
      }
    });
  }

  /** Loads a model ahead of use (KIAPI_WARMUP). */
  async warm(spec: ModelSpec): Promise<void> {
    await this.exclusive(async () => {
      const lease = await this.residency?.acquire(
        spec,
        { family: spec.family, name: spec.name, repo: spec.repo, quantize: spec.defaultQuantize },
        [],
      );
      if (lease) this.residency?.release(lease);
    });
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

  /**
   * A LoRA is identified by its content, so the same adapter uploaded twice (or fetched from a
   * URL each time) reuses one resident build. Cached by path, size and mtime.
   */
  private async digestLoras(loras: LoraInput[]): Promise<LoraInput[]> {
    return Promise.all(
      loras.map(async (l) => {
        const st = await fs.promises.stat(l.path);
        const cacheKey = `${l.path}:${st.size}:${st.mtimeMs}`;
        let digest = this.digests.get(cacheKey);
        if (!digest) {
          const hash = createHash('sha256');
          for await (const chunk of fs.createReadStream(l.path)) hash.update(chunk as Buffer);
          digest = hash.digest('hex').slice(0, 16);
          this.digests.set(cacheKey, digest);
        }
        return { ...l, digest };
      }),
    );
  }
}
