/**
 * The settings of `kiapi activate` itself. Two of them exist for tests and unusual set-ups (an
 * offline wheel mirror, a CI machine without a GPU); they are read like every other setting, so
 * they appear in `kiapi config template` and a bad value is reported the same way.
 */
import { EnvReader } from '../config.js';

/** `linux-cpu` (MLX on the CPU) is never detected: it is for tests and machines without a GPU, by choice. */
export type PlatformKind = 'darwin-arm64' | 'linux-cuda' | 'linux-cpu' | 'other';

export interface SetupSettings {
  /** `auto` detects the platform; anything else is taken as said (tests, advanced). */
  platform: 'auto' | PlatformKind;
  /** Extra pip arguments for both installs, e.g. `--no-index --find-links DIR`. */
  pipArgs: string[];
  /** The Python the venv is made from; null = `python3` on PATH (then the versioned names the lock covers). */
  python: string | null;
  /** A lock file to install instead of worker/locks/<flavour>.txt (a mirror with other builds, tests). */
  lock: string | null;
}

export function readSetupSettings(env: Record<string, string | undefined>): SetupSettings {
  const r = new EnvReader(env);
  const s: SetupSettings = {
    platform: r.choice(
      'KIAPI_ACTIVATE_PLATFORM',
      ['auto', 'darwin-arm64', 'linux-cuda', 'linux-cpu', 'other'] as const,
      'auto',
      '(tests/advanced) the platform kind kiapi activate assumes instead of detecting it; linux-cpu installs MLX for the CPU (slow; no GPU needed)',
    ),
    pipArgs: splitArgs(
      r.optionalString('KIAPI_PIP_ARGS', '(tests/advanced) extra pip arguments for kiapi activate, e.g. --no-index --find-links DIR') ?? '',
    ),
    python: r.optionalString(
      'KIAPI_ACTIVATE_PYTHON',
      "the Python kiapi activate builds the engine venv from, a version the engine lock covers (worker/kiapi_worker/pins.py; unset: python3 on PATH)",
    ),
    lock: r.optionalString(
      'KIAPI_ENGINE_LOCK',
      '(tests/advanced) a pip lock file (name==version lines) kiapi activate installs instead of worker/locks/<flavour>.txt',
    ),
  };
  r.check();
  return s;
}

/** Splits like a shell would for plain words and '…' / "…" quoting (no expansion). */
export function splitArgs(text: string): string[] {
  const out: string[] = [];
  let current = '';
  let quote: '"' | "'" | null = null;
  let started = false;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = null;
      else current += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      started = true;
    } else if (/\s/.test(ch)) {
      if (started) out.push(current);
      current = '';
      started = false;
    } else {
      current += ch;
      started = true;
    }
  }
  if (started) out.push(current);
  return out;
}
