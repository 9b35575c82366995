/**
 * `kiapi config init|show|edit|template`: the settings file (YAML, keys are the environment
 * variable names). `show` prints each setting's effective value and where it came from;
 * `template` lists every setting kiapi reads, with its default and meaning.
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { ConfigError } from '../core/config.js';
import { initSettingsFile, renderTemplate, settingsFilePath, sourceOf, type SettingSource } from '../core/setup/settings-file.js';
import { effectiveDefaults, loadCliEnvironment, loadSettings, settingsCatalog } from './environment.js';
import { table } from './format.js';
import { UsageError } from './usage-error.js';

const SECRETS = new Set(['KIAPI_AUTH_TOKEN', 'KIAPI_WEBHOOK_SECRET']);

export async function configCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'init':
      return init();
    case 'show':
      return show(rest);
    case 'edit':
      return edit();
    case 'template':
      process.stdout.write(renderTemplate(settingsCatalog()));
      return 0;
    default:
      throw new UsageError(sub ? `unknown config command '${sub}' (init, show, edit, template)` : 'config needs a command: init, show, edit or template');
  }
}

function init(): number {
  const file = settingsFilePath(process.env);
  const created = initSettingsFile(file);
  console.log(created ? `created ${file}` : `${file} exists; left unchanged`);
  return 0;
}

interface Row {
  name: string;
  value: string | null;
  source: SettingSource;
  description: string;
}

function show(args: string[]): number {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' } }, strict: true });
  const cli = loadCliEnvironment();
  const defaults = effectiveDefaults(cli.env);
  const rows: Row[] = settingsCatalog().map((s) => {
    const source = sourceOf(s.name, cli.processEnv, cli.file);
    const raw = source === 'default' ? (defaults.has(s.name) ? (defaults.get(s.name) ?? null) : s.default) : (cli.env[s.name] ?? null);
    const value = raw !== null && SECRETS.has(s.name) && source !== 'default' ? '********' : raw;
    return { name: s.name, value, source, description: s.doc };
  });
  rows.sort((a, b) => a.name.localeCompare(b.name));
  let problems: string[] = [];
  try {
    loadSettings();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems = err.problems;
  }
  if (values.json) {
    console.log(JSON.stringify({ file: cli.file.path, fileExists: cli.file.exists, settings: rows, problems }, null, 2));
  } else {
    console.log(`settings file: ${cli.file.path}${cli.file.exists ? '' : ' (none; `kiapi config init` creates it)'}`);
    console.log(table([['SETTING', 'VALUE', 'FROM'], ...rows.map((r) => [r.name, r.value ?? '(unset)', r.source])]));
    if (problems.length > 0) console.error(`problems:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
  return problems.length > 0 ? 2 : 0;
}

/** `sh -c` quoting, so $VISUAL/$EDITOR may carry arguments (`code -w`). */
function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

function edit(): number {
  const file = settingsFilePath(process.env);
  if (initSettingsFile(file)) console.log(`created ${file}`);
  const editor = process.env.VISUAL?.trim() || process.env.EDITOR?.trim() || (process.platform === 'win32' ? 'notepad' : 'vi');
  const r = spawnSync(`${editor} ${shellQuote(file)}`, { shell: true, stdio: 'inherit' });
  if (r.error || r.status !== 0) {
    console.error(`kiapi: the editor (${editor}) ${r.error ? `could not start: ${r.error.message}` : `exited with ${r.status}`}; set VISUAL or EDITOR`);
    return 1;
  }
  try {
    loadSettings();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`kiapi: ${file} has problems:\n${err.problems.map((p) => `  - ${p}`).join('\n')}\nRun \`kiapi config edit\` to fix them.`);
      return 2;
    }
    throw err;
  }
  console.log(`${file} is valid`);
  return 0;
}
