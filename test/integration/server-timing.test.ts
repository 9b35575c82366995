/**
 * Sync answers say where the request's time went (Server-Timing: queue wait, engine, storing,
 * total), and an image the engine handed back in memory is stored byte for byte: the answer, the
 * download and the recorded digest agree.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { request, sendJson, type JobJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

let server: TestServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server.close();
});

function timings(header: string | null): Map<string, number> {
  assert.ok(header, 'a Server-Timing header');
  const out = new Map<string, number>();
  for (const part of header.split(',')) {
    const m = /^\s*([a-z]+);dur=(\d+(?:\.\d+)?)\s*$/.exec(part);
    assert.ok(m, `a metric with a duration: ${part}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

const body = { prompt: 'a lighthouse', width: 64, height: 64, steps: 2, seed: 3 };

void describe('Server-Timing on sync answers', () => {
  void it('an image answer names the queue wait, engine, storing and total, each within the total', async () => {
    const res = await sendJson('POST', `${server.url}/v1/image/qwen/generate`, body, { accept: 'image/png' });
    assert.equal(res.status, 200);
    const t = timings(res.headers.get('server-timing'));
    assert.deepEqual([...t.keys()], ['wait', 'engine', 'store', 'total']);
    for (const name of ['wait', 'engine', 'store']) assert.ok(t.get(name)! <= t.get('total')!, `${name} ≤ total`);
    assert.ok(t.get('engine')! > 0);
  });

  void it('a JSON answer carries it too; an async answer has none (nothing ran yet)', async () => {
    const sync = await sendJson<JobJson>('POST', `${server.url}/v1/image/qwen/generate`, { ...body, seed: 4 }, { accept: 'application/json' });
    assert.equal(sync.status, 200);
    assert.ok(timings(sync.headers.get('server-timing')).has('engine'));
    const queued = await sendJson('POST', `${server.url}/v1/image/qwen/generate`, { ...body, seed: 5, mode: 'async' });
    assert.equal(queued.status, 202);
    assert.equal(queued.headers.get('server-timing'), null);
  });
});

void describe('an in-memory engine image is stored as answered', () => {
  for (const format of ['png', 'webp'] as const) {
    void it(`${format}: the sync bytes, the download and the recorded size and SHA-256 agree`, async () => {
      const res = await sendJson('POST', `${server.url}/v1/image/qwen/generate`, { ...body, seed: 6, format }, { accept: `image/${format}` });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), `image/${format}`);
      const fileId = res.headers.get('x-kiapi-file-id')!;
      const download = await request(`${server.url}/v1/files/${fileId}/download`);
      assert.ok(download.bytes.equals(res.bytes));
      const record = await request<{ size: number }>(`${server.url}/v1/files/${fileId}`);
      assert.equal(record.json.size, res.bytes.length);
      const digest = createHash('sha256').update(res.bytes).digest('hex');
      assert.equal(await server.ctx.files.sha256(fileId), digest);
    });
  }
});
