/**
 * `kiapi service` end to end, for both platforms on this machine: the built CLI drives fake
 * `launchctl` / `systemctl --user` (test/support/fake_service_manager.py) that really run what
 * the written plist or unit says, so `start` brings up a real `kiapi run` (the preview engine) that
 * answers /health on the port of the settings file, `stop` ends it, and `status` probes it. HOME is
 * a temporary directory whose name has spaces, `&`, `%`, `$` and non-ASCII letters, so every path
 * in the service file needs its format's escaping.
 */
import assert from 'node:assert/strict';
import { runCaptured, type Captured } from '../support/process.js';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { freePort, tempDir } from '../support/server.js';
import { fakeServiceBin, parsePlist, systemdAnalyze, systemdVerify } from '../support/service.js';

const CLI = path.join(PACKAGE_ROOT, 'dist/src/cli/main.js');
const root = tempDir('kiapi-service-');

type Run = Captured;

interface Setup {
  home: string;
  state: string;
  bin: string;
  settings: string;
  dataDir: string;
  platform: 'darwin' | 'linux';
}

/** Only the runner's non-kiapi variables pass: its KIAPI_*, XDG_* and HF_* settings must not leak in. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(KIAPI_|XDG_|HF_)/.test(k)) env[k] = v;
  return env;
}

function envFor(s: Setup, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...baseEnv(),
    HOME: s.home,
    PATH: `${s.bin}${path.delimiter}${process.env.PATH ?? ''}`,
    FAKE_SERVICE_STATE: s.state,
    KIAPI_SERVICE_PLATFORM: s.platform,
    KIAPI_DATA_DIR: s.dataDir,
    ...extra,
  };
}

async function kiapi(s: Setup, args: string[], extra: Record<string, string> = {}): Promise<Run> {
  // Under umask 002 (common where each user has a group of their own): launchd refuses a group-writable plist.
  return runCaptured('/bin/sh', ['-c', 'umask 002 && exec "$@"', 'sh', process.execPath, CLI, 'service', ...args], { env: envFor(s, extra) });
}

function writeSettings(s: Setup, port: number, extra = ''): void {
  fs.mkdirSync(path.dirname(s.settings), { recursive: true });
  fs.writeFileSync(s.settings, `KIAPI_HOST: 127.0.0.1\nKIAPI_PORT: ${port}\nKIAPI_ENGINE: preview\n${extra}`);
}

/** GET /health: the server's answer, or null when nothing listens. */
async function health(port: number): Promise<{ status: string; engine: { name: string } } | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(5000) });
    return (await res.json()) as { status: string; engine: { name: string } };
  } catch {
    return null;
  }
}

function calls(s: Setup): string[][] {
  const file = path.join(s.state, 'calls.jsonl');
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as string[]);
}

