/**
 * The environment every command reads its settings from: the settings file's values merged under
 * `process.env` (env > file > defaults), in this one place. `kiapi run` hands the merged
 * environment to loadConfig and to the families (registerCapabilities), so every setting, the
 * families' KIAPI_QWEN_* / KIAPI_IDEOGRAM4_* included, honours the file.
 */
import { registerCapabilities } from '../capabilities/index.js';
import { CapabilityRegistry } from '../core/capability.js';
import { ConfigError, knownSettings, loadConfig, type Config, type SettingInfo } from '../core/config.js';
import { ModelRegistry } from '../core/models/model-spec.js';
import { readSetupSettings } from '../core/setup/setup-settings.js';
import { annotateFileProblems, mergeSettings, readSettingsFile, settingsFilePath, type SettingsFile } from '../core/setup/settings-file.js';
import { readServerSettings } from '../server/settings.js';
import { readServiceSettings } from './service/settings.js';

type Env = Record<string, string | undefined>;

export interface CliEnvironment {
  /** What the readers see: file values under the process environment. */
  env: Env;
  /** The process environment alone (for telling where a value came from). */
  processEnv: Env;
  file: SettingsFile;
}

let catalogCache: SettingInfo[] | null = null;

/** Every setting kiapi reads: each reader runs once on an empty environment and records its reads. */
export function settingsCatalog(): SettingInfo[] {
  if (catalogCache) return catalogCache;
  const empty: Env = {};
  settingsFilePath(empty);
  loadConfig(empty);
  readServerSettings(empty);
  readSetupSettings(empty);
  readServiceSettings(empty);
  registerCapabilities(new CapabilityRegistry(new ModelRegistry()), empty);
  catalogCache = knownSettings();
  return catalogCache;
}

/**
 * Each setting's default as `env` makes it: some defaults derive from other settings (the files
 * folder is `files/` inside KIAPI_DATA_DIR), so the catalog's defaults, read on an empty
 * environment, are not what a run with `env` would use. Every reader records the default it used
 * when it reads, so running them on `env` and reading the catalog gives the derived ones. A reader
 * that rejects a value still recorded its defaults before throwing.
 */
export function effectiveDefaults(env: Env): Map<string, string | null> {
  // Snapshot the plain defaults first: settingsCatalog() must never see the derived ones.
  settingsCatalog();
  const readers: Array<() => unknown> = [
    () => settingsFilePath(env),
    () => loadConfig(env),
    () => readServerSettings(env),
    () => readSetupSettings(env),
    () => readServiceSettings(env),
    () => registerCapabilities(new CapabilityRegistry(new ModelRegistry()), env),
  ];
  for (const read of readers) {
    try {
      read();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
    }
  }
  return new Map(knownSettings().map((s) => [s.name, s.default]));
}

/** Reads the settings file and merges it; throws ConfigError (naming the file) for a bad file. */
export function loadCliEnvironment(processEnv: Env = process.env): CliEnvironment {
  const file = readSettingsFile(settingsFilePath(processEnv), settingsCatalog());
  return { env: mergeSettings(processEnv, file), processEnv, file };
}

/**
 * Runs `fn` on the merged environment; a ConfigError from any reader names the settings file for
 * the values that came from it.
 */
export function withFileProblems<T>(cli: CliEnvironment, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ConfigError) throw annotateFileProblems(err, cli.processEnv, cli.file);
    throw err;
  }
}

export interface LoadedSettings {
  cli: CliEnvironment;
  config: Config;
  models: ModelRegistry;
}

/** The merged environment, the core config and the model registry, every value validated. */
export function loadSettings(processEnv: Env = process.env, overrides: Env = {}): LoadedSettings {
  const base = loadCliEnvironment(processEnv);
  const cli: CliEnvironment = { ...base, env: { ...base.env, ...overrides }, processEnv: { ...processEnv, ...overrides } };
  return withFileProblems(cli, () => {
    const config = loadConfig(cli.env);
    readSetupSettings(cli.env);
    readServerSettings(cli.env);
    const models = new ModelRegistry();
    registerCapabilities(new CapabilityRegistry(models), cli.env);
    return { cli, config, models };
  });
}
