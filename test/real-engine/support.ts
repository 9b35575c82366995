/**
 * The real-engine lane's fixtures: the engine venv built from the lock and the tiny checkpoints
 * made by `test/real-engine/run.sh` (which sets the variables read here), and the environment a
 * kiapi server needs to run on them. Every test in this folder needs the real engine (mflux + MLX);
 * the fake mflux is used only by test/integration for what a real engine cannot do on demand.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import {
  buildKey,
  modelBuild,
  type Engine,
  type EngineOutput,
  type EnginePreview,
  type ImageTask,
  type LocalInput,
  type PreviewDemand,
  type PreviewRequest,
  type TaskModel,
} from '../../src/engines/engine.js';
import { WorkerEngine } from '../../src/engines/worker/worker-engine.js';
import { WORKER_DIR } from '../support/fake-mflux.js';
import { startServer, tempDir, type TestServer } from '../support/server.js';

export const LANE_DIR = path.join(PACKAGE_ROOT, 'test', 'real-engine');

export interface TinyModel {
  repo: string;
  revision: string;
  snapshot: string;
}

export interface RealEngine {
  /** The engine venv's python (mflux + MLX from the lock). */
  python: string;
  /** A Hugging Face hub cache holding the tiny checkpoints; tests must not change it. */
  hub: string;
  models: TinyModel[];
}

let cached: RealEngine | null = null;

export function realEngine(): RealEngine {
  if (cached) return cached;
  const python = process.env.KIAPI_REAL_ENGINE_PYTHON;
  const hub = process.env.KIAPI_TINY_HUB;
  const modelsJson = process.env.KIAPI_TINY_MODELS_JSON;
  if (!python || !hub || !modelsJson) {
    throw new Error('the real-engine tests need the engine venv and tiny models: run them with `bash test/real-engine/run.sh`');
  }
  const report = JSON.parse(fs.readFileSync(modelsJson, 'utf8')) as { models: TinyModel[] };
  cached = { python, hub, models: report.models };
  return cached;
}

/**
 * What a server (or the CLI) needs to run on the real engine and the tiny models: the venv's
 * python as KIAPI_PYTHON, the tiny-model patches on PYTHONPATH (the worker itself is unchanged),
 * the tiny hub cache, and full precision by default (quantized builds are tested on purpose).
 */
export function realEngineEnv(hub = realEngine().hub, extra: Record<string, string> = {}): Record<string, string> {
  return {
    KIAPI_ENGINE: 'mflux',
    KIAPI_PYTHON: realEngine().python,
    PYTHONPATH: [path.join(LANE_DIR, 'site'), LANE_DIR].join(path.delimiter),
    KIAPI_TINY_MODELS: '1',
    HF_HUB_CACHE: hub,
    HF_HUB_OFFLINE: '1',
    KIAPI_MEMORY_LIMIT_GB: '64',
    KIAPI_QWEN_DEFAULT_QUANTIZE: 'none',
    KIAPI_ENGINE_TIMEOUT_S: '300',
    ...extra,
  };
}

export async function withRealServer<T>(
  extra: Record<string, string>,
  fn: (s: TestServer) => Promise<T>,
  opts: { dataDir?: string; logStream?: NodeJS.WritableStream } = {},
): Promise<T> {
  const server = await startServer(realEngineEnv(undefined, extra), opts);
  try {
    return await fn(server);
  } finally {
    await server.close({ keepData: Boolean(opts.dataDir) });
  }
}

