/**
 * `kiapi service install|show|start|stop|restart|status|uninstall|logs`: kiapi as a per-user
 * background service, a launchd user agent on macOS and a systemd user unit on Linux, running
 * `kiapi run` with the user's settings file and restarting it after a crash.
 *
 * `status` exit codes: 0 running and answering /health, 1 running but /health does not answer
 * (starting, or the port is taken), 3 installed but not running, 4 not installed.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, type Config } from '../core/config.js';
import { SetupError } from '../core/errors.js';
import { buildDefinition, servicePlatform, serviceView, unseenVariables, type ServiceDefinition } from './service/definition.js';
import { LaunchdManager } from './service/launchd.js';
import type { ServiceManager, ServiceState } from './service/manager.js';
import { readServiceSettings } from './service/settings.js';
import { SystemdManager } from './service/systemd.js';
import { loadCliEnvironment, loadSettings } from './environment.js';
import { serverStatus, type ServerStatus } from './status.js';
import { UsageError } from './usage-error.js';

export const SERVICE_COMMANDS = ['install', 'show', 'start', 'stop', 'restart', 'status', 'uninstall', 'logs'] as const;

/** Exit codes of `kiapi service status`. */
export const STATUS_CODES = { healthy: 0, unhealthy: 1, stopped: 3, notInstalled: 4 } as const;

interface Service {
  def: ServiceDefinition;
  manager: ServiceManager;
  /** The settings the service's `kiapi run` reads; null with their problems when they are invalid. */
  config: Config | null;
  problems: string[];
}

/** The service as the settings and this kiapi describe it; settings problems are kept, not thrown. */
function describeService(): Service {
  const env = process.env;
  let merged: Record<string, string | undefined> = env;
  try {
    merged = loadCliEnvironment(env).env;
  } catch (err) {
    // A broken settings file: reported below with the other problems; the service's own settings still come from the environment.
    if (!(err instanceof ConfigError)) throw err;
  }
  const settings = readServiceSettings(merged);
  const platform = servicePlatform(settings);
  let config: Config | null = null;
  let problems: string[] = [];
  try {
    config = loadSettings(serviceView(env)).config;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems = err.problems;
  }
  const def = buildDefinition({ platform, settings, env, shutdownGraceS: config?.shutdownGraceS ?? 30 });
  const manager = platform === 'darwin' ? new LaunchdManager() : new SystemdManager();
  return { def, manager, config, problems };
}

function installed(def: ServiceDefinition): boolean {
  return fs.existsSync(def.file);
}

function requireInstalled(def: ServiceDefinition): void {
  if (!installed(def)) throw new SetupError(`the kiapi service is not installed (no ${def.file}); run \`kiapi service install\` first`);
}

/** Settings the service would stop on at once: refuse to install or start with them. */
function requireValidSettings(svc: Service): Config {
  if (svc.config === null) throw new ConfigError(svc.problems);
  return svc.config;
}

export async function serviceCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'install':
      return install(rest);
    case 'show':
      return show(rest);
    case 'start':
      return start(rest);
    case 'stop':
      return stop(rest);
    case 'restart':
      return restart(rest);
    case 'status':
      return status(rest);
    case 'uninstall':
      return uninstall(rest);
    case 'logs':
      return logs(rest);
    default:
      throw new UsageError(
        sub ? `unknown service command '${sub}' (${SERVICE_COMMANDS.join(', ')})` : `service needs a command: ${SERVICE_COMMANDS.join(', ')}`,
        { showUsage: true },
      );
  }
}

function noArgs(args: string[]): void {
  parseArgs({ args, options: {}, strict: true });
}

/**
 * Writes via a temporary file and a rename, so the manager never reads half a file. Mode 0644
 * whatever the umask: launchd refuses a plist that group or others may write (a umask of 002 is
 * common where every user has a group of their own).
 */
function writeFileAtomic(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.chmodSync(tmp, 0o644);
  fs.renameSync(tmp, file);
}

