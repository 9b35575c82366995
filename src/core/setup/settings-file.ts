/**
 * The user's settings file: YAML whose keys are the environment variable names (`KIAPI_PORT: 8001`).
 * Precedence, applied in one place (`mergeSettings`): a non-empty environment variable wins over the
 * file, the file over the defaults. Values become the same strings an environment variable would
 * hold, so every reader (core, families, setup) validates them in one way and a bad value in the file
 * is reported like a bad variable, naming the file.
 *
 * Which keys exist comes from the settings catalog (`knownSettings()` in core/config.ts): a key the
 * code does not read is an error, because a misspelt setting that is silently ignored is worse.
 */
import fs from 'node:fs';
import path from 'node:path';
import envPaths from 'env-paths';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { ConfigError, EnvReader, type SettingInfo } from '../config.js';

type Env = Record<string, string | undefined>;

/** The file cannot name its own path. */
export const ENV_ONLY = new Set(['KIAPI_CONFIG_FILE']);

export type SettingSource = 'env' | 'file' | 'default';

export interface SettingsFile {
  path: string;
  exists: boolean;
  /** Each key as the string an environment variable would hold. */
  values: Record<string, string>;
}

export function settingsFilePath(env: Env): string {
  const r = new EnvReader(env);
  const explicit = r.optionalString('KIAPI_CONFIG_FILE', 'path of the settings file');
  if (explicit) return path.resolve(explicit);
  const xdg = env.XDG_CONFIG_HOME?.trim();
  if (xdg) return path.join(xdg, 'kiapi', 'settings.yaml');
  return path.join(envPaths('kiapi', { suffix: '' }).config, 'settings.yaml');
}

function isSet(v: string | undefined): v is string {
  return v !== undefined && v.trim() !== '';
}

/** Reads and checks the file; a missing file is an empty one. Throws ConfigError naming the file. */
export function readSettingsFile(file: string, catalog: readonly SettingInfo[]): SettingsFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { path: file, exists: false, values: {} };
    throw new ConfigError([`${file}: ${(err as Error).message}`]);
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `${file}: ${e.message.split('\n')[0]}`));
  }
  const known = new Map(catalog.map((s) => [s.name, s]));
  const values: Record<string, string> = {};
  const problems: string[] = [];
  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) return { path: file, exists: true, values };
  if (!isMap(root)) throw new ConfigError([`${file}: expected a mapping of setting names to values (e.g. KIAPI_PORT: 8001)`]);
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const info = known.get(key);
    if (!info || ENV_ONLY.has(key)) {
      problems.push(
        ENV_ONLY.has(key)
          ? `${key} in ${file}: can only be set in the environment`
          : `${key} in ${file}: unknown setting (\`kiapi config template\` lists every setting)`,
      );
      continue;
    }
    const node = pair.value;
    if (node === null || (isScalar(node) && node.value === null)) {
      // YAML null: "none" where that is a value of its own (quantize), otherwise "unset".
      if (info.nullable) values[key] = 'null';
      continue;
    }
    if (isScalar(node) && ['string', 'number', 'boolean'].includes(typeof node.value)) {
      values[key] = String(node.value);
    } else if (isSeq(node) && node.items.every((i) => isScalar(i) && typeof i.value === 'string')) {
      values[key] = JSON.stringify(node.items.map((i) => (isScalar(i) ? String(i.value) : '')));
    } else {
      problems.push(`${key} in ${file}: expected a single value or a list of strings (${info.accepts})`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { path: file, exists: true, values };
}

/** The environment the readers see: the file's values under the process environment. */
export function mergeSettings(env: Env, file: SettingsFile): Env {
  const merged: Env = { ...env };
  for (const [key, value] of Object.entries(file.values)) {
    if (!isSet(env[key])) merged[key] = value;
  }
  return merged;
}

export function sourceOf(name: string, env: Env, file: SettingsFile): SettingSource {
  if (isSet(env[name])) return 'env';
  if (name in file.values) return 'file';
  return 'default';
}

/** Adds "(set in <file>)" to each problem about a variable whose value came from the file. */
export function annotateFileProblems(err: ConfigError, env: Env, file: SettingsFile): ConfigError {
  const problems = err.problems.map((p) => {
    const name = /^([A-Z][A-Z0-9_]*)=/.exec(p)?.[1];
    return name && sourceOf(name, env, file) === 'file' ? `${p} (set in ${file.path})` : p;
  });
  return new ConfigError(problems);
}

/** Every setting with its default and description, as a commented YAML file. */
export function renderTemplate(catalog: readonly SettingInfo[]): string {
  const lines = [
    '# kiapi settings: every setting kiapi reads, with its default. Keys are the environment',
    '# variable names; an environment variable wins over this file. Uncomment what you change.',
    '',
  ];
  for (const s of [...catalog].sort((a, b) => a.name.localeCompare(b.name))) {
    lines.push(`# ${s.doc || '(no description)'} — ${s.accepts}${ENV_ONLY.has(s.name) ? ' (environment only)' : ''}`);
    lines.push(`# ${s.name}: ${s.default === null ? '' : yamlValue(s.default)}`.trimEnd());
    lines.push('');
  }
  return lines.join('\n');
}

function yamlValue(value: string): string {
  // Plain when YAML would read it back as the same string or number; quoted otherwise.
  return /^[A-Za-z0-9_./~:-]+$/.test(value) && !/^(true|false|null|yes|no|on|off)$/i.test(value) ? value : JSON.stringify(value);
}

/** The commented starting file `kiapi config init` writes. */
export function initialSettingsText(): string {
  return [
    '# kiapi settings. Keys are the environment variable names; an environment variable wins over',
    '# this file. Every setting with its default and meaning: `kiapi config template`.',
    '',
    'KIAPI_HOST: 127.0.0.1',
    'KIAPI_PORT: 8000',
    '# KIAPI_AUTH_TOKEN: change-me        # require Authorization: Bearer <token>',
    '# KIAPI_MEMORY_LIMIT_GB: 48          # budget for resident models (default: 80% of RAM)',
    '# KIAPI_DEFAULT_TTL_S: 1800          # unload a model idle this long (seconds)',
    '# KIAPI_WARMUP: ["qwen/image"]       # models to load at start',
    '',
  ].join('\n');
}

/** Writes the starting file when there is none; returns whether it wrote. */
export function initSettingsFile(file: string): boolean {
  if (fs.existsSync(file)) return false;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, initialSettingsText(), { flag: 'wx' });
  return true;
}
