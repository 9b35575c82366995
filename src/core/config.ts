/**
 * Settings from environment variables. Names follow the original where it had one (reference §7).
 * Every variable is read through an EnvReader, which collects every bad value so start-up can stop
 * with one message naming each variable and what it accepts. Families read their own variables
 * with the same reader (capabilities/<family>/settings.ts), so core knows nothing about them.
 */
import os from 'node:os';
import path from 'node:path';
import envPaths from 'env-paths';

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

export class EnvReader {
  readonly problems: string[] = [];
  constructor(private readonly env: Env = process.env) {}

  /** The raw value, or undefined when unset or empty (an empty variable counts as unset). */
  raw(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  optionalString(name: string): string | null {
    return this.raw(name) ?? null;
  }

  number(name: string, fallback: number, opts: { min?: number; max?: number; integer?: boolean } = {}): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    const kind = opts.integer ? 'an integer' : 'a number';
    const range =
      opts.min !== undefined && opts.max !== undefined
        ? ` in ${opts.min}..${opts.max}`
        : opts.min !== undefined
          ? ` >= ${opts.min}`
          : opts.max !== undefined
            ? ` <= ${opts.max}`
            : '';
    if (
      !Number.isFinite(n) ||
      (opts.integer && !Number.isInteger(n)) ||
      (opts.min !== undefined && n < opts.min) ||
      (opts.max !== undefined && n > opts.max)
    ) {
      this.problems.push(`${name}=${JSON.stringify(v)}: expected ${kind}${range}`);
      return fallback;
    }
    return n;
  }

  optionalNumber(name: string, opts: { min?: number; max?: number; integer?: boolean } = {}): number | null {
    if (this.raw(name) === undefined || this.raw(name)?.toLowerCase() === 'null') return null;
    return this.number(name, 0, opts);
  }

  /** Quantize-like settings: an integer from `allowed`, or null ("none"/"null"). */
  optionalChoiceInt(name: string, allowed: readonly number[], fallback: number | null): number | null {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    if (['null', 'none'].includes(v.toLowerCase())) return null;
    const n = Number(v);
    if (!allowed.includes(n)) {
      this.problems.push(`${name}=${JSON.stringify(v)}: expected one of ${allowed.join(', ')} or "none"`);
      return fallback;
    }
    return n;
  }

  boolean(name: string, fallback: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const lower = v.toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(lower)) return true;
    if (['0', 'false', 'no', 'off'].includes(lower)) return false;
    this.problems.push(`${name}=${JSON.stringify(v)}: expected true or false`);
    return fallback;
  }

  choice<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const lower = v.toLowerCase() as T;
    if (!allowed.includes(lower)) {
      this.problems.push(`${name}=${JSON.stringify(v)}: expected one of ${allowed.join(', ')}`);
      return fallback;
    }
    return lower;
  }

  /** A list: a JSON array of strings (the original's form) or a comma-separated list. */
  list(name: string): string[] {
    const v = this.raw(name);
    if (v === undefined) return [];
    if (v.startsWith('[')) {
      try {
        const parsed: unknown = JSON.parse(v);
        if (Array.isArray(parsed) && parsed.every((x) => typeof x === 'string')) return parsed;
      } catch {
        // fall through to the problem below
      }
      this.problems.push(`${name}=${JSON.stringify(v)}: expected a JSON array of strings or a comma-separated list`);
      return [];
    }
    return v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  }

  /** Throws ConfigError when any variable read so far was bad. */
  check(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems);
  }
}

export type EngineChoice = 'auto' | 'preview' | 'mflux';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  filesRoot: string;
  tmpDir: string;
  authToken: string | null;
  syncTimeoutS: number;
  logLevel: LogLevel;
  engine: EngineChoice;
  previewStepMs: number;
  /** GiB; null = 80% of physical RAM. */
  memoryLimitGb: number | null;
  defaultTtlS: number;
  ttlSweepIntervalS: number;
  warmup: string[];
  netAllowPrivateUrls: boolean;
  maxInputBytes: number;
  maxUploadBytes: number;
  maxBodyBytes: number;
  maxQueue: number;
  maxPromptChars: number;
  maxInputsPerRequest: number;
  urlTimeoutS: number;
  jobRetentionS: number;
  shutdownGraceS: number;
  python: string | null;
  engineTimeoutS: number;
}

