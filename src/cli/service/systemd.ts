/**
 * Linux: a systemd user unit in ~/.config/systemd/user/<name>.service, enabled for the user's
 * default target so the user manager starts it at login (`loginctl enable-linger` keeps it running
 * without one). Restart=on-failure brings it back after a crash, but not after exit code 2 (bad
 * settings: restarting cannot help). The server's output is appended to a log file, so
 * `kiapi service logs` reads the same kind of file on every platform.
 *
 * Values are written with the quoting of systemd.syntax(7): each ExecStart word and each
 * Environment assignment in double quotes with `\` and `"` escaped, `%` doubled (specifiers)
 * everywhere, and `$` doubled in ExecStart arguments (variable expansion).
 */
import { SetupError } from '../../core/errors.js';
import type { ServiceDefinition } from './definition.js';
import { runTool, toolFailure, type ServiceManager, type ServiceState } from './manager.js';

const NEEDS = "systemd's user manager (systemctl --user)";

function quoted(s: string): string {
  return `"${s.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('%', '%%')}"`;
}

/** An ExecStart argument after the first: `$` would start a variable reference. */
function argument(s: string): string {
  return quoted(s).replaceAll('$', '$$$$');
}

/** The executable: systemd takes it literally apart from quoting and specifiers, and refuses quotes and backslashes in it. */
function executable(s: string): string {
  if (/["'\\]/.test(s)) {
    throw new SetupError(`systemd does not run a program whose path contains a quote or a backslash: ${s}; use a node installed at a plainer path`);
  }
  return quoted(s);
}

/** A path value (append:, specifiers resolved, no quoting): only `%` is special. */
function plainPath(s: string): string {
  if (s.trim() !== s) throw new SetupError(`systemd trims values, so a path cannot start or end with a space: ${JSON.stringify(s)}`);
  return s.replaceAll('%', '%%');
}

export function unitText(def: ServiceDefinition): string {
  const [program, ...args] = def.program;
  const lines = [
    '# Written by `kiapi service install`; `kiapi service install --force` writes it anew.',
    '[Unit]',
    'Description=kiapi image-generation API server',
    // Five failed starts within two minutes: give up (a crash loop), until `kiapi service start`.
    'StartLimitIntervalSec=120',
    'StartLimitBurst=5',
    '',
    '[Service]',
    'Type=exec',
    `ExecStart=${[executable(program ?? ''), ...args.map(argument)].join(' ')}`,
    'WorkingDirectory=~',
    ...Object.entries(def.env).map(([k, v]) => `Environment=${quoted(`${k}=${v}`)}`),
    `StandardOutput=append:${plainPath(def.logFile)}`,
    `StandardError=append:${plainPath(def.logFile)}`,
    'Restart=on-failure',
    'RestartSec=5',
    'RestartPreventExitStatus=2',
    // SIGTERM to kiapi only: it stops its engine worker itself after the running job's grace.
    'KillMode=mixed',
    `TimeoutStopSec=${def.stopTimeoutS}`,
    '',
    '[Install]',
    'WantedBy=default.target',
    '',
  ];
  return lines.join('\n');
}

export class SystemdManager implements ServiceManager {
  readonly kind = 'systemd user unit';

  private unit(def: ServiceDefinition): string {
    return `${def.name}.service`;
  }

  private systemctl(args: string[], timeoutMs?: number) {
    const full = ['--user', ...args];
    const r = runTool('systemctl', full, NEEDS, timeoutMs);
    return { full, r };
  }

  private must(args: string[], hint = '', timeoutMs?: number): string {
    const { full, r } = this.systemctl(args, timeoutMs);
    if (r.code !== 0) throw toolFailure('systemctl', full, r, hint);
    return r.stdout;
  }

  render(def: ServiceDefinition): string {
    return unitText(def);
  }

  afterInstall(def: ServiceDefinition): void {
    this.must(['daemon-reload'], 'Is a systemd user manager running for you? (In a login session it is; over sudo or su, XDG_RUNTIME_DIR is missing.)');
    this.must(['enable', this.unit(def)]);
  }

  start(def: ServiceDefinition): void {
    // reset-failed: a unit that hit its start limit would refuse to start again.
    this.systemctl(['reset-failed', this.unit(def)]);
    this.must(['start', this.unit(def)], 'See `kiapi service logs`.');
  }

  stop(def: ServiceDefinition): void {
    this.must(['stop', this.unit(def)], '', (def.stopTimeoutS + 30) * 1000);
  }

  state(def: ServiceDefinition): ServiceState {
    // is-active prints the state and exits non-zero for every state but active.
    const { r } = this.systemctl(['is-active', this.unit(def)]);
    const detail = r.stdout.trim().split('\n')[0] ?? '';
    // Without a user manager it prints nothing (and "Failed to connect to bus" on stderr).
    if (r.code !== 0 && !['inactive', 'failed', 'activating', 'deactivating', 'reloading', 'maintenance', 'refreshing'].includes(detail)) {
      throw toolFailure('systemctl', ['--user', 'is-active', this.unit(def)], r);
    }
    const running = detail === 'active' || detail === 'reloading';
    let pid: number | null = null;
    if (running) {
      const main = Number(this.must(['show', '--property=MainPID', '--value', this.unit(def)]).trim());
      pid = Number.isInteger(main) && main > 0 ? main : null;
    }
    return { loaded: true, running, pid, detail };
  }

  beforeUninstall(def: ServiceDefinition): void {
    this.must(['disable', this.unit(def)]);
  }

  afterUninstall(): void {
    this.must(['daemon-reload']);
  }
}
