/**
 * The engine's venv in the data dir (`<data dir>/venv`): made with `python -m venv`, filled with the
 * pinned mflux, the platform's MLX build and the worker package, and probed by importing mflux the
 * way the worker does. The server picks `<data dir>/venv/bin/python` as its engine when it exists.
 *
 * The requirement strings come from `worker/kiapi_worker/pins.py` (run, not parsed), so the
 * versions live in one place.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SetupError } from '../errors.js';
import type { BasePython } from './python.js';
import { runProcess, tail, workerPythonPath } from './process.js';
import type { PlatformKind } from './setup-settings.js';

export interface EnginePaths {
  dir: string;
  python: string;
}

export function enginePaths(dataDir: string): EnginePaths {
  const dir = path.join(dataDir, 'venv');
  return { dir, python: path.join(dir, 'bin', 'python') };
}

export interface Pins {
  mflux: string;
  mflux_version: string;
  huggingface_hub: string;
  platform: Record<string, string[]>;
}

/** The requirements pins.py names, read by running it with any Python (it is stdlib-only). */
export async function readPins(python: string, workerDir: string, env: NodeJS.ProcessEnv = process.env): Promise<Pins> {
  const r = await runProcess(python, ['-m', 'kiapi_worker.pins'], {
    env: { ...env, PYTHONPATH: workerPythonPath(workerDir, env) },
    timeoutMs: 60_000,
  });
  if (r.code !== 0) throw new SetupError(`cannot read the engine pins from ${workerDir}: ${tail(r.stderr, 5)}`);
  return JSON.parse(r.stdout.trim()) as Pins;
}

/** The pip requirements of the engine on a platform: mflux, huggingface_hub, MLX, the worker. */
export function engineRequirements(pins: Pins, platform: PlatformKind, workerDir: string): string[] {
  return [pins.mflux, pins.huggingface_hub, ...(pins.platform[platform] ?? []), workerDir];
}

export interface EngineProbe {
  ok: boolean;
  /** Why not, when not ok. */
  reason?: string;
  python?: string;
  mflux?: string;
  mlx?: string;
  device?: string;
  huggingface_hub?: string | null;
  worker?: string;
  worker_installed?: string | null;
}

/** Imports mflux in `python` exactly as the worker would (`python -m kiapi_worker.probe`). */
export async function probeEngine(python: string, workerDir: string, env: NodeJS.ProcessEnv = process.env): Promise<EngineProbe> {
  try {
    const r = await runProcess(python, ['-m', 'kiapi_worker.probe'], {
      env: { ...env, PYTHONPATH: workerPythonPath(workerDir, env) },
      // Importing the real mflux loads torch and MLX: seconds, sometimes tens of them on a cold disk.
      timeoutMs: 180_000,
    });
    const last = r.stdout.trim().split('\n').pop() ?? '';
    if (r.code === 0 && last.startsWith('{')) return JSON.parse(last) as EngineProbe;
    return { ok: false, reason: tail(r.stderr, 3) || `exit ${r.code ?? r.signal}` };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, reason: code === 'ENOENT' ? `${python} does not exist` : (err as Error).message };
  }
}

/** True when the venv already holds what activation would install (so it can skip pip). */
export function engineUpToDate(probe: EngineProbe, pins: Pins): boolean {
  return (
    probe.ok &&
    probe.mflux === pins.mflux_version &&
    Boolean(probe.huggingface_hub) &&
    probe.worker_installed !== null &&
    probe.worker_installed === probe.worker
  );
}

/** Makes the venv (or reuses a working one). */
export async function createVenv(base: BasePython, paths: EnginePaths, onLine?: (line: string) => void): Promise<'created' | 'reused'> {
  if (fs.existsSync(paths.python)) {
    const r = await runProcess(paths.python, ['-c', 'import sys; print(sys.version)'], { timeoutMs: 30_000 }).catch(() => null);
    if (r?.code === 0) return 'reused';
  }
  fs.mkdirSync(path.dirname(paths.dir), { recursive: true });
  // --clear: a venv left broken (interrupted, or its base Python removed) is rebuilt in place.
  const r = await runProcess(base.executable, ['-m', 'venv', '--clear', paths.dir], { onLine: (l) => onLine?.(l) });
  if (r.code !== 0) {
    throw new SetupError(
      `\`${base.executable} -m venv ${paths.dir}\` failed:\n${tail(r.stderr || r.stdout)}\n` +
        'On Debian/Ubuntu install python3-venv; elsewhere check that this Python can create venvs.',
    );
  }
  return 'created';
}

/** `pip install` into the venv; `pipArgs` (KIAPI_PIP_ARGS) go before the requirements. */
export async function pipInstall(python: string, requirements: string[], pipArgs: string[], onLine?: (line: string) => void): Promise<void> {
  const args = ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', ...pipArgs, ...requirements];
  const r = await runProcess(python, args, {
    env: { ...process.env, PIP_NO_INPUT: '1' },
    onLine: (l) => onLine?.(l),
  });
  if (r.code !== 0) {
    throw new SetupError(
      `installing the engine failed (\`${path.basename(python)} ${args.join(' ')}\`, exit ${r.code ?? r.signal}):\n${tail(r.stderr || r.stdout)}\n` +
        'Check the network (or KIAPI_PIP_ARGS), then rerun `kiapi activate`; the venv is reused.',
    );
  }
}
