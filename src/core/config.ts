/**
 * Settings from environment variables. Names follow the original where it had one (docs/compatibility.md §7).
 * Every variable is read through an EnvReader, which collects every bad value so start-up can stop
 * with one message naming each variable and what it accepts. Families read their own variables
 * with the same reader (capabilities/<family>/settings.ts), so core knows nothing about them.
 *
 * Each read also records the variable (default, accepted form, one-line description) in one
 * catalog, `knownSettings()`. `kiapi config template` and the settings file are built from it, so
 * the list of settings cannot drift from the code that reads them.
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

/** One setting as its reader declared it. */
export interface SettingInfo {
  name: string;
  /** The default as text; null when the default is "unset". */
  default: string | null;
  /** What a value must look like, e.g. `an integer in 0..65535`. */
  accepts: string;
  /** One line for people. */
  doc: string;
  /** `null`/`none` is a value of its own (e.g. "no quantization"), not "unset". */
  nullable: boolean;
}

const catalog = new Map<string, SettingInfo>();

/** Every setting read so far, in first-read order (read them all once to list them all). */
export function knownSettings(): SettingInfo[] {
  return [...catalog.values()];
}

interface NumberOpts {
  min?: number;
  max?: number;
  integer?: boolean;
}

function numberForm(opts: NumberOpts): string {
  const kind = opts.integer ? 'an integer' : 'a number';
  const range =
    opts.min !== undefined && opts.max !== undefined
      ? ` in ${opts.min}..${opts.max}`
      : opts.min !== undefined
        ? ` >= ${opts.min}`
        : opts.max !== undefined
          ? ` <= ${opts.max}`
          : '';
  return kind + range;
}

export class EnvReader {
  readonly problems: string[] = [];
  constructor(private readonly env: Env = process.env) {}

  private note(name: string, def: string | number | boolean | null, accepts: string, doc: string, nullable = false): void {
    const previous = catalog.get(name);
    catalog.set(name, {
      name,
      default: def === null ? null : String(def),
      accepts,
      doc: doc || previous?.doc || '',
      nullable,
    });
  }

  /** The raw value, or undefined when unset or empty (an empty variable counts as unset). */
  raw(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  string(name: string, fallback: string, doc = ''): string {
    this.note(name, fallback, 'text', doc);
    return this.raw(name) ?? fallback;
  }

  optionalString(name: string, doc = ''): string | null {
    this.note(name, null, 'text', doc);
    return this.raw(name) ?? null;
  }

  number(name: string, fallback: number, opts: NumberOpts = {}, doc = ''): number {
    this.note(name, fallback, numberForm(opts), doc);
    return this.parseNumber(name, fallback, opts);
  }

  private parseNumber(name: string, fallback: number, opts: NumberOpts): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (
      !Number.isFinite(n) ||
      (opts.integer && !Number.isInteger(n)) ||
      (opts.min !== undefined && n < opts.min) ||
      (opts.max !== undefined && n > opts.max)
    ) {
      this.problems.push(`${name}=${JSON.stringify(v)}: expected ${numberForm(opts)}`);
      return fallback;
    }
    return n;
  }

  optionalNumber(name: string, opts: NumberOpts = {}, doc = ''): number | null {
    this.note(name, null, `${numberForm(opts)} or "null"`, doc, true);
    if (this.raw(name) === undefined || this.raw(name)?.toLowerCase() === 'null') return null;
    return this.parseNumber(name, 0, opts);
  }

  /** Quantize-like settings: an integer from `allowed`, or null ("none"/"null"). */
  optionalChoiceInt(name: string, allowed: readonly number[], fallback: number | null, doc = ''): number | null {
    this.note(name, fallback ?? 'none', `one of ${allowed.join(', ')} or "none"`, doc, true);
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

  boolean(name: string, fallback: boolean, doc = ''): boolean {
    this.note(name, fallback, 'true or false', doc);
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const lower = v.toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(lower)) return true;
    if (['0', 'false', 'no', 'off'].includes(lower)) return false;
    this.problems.push(`${name}=${JSON.stringify(v)}: expected true or false`);
    return fallback;
  }

