/** Environment for running the real worker on the fake mflux package (worker/tests/fake_mflux). */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';

export const FAKE_MFLUX_PATH = path.join(PACKAGE_ROOT, 'worker', 'tests', 'fake_mflux');
export const WORKER_DIR = path.join(PACKAGE_ROOT, 'worker');

/** Model directories that count as activated (the settings accept local dirs), plus the fake's path. */
export function fakeMfluxEnv(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  const models: Record<string, string> = {};
  for (const [envName, sub] of [
    ['KIAPI_QWEN_IMAGE_MODEL', 'qwen-image'],
    ['KIAPI_QWEN_EDIT_MODEL', 'qwen-edit'],
    ['KIAPI_IDEOGRAM4_MODEL_REPO', 'ideogram4'],
  ] as const) {
    const p = path.join(dir, 'models', sub);
    fs.mkdirSync(p, { recursive: true });
    fs.writeFileSync(path.join(p, 'model_index.json'), '{}');
    models[envName] = p;
  }
  return {
    KIAPI_ENGINE: 'mflux',
    KIAPI_PYTHON: process.env.KIAPI_TEST_PYTHON ?? 'python3',
    PYTHONPATH: FAKE_MFLUX_PATH,
    HF_HOME: path.join(dir, 'hf'),
    // Below 0.5 GiB a measured load is noise, so the budget uses the specs' estimates (22 / 26 GB).
    FAKE_MFLUX_WEIGHT_GB: '0.1',
    FAKE_MFLUX_LOG: path.join(dir, 'mflux-calls.jsonl'),
    ...models,
    ...extra,
  };
}

export interface FakeCall {
  event: string;
  class: string;
  kwargs: Record<string, unknown>;
}

export function readFakeCalls(dir: string): FakeCall[] {
  const file = path.join(dir, 'mflux-calls.jsonl');
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as FakeCall);
}

let toolsPythonPath: string | null = null;

/**
 * The worker's tools venv python (pytest, ruff, numpy, Pillow; built on first use by
 * worker/tools-python.sh). Step previews need numpy and Pillow, which mflux brings but a bare
 * python3 lacks, so the preview tests run the worker on the fake mflux with this interpreter.
 */
export function toolsPython(): string {
  toolsPythonPath ??= execFileSync('bash', [path.join(WORKER_DIR, 'tools-python.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  return toolsPythonPath;
}
