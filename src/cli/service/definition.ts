/**
 * What the kiapi service runs and where its files go, independent of the service manager: the
 * command (`<node> <kiapi> run`, absolute paths; see stableNode), the environment it gets, the log file and how
 * long a stop may take. launchd.ts and systemd.ts turn it into a plist or a unit file.
 *
 * Settings reach the service through the settings file, not through the environment of the shell
 * that installed it: the service gets KIAPI_CONFIG_FILE (the file `kiapi config` edits) and the
 * variables that say where kiapi's files are, so `kiapi run` in the service sees the same settings
 * file, data dir and model cache as the user's shell. A later change to the settings file takes
 * effect at the next start (`kiapi service restart`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SetupError } from '../../core/errors.js';
import { settingsFilePath } from '../../core/setup/settings-file.js';
import type { ServicePlatform, ServiceSettings } from './settings.js';

type Env = Record<string, string | undefined>;

export interface ServiceDefinition {
  platform: ServicePlatform;
  /** launchd label or systemd unit name (without `.service`). */
  name: string;
  /** The plist or unit file. */
  file: string;
  /** Absolute node, absolute kiapi entry point, `run`. */
  program: string[];
  /** The variables the service gets, sorted by name. */
  env: Record<string, string>;
  workingDirectory: string;
  /** stdout and stderr of the server, appended. */
  logFile: string;
  /** Seconds between the stop signal and a forced kill: the shutdown grace plus time to persist. */
  stopTimeoutS: number;
}

export const DEFAULT_LABEL: Record<ServicePlatform, string> = { darwin: 'io.github.kiarina.kiapi', linux: 'kiapi' };

/** Where kiapi's files are (data dir, default config/data/cache dirs, the Hugging Face cache): passed as set at install. */
export const LOCATION_VARS = ['KIAPI_DATA_DIR', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'XDG_CACHE_HOME', 'HF_HOME', 'HF_HUB_CACHE'] as const;

/** The kiapi entry point this code belongs to (dist/src/cli/main.js). */
export const KIAPI_ENTRY = fileURLToPath(new URL('../main.js', import.meta.url));

/**
 * The node the service runs: the first `node` on PATH when it is this very node, else this
 * process's own. The one on PATH is often a link that outlives upgrades (Homebrew's
 * /opt/homebrew/bin/node points into a versioned Cellar folder, which process.execPath names).
 */
export function stableNode(env: Env, execPath: string = process.execPath): string {
  let self: string;
  try {
    self = fs.realpathSync(execPath);
  } catch {
    return execPath;
  }
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!path.isAbsolute(dir)) continue;
    const candidate = path.join(dir, 'node');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.realpathSync(candidate) === self) return candidate;
      return execPath;
    } catch {
      // not in this folder
    }
  }
  return execPath;
}

export function servicePlatform(settings: ServiceSettings, platform: NodeJS.Platform = process.platform): ServicePlatform {
  if (settings.platform !== 'auto') return settings.platform;
  if (platform === 'darwin' || platform === 'linux') return platform;
  throw new SetupError(
    `kiapi service supports macOS (a launchd user agent) and Linux (a systemd user unit), not ${platform}; run \`kiapi run\` under your own service manager instead`,
  );
}

function isSet(v: string | undefined): v is string {
  return v !== undefined && v.trim() !== '';
}

export function homeDir(env: Env): string {
  return isSet(env.HOME) ? env.HOME : os.homedir();
}

/** The environment the service gets: the settings file's path and the location variables set now. */
export function serviceEnvironment(env: Env): Record<string, string> {
  const out: Record<string, string> = { KIAPI_CONFIG_FILE: settingsFilePath(env) };
  for (const name of LOCATION_VARS) {
    const v = env[name];
    // Resolved now: the service does not start in the directory `install` ran in.
    if (isSet(v)) out[name] = path.resolve(v.trim() === '~' || v.trim().startsWith('~/') ? path.join(homeDir(env), v.trim().slice(1)) : v.trim());
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * The environment `kiapi run` sees inside the service, as far as kiapi's settings go: this
 * process's environment without its KIAPI_* variables, plus the service's own. `status` reads the
 * host and port from it, so it probes where the service listens, not where the shell's variables point.
 */
export function serviceView(env: Env): Env {
  const out: Env = {};
  for (const [k, v] of Object.entries(env)) if (!k.startsWith('KIAPI_')) out[k] = v;
  return { ...out, ...serviceEnvironment(env) };
}

/** KIAPI_* variables set in this shell that the service will not see (they belong in the settings file). */
export function unseenVariables(env: Env): string[] {
  const passed = serviceEnvironment(env);
  return Object.keys(env)
    .filter((k) => k.startsWith('KIAPI_') && !k.startsWith('KIAPI_SERVICE_') && isSet(env[k]) && !(k in passed))
    .sort();
}

export function serviceName(platform: ServicePlatform, settings: ServiceSettings): string {
  return settings.label ?? DEFAULT_LABEL[platform];
}

/** The plist / unit file and the log file of a service named `name`. */
export function servicePaths(platform: ServicePlatform, name: string, env: Env): { file: string; logFile: string } {
  const home = homeDir(env);
  if (platform === 'darwin') {
    return {
      file: path.join(home, 'Library', 'LaunchAgents', `${name}.plist`),
      logFile: path.join(home, 'Library', 'Logs', 'kiapi', `${name}.log`),
    };
  }
  const config = isSet(env.XDG_CONFIG_HOME) ? path.resolve(env.XDG_CONFIG_HOME) : path.join(home, '.config');
  const state = isSet(env.XDG_STATE_HOME) ? path.resolve(env.XDG_STATE_HOME) : path.join(home, '.local', 'state');
  return { file: path.join(config, 'systemd', 'user', `${name}.service`), logFile: path.join(state, 'kiapi', `${name}.log`) };
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

export function buildDefinition(opts: {
  platform: ServicePlatform;
  settings: ServiceSettings;
  env: Env;
  shutdownGraceS: number;
  node?: string;
  entry?: string;
}): ServiceDefinition {
  const name = serviceName(opts.platform, opts.settings);
  const { file, logFile } = servicePaths(opts.platform, name, opts.env);
  const def: ServiceDefinition = {
    platform: opts.platform,
    name,
    file,
    program: [opts.node ?? stableNode(opts.env), opts.entry ?? KIAPI_ENTRY, 'run'],
    env: serviceEnvironment(opts.env),
    workingDirectory: homeDir(opts.env),
    logFile,
    stopTimeoutS: Math.ceil(opts.shutdownGraceS) + 15,
  };
  // Neither a plist (XML) nor a unit file can carry control characters in a value.
  const values: Array<[string, string]> = [
    ['node', def.program[0] ?? ''],
    ['kiapi', def.program[1] ?? ''],
    ['home directory', def.workingDirectory],
    ['log file', def.logFile],
    ...Object.entries(def.env),
  ];
  for (const [what, value] of values) {
    if (CONTROL.test(value)) throw new SetupError(`the ${what} path contains a control character (${JSON.stringify(value)}); a service file cannot hold it`);
  }
  return def;
}