  choice<T extends string>(name: string, allowed: readonly T[], fallback: T, doc = ''): T {
    this.note(name, fallback, `one of ${allowed.join(', ')}`, doc);
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
  list(name: string, doc = ''): string[] {
    this.note(name, null, 'a JSON array of strings or a comma-separated list', doc);
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
  /** Comment line sent on idle event streams, so proxies do not cut them. */
  eventsHeartbeatS: number;
  /** Bytes an event-stream watcher may leave unread before it is dropped (previews stop at a quarter). */
  eventsMaxBufferBytes: number;
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
  /** Seconds; null = files are kept until deleted. */
  fileRetentionS: number | null;
  shutdownGraceS: number;
  /** KIAPI_IDEMPOTENCY_TTL_H in seconds: how long an Idempotency-Key is remembered after its first use. */
  idempotencyTtlS: number;
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

/** The data dir `loadConfig` would use, for code that needs only that (e.g. activation records). */
export function dataDirFrom(env: Env = process.env): string {
  const raw = env.KIAPI_DATA_DIR?.trim();
  return path.resolve(expandHome(raw ? raw : defaultDataDir(env)));
}

export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const r = new EnvReader(env);
  r.string('KIAPI_DATA_DIR', defaultDataDir(env), 'SQLite db (kiapi.db), files/, tmp/, activations/ and the engine venv/');
  const dataDir = overrides.dataDir ? path.resolve(expandHome(overrides.dataDir)) : dataDirFrom(env);
  // Both spellings are read (and so listed); KIAPI_WARMUP wins when set.
  const warmup = r.list('KIAPI_WARMUP', 'models to load at start (e.g. ["qwen/image"])');
  const warmupModels = r.list('KIAPI_WARMUP_MODELS', "the original's name for KIAPI_WARMUP");
  const config: Config = {
    host: r.string('KIAPI_HOST', '127.0.0.1', 'bind address (kiapi run --host overrides)'),
    port: r.number('KIAPI_PORT', 8000, { integer: true, min: 0, max: 65535 }, 'bind port (kiapi run --port overrides)'),
    dataDir,
    filesRoot: path.resolve(expandHome(r.string('KIAPI_FILES_ROOT', path.join(dataDir, 'files'), 'where file blobs live'))),
    tmpDir: path.join(dataDir, 'tmp'),
    authToken: r.optionalString('KIAPI_AUTH_TOKEN', 'require Authorization: Bearer <token> (unset: no auth)'),
    syncTimeoutS: r.number('KIAPI_SYNC_TIMEOUT_S', 600, { min: 0.001 }, 'sync wait in seconds before 504 (the job keeps running)'),
    eventsHeartbeatS: r.number('KIAPI_EVENTS_HEARTBEAT_S', 15, { min: 0.05, max: 3600 }, 'keep-alive comment interval on idle event streams, in seconds'),
    eventsMaxBufferBytes: r.number(
      'KIAPI_EVENTS_MAX_BUFFER_BYTES',
      1024 * 1024,
      { integer: true, min: 4096, max: 1024 * 1024 * 1024 },
      'unread bytes an event-stream watcher may fall behind before it is dropped (it may reconnect with Last-Event-ID)',
    ),
    logLevel: r
      .choice(
        'KIAPI_LOG_LEVEL',
        ['trace', 'debug', 'info', 'warn', 'warning', 'error', 'fatal', 'critical'] as const,
        'info',
        'log level of the server',
      )
      .replace('warning', 'warn')
      .replace('critical', 'fatal') as LogLevel,
    engine: r.choice('KIAPI_ENGINE', ['auto', 'preview', 'mflux'] as const, 'auto', 'auto: mflux when installed, else the preview engine'),
    previewStepMs: r.number('KIAPI_PREVIEW_STEP_MS', 0, { min: 0, max: 600_000 }, 'preview engine sleep per step (ms)'),
    memoryLimitGb: r.optionalNumber('KIAPI_MEMORY_LIMIT_GB', { min: 0.001 }, 'budget for resident models in GiB (unset: 80% of RAM)'),
    defaultTtlS: r.number('KIAPI_DEFAULT_TTL_S', 1800, {}, 'idle seconds before a resident model is unloaded (<= 0: never)'),
    ttlSweepIntervalS: r.number('KIAPI_TTL_SWEEP_INTERVAL_S', 60, {}, 'how often idle models are checked, in seconds (<= 0: never)'),
    warmup: r.raw('KIAPI_WARMUP') !== undefined ? warmup : warmupModels,
    netAllowPrivateUrls: r.boolean('KIAPI_NET_ALLOW_PRIVATE_URLS', false, 'allow url inputs and request webhook URLs on loopback/private networks'),
    maxInputBytes: r.number('KIAPI_MAX_INPUT_BYTES', 64 * MIB, { integer: true, min: 1 }, 'cap for url / data_url inputs (bytes)'),
    maxUploadBytes: r.number('KIAPI_MAX_UPLOAD_BYTES', 8 * 1024 * MIB, { integer: true, min: 1 }, 'cap for POST /v1/files (bytes)'),
    maxBodyBytes: r.number('KIAPI_MAX_BODY_BYTES', 128 * MIB, { integer: true, min: 1024 }, 'cap for JSON bodies (bytes)'),
    maxQueue: r.number('KIAPI_MAX_QUEUE', 1000, { integer: true, min: 1 }, 'queued jobs before 429 with Retry-After'),
    maxPromptChars: r.number('KIAPI_MAX_PROMPT_CHARS', 20_000, { integer: true, min: 1 }, 'longest prompt (characters)'),
    maxInputsPerRequest: r.number('KIAPI_MAX_INPUTS', 16, { integer: true, min: 1 }, 'most images / LoRAs per request'),
    urlTimeoutS: r.number('KIAPI_URL_TIMEOUT_S', 30, { min: 0.001 }, 'timeout of a url input download (seconds)'),
    jobRetentionS: r.number('KIAPI_JOB_RETENTION_S', 7 * 24 * 3600, { min: 0 }, 'finished jobs are pruned after this many seconds'),
    fileRetentionS: r.optionalNumber(
      'KIAPI_FILE_RETENTION_S',
      { min: 1 },
      'files (uploads and images) are deleted this many seconds after they were stored, except inputs of unfinished jobs (unset: kept until deleted)',
    ),
    shutdownGraceS: r.number('KIAPI_SHUTDOWN_GRACE_S', 30, { min: 0 }, 'on SIGINT/SIGTERM, seconds the running job gets to finish'),
    idempotencyTtlS:
      r.number('KIAPI_IDEMPOTENCY_TTL_H', 24, { min: 0.001, max: 24 * 365 }, 'hours an Idempotency-Key is remembered after its first use (a request with it later is a new request)') * 3600,
    python: r.optionalString('KIAPI_PYTHON', 'Python for the mflux worker (unset: the venv kiapi activate made)'),
    engineTimeoutS: r.number('KIAPI_ENGINE_TIMEOUT_S', 600, { min: 0.001 }, 'a worker silent this long during a run is killed (seconds)'),
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
