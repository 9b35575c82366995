/**
 * The real-engine lane's fixtures: the engine venv built from the lock and the tiny checkpoints
 * made by `test/real-engine/run.sh` (which sets the variables read here), and the environment a
 * kiapi server needs to run on them. Every test in this folder needs the real engine (mflux + MLX);
 * the fake mflux is used only by test/integration for what a real engine cannot do on demand.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
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
