/**
 * The built-in preview engine: no weights, deterministic, fast. It draws the request (prompt,
 * caption layout, init image, edit references) so the whole API can be used and tested without a
 * model; README.md, "The preview engine", says what it draws.
 */
import { setImmediate as yieldToEventLoop, setTimeout as sleep } from 'node:timers/promises';
import { CanceledError } from '../../core/errors.js';
import type { Engine, EngineInfo, EngineOutput, EngineProgress, ImageTask, LoadResult, ModelBuild, RunOptions } from '../engine.js';
import { renderPreviewPng } from './render.js';

export interface PreviewEngineOptions {
  /** Sleep per denoising step in ms (KIAPI_PREVIEW_STEP_MS), to make progress and cancel observable. */
  stepMs: number;
}

const STEP_LABEL = 'denoising';

function canceledAt(done: number, total: number): CanceledError {
  return new CanceledError(`preview stopped at step ${done}/${total}`);
}

export class PreviewEngine implements Engine {
  private readonly stepMs: number;

  constructor(opts: PreviewEngineOptions) {
    this.stepMs = Number.isFinite(opts.stepMs) && opts.stepMs > 0 ? opts.stepMs : 0;
  }

  describe(): EngineInfo {
    return { name: 'preview', detail: 'built-in preview engine (no model weights; draws the request)' };
  }

  /** No weights: nothing for the memory budget to account for. */
  readonly holdsWeights = false;

  async load(_build: ModelBuild): Promise<LoadResult> {
    return { weightGb: null, seconds: 0 };
  }

  onReset(_listener: () => void): void {}

  async unload(_key: string): Promise<void> {}

  async close(): Promise<void> {}

  async run(task: ImageTask, opts: RunOptions): Promise<EngineOutput> {
    const started = performance.now();
    const total = Math.max(0, Math.floor(task.steps));
    if (opts.signal.aborted) throw canceledAt(0, total);
    // Rendering first means a bad input file fails the job before any simulated work.
    const png = await renderPreviewPng(task);
    await this.denoise(total, opts.onProgress, opts.signal);
    return {
      png,
      width: task.width,
      height: task.height,
      seed: task.seed,
      engineSeconds: (performance.now() - started) / 1000,
      warnings: [],
    };
  }

  /** The simulated schedule: one progress event per step, a cancel check at every boundary. */
  private async denoise(total: number, onProgress: (p: EngineProgress) => void, signal: AbortSignal): Promise<void> {
    for (let step = 1; step <= total; step++) {
      if (signal.aborted) throw canceledAt(step - 1, total);
      try {
        // Even without a delay, yielding lets a cancel from another task land between steps.
        if (this.stepMs > 0) await sleep(this.stepMs, undefined, { signal });
        else await yieldToEventLoop(undefined, { signal });
      } catch (err) {
        if (signal.aborted) throw canceledAt(step - 1, total);
        throw err;
      }
      onProgress({ step, total, label: STEP_LABEL });
    }
    if (signal.aborted) throw canceledAt(total, total);
  }
}
