/**
 * Bearer-token auth (KIAPI_AUTH_TOKEN, docs/compatibility.md §1.2). The original never accepted the real
 * token (docs/compatibility.md §11.1); kiapi accepts exactly `Bearer <token>` and nothing else.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readStream } from '../support/sse.js';
import { startServer, type TestServer } from '../support/server.js';
import { generateBody, getJson, listFiles, listJobs, rawRequest, request, sendJson, uploadFile, waitFinished } from '../support/api.js';

const TOKEN = 's3cret';
const GOOD = { authorization: `Bearer ${TOKEN}` };

void describe('with KIAPI_AUTH_TOKEN set', () => {
  let server: TestServer;
  let url: string;

  before(async () => {
    server = await startServer({ KIAPI_AUTH_TOKEN: TOKEN });
    url = server.url;
  });

  after(async () => {
    await server.close();
  });

  void it('leaves /health, the docs pages and the OpenAPI documents open', async () => {
    for (const path of ['/health', '/docs', '/openapi.json', '/docs/assets/swagger-ui.css', '/v1/models', '/v1/image/qwen/openapi.json', '/v1/image/qwen/docs']) {
      const res = await request(`${url}${path}`);
      assert.equal(res.status, 200, path);
    }
    const redirect = await fetch(`${url}/redoc`, { redirect: 'manual' });
    assert.ok([301, 302, 303, 307, 308].includes(redirect.status));
  });

  const protectedRoutes: [string, string][] = [
    ['GET', '/v1/files'],
    ['GET', '/v1/files/file_0123456789abcdef0123456789abcdef'],
    ['GET', '/v1/files/file_0123456789abcdef0123456789abcdef/download'],
    ['DELETE', '/v1/files/file_0123456789abcdef0123456789abcdef'],
    ['POST', '/v1/files'],
    ['GET', '/v1/jobs'],
    ['GET', '/v1/jobs/job_0123456789abcdef0123456789abcdef'],
    ['DELETE', '/v1/jobs/job_0123456789abcdef0123456789abcdef'],
    ['POST', '/v1/jobs/job_0123456789abcdef0123456789abcdef/cancel'],
    ['GET', '/v1/jobs/job_0123456789abcdef0123456789abcdef/events'],
    ['GET', '/v1/events'],
    ['GET', '/v1/image/qwen/models'],
    ['POST', '/v1/image/qwen/generate'],
    ['POST', '/v1/image/qwen/edit'],
    ['POST', '/v1/image/ideogram4/generate'],
  ];

  const wrong: [string, Record<string, string>][] = [
    ['no Authorization header', {}],
    ['a wrong token', { authorization: 'Bearer nope' }],
    ['a prefix of the token', { authorization: 'Bearer s3cre' }],
    ['a longer token', { authorization: 'Bearer s3cret2' }],
    ['lower-case scheme', { authorization: `bearer ${TOKEN}` }],
    ['no scheme', { authorization: TOKEN }],
    ['an extra space', { authorization: `Bearer  ${TOKEN}` }],
    ["the original's rendered secret", { authorization: 'Bearer **********' }],
    ['Basic auth', { authorization: `Basic ${Buffer.from(`user:${TOKEN}`).toString('base64')}` }],
  ];

  for (const [what, headers] of wrong) {
    void it(`refuses ${what} with 401 {"detail":"unauthorized"} on every protected route`, async () => {
      for (const [method, path] of protectedRoutes) {
        const res = await rawRequest(url, method, path, { 'content-type': 'application/json', ...headers }, method === 'POST' ? Buffer.from('{}') : undefined);
        assert.equal(res.status, 401, `${what}: ${method} ${path}`);
        assert.deepEqual(res.json, { detail: 'unauthorized' });
        assert.equal(res.headers['www-authenticate'], undefined);
      }
    });
  }

  void it('refuses before reading anything: no job, no file is created', async () => {
    const before = { files: await listFiles(url, GOOD), jobs: await listJobs(url, GOOD) };
    assert.equal((await sendJson('POST', `${url}/v1/image/qwen/generate`, generateBody({ mode: 'async' }), { authorization: 'Bearer s3cre' })).status, 401);
    assert.equal((await uploadFile(url, { filename: 'a.txt', data: 'x' }, { authorization: 'Bearer s3cre' })).status, 401);
    assert.equal((await listFiles(url, GOOD)).length, before.files.length);
    assert.equal((await listJobs(url, GOOD)).length, before.jobs.length);
  });

  void it('a path that only looks public reaches nothing protected (dot segments, query strings, case)', async () => {
    for (const path of ['/health/../v1/files', '/docs/../v1/files', '/docs/assets/..%2F..%2Fv1%2Ffiles', '/v1/files?x=/health', '/HEALTH', '/v1/files/', '//v1/files', '/v1/image/qwen/openapi.json/../generate']) {
      const res = await rawRequest(url, 'GET', path);
      // The router does not resolve dot segments: such paths are 401 (not public) or 404 (public prefix, no route).
      assert.ok([401, 404].includes(res.status), `${path} → ${res.status}`);
      assert.ok(!res.body.toString().includes('"data"'), path);
    }
  });

  void it('accepts exactly "Bearer <token>" everywhere', async () => {
    assert.equal((await getJson(`${url}/v1/files`, GOOD)).status, 200);
    assert.equal((await getJson(`${url}/v1/jobs`, GOOD)).status, 200);
    assert.equal((await getJson(`${url}/v1/image/qwen/models`, GOOD)).status, 200);
    const up = await uploadFile(url, { filename: 'ok.txt', data: 'ok' }, GOOD);
    assert.equal(up.status, 200);
    assert.equal((await request(`${url}/v1/files/${up.json.file_id}/download`, { headers: GOOD })).status, 200);
    const job = await sendJson<{ job_id: string }>('POST', `${url}/v1/image/qwen/generate`, generateBody({ mode: 'async' }), GOOD);
    assert.equal(job.status, 202);
    assert.equal((await waitFinished(url, job.json.job_id, GOOD)).status, 'succeeded');
    // The event stream of the finished job: its terminal event, and never a shared cache.
    const events = await readStream(`${url}/v1/jobs/${job.json.job_id}/events`, GOOD);
    assert.equal(events.status, 200);
    assert.equal(events.headers.get('cache-control'), 'no-store');
    assert.deepEqual(events.events.map((e) => e.event), ['succeeded']);
    assert.equal((await request(`${url}/v1/jobs/${job.json.job_id}`, { method: 'DELETE', headers: GOOD })).status, 200);
  });
});

void describe('without KIAPI_AUTH_TOKEN', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer({ KIAPI_AUTH_TOKEN: '' });
  });

  after(async () => {
    await server.close();
  });

  void it('needs no auth, and ignores any Authorization header', async () => {
    for (const headers of [{}, { authorization: 'Bearer whatever' }] as Record<string, string>[]) {
      assert.equal((await getJson(`${server.url}/v1/files`, headers)).status, 200);
      assert.equal((await getJson(`${server.url}/v1/jobs`, headers)).status, 200);
      assert.equal((await getJson(`${server.url}/v1/image/qwen/models`, headers)).status, 200);
    }
  });
});
