/**
 * The Python the engine's venv is made from. mflux needs Python >= 3.10 with `venv` and `ensurepip`
 * (Debian ships those separately as python3-venv), and on macOS a native arm64 build (MLX has no
 * x86_64 wheels). Each way this can be wrong gets its own message saying what to install.
 */
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

export const MIN_PYTHON: readonly [number, number] = [3, 10];
const MIN_TEXT = `${MIN_PYTHON[0]}.${MIN_PYTHON[1]}`;

// Tried in order when KIAPI_ACTIVATE_PYTHON is unset: `python3` first, then newer-to-older
// versioned names, because macOS's /usr/bin/python3 is often 3.9 while Homebrew's 3.12 sits beside it.
const CANDIDATES = ['python3', 'python3.13', 'python3.12', 'python3.11', 'python3.10'];

const INSTALL_HINT =
  'Install one: macOS `brew install python@3.12` (or python.org); Debian/Ubuntu `sudo apt install python3 python3-venv`. ' +
  'Then put it first on PATH or set KIAPI_ACTIVATE_PYTHON=/path/to/python3.';

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

function atLeast(version: string): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > MIN_PYTHON[0] || (major === MIN_PYTHON[0] && minor >= MIN_PYTHON[1]);
}

/** Finds a usable Python or throws a SetupError that says what is missing. */
export async function findBasePython(explicit: string | null, platform: PlatformKind): Promise<BasePython> {
  const candidates = explicit ? [explicit] : CANDIDATES;
  const tooOld: string[] = [];
  for (const command of candidates) {
    const inspected = await inspect(command);
    if (inspected.kind === 'missing') {
      if (explicit) {
        throw new SetupError(
          `KIAPI_ACTIVATE_PYTHON=${explicit}: no such program. kiapi activate needs Python >= ${MIN_TEXT} to build the engine. ${INSTALL_HINT}`,
        );
      }
      continue;
    }
    if (inspected.kind === 'broken') throw new SetupError(`cannot run Python: ${inspected.message}`);
    const found = inspected.info;
    if (!atLeast(found.version)) {
      tooOld.push(`${command} is Python ${found.version} (${found.executable})`);
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
  if (tooOld.length > 0) {
    throw new SetupError(`kiapi activate needs Python >= ${MIN_TEXT}; found only: ${tooOld.join('; ')}. ${INSTALL_HINT}`);
  }
  throw new SetupError(`python3 was not found on PATH. kiapi activate needs Python >= ${MIN_TEXT} to build the engine. ${INSTALL_HINT}`);
}
