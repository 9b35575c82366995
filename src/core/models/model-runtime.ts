/**
 * Runs tasks on the engine for the job queue: checks that a model can be served, keeps the
 * engine's progress flowing into the job, and reports memory for /health. Residency (which
 * models stay loaded under the memory budget) is decided here, never by the engine.
 */
import type { Engine, EngineOutput, ImageTask } from '../../engines/engine.js';
import { UnavailableError } from '../errors.js';
import type { JobContext } from '../jobs/job-queue.js';
import type { ModelSpec } from './model-spec.js';

export interface ResidentModelStats {
  name: string;
  family: string;
  domain: string;
  repo: string;
  weight_gb: number;
  priority: number;
  idle_s: number;
  ttl_s: number | null;
  expires_in_s: number | null;
  loads: number;
}

export interface MemoryStats {
  loaded: ResidentModelStats[];
  resident_gb: number;
  budget_gb: number;
}

export interface RuntimeOptions {
  budgetGb: number;
  /** Why `spec` cannot be served yet (e.g. weights not activated), or null when it can. */
  readiness?: (spec: ModelSpec) => string | null;
}

export class ModelRuntime {
  constructor(
    readonly engine: Engine,
    private readonly opts: RuntimeOptions,
  ) {}

  /** Throws 503 with the command that fixes it when the model cannot be served. */
  assertReady(spec: ModelSpec): void {
    const missing = this.opts.readiness?.(spec) ?? null;
    if (missing) {
      throw new UnavailableError(
        `model '${spec.name}' (${spec.family}) is not activated: ${missing}. Run: kiapi activate --model ${spec.name}`,
      );
    }
  }

  async run(_spec: ModelSpec, task: ImageTask, ctx: JobContext, outputPath: string): Promise<EngineOutput> {
    return this.engine.run(task, {
      outputPath,
      signal: ctx.signal,
      onProgress: (p) => ctx.progress(p.total > 0 ? p.step / p.total : 0, p.label),
    });
  }

  stats(): MemoryStats {
    return { loaded: [], resident_gb: 0, budget_gb: this.opts.budgetGb };
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}