/** A tiny Qwen-Image LoRA with real key names (`noMatch`: names no layer of the model has). */
export function makeLora(dir: string, seed: number, opts: { noMatch?: boolean } = {}): string {
  const out = path.join(dir, `lora-${seed}${opts.noMatch ? '-nomatch' : ''}.safetensors`);
  execFileSync(
    realEngine().python,
    ['-m', 'tiny_models', 'lora', '--out', out, '--seed', String(seed), ...(opts.noMatch ? ['--no-match'] : [])],
    { env: { ...process.env, PYTHONPATH: LANE_DIR }, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  return out;
}

export async function solidPng(color: string, size = 64): Promise<Buffer> {
  return sharp({ create: { width: size, height: size, channels: 3, background: color } }).png().toBuffer();
}

/** Raw RGB pixels, to compare images by content rather than by encoded bytes. */
export async function pixels(png: Buffer): Promise<Buffer> {
  return sharp(png).removeAlpha().raw().toBuffer();
}

export { tempDir };

/** A worker engine on the real engine and the tiny checkpoints (what a server would build). */
export function realWorkerEngine(extraEnv: Record<string, string> = {}): WorkerEngine {
  return new WorkerEngine({
    python: realEngine().python,
    workerDir: WORKER_DIR,
    env: { ...process.env, ...realEngineEnv(), ...extraEnv },
    log: pino({ level: process.env.KIAPI_TEST_LOG_LEVEL ?? 'silent' }),
    engineTimeoutS: 300,
  });
}

export const TINY_MODELS: Record<'qwen.generate' | 'qwen.edit' | 'ideogram4.generate', TaskModel> = {
  'qwen.generate': { family: 'qwen', name: 'image', repo: 'Qwen/Qwen-Image', quantize: null },
  'qwen.edit': { family: 'qwen', name: 'edit-2509', repo: 'Qwen/Qwen-Image-Edit-2509', quantize: null },
  'ideogram4.generate': { family: 'ideogram4', name: 'fp8', repo: 'ideogram-ai/ideogram-4-fp8', quantize: null },
};

export interface WatchedRun {
  output: EngineOutput;
  /** The final image as written by the engine. */
  png: Buffer;
  previews: EnginePreview[];
  /** performance.now() at each progress event, in step order. */
  stepTimes: number[];
}

/**
 * Runs `task` on a resident build with the preview demand `demand` (null: nobody watches) and
 * keeps what a watcher would have seen. Shared by the real-engine preview tests and the bench.
 */
export async function runWatched(engine: Engine, task: ImageTask, dir: string, demand: PreviewRequest | null): Promise<WatchedRun> {
  const previews: EnginePreview[] = [];
  const stepTimes: number[] = [];
  const outputPath = path.join(dir, `out-${Date.now()}-${Math.random().toString(36).slice(2)}.png`);
  const fixed: PreviewDemand = { current: () => demand, subscribe: () => () => {} };
  const output = await engine.run(task, {
    buildKey: buildKey(task.model, task.loras),
    outputPath,
    signal: new AbortController().signal,
    onProgress: () => stepTimes.push(performance.now()),
    previews: fixed,
    onPreview: (p) => previews.push(p),
  });
  const png = output.png ?? fs.readFileSync(outputPath);
  fs.rmSync(outputPath, { force: true });
  return { output, png, previews, stepTimes };
}

/** Mean absolute difference per channel (0–255) between two images, both resized to `w`×`h`. */
export async function meanAbsDiff(a: Buffer, b: Buffer, w: number, h: number): Promise<number> {
  const [x, y] = await Promise.all([a, b].map((img) => sharp(img).removeAlpha().resize(w, h, { fit: 'fill' }).raw().toBuffer()));
  let sum = 0;
  for (let i = 0; i < x!.length; i++) sum += Math.abs(x![i]! - y![i]!);
  return sum / x!.length;
}

/**
 * Pearson correlation of two images' pixels, per colour channel and averaged, both resized to
 * `w`×`h`: how much of one's picture the other shows, whatever its brightness, contrast and
 * colour balance (centring each channel on its own keeps the colour balance from counting).
 */
export async function correlation(a: Buffer, b: Buffer, w: number, h: number): Promise<number> {
  const [x, y] = await Promise.all([a, b].map((img) => sharp(img).removeAlpha().resize(w, h, { fit: 'fill' }).raw().toBuffer()));
  let total = 0;
  for (let c = 0; c < 3; c++) {
    const xs: number[] = [];
    const ys: number[] = [];
    for (let i = c; i < x!.length; i += 3) {
      xs.push(x![i]!);
      ys.push(y![i]!);
    }
    const mx = xs.reduce((s, v) => s + v, 0) / xs.length;
    const my = ys.reduce((s, v) => s + v, 0) / ys.length;
    let sxy = 0;
    let sxx = 0;
    let syy = 0;
    for (let i = 0; i < xs.length; i++) {
      sxy += (xs[i]! - mx) * (ys[i]! - my);
      sxx += (xs[i]! - mx) ** 2;
      syy += (ys[i]! - my) ** 2;
    }
    total += sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : 0;
  }
  return total / 3;
}

/**
 * What step previews cost on the real engine: per family, a fresh build's first watched run (its
 * first preview includes the one-off fit of the projection), then runs nobody watches alternated
 * with the same runs watched at every step. For the bench (`run.sh cpu --bench`).
 */
export async function measurePreviewCost(opts: { maxSize?: number; runs?: number } = {}): Promise<Record<string, string>> {
  const maxSize = opts.maxSize ?? 256;
  const runs = opts.runs ?? 7;
  const dir = tempDir('kiapi-preview-cost-');
  const engine = realWorkerEngine();
  const figures: Record<string, string> = {};
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  // Time between consecutive steps as the server sees them (progress events): one denoising step,
  // plus the preview made after it when watched.
  const intervals = (r: WatchedRun) => r.stepTimes.slice(1).map((t, i) => t - r.stepTimes[i]!);
  try {
    const tasks: [string, ImageTask][] = [
      ['qwen.generate 128² 6 steps', previewTask('qwen.generate', 128, 128, 6)],
      ['ideogram4.generate 256² 12 steps', previewTask('ideogram4.generate', 256, 256, 12)],
    ];
    for (const [label, task] of tasks) {
      await engine.load(modelBuild(task.model, task.loras));
      const first = await runWatched(engine, task, dir, { every: 1, maxSize });
      const fitMs = first.previews[0]!.costMs;
      const plainSteps: number[] = [];
      const watchedSteps: number[] = [];
      const pairRatios: number[] = [];
      const perPreview: number[] = [];
      // Alternate unwatched and watched runs, so drift in the machine's speed hits both alike.
      for (let i = 0; i < runs; i++) {
        const a = await runWatched(engine, { ...task, seed: i }, dir, null);
        plainSteps.push(...intervals(a));
        const b = await runWatched(engine, { ...task, seed: i }, dir, { every: 1, maxSize });
        watchedSteps.push(...intervals(b));
        pairRatios.push(b.output.engineSeconds / a.output.engineSeconds);
        perPreview.push(...b.previews.map((p) => p.costMs));
      }
      const step = median(plainSteps);
      const cost = median(perPreview);
      figures[`${label}: first preview of a build incl. projection fit, ms`] = fitMs.toFixed(0);
      figures[`${label}: preview cost, ms (median of ${perPreview.length})`] = cost.toFixed(2);
      figures[`${label}: step interval unwatched, ms (median)`] = step.toFixed(1);
      figures[`${label}: preview cost / step`] = (cost / step).toFixed(4);
      figures[`${label}: step interval watched every step / unwatched (medians)`] = (median(watchedSteps) / step).toFixed(3);
      figures[`${label}: generate_image watched every step / unwatched (median of ${runs} pairs)`] = median(pairRatios).toFixed(3);
      await engine.unload(modelBuild(task.model, task.loras).key);
    }
    return figures;
  } finally {
    await engine.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A small task for one of the tiny models (Ideogram 4 sizes start at 256). */
export function previewTask(operation: keyof typeof TINY_MODELS, width: number, height: number, steps: number, images: LocalInput[] = []): ImageTask {
  return {
    operation,
    model: TINY_MODELS[operation],
    prompt: 'a red fox in the snow',
    negativePrompt: null,
    width,
    height,
    seed: 3,
    steps,
    guidance: operation === 'ideogram4.generate' ? null : 4,
    scheduler: operation === 'ideogram4.generate' ? undefined : 'linear',
    preset: operation === 'ideogram4.generate' ? 'V4_TURBO_12' : undefined,
    loras: [],
    images: operation === 'qwen.edit' ? images : undefined,
  };
}
