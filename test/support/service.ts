/**
 * For the `kiapi service` tests: the fake service managers (fake_service_manager.py) put on PATH,
 * independent parsers of the files kiapi writes (Python's plistlib; the fake systemd's reading of a
 * unit), and systemd's own checker, `systemd-analyze verify`.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';

export const FAKE_SERVICE_MANAGER = path.join(PACKAGE_ROOT, 'test', 'support', 'fake_service_manager.py');

/** A directory with `launchctl` and `systemctl` that run the fake; put it first on PATH. */
export function fakeServiceBin(dir: string): string {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  for (const tool of ['launchctl', 'systemctl']) {
    const file = path.join(bin, tool);
    fs.writeFileSync(file, `#!/bin/sh\nexec python3 '${FAKE_SERVICE_MANAGER.replaceAll("'", `'\\''`)}' ${tool} "$@"\n`, { mode: 0o755 });
  }
  return bin;
}

function python(code: string, input: string, env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync('python3', ['-c', code], { input, encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`python3 failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** The plist as Python's plistlib reads it (it rejects malformed XML, as `plutil -lint` does). */
export function parsePlist(text: string): unknown {
  return JSON.parse(python('import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read(), fmt=plistlib.FMT_XML)))', text));
}

export interface UnitJob {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  log: string | null;
  timeout: number;
  wanted_by: string[];
}

/** What the fake systemd runs for a unit: its ExecStart words, environment, directory and log file. */
export function parseUnit(text: string, home: string, stateDir: string): UnitJob {
  const code = `import json, sys; sys.path.insert(0, ${JSON.stringify(path.dirname(FAKE_SERVICE_MANAGER))}); import fake_service_manager as f; print(json.dumps(f.unit_job(sys.stdin.read())))`;
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: home, FAKE_SERVICE_STATE: stateDir };
  return JSON.parse(python(code, text, env)) as UnitJob;
}

/** systemd-analyze on this machine (Debian's systemd package), or null. */
export function systemdAnalyze(): string | null {
  const r = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? 'systemd-analyze' : null;
}

/**
 * `systemd-analyze --user verify FILE`: systemd's own parser and checks. It needs a runtime dir,
 * not a running manager. It reports some errors (an unknown directive, a bad specifier) only on
 * stderr with exit code 0, so a clean unit is exit 0 with nothing on stderr.
 */
export function systemdVerify(file: string, runtimeDir: string): { code: number | null; stderr: string } {
  fs.mkdirSync(runtimeDir, { recursive: true, mode: 0o700 });
  const r = spawnSync('systemd-analyze', ['--user', 'verify', file], {
    encoding: 'utf8',
    env: { ...process.env, XDG_RUNTIME_DIR: runtimeDir, SYSTEMD_LOG_COLOR: '0' },
  });
  return { code: r.status, stderr: r.stderr };
}
