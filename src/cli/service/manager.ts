/**
 * A service manager as `kiapi service` uses it: launchd (launchd.ts) or systemd's user manager
 * (systemd.ts). Each runs the manager's own command-line tool (launchctl, systemctl) directly,
 * without a shell, and turns its answers into one small state.
 */
import { spawnSync } from 'node:child_process';
import { SetupError } from '../../core/errors.js';
import type { ServiceDefinition } from './definition.js';

export interface ServiceState {
  /** The manager has the service loaded (launchd) or a unit file for it (systemd). */
  loaded: boolean;
  /** Its process runs. */
  running: boolean;
  pid: number | null;
  /** The manager's own word for the state (`running`, `inactive`, `failed`, …). */
  detail: string;
}

export interface ServiceManager {
  /** e.g. `launchd user agent`. */
  readonly kind: string;
  /** The plist or unit file text. */
  render(def: ServiceDefinition): string;
  /** After the file is written: make the manager read it (and start it at login). */
  afterInstall(def: ServiceDefinition): void;
  /** Start; returns when the manager has started the process (not when it answers HTTP). */
  start(def: ServiceDefinition): void;
  /** Stop; returns when the process has exited. A stopped service is left as it is. */
  stop(def: ServiceDefinition): void;
  state(def: ServiceDefinition): ServiceState;
  /** Before the file is removed (the service is stopped by then). */
  beforeUninstall(def: ServiceDefinition): void;
  /** After the file is removed. */
  afterUninstall(def: ServiceDefinition): void;
}

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a service manager's tool; a missing tool is a SetupError naming what kiapi service needs. */
export function runTool(tool: string, args: string[], needs: string, timeoutMs = 120_000): ToolResult {
  const r = spawnSync(tool, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new SetupError(`${tool} was not found on PATH: kiapi service needs ${needs}`);
    throw new SetupError(`${tool} ${args.join(' ')} failed: ${r.error.message}`);
  }
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

/** A tool's failure as one message: the command, its exit code and what it said. */
export function toolFailure(tool: string, args: string[], r: ToolResult, hint = ''): SetupError {
  const said = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-6).join('\n  ');
  return new SetupError(`\`${tool} ${args.join(' ')}\` failed (exit ${r.code})${said ? `:\n  ${said}` : ''}${hint ? `\n${hint}` : ''}`);
}