function install(args: string[]): number {
  const { values } = parseArgs({ args, options: { force: { type: 'boolean' } }, strict: true });
  const svc = describeService();
  requireValidSettings(svc);
  const { def, manager } = svc;
  const existed = installed(def);
  if (existed && !values.force) {
    throw new SetupError(
      `the kiapi service is already installed (${def.file}); \`kiapi service install --force\` writes it anew (after moving or updating kiapi or node), \`kiapi service uninstall\` removes it`,
    );
  }
  const text = manager.render(def);
  fs.mkdirSync(path.dirname(def.logFile), { recursive: true });
  const previous = existed ? fs.readFileSync(def.file, 'utf8') : null;
  writeFileAtomic(def.file, text);
  try {
    manager.afterInstall(def);
  } catch (err) {
    // The manager did not take it: leave things as they were, so a retry is a plain install.
    if (previous === null) fs.rmSync(def.file, { force: true });
    else writeFileAtomic(def.file, previous);
    throw err;
  }
  console.log(`${existed ? 'rewrote' : 'installed'} ${def.file} (${manager.kind} ${def.name})`);
  console.log(`  runs:     ${def.program.join(' ')}`);
  console.log(`  settings: ${def.env.KIAPI_CONFIG_FILE}`);
  console.log(`  logs:     ${def.logFile}`);
  const unseen = unseenVariables(process.env);
  if (unseen.length > 0) {
    console.log(
      `note: the service does not see ${unseen.join(', ')} from this shell; put them in the settings file (\`kiapi config edit\`) to apply them there`,
    );
  }
  if (def.platform === 'linux') console.log('It starts when you log in; `loginctl enable-linger` keeps it running without a login session.');
  else console.log('It starts when you log in.');
  const running = manager.state(def).running;
  console.log(running ? 'It is running the previous definition: `kiapi service restart` applies this one.' : 'Start it now: kiapi service start');
  return 0;
}

function show(args: string[]): number {
  noArgs(args);
  const { def, manager } = describeService();
  const text = manager.render(def);
  process.stdout.write(text);
  if (installed(def) && fs.readFileSync(def.file, 'utf8') !== text) {
    console.error(`kiapi: the installed ${def.file} differs from this; \`kiapi service install --force\` writes this one`);
  }
  return 0;
}

/** The last `n` lines of the log, for a failed start and `status`. */
function logTail(file: string, n: number): string[] {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return [];
  }
  try {
    const size = fs.fstatSync(fd).size;
    const len = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(len);
    fs.readSync(fd, buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n');
    if (len < size) lines.shift(); // a cut first line
    return lines.filter((l) => l.trim() !== '').slice(-n);
  } finally {
    fs.closeSync(fd);
  }
}

function printLogTail(def: ServiceDefinition, stream: 'out' | 'err', n = 10): void {
  const lines = logTail(def.logFile, n);
  const print = stream === 'out' ? console.log : console.error;
  if (lines.length === 0) return;
  print(`Last lines of ${def.logFile}:`);
  for (const l of lines) print(`  ${l}`);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until the server answers /health, the manager says the process is gone, or `waitS` passes. */
async function awaitHealth(svc: Service, config: Config, waitS: number): Promise<number> {
  const { def, manager } = svc;
  const deadline = Date.now() + waitS * 1000;
  let goneTwice = 0;
  for (;;) {
    const st = manager.state(def);
    const server = await serverStatus(config, 1000);
    // Only with the service's process running: another kiapi may hold the port.
    if (server.running && st.running) {
      console.log(`kiapi is running at ${server.url} (engine ${server.engine ?? '?'})`);
      return 0;
    }
    // Twice in a row: right after a start the manager may not show the process yet.
    goneTwice = st.running ? 0 : goneTwice + 1;
    if (goneTwice >= 2) {
      console.error(`kiapi: the service stopped right after it started (${st.detail})`);
      printLogTail(def, 'err');
      return 1;
    }
    if (Date.now() >= deadline) {
      console.error(
        `kiapi: the service runs${st.pid ? ` (pid ${st.pid})` : ''} but nothing answers ${server.url}/health after ${waitS}s; see \`kiapi service status\` and \`kiapi service logs\``,
      );
      return 1;
    }
    await delay(250);
  }
}

function waitOption(value: string | undefined): number {
  if (value === undefined) return 30;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`--wait ${JSON.stringify(value)}: expected seconds, a number >= 0`);
  return n;
}

async function startAndWait(svc: Service, waitS: number, before: ServiceState): Promise<number> {
  const config = requireValidSettings(svc);
  if (before.running) {
    console.log(`the kiapi service is already running${before.pid ? ` (pid ${before.pid})` : ''}`);
  } else {
    svc.manager.start(svc.def);
    console.log(`started the kiapi service (${svc.manager.kind} ${svc.def.name})`);
  }
  return waitS > 0 ? awaitHealth(svc, config, waitS) : 0;
}

async function start(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { wait: { type: 'string' } }, strict: true });
  const waitS = waitOption(values.wait);
  const svc = describeService();
  requireInstalled(svc.def);
  return startAndWait(svc, waitS, svc.manager.state(svc.def));
}

