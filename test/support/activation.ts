/**
 * Helpers for the activation tests: the built CLI as a child process with a clean environment,
 * and a local wheel directory for `kiapi activate` (KIAPI_PIP_ARGS='--no-index --find-links DIR').
 *
 * The wheel directory holds the fake mflux and mlx (built by worker/tests/fake_wheels.py with
 * zipfile, no network) plus huggingface_hub with its dependencies and setuptools (the worker's
 * build backend), fetched once with `pip download` into `.cache/` (gitignored; PyPI is reachable
 * in CI) and reused by later runs. `lock.txt` in it is the engine lock of that directory (every
 * package but setuptools at its version), for KIAPI_ENGINE_LOCK.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { tempDir } from './server.js';

export const CLI = path.join(PACKAGE_ROOT, 'dist/src/cli/main.js');
/** The huggingface_hub the engine venv gets in tests (the newest 1.x when this was written). */
export const HUB_TEST_VERSION = '1.33.0';

function cacheRoot(): string {
  return process.env.KIAPI_TEST_CACHE ?? path.join(PACKAGE_ROOT, '.cache');
}

/** huggingface_hub + deps + setuptools, downloaded once; returns the cache directory. */
export function downloadedWheels(): string {
  const dir = path.join(cacheRoot(), `activation-wheels-hub-${HUB_TEST_VERSION}`);
  const stamp = path.join(dir, '.complete');
  if (fs.existsSync(stamp)) return dir;
  const scratch = `${dir}.tmp-${process.pid}`;
  fs.rmSync(scratch, { recursive: true, force: true });
  fs.mkdirSync(scratch, { recursive: true });
  const r = spawnSync(
    'python3',
    ['-m', 'pip', 'download', '--disable-pip-version-check', '--quiet', '-d', scratch, `huggingface_hub==${HUB_TEST_VERSION}`, 'setuptools>=68'],
    { encoding: 'utf8', timeout: 300_000 },
  );
  if (r.status !== 0) {
    throw new Error(`pip download of the test wheels failed (PyPI must be reachable once; cached in ${dir}):\n${r.stderr}`);
  }
  fs.writeFileSync(path.join(scratch, '.complete'), `${HUB_TEST_VERSION}\n`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(scratch, dir);
  return dir;
}

/** A fresh wheel directory: the cached downloads plus freshly built fake mflux and mlx wheels. */
export function wheelDir(): string {
  const dir = tempDir('kiapi-wheels-');
  for (const name of fs.readdirSync(downloadedWheels())) {
    if (name.endsWith('.whl') || name.endsWith('.tar.gz')) fs.copyFileSync(path.join(downloadedWheels(), name), path.join(dir, name));
  }
  const r = spawnSync('python3', [path.join(PACKAGE_ROOT, 'worker', 'tests', 'fake_wheels.py'), dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the fake wheels failed:\n${r.stderr}`);
  const pins = fs
    .readdirSync(dir)
    .map((name) => /^([A-Za-z0-9_.]+?)-([0-9][^-]*?)(?:-.*\.whl|\.tar\.gz)$/.exec(name))
    .filter((m): m is RegExpExecArray => m !== null && m[1]!.toLowerCase() !== 'setuptools')
    .map((m) => `${m[1]!.replaceAll('_', '-').toLowerCase()}==${m[2]}`)
    .sort();
  fs.writeFileSync(wheelLock(dir), `# test lock of ${dir}\n${pins.join('\n')}\n`);
  return dir;
}

/** The lock `wheelDir` writes beside its wheels. */
export function wheelLock(dir: string): string {
  return path.join(dir, 'lock.txt');
}

/** The test runner's KIAPI_* / HF_* / PIP_* settings must not leak into the child. */
export function cleanEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(KIAPI_|HF_|HUGGINGFACE_|PIP_|PYTHONPATH$)/.test(k)) env[k] = v;
  }
  const merged: NodeJS.ProcessEnv = {
    ...env,
    // No user settings file, no machine-wide pip configuration: only what the test says.
    KIAPI_CONFIG_FILE: path.join(os.tmpdir(), `kiapi-no-settings-${process.pid}`, 'settings.yaml'),
    PIP_CONFIG_FILE: '/dev/null',
    HF_HUB_DISABLE_TELEMETRY: '1',
  };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete merged[k];
    else merged[k] = v;
  }
  return merged;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningCli {
  pid: number;
  output(): string;
  kill(signal: NodeJS.Signals): void;
  done: Promise<CliResult>;
}

/** Starts `kiapi <args>`; killed after `timeoutMs` at the latest, never left behind. */
export function startCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): RunningCli {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const guard = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<CliResult>((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return {
    pid: child.pid ?? 0,
    output: () => stdout + stderr,
    kill: (signal) => child.kill(signal),
    done,
  };
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs?: number): Promise<CliResult> {
  return startCli(args, env, timeoutMs).done;
}

export async function waitFor(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
