/**
 * The built `kiapi` command as a newcomer meets it: every command answers `--help` with its usage
 * (exit 0, nothing on stderr, nothing done), `--version` prints the package version, and
 * `config show` reports the files folder the server would really use.
 */
import assert from 'node:assert/strict';
import { runCaptured, type Captured } from '../support/process.js';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { tempDir } from '../support/server.js';

const CLI = path.join(PACKAGE_ROOT, 'dist/src/cli/main.js');
const dataDir = tempDir('kiapi-cli-help-');
const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };

after(() => {
  fs.rmSync(dataDir, { recursive: true, force: true });
});

/** The runner's own KIAPI_* settings and settings file must not leak into the child. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KIAPI_')) env[k] = v;
  return { ...env, KIAPI_CONFIG_FILE: path.join(dataDir, 'no-settings.yaml'), KIAPI_DATA_DIR: dataDir, ...extra };
}

async function kiapi(args: string[], env: Record<string, string> = {}): Promise<Captured> {
  // `run --help` that started a server instead would never exit: killed after a generous deadline.
  return runCaptured(process.execPath, [CLI, ...args], { env: cleanEnv(env), timeoutMs: 30_000 });
}

const COMMANDS: Array<[string[], RegExp]> = [
  [['run'], /^Usage: kiapi run .*--port P/m],
  [['activate'], /^Usage: kiapi activate .*--model M/m],
  [['deactivate'], /^Usage: kiapi deactivate .*--engine/m],
  [['status'], /^Usage: kiapi status \[--json\]/m],
  [['check'], /^Usage: kiapi check .*--out DIR/m],
  [['config'], /^Usage: kiapi config init\|show\|edit\|template/m],
  [['config', 'init'], /^Usage: kiapi config/m],
  [['config', 'show'], /^Usage: kiapi config/m],
  [['config', 'edit'], /^Usage: kiapi config/m],
  [['config', 'template'], /^Usage: kiapi config/m],
  [['service'], /^Usage: kiapi service install\|start\|stop\|restart\|status\|logs\|show\|uninstall/m],
  [['service', 'install'], /^Usage: kiapi service install \[--force\]/m],
  [['service', 'start'], /^Usage: kiapi service start \[--wait S\]/m],
  [['service', 'stop'], /^Usage: kiapi service stop$/m],
  [['service', 'restart'], /^Usage: kiapi service restart/m],
  [['service', 'status'], /^Usage: kiapi service status \[--json\][\s\S]*Exit codes: 0 running/m],
  [['service', 'logs'], /^Usage: kiapi service logs \[-n N\] \[-f\]/m],
  [['service', 'show'], /^Usage: kiapi service show$/m],
  [['service', 'uninstall'], /^Usage: kiapi service uninstall$/m],
];

void describe('kiapi --help', () => {
  for (const [cmd, usage] of COMMANDS) {
    for (const flag of ['--help', '-h']) {
      void it(`kiapi ${cmd.join(' ')} ${flag} prints its usage and exits 0`, async () => {
        const r = await kiapi([...cmd, flag]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, usage);
        assert.equal(r.stderr, '');
      });
    }
  }

  void it('--help after other options still wins, and does nothing else', async () => {
    // Without --help this would ask before removing the engine (and fail without a terminal).
    const r = await kiapi(['deactivate', '--engine', '--yes', '--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: kiapi deactivate/m);
  });

  void it('--help works even when the settings are invalid', async () => {
    const r = await kiapi(['status', '--help'], { KIAPI_PORT: 'abc' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: kiapi status/m);
  });

  void it('kiapi help, kiapi --help and kiapi help <command>', async () => {
    for (const args of [['help'], ['--help'], ['-h']]) {
      const r = await kiapi(args);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /kiapi run/);
      assert.match(r.stdout, /kiapi deactivate/);
    }
    const sub = await kiapi(['help', 'service', 'logs']);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /^Usage: kiapi service logs/m);
    const page = await kiapi(['help', 'check']);
    assert.equal(page.code, 0);
    assert.match(page.stdout, /^Usage: kiapi check/m);
    const unknown = await kiapi(['help', 'constructor']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no help for 'constructor'/);
  });

  void it('a bad option shows the usage of its own command', async () => {
    const r = await kiapi(['status', '--bogus']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /bogus/);
    assert.match(r.stderr, /Usage: kiapi status/);
  });

  void it('kiapi --version prints the package version', async () => {
    for (const flag of ['--version', '-V']) {
      const r = await kiapi([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), pkg.version);
    }
  });
});

void describe('kiapi config show', () => {
  void it('reports the files folder inside KIAPI_DATA_DIR', async () => {
    const r = await kiapi(['config', 'show', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { settings: Array<{ name: string; value: string | null; source: string }> };
    const files = out.settings.find((s) => s.name === 'KIAPI_FILES_ROOT');
    assert.deepEqual(files, { ...files, value: path.join(dataDir, 'files'), source: 'default' });
    const data = out.settings.find((s) => s.name === 'KIAPI_DATA_DIR');
    assert.equal(data?.value, dataDir);
  });

  void it('an explicit KIAPI_FILES_ROOT is shown as set', async () => {
    const elsewhere = path.join(dataDir, 'blobs');
    const r = await kiapi(['config', 'show', '--json'], { KIAPI_FILES_ROOT: elsewhere });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { settings: Array<{ name: string; value: string | null; source: string }> };
    const files = out.settings.find((s) => s.name === 'KIAPI_FILES_ROOT');
    assert.equal(files?.value, elsewhere);
    assert.equal(files?.source, 'env');
  });

  void it('the template keeps the plain defaults', async () => {
    const r = await kiapi(['config', 'template']);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, new RegExp(dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  });
});
