/**
 * The files `kiapi service install` writes, read back by parsers that are not kiapi's: the plist
 * by Python's plistlib, the unit by systemd's own `systemd-analyze verify` and by the fake
 * systemd's reading of ExecStart / Environment= (systemd.syntax quoting). Paths carry spaces, `&`,
 * `<`, quotes, `%`, `$` and non-ASCII letters, each of which one of the formats treats specially.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { SetupError } from '../../src/core/errors.js';
import { buildDefinition, serviceEnvironment, servicePlatform, stableNode, serviceView, unseenVariables, type ServiceDefinition } from '../../src/cli/service/definition.js';
import { plistText } from '../../src/cli/service/launchd.js';
import { readServiceSettings } from '../../src/cli/service/settings.js';
import { unitText } from '../../src/cli/service/systemd.js';
import { ConfigError } from '../../src/core/config.js';
import { tempDir } from '../support/server.js';
import { parsePlist, parseUnit, systemdAnalyze, systemdVerify } from '../support/service.js';

const dir = tempDir('kiapi-service-unit-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Every character some format treats specially, in one directory name. */
const WEIRD = `we ird & <x> "q" 'a' %h $HOME \\b ü 日本`;
const home = path.join(dir, WEIRD);
const AUTO = { label: null, platform: 'auto' } as const;

function definition(platform: 'darwin' | 'linux', env: Record<string, string> = {}, node = '/usr/bin/node'): ServiceDefinition {
  return buildDefinition({
    platform,
    settings: AUTO,
    env: { HOME: home, KIAPI_CONFIG_FILE: path.join(home, 'kiapi settings.yaml'), KIAPI_DATA_DIR: path.join(home, 'data'), HF_HOME: path.join(home, 'hf'), ...env },
    shutdownGraceS: 30,
    node,
    entry: path.join(home, 'kiapi', 'dist', 'src', 'cli', 'main.js'),
  });
}

void describe('launchd plist', () => {
  void it('holds every value exactly, as plistlib reads it', () => {
    const def = definition('darwin');
    const parsed = parsePlist(plistText(def));
    assert.deepEqual(parsed, {
      Label: 'io.github.kiarina.kiapi',
      ProgramArguments: ['/usr/bin/node', path.join(home, 'kiapi', 'dist', 'src', 'cli', 'main.js'), 'run'],
      EnvironmentVariables: {
        HF_HOME: path.join(home, 'hf'),
        KIAPI_CONFIG_FILE: path.join(home, 'kiapi settings.yaml'),
        KIAPI_DATA_DIR: path.join(home, 'data'),
      },
      WorkingDirectory: home,
      RunAtLoad: true,
      KeepAlive: { SuccessfulExit: false },
      ExitTimeOut: 45,
      StandardOutPath: path.join(home, 'Library', 'Logs', 'kiapi', 'io.github.kiarina.kiapi.log'),
      StandardErrorPath: path.join(home, 'Library', 'Logs', 'kiapi', 'io.github.kiarina.kiapi.log'),
    });
    assert.equal(def.file, path.join(home, 'Library', 'LaunchAgents', 'io.github.kiarina.kiapi.plist'));
  });

  void it('KIAPI_SERVICE_LABEL names the agent, its file and its log', () => {
    const def = buildDefinition({ platform: 'darwin', settings: { label: 'dev.me.kiapi-2', platform: 'auto' }, env: { HOME: home }, shutdownGraceS: 0 });
    assert.equal((parsePlist(plistText(def)) as { Label: string }).Label, 'dev.me.kiapi-2');
    assert.equal(path.basename(def.file), 'dev.me.kiapi-2.plist');
    assert.equal(path.basename(def.logFile), 'dev.me.kiapi-2.log');
  });
});

const analyze = systemdAnalyze();
// CI has Debian's systemd package (.ci/run installs it); elsewhere (macOS) the check is skipped.
const noAnalyze = analyze === null && !process.env.CI ? 'systemd-analyze is not installed (Debian: apt-get install systemd)' : false;

