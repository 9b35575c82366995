/**
 * DNS rebinding and cross-site requests, with the headers a browser sends (Host, Origin,
 * Sec-Fetch-Site / -Mode / -Dest), over node:http so Host and Origin reach the server as written.
 * Nothing a refused request asked for happens (no job, no file, no delete); clients that send no
 * Origin (curl, SDKs, the original's clients without a Content-Type) work as before.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BOUNDARY, generateBody, ids, listFiles, listJobs, multipartBody, pngBytes, rawRequest, uploadFile } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';
import { hostAllowed } from '../../src/server/request-guard.js';
import { readServerSettings } from '../../src/server/settings.js';

let s: TestServer;
let allowing: TestServer;

before(async () => {
  s = await startServer();
  allowing = await startServer({ KIAPI_ALLOWED_HOSTS: 'kiapi.lan', KIAPI_ALLOWED_ORIGINS: 'http://localhost:3000' });
});

after(async () => {
  await s.close();
  await allowing.close();
});

/** What Chrome sends for fetch() from a page on `origin` to another site (mode cors / no-cors). */
function crossSiteFetch(origin: string, mode: 'cors' | 'no-cors' = 'no-cors'): Record<string, string> {
  return { origin, 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': mode, 'sec-fetch-dest': 'empty', 'user-agent': 'Mozilla/5.0' };
}

const json = (body: unknown) => Buffer.from(JSON.stringify(body));

void describe('DNS rebinding (Host)', () => {
  void it('a page whose name was rebound to 127.0.0.1 gets 403 naming KIAPI_ALLOWED_HOSTS, for reads and writes; nothing is queued', async () => {
    const before = ids(await listJobs(s.url));
    const host = `attacker.example:${s.port}`;
    // After rebinding the page is "same origin" with its own name: the browser says so.
    const browser = { host, origin: `http://${host}`, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'cors', 'sec-fetch-dest': 'empty' };
    const read = await rawRequest(s.url, 'GET', '/v1/files', browser);
    assert.equal(read.status, 403);
    assert.match((read.json as { detail: string }).detail, /KIAPI_ALLOWED_HOSTS/);
    const write = await rawRequest(s.url, 'POST', '/v1/image/qwen/generate', { ...browser, 'content-type': 'text/plain;charset=UTF-8' }, json(generateBody({ mode: 'async' })));
    assert.equal(write.status, 403);
    assert.match((write.json as { detail: string }).detail, /DNS rebinding/);
    assert.deepEqual(ids(await listJobs(s.url)), before);
    const health = await rawRequest(s.url, 'GET', '/health', { host: `rebind.127.0.0.1.nip.io:${s.port}` });
    assert.equal(health.status, 403);
  });

  void it('loopback names and addresses are served, with any port', async () => {
    for (const host of [`127.0.0.1:${s.port}`, `localhost:${s.port}`, 'localhost', `[::1]:${s.port}`, '127.0.0.2:80', `LOCALHOST.:${s.port}`, `app.localhost:${s.port}`]) {
      const res = await rawRequest(s.url, 'GET', '/health', { host });
      assert.equal(res.status, 200, host);
    }
  });

  void it('a name listed in KIAPI_ALLOWED_HOSTS is served; others are not', async () => {
    assert.equal((await rawRequest(allowing.url, 'GET', '/health', { host: 'kiapi.lan:8000' })).status, 200);
    assert.equal((await rawRequest(allowing.url, 'GET', '/health', { host: 'other.lan:8000' })).status, 403);
  });

  void it('listening beyond loopback, the setting decides names; address literals are served', () => {
    const open = readServerSettings({}, '0.0.0.0');
    assert.equal(open.loopbackOnly, false);
    assert.equal(hostAllowed('192.168.1.20', open), true);
    assert.equal(hostAllowed('localhost', open), true);
    assert.equal(hostAllowed('attacker.example', open), false);
    assert.equal(hostAllowed('kiapi.lan', readServerSettings({ KIAPI_ALLOWED_HOSTS: 'kiapi.lan' }, '0.0.0.0')), true);
    assert.equal(hostAllowed('anything.example', readServerSettings({ KIAPI_ALLOWED_HOSTS: '*' }, '0.0.0.0')), true);
    const loopback = readServerSettings({}, '127.0.0.1');
    assert.equal(hostAllowed('192.168.1.20', loopback), false);
  });

  void it('a bad KIAPI_ALLOWED_HOSTS / KIAPI_ALLOWED_ORIGINS value stops start-up naming it', () => {
    assert.throws(() => readServerSettings({ KIAPI_ALLOWED_HOSTS: 'http://kiapi.lan:8000' }), /KIAPI_ALLOWED_HOSTS/);
    assert.throws(() => readServerSettings({ KIAPI_ALLOWED_ORIGINS: 'localhost:3000' }), /KIAPI_ALLOWED_ORIGINS/);
  });
});

void describe('cross-site requests', () => {
  const host = () => ({ host: `127.0.0.1:${s.port}` });

  void it('a cross-site fetch (no-cors, text/plain body) cannot queue a job: 403 naming KIAPI_ALLOWED_ORIGINS', async () => {
    const before = ids(await listJobs(s.url));
    const res = await rawRequest(
      s.url,
      'POST',
      '/v1/image/qwen/generate',
      { ...host(), ...crossSiteFetch('https://evil.example'), 'content-type': 'text/plain;charset=UTF-8' },
      json(generateBody({ mode: 'async' })),
    );
    assert.equal(res.status, 403);
    assert.match((res.json as { detail: string }).detail, /KIAPI_ALLOWED_ORIGINS/);
    assert.equal(res.headers['access-control-allow-origin'], undefined);
    assert.deepEqual(ids(await listJobs(s.url)), before);
  });

  void it('a cross-site form post (navigate) cannot upload; nothing is stored', async () => {
    const before = ids(await listFiles(s.url));
    const res = await rawRequest(
      s.url,
      'POST',
      '/v1/files',
      {
        ...host(),
        origin: 'https://evil.example',
        'sec-fetch-site': 'cross-site',
        'sec-fetch-mode': 'navigate',
        'sec-fetch-dest': 'document',
        'sec-fetch-user': '?1',
        'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
      },
      multipartBody([{ name: 'file', filename: 'x.png', contentType: 'image/png', data: await pngBytes() }]),
    );
    assert.equal(res.status, 403);
    assert.deepEqual(ids(await listFiles(s.url)), before);
  });

  void it('cross-site DELETE and cancel are refused; the file stays', async () => {
    const up = await uploadFile(s.url, { filename: 'keep.png', contentType: 'image/png', data: await pngBytes() });
    assert.equal(up.status, 200);
    const del = await rawRequest(s.url, 'DELETE', `/v1/files/${up.json.file_id}`, { ...host(), ...crossSiteFetch('http://evil.example', 'cors') });
    assert.equal(del.status, 403);
    const cancel = await rawRequest(s.url, 'POST', '/v1/jobs/job_0123456789abcdef0123456789abcdef/cancel', { ...host(), ...crossSiteFetch('null') });
    assert.equal(cancel.status, 403);
    assert.equal((await rawRequest(s.url, 'GET', `/v1/files/${up.json.file_id}`)).status, 200);
  });

  void it('Sec-Fetch-Site: cross-site without Origin is refused too', async () => {
    const res = await rawRequest(s.url, 'POST', '/v1/image/qwen/generate', { ...host(), 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors', 'sec-fetch-dest': 'image' }, json(generateBody({ mode: 'async' })));
    assert.equal(res.status, 403);
  });

  void it('same-origin requests (the docs page "Try it out") and cross-site reads are served', async () => {
    const res = await rawRequest(
      s.url,
      'POST',
      '/v1/image/qwen/generate',
      { ...host(), origin: `http://127.0.0.1:${s.port}`, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'cors', 'sec-fetch-dest': 'empty', 'content-type': 'application/json' },
      json(generateBody({ mode: 'async' })),
    );
    assert.equal(res.status, 202, res.body.toString());
    // A read is harmless without CORS headers: the page cannot see the answer.
    const read = await rawRequest(s.url, 'GET', '/health', { ...host(), ...crossSiteFetch('https://evil.example', 'cors') });
    assert.equal(read.status, 200);
    assert.equal(read.headers['access-control-allow-origin'], undefined);
  });

  void it('clients without Origin keep working, JSON without a Content-Type included', async () => {
    const res = await rawRequest(s.url, 'POST', '/v1/image/qwen/generate', {}, json(generateBody({ mode: 'async' })));
    assert.equal(res.status, 202, res.body.toString());
  });
});

void describe('KIAPI_ALLOWED_ORIGINS (CORS)', () => {
  const origin = 'http://localhost:3000';
  const host = () => ({ host: `127.0.0.1:${allowing.port}` });

  void it('the preflight of an allowed origin is answered with CORS headers', async () => {
    const res = await rawRequest(allowing.url, 'OPTIONS', '/v1/image/qwen/generate', {
      ...host(),
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'content-type',
      'sec-fetch-site': 'cross-site',
      'sec-fetch-mode': 'cors',
      'sec-fetch-dest': 'empty',
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers['access-control-allow-origin'], origin);
    assert.match(String(res.headers['access-control-allow-methods']), /POST/);
    assert.match(String(res.headers['access-control-allow-headers']), /Content-Type/i);
  });

  void it('the allowed origin may POST and read the answer and kiapi headers', async () => {
    const res = await rawRequest(
      allowing.url,
      'POST',
      '/v1/image/qwen/generate',
      { ...host(), ...crossSiteFetch(origin, 'cors'), 'content-type': 'application/json' },
      json(generateBody()),
    );
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(res.headers['access-control-allow-origin'], origin);
    assert.match(String(res.headers['access-control-expose-headers']), /X-Kiapi-File-Id/);
  });

  void it('another origin gets no CORS headers and its preflight and POST are refused', async () => {
    const pre = await rawRequest(allowing.url, 'OPTIONS', '/v1/files', { ...host(), origin: 'http://localhost:4000', 'access-control-request-method': 'POST' });
    assert.equal(pre.status, 403);
    assert.equal(pre.headers['access-control-allow-origin'], undefined);
    const post = await rawRequest(allowing.url, 'POST', '/v1/image/qwen/generate', { ...host(), ...crossSiteFetch('http://localhost:4000', 'cors'), 'content-type': 'application/json' }, json(generateBody()));
    assert.equal(post.status, 403);
    assert.equal(post.headers['access-control-allow-origin'], undefined);
  });
});
