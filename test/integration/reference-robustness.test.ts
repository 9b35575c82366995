/**
 * Robustness items of docs/compatibility.md §11 that had no test of their own yet:
 * - docs/compatibility.md §11.21 per-request work files: every temp file of a job is gone after it succeeded, failed or
 *   was canceled; job params shorten data URLs instead of keeping megabytes;
 * - docs/compatibility.md §11.17 a URL input that times out is a 400 naming the input, in sync mode too (the original
 *   reported "exceeded sync timeout … keeps running", a 504, for a job that had failed);
 * - docs/compatibility.md §11.24 an error that happens to be named ValidationError inside a job is an engine failure
 *   (500, job failed), not a client error (the original matched class names and answered 400).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import type { EngineOutput, ImageTask, RunOptions } from '../../src/engines/engine.js';
import { PreviewEngine } from '../../src/engines/preview/preview-engine.js';
import { dataUrl, generateBody, listJobs, pngBytes, pollUntil, request, sendJson, submitAsync, waitFinished, waitForStatus, type JobJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

const servers: TestServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

async function server(env: Record<string, string> = {}, engine?: PreviewEngine): Promise<TestServer> {
  const s = await startServer(env, engine ? { engine } : {});
  servers.push(s);
  return s;
}

class ValidationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ValidationError';
  }
}

/** The preview engine, except that prompts starting with "fail:" throw the named error. */
class FailingEngine extends PreviewEngine {
  constructor() {
    super({ stepMs: 0 });
  }

  override async run(task: ImageTask, opts: RunOptions): Promise<EngineOutput> {
    const prompt = typeof task.prompt === 'string' ? task.prompt : '';
    if (prompt.startsWith('fail:')) {
      // Leave a partial output behind, as a crashing engine would.
      fs.writeFileSync(opts.outputPath, 'partial');
      throw new ValidationError(prompt.slice(5));
    }
    return super.run(task, opts);
  }
}

void describe('§11.21 per-request state is bounded', () => {
  void it('a job leaves no temp file behind, whether it succeeded, failed or was canceled', async () => {
    const s = await server({ KIAPI_PREVIEW_STEP_MS: '0' }, new FailingEngine());
    const ok = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ steps: 1, format: 'webp' }), { accept: 'application/json' });
    assert.equal(ok.status, 200, ok.bytes.toString());
    assert.deepEqual(fs.readdirSync(s.config.tmpDir), []);

    const failed = await sendJson('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ prompt: 'fail:engine broke', steps: 1 }), { accept: 'application/json' });
    assert.equal(failed.status, 500);
    assert.deepEqual(fs.readdirSync(s.config.tmpDir), [], 'the partial engine output is removed');

    const slow = await server({ KIAPI_PREVIEW_STEP_MS: '50' });
    const id = await submitAsync(slow.url, { steps: 100 });
    await waitForStatus(slow.url, id, ['running']);
    await request(`${slow.url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    assert.equal((await waitFinished(slow.url, id)).status, 'canceled');
    await pollUntil(async () => fs.readdirSync(slow.config.tmpDir), (names) => names.length === 0, 'the canceled job to leave no temp file');
  });

  void it('job params keep the head and size of a data URL, not the data URL itself', async () => {
    const s = await server();
    const big = dataUrl(await pngBytes(256, 256, { r: 10, g: 200, b: 90 }));
    assert.ok(big.length > 1000);
    const res = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ steps: 1, init_image: { type: 'data_url', data_url: big } }), { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString());
    const kept = (res.json.params.init_image as { data_url: string }).data_url;
    assert.equal(kept, `${big.slice(0, 64)}…(${big.length} chars)`);
    const listed = (await listJobs(s.url)).find((j) => j.id === res.json.id)!;
    assert.ok(JSON.stringify(listed.params).length < 600, 'the stored record stays small');
  });
});

void describe('§11.17 a URL input that times out', () => {
  void it('→ 400 naming the input in sync and async mode (not a 504 "keeps running"); nothing queued', async () => {
    const sockets = new Set<Socket>();
    const silent = http.createServer(() => undefined); // accepts, never answers
    silent.on('connection', (c) => sockets.add(c));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const port = (silent.address() as AddressInfo).port;
      const s = await server({ KIAPI_NET_ALLOW_PRIVATE_URLS: 'true', KIAPI_URL_TIMEOUT_S: '0.5' });
      for (const mode of ['sync', 'async']) {
        const res = await sendJson<{ detail: string }>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ mode, init_image: { type: 'url', url: `http://127.0.0.1:${port}/slow.png` } }));
        assert.equal(res.status, 400, `${mode}: ${res.bytes.toString()}`);
        assert.match(res.json.detail, /^failed to fetch init_image url '.*': timed out after 0\.5s$/);
      }
      assert.deepEqual(await listJobs(s.url), []);
    } finally {
      for (const c of sockets) c.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});

void describe('§11.24 error class names inside a job', () => {
  void it('a ValidationError raised by the engine is a failed job and a 500, not a 400', async () => {
    const s = await server({}, new FailingEngine());
    const res = await sendJson<{ detail: string }>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ prompt: 'fail:bad tensor shape', steps: 1 }), { accept: 'application/json' });
    assert.equal(res.status, 500);
    assert.equal(res.json.detail, 'qwen failed: bad tensor shape');
    const job = (await listJobs(s.url))[0]!;
    assert.equal(job.status, 'failed');
    assert.equal(job.error, 'bad tensor shape');
  });
});
