/**
 * One server per data dir, with real processes (`node dist/src/cli/main.js run`):
 * - a second server on the same data dir exits at once naming the dir and the holder's pid, and
 *   touches nothing: the first server's running job and its upload temp file survive;
 * - the lock is the kernel's: after the holder is killed with SIGKILL a new server starts at once;
 * - a port that is taken is one clear line (port, another kiapi or not, --port / KIAPI_PORT), no stack.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { getJob, pollUntil, submitAsync, waitFinished } from '../support/api.js';
import { freePort, spawnServer, tempDir, type SpawnedServer } from '../support/server.js';

const servers: SpawnedServer[] = [];
const dirs: string[] = [];

after(async () => {
  for (const s of servers) await s.stop('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function dataDir(): string {
  const d = tempDir('kiapi-lock-');
  dirs.push(d);
  return d;
}

async function start(env: Record<string, string>): Promise<SpawnedServer> {
  const s = await spawnServer(env, 60_000);
  servers.push(s);
  return s;
}

/** Runs `kiapi run` to its exit (a hang guard of 60 s, not a timing check). */
function runToExit(env: Record<string, string>, port: number): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [path.join(PACKAGE_ROOT, 'dist/src/cli/main.js'), 'run', '--host', '127.0.0.1', '--port', String(port)], {
    env: { ...process.env, KIAPI_CONFIG_FILE: path.join(os.tmpdir(), 'kiapi-tests-no-settings.yaml'), KIAPI_ENGINE: 'preview', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kiapi run did not exit:\n${output}`));
    }, 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

void describe('data dir lock', () => {
  void it('a second server on the same data dir exits at once, naming the dir and the pid, and changes nothing', async () => {
    const dir = dataDir();
    const first = await start({ KIAPI_DATA_DIR: dir, KIAPI_PREVIEW_STEP_MS: '100' });
    // A job that runs while the second server tries to start (100 steps × 100 ms).
    const jobId = await submitAsync(first.url, { steps: 100 });
    await pollUntil(() => getJob(first.url, jobId), (j) => j.status === 'running', 'the job to start');
    // An in-progress upload's temp file (start-up recovery would have deleted it).
    const tmpFile = path.join(dir, 'tmp', 'file_00000000000000000000000000000000.part');
    fs.writeFileSync(tmpFile, 'partial upload');

    const second = await runToExit({ KIAPI_DATA_DIR: dir }, await freePort());
    assert.equal(second.code, 1, second.output);
    assert.ok(second.output.includes(dir), `names the data dir: ${second.output}`);
    assert.ok(second.output.includes(`pid ${first.child.pid}`), `names the holder: ${second.output}`);
    assert.doesNotMatch(second.output, /\n\s+at /, 'no stack trace');

    assert.ok(fs.existsSync(tmpFile), 'the first server’s temp file is still there');
    assert.equal((await getJob(first.url, jobId)).status, 'running');
    const done = await waitFinished(first.url, jobId);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
  });

  void it('a server killed with SIGKILL leaves no lock behind: the next one starts on the same dir', async () => {
    const dir = dataDir();
    const first = await start({ KIAPI_DATA_DIR: dir });
    await first.stop('SIGKILL');
    const next = await start({ KIAPI_DATA_DIR: dir });
    assert.equal((await fetch(`${next.url}/health`)).status, 200);
  });
});

void describe('port in use', () => {
  void it('another kiapi on the port: one line naming the port, that it is a kiapi, and --port / KIAPI_PORT', async () => {
    const first = await start({ KIAPI_DATA_DIR: dataDir() });
    const res = await runToExit({ KIAPI_DATA_DIR: dataDir() }, first.port);
    assert.equal(res.code, 1, res.output);
    const lines = res.output.trim().split('\n').filter((l) => l.startsWith('kiapi:'));
    assert.equal(lines.length, 1, res.output);
    assert.match(lines[0]!, new RegExp(`port ${first.port} .*already in use: another kiapi server .*--port or KIAPI_PORT`));
    assert.doesNotMatch(res.output, /\n\s+at /, 'no stack trace');
  });

  void it('another program on the port: says so', async () => {
    const blocker = net.createServer((sock) => sock.destroy());
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const port = (blocker.address() as net.AddressInfo).port;
      const res = await runToExit({ KIAPI_DATA_DIR: dataDir() }, port);
      assert.equal(res.code, 1, res.output);
      assert.match(res.output, new RegExp(`kiapi: port ${port} .*already in use: another program .*--port or KIAPI_PORT`));
      assert.doesNotMatch(res.output, /\n\s+at /, 'no stack trace');
    } finally {
      blocker.close();
    }
  });
});