const MIB = 1024 * 1024;

/** The platform's user data dir for kiapi (XDG on Linux, Application Support on macOS). */
export function defaultDataDir(env: Env = process.env): string {
  const xdg = env.XDG_DATA_HOME;
  if (xdg && xdg.trim() !== '') return path.join(xdg, 'kiapi');
  return envPaths('kiapi', { suffix: '' }).data;
}

export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const r = new EnvReader(env);
  const dataDir = path.resolve(expandHome(overrides.dataDir ?? r.string('KIAPI_DATA_DIR', defaultDataDir(env))));
  const config: Config = {
    host: r.string('KIAPI_HOST', '127.0.0.1'),
    port: r.number('KIAPI_PORT', 8000, { integer: true, min: 0, max: 65535 }),
    dataDir,
    filesRoot: path.resolve(expandHome(r.string('KIAPI_FILES_ROOT', path.join(dataDir, 'files')))),
    tmpDir: path.join(dataDir, 'tmp'),
    authToken: r.optionalString('KIAPI_AUTH_TOKEN'),
    syncTimeoutS: r.number('KIAPI_SYNC_TIMEOUT_S', 600, { min: 0.001 }),
    logLevel: r.choice('KIAPI_LOG_LEVEL', ['trace', 'debug', 'info', 'warn', 'warning', 'error', 'fatal', 'critical'] as const, 'info')
      .replace('warning', 'warn')
      .replace('critical', 'fatal') as LogLevel,
    engine: r.choice('KIAPI_ENGINE', ['auto', 'preview', 'mflux'] as const, 'auto'),
    previewStepMs: r.number('KIAPI_PREVIEW_STEP_MS', 0, { min: 0, max: 600_000 }),
    memoryLimitGb: r.optionalNumber('KIAPI_MEMORY_LIMIT_GB', { min: 0.001 }),
    defaultTtlS: r.number('KIAPI_DEFAULT_TTL_S', 1800),
    ttlSweepIntervalS: r.number('KIAPI_TTL_SWEEP_INTERVAL_S', 60),
    warmup: r.raw('KIAPI_WARMUP') !== undefined ? r.list('KIAPI_WARMUP') : r.list('KIAPI_WARMUP_MODELS'),
    netAllowPrivateUrls: r.boolean('KIAPI_NET_ALLOW_PRIVATE_URLS', false),
    maxInputBytes: r.number('KIAPI_MAX_INPUT_BYTES', 64 * MIB, { integer: true, min: 1 }),
    maxUploadBytes: r.number('KIAPI_MAX_UPLOAD_BYTES', 8 * 1024 * MIB, { integer: true, min: 1 }),
    maxBodyBytes: r.number('KIAPI_MAX_BODY_BYTES', 128 * MIB, { integer: true, min: 1024 }),
    maxQueue: r.number('KIAPI_MAX_QUEUE', 1000, { integer: true, min: 1 }),
    maxPromptChars: r.number('KIAPI_MAX_PROMPT_CHARS', 20_000, { integer: true, min: 1 }),
    maxInputsPerRequest: r.number('KIAPI_MAX_INPUTS', 16, { integer: true, min: 1 }),
    urlTimeoutS: r.number('KIAPI_URL_TIMEOUT_S', 30, { min: 0.001 }),
    jobRetentionS: r.number('KIAPI_JOB_RETENTION_S', 7 * 24 * 3600, { min: 0 }),
    shutdownGraceS: r.number('KIAPI_SHUTDOWN_GRACE_S', 30, { min: 0 }),
    python: r.optionalString('KIAPI_PYTHON'),
    engineTimeoutS: r.number('KIAPI_ENGINE_TIMEOUT_S', 600, { min: 0.001 }),
    ...overrides,
  };
  r.check();
  return config;
}

/** 80% of physical RAM in GiB, the original's default budget. */
export function defaultMemoryBudgetGb(): number {
  return (os.totalmem() / 1024 ** 3) * 0.8;
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p;
}