void describe('systemd unit', () => {
  void it('ExecStart, Environment= and the log path read back exactly', () => {
    const def = definition('linux');
    const job = parseUnit(unitText(def), home, path.join(dir, 'state'));
    assert.deepEqual(job.argv, def.program);
    assert.equal(job.env.KIAPI_CONFIG_FILE, path.join(home, 'kiapi settings.yaml'));
    assert.equal(job.env.KIAPI_DATA_DIR, path.join(home, 'data'));
    assert.equal(job.env.HF_HOME, path.join(home, 'hf'));
    assert.equal(job.log, path.join(home, '.local', 'state', 'kiapi', 'kiapi.log'));
    assert.equal(job.cwd, home);
    assert.equal(job.timeout, 45);
    assert.deepEqual(job.wanted_by, ['default.target']);
    assert.equal(def.file, path.join(home, '.config', 'systemd', 'user', 'kiapi.service'));
  });

  void it('passes systemd-analyze verify, with a node path that has spaces, &, %, $ and ü', { skip: noAnalyze }, () => {
    // systemd checks that the program exists and is executable: a real node behind an odd path.
    const nodeDir = path.join(dir, 'node dir & ü %h $x');
    fs.mkdirSync(nodeDir, { recursive: true });
    const node = path.join(nodeDir, 'node');
    if (!fs.existsSync(node)) fs.symlinkSync(process.execPath, node);
    const def = definition('linux', {}, node);
    const file = path.join(dir, 'kiapi.service');
    fs.writeFileSync(file, unitText(def));
    const r = systemdVerify(file, path.join(dir, 'runtime'));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.deepEqual(parseUnit(unitText(def), home, path.join(dir, 'state')).argv[0], node);
  });

  void it('systemd-analyze verify does catch a bad unit (so the check above means something)', { skip: noAnalyze }, () => {
    const def = definition('linux', {}, process.execPath);
    const runtime = path.join(dir, 'runtime');
    for (const [name, text] of [
      ['bogus.service', unitText(def).replace('[Service]\n', '[Service]\nBogusDirective=1\n')],
      ['missing.service', unitText({ ...def, program: ['/nonexistent/node', 'run'] })],
      ['specifier.service', unitText(def).replace('KillMode=mixed', 'KillMode=mixed\nEnvironment="A=%z"')],
    ] as const) {
      const file = path.join(dir, name);
      fs.writeFileSync(file, text);
      const r = systemdVerify(file, runtime);
      assert.ok(r.code !== 0 || r.stderr !== '', `${name}: verify found nothing`);
    }
  });

  void it('refuses a program path systemd would not run, and control characters anywhere', () => {
    assert.throws(() => unitText(definition('linux', {}, '/opt/no"de/node')), (e: unknown) => e instanceof SetupError && /quote or a backslash/.test(e.message));
    assert.throws(() => definition('darwin', { KIAPI_DATA_DIR: '/data\nx' }), (e: unknown) => e instanceof SetupError && /control character/.test(e.message));
  });
});

void describe('the service environment', () => {
  void it('the settings file path and the location variables, absolute; other KIAPI_* stay behind', () => {
    const env = { HOME: home, KIAPI_CONFIG_FILE: 'rel/settings.yaml', KIAPI_DATA_DIR: 'rel/data', XDG_CACHE_HOME: '~/cache', KIAPI_PORT: '9000', KIAPI_SERVICE_LABEL: 'x', PATH: '/bin' };
    assert.deepEqual(serviceEnvironment(env), {
      KIAPI_CONFIG_FILE: path.resolve('rel/settings.yaml'),
      KIAPI_DATA_DIR: path.resolve('rel/data'),
      XDG_CACHE_HOME: path.join(home, 'cache'),
    });
    assert.deepEqual(unseenVariables(env), ['KIAPI_PORT']);
    // status reads the port the service's kiapi run would read: not the shell's KIAPI_PORT.
    assert.equal(serviceView(env).KIAPI_PORT, undefined);
    assert.equal(serviceView(env).PATH, '/bin');
  });

  void it('without KIAPI_CONFIG_FILE, the settings file kiapi config uses', () => {
    assert.equal(serviceEnvironment({ XDG_CONFIG_HOME: path.join(home, 'cfg') }).KIAPI_CONFIG_FILE, path.join(home, 'cfg', 'kiapi', 'settings.yaml'));
  });

  void it('the platform: this machine\'s, or KIAPI_SERVICE_PLATFORM; others are refused with what is supported', () => {
    assert.equal(servicePlatform(AUTO, 'linux'), 'linux');
    assert.equal(servicePlatform(AUTO, 'darwin'), 'darwin');
    assert.equal(servicePlatform({ label: null, platform: 'darwin' }, 'linux'), 'darwin');
    assert.throws(
      () => servicePlatform(AUTO, 'win32'),
      (e: unknown) => e instanceof SetupError && /supports macOS \(a launchd user agent\) and Linux \(a systemd user unit\), not win32/.test(e.message),
    );
  });

  void it('node: the one on PATH when it is this node (a link that outlives upgrades), else this process\'s', () => {
    const linkDir = path.join(dir, 'bin dir');
    fs.mkdirSync(linkDir, { recursive: true });
    const link = path.join(linkDir, 'node');
    if (!fs.existsSync(link)) fs.symlinkSync(process.execPath, link);
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty, { recursive: true });
    assert.equal(stableNode({ PATH: [empty, linkDir].join(path.delimiter) }), link);
    assert.equal(stableNode({ PATH: empty }), process.execPath);
    // The first node on PATH is another program: the service runs this one.
    const other = path.join(dir, 'other');
    fs.mkdirSync(other, { recursive: true });
    fs.writeFileSync(path.join(other, 'node'), '#!/bin/sh\n', { mode: 0o755 });
    assert.equal(stableNode({ PATH: [other, linkDir].join(path.delimiter) }), process.execPath);
  });

  void it('bad service settings name the variable', () => {
    assert.throws(() => readServiceSettings({ KIAPI_SERVICE_LABEL: 'a/b' }), (e: unknown) => e instanceof ConfigError && /KIAPI_SERVICE_LABEL="a\/b"/.test(e.message));
    assert.throws(() => readServiceSettings({ KIAPI_SERVICE_PLATFORM: 'windows' }), (e: unknown) => e instanceof ConfigError && /darwin, linux/.test(e.message));
  });
});
