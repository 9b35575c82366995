/**
 * macOS: a launchd user agent, as the original server installed it. The plist goes to
 * ~/Library/LaunchAgents/<label>.plist, so launchd also starts it at every login (RunAtLoad);
 * KeepAlive restarts it when it exits with a failure, not after a clean stop. `start` loads it into
 * the user's GUI domain (`launchctl bootstrap gui/<uid>`), `stop` unloads it (`launchctl bootout`),
 * which sends SIGTERM and waits, with ExitTimeOut before a SIGKILL.
 */
import { build } from 'plist';
import { SetupError } from '../../core/errors.js';
import type { ServiceDefinition } from './definition.js';
import { runTool, toolFailure, type ServiceManager, type ServiceState } from './manager.js';

/** `launchctl print` of a service launchd does not know: "Could not find service … in domain". */
const NOT_FOUND = 113;
/** `launchctl bootout` of a service that is still shutting down: "Operation now in progress". */
const IN_PROGRESS = 36;
const NEEDS = 'launchd (macOS)';

export function plistText(def: ServiceDefinition): string {
  return `${build({
    Label: def.name,
    ProgramArguments: def.program,
    EnvironmentVariables: def.env,
    WorkingDirectory: def.workingDirectory,
    RunAtLoad: true,
    KeepAlive: { SuccessfulExit: false },
    ExitTimeOut: def.stopTimeoutS,
    StandardOutPath: def.logFile,
    StandardErrorPath: def.logFile,
  })}\n`;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function uid(): number {
  return process.getuid?.() ?? 0;
}

export class LaunchdManager implements ServiceManager {
  readonly kind = 'launchd user agent';

  private domain(): string {
    return `gui/${uid()}`;
  }

  private target(def: ServiceDefinition): string {
    return `${this.domain()}/${def.name}`;
  }

  private launchctl(args: string[], timeoutMs?: number) {
    return runTool('launchctl', args, NEEDS, timeoutMs);
  }

  render(def: ServiceDefinition): string {
    return plistText(def);
  }

  afterInstall(): void {
    // Nothing to tell launchd: it reads ~/Library/LaunchAgents at login; `start` loads it now.
  }

  start(def: ServiceDefinition): void {
    const st = this.state(def);
    const args = st.loaded ? ['kickstart', this.target(def)] : ['bootstrap', this.domain(), def.file];
    if (st.running) return;
    const r = this.launchctl(args);
    if (r.code !== 0) {
      throw toolFailure('launchctl', args, r, `See \`kiapi service logs\`. If the agent was disabled: launchctl enable ${this.target(def)}`);
    }
  }

  stop(def: ServiceDefinition): void {
    if (!this.state(def).loaded) return;
    const args = ['bootout', this.target(def)];
    const r = this.launchctl(args, (def.stopTimeoutS + 30) * 1000);
    if (r.code !== 0 && r.code !== NOT_FOUND && r.code !== IN_PROGRESS) throw toolFailure('launchctl', args, r);
    // bootout may return while the process still shuts down: wait until launchd has let it go.
    const deadline = Date.now() + (def.stopTimeoutS + 30) * 1000;
    while (this.state(def).loaded) {
      if (Date.now() > deadline) throw new SetupError(`launchd still has ${def.name} ${def.stopTimeoutS + 30}s after \`launchctl bootout\``);
      sleepSync(250);
    }
  }

  state(def: ServiceDefinition): ServiceState {
    const args = ['print', this.target(def)];
    const r = this.launchctl(args);
    if (r.code === NOT_FOUND) return { loaded: false, running: false, pid: null, detail: 'not loaded' };
    if (r.code !== 0) throw toolFailure('launchctl', args, r);
    // The service's own keys are indented by one tab; nested blocks (endpoints, …) by more.
    const state = /^\tstate = (.+)$/m.exec(r.stdout)?.[1]?.trim() ?? 'unknown';
    const pid = /^\tpid = (\d+)$/m.exec(r.stdout)?.[1];
    return { loaded: true, running: state === 'running', pid: pid ? Number(pid) : null, detail: state };
  }

  beforeUninstall(def: ServiceDefinition): void {
    this.stop(def);
  }

  afterUninstall(): void {
    // Unloaded by beforeUninstall; launchd keeps nothing else.
  }
}
