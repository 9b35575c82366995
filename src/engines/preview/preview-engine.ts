/**
 * The built-in preview engine: no weights, deterministic, fast. It draws the request (prompt,
 * caption layout, init image, edit references) so the whole API can be used and tested without a
 * model; README.md, "The preview engine", says what it draws.
 */
import { setImmediate as yieldToEventLoop, setTimeout as sleep } from 'node:timers/promises';
import { CanceledError } from '../../core/errors.js';
import sharp from 'sharp';
import { VERSION } from '../../core/package-info.js';
import type { Engine, EngineIdentity, EngineInfo, EngineOutput, EnginePreview, ImageTask, LoadResult, ModelBuild, RunOptions } from '../engine.js';
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

  /** Its pictures are kiapi's own drawing code: kiapi's version is the engine's. */
  async identify(): Promise<EngineIdentity> {
    return { name: 'preview', version: VERSION, python: null, mflux: null, mlx: null, device: null };
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
    await this.denoise(total, opts, png);
    return {
      png,
      width: task.width,
      height: task.height,
      seed: task.seed,
      engineSeconds: (performance.now() - started) / 1000,
      warnings: [],
    };
  }

  /**
   * The simulated schedule: one progress event per step, a cancel check at every boundary, and a
   * preview when watchers ask for one (made beside the schedule, never holding up a step; while
   * one is being made the next is skipped).
   */
  private async denoise(total: number, opts: RunOptions, png: Buffer): Promise<void> {
    const { signal, onProgress } = opts;
    let previewing = false;
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
      const wanted = opts.previews?.current();
      if (wanted && opts.onPreview && step % wanted.every === 0 && !previewing) {
        previewing = true;
        const deliver = opts.onPreview;
        void partialPreview(png, step, total, wanted.maxSize)
          .then((p) => {
            if (!signal.aborted) deliver(p);
          })
          .catch(() => {}) // a preview that could not be made is simply not sent
          .finally(() => (previewing = false));
      }
    }
    if (signal.aborted) throw canceledAt(total, total);
  }
}

/**
 * The picture as it stands after `step` of `total`: the final render seen through blocks that get
 * finer as the steps advance (coarse at first, full detail at the end), as a small JPEG.
 */
export async function partialPreview(png: Buffer, step: number, total: number, maxSize: number): Promise<EnginePreview> {
  const started = performance.now();
  const meta = await sharp(png).metadata();
  const scale = Math.min(1, maxSize / Math.max(meta.width, meta.height));
  const width = Math.max(1, Math.round(meta.width * scale));
  const height = Math.max(1, Math.round(meta.height * scale));
  const fraction = total > 0 ? step / total : 1;
  const blocks = Math.max(2, Math.round(Math.max(width, height) * fraction * fraction));
  const bScale = Math.min(1, blocks / Math.max(width, height));
  const coarse = await sharp(png)
    .resize(Math.max(1, Math.round(width * bScale)), Math.max(1, Math.round(height * bScale)), { fit: 'fill' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  const jpeg = await sharp(coarse.data, { raw: { width: coarse.info.width, height: coarse.info.height, channels: coarse.info.channels } })
    .resize(width, height, { fit: 'fill', kernel: 'nearest' })
    .jpeg({ quality: 70 })
    .toBuffer();
  return { step, total, width, height, jpeg, costMs: performance.now() - started };
}
