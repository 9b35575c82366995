/**
 * `kiapi run` with bad settings stops before listening: exit code 2 and a message naming each
 * bad variable. Runs the built CLI as a child process.
 */
import assert from 'node:assert/strict';
import { runCaptured, type Captured } from '../support/process.js';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { tempDir } from '../support/server.js';

const CLI = path.join(PACKAGE_ROOT, 'dist/src/cli/main.js');
const dataDir = tempDir('kiapi-config-');

after(() => {
  fs.rmSync(dataDir, { recursive: true, force: true });
});

/** The test runner's own KIAPI_* settings must not leak into the child. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KIAPI_')) env[k] = v;
  // KIAPI_CONFIG_FILE points nowhere so a developer's own settings file cannot change the outcome.
  return { ...env, KIAPI_CONFIG_FILE: path.join(dataDir, 'no-settings.yaml'), KIAPI_ENGINE: 'preview', KIAPI_DATA_DIR: dataDir, KIAPI_HOST: '127.0.0.1', ...extra };
}

async function runCli(args: string[], env: Record<string, string>): Promise<Captured> {
  // A child that unexpectedly starts serving is killed after a generous deadline, never left behind.
  return runCaptured(process.execPath, [CLI, ...args], { env: cleanEnv(env), timeoutMs: 30_000 });
}

void describe('kiapi run: bad configuration', () => {
  for (const [name, value, expects] of [
    ['KIAPI_PORT', 'abc', /integer/],
    ['KIAPI_PORT', '70000', /0\.\.65535/],
    ['KIAPI_SYNC_TIMEOUT_S', '-1', /number/],
    ['KIAPI_ENGINE', 'cuda', /auto, preview, mflux/],
    ['KIAPI_NET_ALLOW_PRIVATE_URLS', 'maybe', /true or false/],
    ['KIAPI_MAX_INPUT_BYTES', '1.5', /integer/],
    ['KIAPI_QWEN_MAX_STEPS', '0', /integer/],
  ] as const) {
    void it(`${name}=${value} → exit code 2 and a message naming ${name}`, async () => {
      // --port would override KIAPI_PORT; elsewhere port 0 keeps a wrongly started server off fixed ports.
      const args = name === 'KIAPI_PORT' ? ['run'] : ['run', '--port', '0'];
      const { code, stderr } = await runCli(args, { [name]: value });
      assert.equal(code, 2, stderr);
      assert.ok(stderr.includes(`${name}="${value}"`), stderr);
      assert.match(stderr, expects);
      assert.doesNotMatch(stderr, /fatal|at .*\.js:\d+/, 'a config error is a message, not a stack trace');
    });
  }

  void it('names every bad variable at once', async () => {
    const { code, stderr } = await runCli(['run'], { KIAPI_PORT: 'abc', KIAPI_SYNC_TIMEOUT_S: '-1' });
    assert.equal(code, 2);
    assert.match(stderr, /KIAPI_PORT/);
    assert.match(stderr, /KIAPI_SYNC_TIMEOUT_S/);
  });

  void it('an unknown option or command → exit code 2 with usage', async () => {
    const opt = await runCli(['run', '--bogus'], {});
    assert.equal(opt.code, 2);
    assert.match(opt.stderr, /bogus/);
    const cmd = await runCli(['frobnicate'], {});
    assert.equal(cmd.code, 2);
    assert.match(cmd.stderr, /unknown command 'frobnicate'/);
  });
});