/** Every program the fakes started that still runs: killed, so no test leaves a server behind. */
function killLeftovers(): void {
  for (const manager of ['launchd', 'systemd']) {
    for (const s of fs.readdirSync(root)) {
      const base = path.join(root, s, 'state', manager);
      if (!fs.existsSync(base)) continue;
      for (const name of fs.readdirSync(base)) {
        const pidFile = path.join(base, name, 'pid');
        if (!fs.existsSync(pidFile)) continue;
        try {
          process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  }
}

after(() => {
  killLeftovers();
  fs.rmSync(root, { recursive: true, force: true });
});

function setup(platform: 'darwin' | 'linux'): Setup {
  const base = path.join(root, platform);
  const home = path.join(base, 'home dir & ü %h $x');
  fs.mkdirSync(home, { recursive: true });
  return {
    home,
    state: path.join(base, 'state'),
    bin: fakeServiceBin(base),
    settings: path.join(home, '.config', 'kiapi', 'settings.yaml'),
    dataDir: path.join(home, 'kiapi data'),
    platform,
  };
}

// The two platforms' suites share nothing (own HOME, state and ports), so they run side by side.
void describe('kiapi service', { concurrency: 2 }, () => {
for (const platform of ['darwin', 'linux'] as const) {
  void describe(`kiapi service on ${platform === 'darwin' ? 'macOS (launchd)' : 'Linux (systemd --user)'}`, { concurrency: false }, () => {
    const s = setup(platform);
    let port = 0;
    const file =
      platform === 'darwin'
        ? path.join(s.home, 'Library', 'LaunchAgents', 'io.github.kiarina.kiapi.plist')
        : path.join(s.home, '.config', 'systemd', 'user', 'kiapi.service');
    const logFile =
      platform === 'darwin'
        ? path.join(s.home, 'Library', 'Logs', 'kiapi', 'io.github.kiarina.kiapi.log')
        : path.join(s.home, '.local', 'state', 'kiapi', 'kiapi.log');

    before(async () => {
      port = await freePort();
      writeSettings(s, port);
    });

    void it('before install: start says to install, status exits 4', async () => {
      const start = await kiapi(s, ['start']);
      assert.equal(start.code, 1, start.stderr);
      assert.match(start.stderr, /not installed .*run `kiapi service install` first/);
      const status = await kiapi(s, ['status']);
      assert.equal(status.code, 4, status.stderr);
      assert.match(status.stdout, /not installed/);
    });

    void it('install refuses invalid settings (exit 2, naming the setting) and writes nothing', async () => {
      writeSettings(s, port, 'KIAPI_SYNC_TIMEOUT_S: soon\n');
      const r = await kiapi(s, ['install']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /KIAPI_SYNC_TIMEOUT_S="soon".*\(set in /);
      assert.equal(fs.existsSync(file), false);
      writeSettings(s, port);
    });

    void it('install writes the service file; a second install needs --force', async () => {
      const r = await kiapi(s, ['install'], { KIAPI_PORT: '1' });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.includes(file), r.stdout);
      // A KIAPI_ variable of the shell does not reach the service: said, not silently dropped.
      assert.match(r.stdout, /does not see KIAPI_PORT/);
      assert.equal(fs.statSync(file).mode & 0o777, 0o644);
      if (platform === 'darwin') {
        const plist = parsePlist(fs.readFileSync(file, 'utf8')) as { ProgramArguments: string[]; EnvironmentVariables: Record<string, string> };
        assert.deepEqual(plist.ProgramArguments.slice(1), [CLI, 'run']);
        assert.equal(fs.realpathSync(plist.ProgramArguments[0] ?? ''), fs.realpathSync(process.execPath));
        assert.deepEqual(plist.EnvironmentVariables, { KIAPI_CONFIG_FILE: s.settings, KIAPI_DATA_DIR: s.dataDir });
      } else {
        if (systemdAnalyze()) {
          const v = systemdVerify(file, path.join(s.home, '..', 'runtime'));
          assert.equal(v.code, 0, v.stderr);
          assert.equal(v.stderr, '', 'systemd-analyze verify found nothing to say about the installed unit');
        }
        // Enabled: linked into default.target.wants, as systemctl enable does.
        assert.ok(fs.existsSync(path.join(s.home, '.config', 'systemd', 'user', 'default.target.wants', 'kiapi.service')));
        assert.deepEqual(calls(s).slice(0, 2), [
          ['systemctl', '--user', 'daemon-reload'],
          ['systemctl', '--user', 'enable', 'kiapi.service'],
        ]);
      }
      const again = await kiapi(s, ['install']);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /already installed .*--force/);
      const forced = await kiapi(s, ['install', '--force']);
      assert.equal(forced.code, 0, forced.stderr);
      assert.match(forced.stdout, /^rewrote /m);
    });

    void it('start brings up kiapi run on the settings file\'s port; status sees it answer', async () => {
      const r = await kiapi(s, ['start']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`running at http://127\\.0\\.0\\.1:${port} \\(engine preview\\)`));
      const h = await health(port);
      assert.equal(h?.status, 'ok');
      assert.equal(h?.engine.name, 'preview');
      // The service's data dir is the one of the installing shell.
      assert.ok(fs.existsSync(path.join(s.dataDir, 'kiapi.db')));

      const status = await kiapi(s, ['status']);
      assert.equal(status.code, 0, status.stdout + status.stderr);
      assert.match(status.stdout, /State +running \(pid \d+\)/);
      assert.match(status.stdout, new RegExp(`answers at http://127\\.0\\.0\\.1:${port}`));
      const json = await kiapi(s, ['status', '--json']);
      assert.equal(json.code, 0);
      const report = JSON.parse(json.stdout) as { installed: boolean; running: boolean; pid: number; server: { running: boolean; url: string }; logFile: string };
      assert.equal(report.installed, true);
      assert.equal(report.running, true);
      assert.equal(report.server.running, true);
      assert.equal(report.logFile, logFile);

      const again = await kiapi(s, ['start']);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /already running \(pid \d+\)/);
    });

    void it('logs prints the server\'s output from the log file', async () => {
      const r = await kiapi(s, ['logs', '-n', '200']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`kiapi listening on http://127\\.0\\.0\\.1:${port}`));
      const bad = await kiapi(s, ['logs', '-n', 'many']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--lines "many"/);
    });

    void it('a changed port answers after restart; before it, status exits 1', async () => {
      const newPort = await freePort();
      writeSettings(s, newPort);
      const stale = await kiapi(s, ['status']);
      assert.equal(stale.code, 1, stale.stdout);
      assert.match(stale.stdout, new RegExp(`nothing answers at http://127\\.0\\.0\\.1:${newPort}`));
      const r = await kiapi(s, ['restart']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /stopped the kiapi service\nstarted the kiapi service/);
      assert.equal((await health(newPort))?.status, 'ok');
      assert.equal(await health(port), null);
      port = newPort;
    });

    void it('stop ends the server gracefully; status exits 3', async () => {
      const r = await kiapi(s, ['stop']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /stopped the kiapi service/);
      assert.equal(await health(port), null);
      assert.match(fs.readFileSync(logFile, 'utf8'), /SIGTERM: no new requests/);
      const status = await kiapi(s, ['status']);
      assert.equal(status.code, 3, status.stdout);
      assert.match(status.stdout, /State +not running/);
      const again = await kiapi(s, ['stop']);
      assert.equal(again.code, 0);
      assert.match(again.stdout, /was not running/);
    });

    void it('a server that cannot start (port taken) makes start fail with the log\'s reason', async () => {
      // Another program on the port: it answers HTTP, but not as kiapi.
      const blocker = http.createServer((_req, res) => res.writeHead(404).end('not kiapi'));
      await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
      try {
        const r = await kiapi(s, ['start']);
        assert.equal(r.code, 1, r.stdout);
        assert.match(r.stderr, /stopped right after it started/);
        assert.match(r.stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use`));
      } finally {
        blocker.closeAllConnections();
        await new Promise((resolve) => blocker.close(resolve));
      }
    });

    void it('uninstall stops it and removes the file; the log stays', async () => {
      assert.equal((await kiapi(s, ['start'])).code, 0);
      const r = await kiapi(s, ['uninstall']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /stopped the kiapi service/);
      assert.equal(await health(port), null);
      assert.equal(fs.existsSync(file), false);
      assert.ok(fs.existsSync(logFile));
      if (platform === 'linux') {
        assert.equal(fs.existsSync(path.join(s.home, '.config', 'systemd', 'user', 'default.target.wants', 'kiapi.service')), false);
      }
      const again = await kiapi(s, ['uninstall']);
      assert.equal(again.code, 0);
      assert.match(again.stdout, /not installed .*nothing to do/);
      assert.equal((await kiapi(s, ['status'])).code, 4);
    });

    void it('drives the real tools\' commands', () => {
      const seen = calls(s).map((c) => c.slice(0, 3).join(' '));
      const uid = process.getuid?.() ?? 0;
      if (platform === 'darwin') {
        assert.ok(seen.includes(`launchctl bootstrap gui/${uid}`), seen.join('\n'));
        assert.ok(seen.includes(`launchctl bootout gui/${uid}/io.github.kiarina.kiapi`), seen.join('\n'));
        assert.ok(seen.includes(`launchctl print gui/${uid}/io.github.kiarina.kiapi`), seen.join('\n'));
      } else {
        for (const c of ['start', 'stop', 'is-active', 'disable', 'daemon-reload']) assert.ok(seen.some((x) => x.startsWith(`systemctl --user ${c}`)), c);
        assert.ok(calls(s).every((c) => c[0] !== 'systemctl' || c[1] === '--user'), 'every systemctl call is --user');
      }
    });
  });
}
});

void describe('kiapi service: usage and environment problems', () => {
  const s = setup('darwin');

  void it('an unknown or missing service command is a usage error (exit 2)', async () => {
    const none = await kiapi(s, []);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /service needs a command: install, show, start/);
    const bad = await kiapi(s, ['frobnicate']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown service command 'frobnicate'/);
  });

  void it('a bad KIAPI_SERVICE_PLATFORM names the variable', async () => {
    const r = await kiapi(s, ['status'], { KIAPI_SERVICE_PLATFORM: 'windows' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /KIAPI_SERVICE_PLATFORM="windows": expected one of auto, darwin, linux/);
  });

  void it('without launchctl on PATH, it says what it needs', async () => {
    writeSettings(s, await freePort());
    assert.equal((await kiapi(s, ['install'])).code, 0);
    const r = await kiapi(s, ['start'], { PATH: path.dirname(process.execPath) });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /launchctl was not found on PATH: kiapi service needs launchd \(macOS\)/);
  });

  void it('where no systemd user manager runs (this machine), install fails with systemctl\'s words and leaves nothing', { skip: fs.existsSync('/usr/bin/systemctl') ? false : 'no systemctl here' }, async () => {
    const l = setup('linux');
    l.home = path.join(l.home, '..', 'real systemctl');
    fs.mkdirSync(l.home, { recursive: true });
    l.settings = path.join(l.home, '.config', 'kiapi', 'settings.yaml');
    writeSettings(l, await freePort());
    // The real systemctl, not the fake: PATH without the fake's bin.
    const r = await kiapi(l, ['install'], { PATH: `${path.dirname(process.execPath)}${path.delimiter}/usr/bin${path.delimiter}/bin` });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /`systemctl --user (daemon-reload|enable kiapi\.service)` failed/);
    assert.equal(fs.existsSync(path.join(l.home, '.config', 'systemd', 'user', 'kiapi.service')), false);
    // A unit file without a manager to ask: status says why it cannot tell, not "not running".
    fs.mkdirSync(path.join(l.home, '.config', 'systemd', 'user'), { recursive: true });
    fs.writeFileSync(path.join(l.home, '.config', 'systemd', 'user', 'kiapi.service'), '');
    const status = await kiapi(l, ['status'], { PATH: `${path.dirname(process.execPath)}${path.delimiter}/usr/bin${path.delimiter}/bin` });
    assert.equal(status.code, 1, status.stdout);
    assert.match(status.stderr, /`systemctl --user is-active kiapi\.service` failed/);
  });

  void it('show prints the file install writes', async () => {
    const r = await kiapi(s, ['show']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((parsePlist(r.stdout) as { Label: string }).Label, 'io.github.kiarina.kiapi');
  });
});
