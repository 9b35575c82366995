/**
 * The common surface that is neither files nor jobs: /health, error body shapes, body parsing
 * rules (JSON without Content-Type, other types → 415, invalid JSON → 422), unknown routes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../support/server.js';
import { generateBody, getJson, listJobs, pollUntil, request, sendJson, submitAsync, waitFinished } from '../support/api.js';

let server: TestServer;
let url: string;

before(async () => {
  // Slow steps so a job can be held running while /health is read.
  server = await startServer({ KIAPI_PREVIEW_STEP_MS: '40' });
  url = server.url;
});

after(async () => {
  await server.close();
});

interface Health {
  status: string;
  warm: boolean;
  queue_len: number;
  memory: { loaded: unknown[]; resident_gb: number; budget_gb: number };
  relay: null;
}

type Issue = { type: string; loc: (string | number)[]; msg: string };

void describe('GET /health', () => {
  void it('has the original shape', async () => {
    const res = await getJson<Health>(`${url}/health`);
    assert.equal(res.status, 200);
    const h = res.json;
    assert.equal(h.status, 'ok');
    assert.equal(typeof h.warm, 'boolean');
    assert.equal(h.queue_len, 0);
    assert.ok(Array.isArray(h.memory.loaded));
    assert.equal(typeof h.memory.resident_gb, 'number');
    assert.equal(typeof h.memory.budget_gb, 'number');
    assert.ok(h.memory.budget_gb > 0);
    assert.equal(h.relay, null);
    for (const key of ['status', 'warm', 'queue_len', 'memory', 'relay']) assert.ok(key in h, key);
  });

  void it('queue_len counts queued jobs, not the running one', async () => {
    const running = await submitAsync(url, { steps: 100 });
    const queued = [await submitAsync(url), await submitAsync(url)];
    await pollUntil(() => getJson<{ status: string }>(`${url}/v1/jobs/${running}`), (r) => r.json.status === 'running', 'first job running');
    const h = await getJson<Health>(`${url}/health`);
    assert.equal(h.json.queue_len, 2);
    for (const id of [running, ...queued]) await request(`${url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    for (const id of [running, ...queued]) assert.equal((await waitFinished(url, id)).status, 'canceled');
    assert.equal((await getJson<Health>(`${url}/health`)).json.queue_len, 0);
  });
});

void describe('request bodies', () => {
  const generate = () => `${url}/v1/image/qwen/generate`;

  void it('invalid JSON → 422 with a detail list, nothing queued', async () => {
    const before = await listJobs(url);
    const res = await request<{ detail: Issue[] }>(generate(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"prompt": "x",',
    });
    assert.equal(res.status, 422);
    assert.ok(Array.isArray(res.json.detail));
    assert.equal(res.json.detail[0]!.loc[0], 'body');
    assert.equal(typeof res.json.detail[0]!.msg, 'string');
    assert.equal(typeof res.json.detail[0]!.type, 'string');
    assert.equal((await listJobs(url)).length, before.length);
  });

  void it('a body without Content-Type is parsed as JSON', async () => {
    // A Buffer body makes fetch send no Content-Type at all (a string would get text/plain).
    const res = await request<{ job_id: string; status: string }>(generate(), {
      method: 'POST',
      body: Buffer.from(JSON.stringify(generateBody({ mode: 'async' }))),
    });
    assert.equal(res.status, 202, res.bytes.toString());
    assert.equal(res.json.status, 'queued');
    assert.equal((await waitFinished(url, res.json.job_id)).status, 'succeeded');
  });

  void it('invalid JSON without Content-Type → 422', async () => {
    const res = await request<{ detail: Issue[] }>(generate(), { method: 'POST', body: Buffer.from('{nope') });
    assert.equal(res.status, 422);
    assert.ok(Array.isArray(res.json.detail));
  });

  void it('application/*+json is parsed as JSON', async () => {
    const res = await request<{ job_id: string }>(generate(), {
      method: 'POST',
      headers: { 'content-type': 'application/vnd.kiapi+json' },
      body: JSON.stringify(generateBody({ mode: 'async' })),
    });
    assert.equal(res.status, 202, res.bytes.toString());
    await waitFinished(url, res.json.job_id);
  });

  void it('another Content-Type → 415 {"detail": string}', async () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
      const res = await request<{ detail: string }>(generate(), {
        method: 'POST',
        headers: { 'content-type': type },
        body: JSON.stringify(generateBody()),
      });
      assert.equal(res.status, 415, type);
      assert.equal(typeof res.json.detail, 'string');
    }
  });

  void it('a schema error → 422 list of {type, loc, msg} naming the field', async () => {
    const res = await sendJson<{ detail: Issue[] }>('POST', generate(), { width: 64 });
    assert.equal(res.status, 422);
    const issue = res.json.detail.find((i) => i.loc.join('.') === 'body.prompt');
    assert.ok(issue, JSON.stringify(res.json));
    assert.equal(issue.type, 'required');
    assert.equal(typeof issue.msg, 'string');
  });

  void it('a capability rule error → 422 {"detail": string}', async () => {
    const res = await sendJson<{ detail: string }>('POST', generate(), generateBody({ width: 65 }));
    assert.equal(res.status, 422);
    assert.equal(typeof res.json.detail, 'string');
  });

  void it('an empty JSON body → 422', async () => {
    const res = await request<{ detail: Issue[] }>(generate(), { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 422);
    assert.ok(Array.isArray(res.json.detail));
  });

  void it('routes that take no body answer as documented to an empty body with any Content-Type', async () => {
    for (const contentType of ['application/json', 'text/plain', 'application/x-www-form-urlencoded']) {
      const cancelId = await submitAsync(url, { steps: 1 });
      await waitFinished(url, cancelId);
      // A finished job cannot be canceled: the documented 409, not a complaint about the body.
      const cancel = await request<{ detail: string }>(`${url}/v1/jobs/${cancelId}/cancel`, { method: 'POST', headers: { 'content-type': contentType } });
      assert.equal(cancel.status, 409, `cancel with ${contentType}: ${cancel.bytes.toString()}`);
      assert.match(cancel.json.detail, /already succeeded/);
      const del = await request(`${url}/v1/jobs/${cancelId}`, { method: 'DELETE', headers: { 'content-type': contentType } });
      assert.ok(del.status === 200 || del.status === 204, `delete job with ${contentType}: ${del.status} ${del.bytes.toString()}`);
      const file = await request<{ file_id: string }>(`${url}/v1/files`, { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=b' }, body: '--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhi\r\n--b--\r\n' });
      const delFile = await request(`${url}/v1/files/${file.json.file_id}`, { method: 'DELETE', headers: { 'content-type': contentType } });
      assert.ok(delFile.status === 200 || delFile.status === 204, `delete file with ${contentType}: ${delFile.status} ${delFile.bytes.toString()}`);
    }
  });
});

void describe('unknown routes', () => {
  void it('→ 404 {"detail": string}', async () => {
    const res = await getJson<{ detail: string }>(`${url}/v1/nothing-here`);
    assert.equal(res.status, 404);
    assert.equal(typeof res.json.detail, 'string');
  });
});