function stopService(svc: Service): void {
  const st = svc.manager.state(svc.def);
  svc.manager.stop(svc.def);
  console.log(st.running ? 'stopped the kiapi service' : 'the kiapi service was not running');
}

function stop(args: string[]): number {
  noArgs(args);
  const svc = describeService();
  requireInstalled(svc.def);
  stopService(svc);
  return 0;
}

async function restart(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { wait: { type: 'string' } }, strict: true });
  const waitS = waitOption(values.wait);
  const svc = describeService();
  requireInstalled(svc.def);
  requireValidSettings(svc);
  stopService(svc);
  return startAndWait(svc, waitS, svc.manager.state(svc.def));
}

interface StatusReport {
  platform: string;
  manager: string;
  name: string;
  file: string;
  installed: boolean;
  running: boolean;
  pid: number | null;
  state: string;
  server: ServerStatus | null;
  logFile: string;
  settingsFile: string;
  problems: string[];
}

async function status(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' } }, strict: true });
  const svc = describeService();
  const { def, manager } = svc;
  const isInstalled = installed(def);
  const st: ServiceState = isInstalled ? manager.state(def) : { loaded: false, running: false, pid: null, detail: 'not installed' };
  const server = svc.config ? await serverStatus(svc.config) : null;
  const code = !isInstalled
    ? STATUS_CODES.notInstalled
    : !st.running
      ? STATUS_CODES.stopped
      : server?.running
        ? STATUS_CODES.healthy
        : STATUS_CODES.unhealthy;
  const report: StatusReport = {
    platform: def.platform,
    manager: manager.kind,
    name: def.name,
    file: def.file,
    installed: isInstalled,
    running: st.running,
    pid: st.pid,
    state: st.detail,
    server,
    logFile: def.logFile,
    settingsFile: def.env.KIAPI_CONFIG_FILE ?? '',
    problems: svc.problems,
  };
  if (values.json) {
    console.log(JSON.stringify(report, null, 2));
    return code;
  }
  console.log(`Service   ${def.name} (${manager.kind})`);
  console.log(`File      ${def.file}${isInstalled ? '' : ' (not installed: kiapi service install)'}`);
  if (isInstalled) {
    const detail = st.detail === 'not running' ? '' : ` (${st.detail})`;
    console.log(`State     ${st.running ? `running${st.pid ? ` (pid ${st.pid})` : ''}` : `not running${detail}`}`);
  }
  if (server) {
    console.log(
      `Server    ${
        server.running
          ? `answers at ${server.url} (engine ${server.engine ?? '?'})`
          : server.other
            ? `${server.url} answers, but not as kiapi (another program uses the port?)`
            : `nothing answers at ${server.url}`
      }`,
    );
  }
  console.log(`Settings  ${report.settingsFile}`);
  for (const p of svc.problems) console.log(`  problem: ${p}`);
  console.log(`Logs      ${def.logFile}`);
  if (isInstalled) printLogTail(def, 'out');
  return code;
}

function uninstall(args: string[]): number {
  noArgs(args);
  const svc = describeService();
  const { def, manager } = svc;
  if (!installed(def)) {
    console.log(`the kiapi service is not installed (no ${def.file}); nothing to do`);
    return 0;
  }
  stopService(svc);
  manager.beforeUninstall(def);
  fs.rmSync(def.file, { force: true });
  manager.afterUninstall(def);
  console.log(`removed ${def.file}; the log ${def.logFile} is kept`);
  return 0;
}

function logs(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: { lines: { type: 'string', short: 'n' }, follow: { type: 'boolean', short: 'f' } },
    strict: true,
  });
  const n = values.lines ?? '50';
  if (!/^\d+$/.test(n)) throw new UsageError(`--lines ${JSON.stringify(n)}: expected a whole number of lines`);
  const svc = describeService();
  const { def } = svc;
  if (!fs.existsSync(def.logFile)) {
    console.error(`kiapi: no log yet at ${def.logFile} (the service writes it once it starts)`);
    return 1;
  }
  // tail itself: -F follows the file by name, so it goes on after the log is truncated or replaced.
  const r = spawnSync('tail', ['-n', n, ...(values.follow ? ['-F'] : []), def.logFile], { stdio: 'inherit' });
  if (r.error) throw new SetupError(`could not run tail: ${r.error.message}; the log is ${def.logFile}`);
  return r.status ?? 1;
}
