/**
 * The Python the engine's venv is made from: a version mflux accepts (its Requires-Python) and the
 * engine lock covers, with `venv` and `ensurepip` (Debian ships those separately as python3-venv),
 * and on macOS a native arm64 build (MLX has no x86_64 wheels). Each way this can be wrong gets its
 * own message saying what to install.
 *
 * The versions are data in worker/kiapi_worker/pins.py (`ENGINE_REQUIRES_PYTHON`, `LOCK_PYTHONS`),
 * read from its text here because this runs before any Python is known (a unit test checks the
 * reading against `python -m kiapi_worker.pins`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { SetupError } from '../errors.js';
import { runProcess } from './process.js';
import type { PlatformKind } from './setup-settings.js';

export interface BasePython {
  /** What was run (a name on PATH or a path). */
  command: string;
  executable: string;
  version: string;
  machine: string;
}

/** The Pythons the engine can be built from. */
export interface EnginePython {
  /** mflux's Requires-Python, e.g. `>=3.11`. */
  requires: string;
  /** Its lower bound, e.g. `[3, 11]`. */
  min: readonly [number, number];
  /** The `major.minor` versions the engine lock is resolved for, e.g. `['3.11', '3.12', '3.13']`. */
  versions: string[];
}

/** Reads `ENGINE_REQUIRES_PYTHON` and `LOCK_PYTHONS` from worker/kiapi_worker/pins.py. */
export function readEnginePython(workerDir: string): EnginePython {
  const file = path.join(workerDir, 'kiapi_worker', 'pins.py');
  const text = fs.readFileSync(file, 'utf8');
  const requires = /^ENGINE_REQUIRES_PYTHON = "(>=(\d+)\.(\d+))"$/m.exec(text);
  const lock = /^LOCK_PYTHONS = \(([^)]*)\)$/m.exec(text);
  if (!requires || !lock) throw new Error(`${file}: ENGINE_REQUIRES_PYTHON or LOCK_PYTHONS is missing or not a literal`);
  const versions = [...lock[1]!.matchAll(/"(\d+\.\d+)"/g)].map((m) => m[1]!);
  return { requires: requires[1]!, min: [Number(requires[2]), Number(requires[3])], versions };
}

/** `3.11, 3.12 or 3.13`. */
function versionList(engine: EnginePython): string {
  const v = engine.versions;
  return v.length > 1 ? `${v.slice(0, -1).join(', ')} or ${v[v.length - 1]}` : (v[0] ?? '?');
}

/** What the messages say is needed. */
export function pythonNeeded(engine: EnginePython): string {
  return `Python ${engine.requires.replace('>=', '>= ')} (${versionList(engine)}: mflux needs ${engine.requires}, the engine lock covers these)`;
}

function installHint(engine: EnginePython): string {
  const newest = engine.versions[engine.versions.length - 1] ?? '3';
  return (
    `Install one: macOS \`brew install python@${newest}\` (or python.org); Debian 12+/Ubuntu 24.04+ \`sudo apt install python3 python3-venv\` ` +
    `(older releases: python${engine.versions[0] ?? '3'} from the deadsnakes PPA). Then put it first on PATH or set KIAPI_ACTIVATE_PYTHON=/path/to/python3.`
  );
}

const INSPECT = [
  'import importlib.util, json, platform, sys',
  'print(json.dumps({"executable": sys.executable, "version": platform.python_version(),',
  '  "machine": platform.machine(), "venv": importlib.util.find_spec("venv") is not None,',
  '  "ensurepip": importlib.util.find_spec("ensurepip") is not None}))',
].join('\n');

interface Inspection {
  executable: string;
  version: string;
  machine: string;
  venv: boolean;
  ensurepip: boolean;
}

type Inspected = { kind: 'found'; info: Inspection } | { kind: 'missing' } | { kind: 'broken'; message: string };

async function inspect(command: string): Promise<Inspected> {
  try {
    const r = await runProcess(command, ['-c', INSPECT], { timeoutMs: 30_000 });
    if (r.code !== 0) return { kind: 'broken', message: `${command} failed: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`}` };
    return { kind: 'found', info: JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Inspection };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES') return { kind: 'missing' };
    return { kind: 'broken', message: `${command}: ${(err as Error).message}` };
  }
}

/** Whether `version` (e.g. `3.12.4`) is one the engine can be built from. */
export function pythonFits(version: string, engine: EnginePython): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  const atLeast = major > engine.min[0] || (major === engine.min[0] && minor >= engine.min[1]);
  return atLeast && engine.versions.includes(`${major}.${minor}`);
}

/** Finds a usable Python or throws a SetupError that says what is missing. */
export async function findBasePython(explicit: string | null, platform: PlatformKind, engine: EnginePython): Promise<BasePython> {
  // Tried in order when KIAPI_ACTIVATE_PYTHON is unset: `python3` first, then newer-to-older
  // versioned names, because macOS's /usr/bin/python3 is often 3.9 while Homebrew's 3.12 sits beside it.
  const candidates = explicit ? [explicit] : ['python3', ...[...engine.versions].reverse().map((v) => `python${v}`)];
  const needed = pythonNeeded(engine);
  const hint = installHint(engine);
  const unfit: string[] = [];
  for (const command of candidates) {
    const inspected = await inspect(command);
    if (inspected.kind === 'missing') {
      if (explicit) {
        throw new SetupError(
          `KIAPI_ACTIVATE_PYTHON=${explicit}: no such program. kiapi activate needs ${needed} to build the engine. ${hint}`,
        );
      }
      continue;
    }
    if (inspected.kind === 'broken') throw new SetupError(`cannot run Python: ${inspected.message}`);
    const found = inspected.info;
    if (!pythonFits(found.version, engine)) {
      unfit.push(`${command} is Python ${found.version} (${found.executable})`);
      continue;
    }
    if (!found.venv || !found.ensurepip) {
      throw new SetupError(
        `${found.executable} (Python ${found.version}) has no ${found.venv ? 'ensurepip' : 'venv'} module, so it cannot make the engine's venv. ` +
          `On Debian/Ubuntu: sudo apt install python3-venv (or python${found.version.split('.').slice(0, 2).join('.')}-venv).`,
      );
    }
    if (platform === 'darwin-arm64' && found.machine !== 'arm64') {
      throw new SetupError(
        `${found.executable} is an ${found.machine} build of Python (Rosetta); MLX needs a native arm64 Python, ` +
          'e.g. Homebrew\'s /opt/homebrew/bin/python3. Set KIAPI_ACTIVATE_PYTHON to it.',
      );
    }
    return { command, executable: found.executable, version: found.version, machine: found.machine };
  }
  if (unfit.length > 0) {
    throw new SetupError(`kiapi activate needs ${needed}; found only: ${unfit.join('; ')}. ${hint}`);
  }
  throw new SetupError(`python3 was not found on PATH. kiapi activate needs ${needed} to build the engine. ${hint}`);
}
