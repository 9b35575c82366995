/**
 * The engine's venv in the data dir (`<data dir>/venv`): made with `python -m venv`, filled from the
 * platform's lock (`worker/locks/<flavour>.txt`: the pinned mflux, the platform's MLX build and every
 * dependency at an exact version) and the worker package, and probed by importing mflux the way the
 * worker does. The server picks `<data dir>/venv/bin/python` as its engine when it exists.
 *
 * What to install comes from `worker/kiapi_worker/pins.py` (run, not parsed), so the versions live
 * in one place. The install is two pip runs (`installSteps`):
 *   1. `pip install --no-deps --only-binary=:all: -r <lock>`: exactly the locked set, no resolver.
 *      --no-deps because mflux declares torch, which the engine never imports and the lock leaves
 *      out (several GB on Linux); the lock is complete on its own (worker/tests/test_locks.py).
 *   2. `pip install -c <lock> <worker dir>`: the worker package, any dependency held to the lock.
 * A stamp in the venv (`kiapi-engine.json`) records which lock it was filled from, so a changed lock
 * reinstalls and an unchanged one skips pip.
 */
import { createHash } from 'node:crypto';
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

/** One platform kind's flavour (`metal`, `cuda13`, `cpu`), its lock file and its MLX requirement. */
export interface PlatformPins {
  flavour: string;
  /** Absolute path of the lock (worker/locks/…). */
  lock: string;
  mlx: string;
}

export interface Pins {
  mflux: string;
  mflux_version: string;
  /** mflux's Requires-Python, e.g. `>=3.11`. */
  requires_python: string;
  lock_pythons: string[];
  huggingface_hub: string;
  /** mflux dependencies the locks leave out (torch). */
  unlocked: string[];
  platform: Record<string, PlatformPins>;
  /** repo → the commit mflux loads it from. */
  pinned_revisions: Record<string, string>;
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

/** The lock a platform installs from. */
export interface EngineLock {
  platform: PlatformKind;
  flavour: string;
  path: string;
  sha256: string;
}

/** The lock of `platform` (or `override`, KIAPI_ENGINE_LOCK), with its content's hash. */
export function engineLock(pins: Pins, platform: PlatformKind, override: string | null = null): EngineLock {
  const entry = pins.platform[platform];
  if (!entry) throw new SetupError(`no engine lock for platform ${platform} (worker/kiapi_worker/pins.py names ${Object.keys(pins.platform).join(', ')})`);
  const file = override ? path.resolve(override) : entry.lock;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new SetupError(`cannot read the engine lock ${file}${override ? ' (KIAPI_ENGINE_LOCK)' : ''}: ${(err as Error).message}`);
  }
  return { platform, flavour: entry.flavour, path: file, sha256: createHash('sha256').update(text).digest('hex') };
}

/** The pip install arguments, in order (see the file comment). */
export function installSteps(lock: EngineLock, workerDir: string): string[][] {
  return [
    ['--no-deps', '--only-binary=:all:', '-r', lock.path],
    ['-c', lock.path, workerDir],
  ];
}

/** What the venv was filled from (`<venv>/kiapi-engine.json`). */
export interface EngineStamp {
  platform: PlatformKind;
  flavour: string;
  lock: string;
  sha256: string;
  mflux: string;
}

function stampPath(paths: EnginePaths): string {
  return path.join(paths.dir, 'kiapi-engine.json');
}

export function readStamp(paths: EnginePaths): EngineStamp | null {
  try {
    const stamp = JSON.parse(fs.readFileSync(stampPath(paths), 'utf8')) as EngineStamp;
    return typeof stamp.sha256 === 'string' && typeof stamp.platform === 'string' ? stamp : null;
  } catch {
    return null;
  }
}

export function writeStamp(paths: EnginePaths, lock: EngineLock, pins: Pins): void {
  const stamp: EngineStamp = { platform: lock.platform, flavour: lock.flavour, lock: lock.path, sha256: lock.sha256, mflux: pins.mflux_version };
  fs.writeFileSync(stampPath(paths), `${JSON.stringify(stamp, null, 2)}\n`);
}

export interface EngineProbe {
  ok: boolean;
  /** Why not, when not ok. */
  reason?: string;
  python?: string;
  mflux?: string;
  /** The mflux release kiapi supports (pins.py); differs from `mflux` for an untested combination. */
  mflux_supported?: string;
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

/** The warning for an mflux other than the supported one (the worker runs it anyway). */
export function mfluxMismatch(p: Pick<EngineProbe, 'mflux' | 'mflux_supported'>): string | null {
  if (!p.mflux || !p.mflux_supported || p.mflux === p.mflux_supported) return null;
  return (
    `mflux ${p.mflux} is installed, kiapi supports mflux ${p.mflux_supported}: the worker starts and runs it anyway, ` +
    'but that combination is untested (and another release may load other weight revisions than kiapi activate downloads)'
  );
}

/** True when the venv already holds what activation would install from `lock` (so it can skip pip). */
export function engineUpToDate(probe: EngineProbe, pins: Pins, stamp: EngineStamp | null, lock: EngineLock): boolean {
  return (
    probe.ok &&
    probe.mflux === pins.mflux_version &&
    stamp !== null &&
    stamp.sha256 === lock.sha256 &&
    stamp.flavour === lock.flavour &&
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

/** `pip install` into the venv; `pipArgs` (KIAPI_PIP_ARGS) go before `requirements` (the step's arguments). */
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
