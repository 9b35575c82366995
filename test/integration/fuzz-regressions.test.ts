/**
 * Regressions for what fuzzing the served OpenAPI documents (test/fuzz/run-fuzz.sh, schemathesis)
 * found, one test each, plus the document fixes that keep the documents honest:
 * - broken multipart bodies (no boundary, truncated, a `__proto__` field, too many parts) were 500s;
 * - an upload part with an invalid Content-Type made every download of that file a 500;
 * - downloads refused every If-Match with 412 (send compared it with its own ETag, which it no
 *   longer makes), and a POST generation honoured Range / If-None-Match (206 / 304 on a POST);
 * - a known path with a wrong method was 404 (now 405 with Allow, as the original's FastAPI);
 * - the documents lacked codes and shapes the server really sends (415, 507, 400 and 412 on files,
 *   the stored type of a download, error bodies on the common API).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { BOUNDARY, generateBody, ids, listFiles, listJobs, multipartBody, pngBytes, rawRequest, request, uploadFile, type FileRecordJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

let s: TestServer;
let png: Buffer;
let stored: FileRecordJson;

before(async () => {
  s = await startServer();
  png = await pngBytes(20, 20);
  const up = await uploadFile(s.url, { filename: 'kept.png', contentType: 'image/png', data: png });
  assert.equal(up.status, 200);
  stored = up.json;
});

after(async () => {
  await s.close();
});

async function snapshot(): Promise<{ files: string[]; jobs: string[]; blobs: string[]; tmp: string[] }> {
  return {
    files: ids(await listFiles(s.url)),
    jobs: ids(await listJobs(s.url)),
    blobs: fs.readdirSync(s.config.filesRoot).sort(),
    tmp: fs.readdirSync(s.config.tmpDir).sort(),
  };
}

async function postFiles(contentType: string, body: Buffer): Promise<{ status: number; detail: unknown }> {
  const res = await rawRequest(s.url, 'POST', '/v1/files', { 'content-type': contentType, 'content-length': String(body.length) }, body);
  return { status: res.status, detail: (res.json as { detail?: unknown } | null)?.detail };
}

void describe('broken multipart uploads → 400, nothing stored (were 500)', () => {
  const cases: [string, string, Buffer, RegExp][] = [
    ['no boundary in the Content-Type', 'multipart/form-data', Buffer.from('--x\r\n\r\n'), /malformed multipart body: .*boundary/i],
    [
      'a body cut off inside its first part',
      `multipart/form-data; boundary=${BOUNDARY}`,
      Buffer.from(`--${BOUNDARY}\r\n-5.59463966074224e+81--${BOUNDARY}--\r\n`),
      /malformed multipart body/,
    ],
    [
      'a field named __proto__',
      `multipart/form-data; boundary=${BOUNDARY}`,
      multipartBody([{ name: '__proto__', data: '{}' }, { name: 'file', filename: 'a.bin', data: 'abc' }]),
      /malformed multipart body: prototype property/,
    ],
    [
      'seventeen fields and no file',
      `multipart/form-data; boundary=${BOUNDARY}`,
      multipartBody(Array.from({ length: 17 }, (_, i) => ({ name: `f${i}`, data: String(i) }))),
      /malformed multipart body: too many parts/,
    ],
    [
      'a field declared JSON that is not',
      `multipart/form-data; boundary=${BOUNDARY}`,
      multipartBody([{ name: 'meta', contentType: 'application/json', data: '{nope' }, { name: 'file', filename: 'a.bin', data: 'abc' }]),
      /malformed multipart body/,
    ],
  ];
  for (const [what, contentType, body, detail] of cases) {
    void it(what, async () => {
      const before = await snapshot();
      const res = await postFiles(contentType, body);
      assert.equal(res.status, 400, JSON.stringify(res));
      assert.equal(typeof res.detail, 'string');
      assert.match(res.detail as string, detail);
      assert.deepEqual(await snapshot(), before);
    });
  }
});

void describe('an upload part with an invalid Content-Type', () => {
  for (const stated of ['é\u0001weird', 'foo', 'image/png garbage', 'text/html\u007f']) {
    void it(`${JSON.stringify(stated)} is not kept: the type is sniffed, and the file downloads (was a 500)`, async () => {
      const body = Buffer.concat([
        Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="pic"\r\nContent-Type: `),
        Buffer.from(stated, 'latin1'),
        Buffer.from('\r\n\r\n'),
        png,
        Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
      ]);
      const res = await rawRequest(s.url, 'POST', '/v1/files', { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` }, body);
      assert.equal(res.status, 200, res.body.toString());
      const record = res.json as FileRecordJson;
      assert.equal(record.content_type, 'image/png');
      const dl = await request(`${s.url}/v1/files/${record.file_id}/download`);
      assert.equal(dl.status, 200);
      assert.equal(dl.headers.get('content-type'), 'image/png');
      assert.ok(dl.bytes.equals(png));
    });
  }
});

void describe('conditional downloads compare with the file id ETag', () => {
  const url = () => `${s.url}/v1/files/${stored.file_id}/download`;
  const etag = () => `"${stored.file_id}"`;

  void it('If-Match with the ETag (or *) → 200; with another → 412 JSON (every If-Match was 412)', async () => {
    for (const ifMatch of [etag(), '*', `"file_00000000000000000000000000000000", ${etag()}`]) {
      const ok = await request(url(), { headers: { 'if-match': ifMatch } });
      assert.equal(ok.status, 200, ifMatch);
      assert.ok(ok.bytes.equals(png));
    }
    const refused = await request<{ detail: string }>(url(), { headers: { 'if-match': '"file_00000000000000000000000000000000"' } });
    assert.equal(refused.status, 412);
    assert.match(refused.json.detail, /If-Match/);
  });

  void it('If-None-Match with the ETag or * → 304; another → 200', async () => {
    assert.equal((await request(url(), { headers: { 'if-none-match': etag() } })).status, 304);
    assert.equal((await request(url(), { headers: { 'if-none-match': `W/${etag()}` } })).status, 304);
    assert.equal((await request(url(), { headers: { 'if-none-match': '*' } })).status, 304);
    assert.equal((await request(url(), { headers: { 'if-none-match': '"other"' } })).status, 200);
  });

  void it('If-Range with the ETag → 206; with another ETag → the whole file', async () => {
    const partial = await request(url(), { headers: { range: 'bytes=0-9', 'if-range': etag() } });
    assert.equal(partial.status, 206);
    assert.ok(partial.bytes.equals(png.subarray(0, 10)));
    const whole = await request(url(), { headers: { range: 'bytes=0-9', 'if-range': '"file_00000000000000000000000000000000"' } });
    assert.equal(whole.status, 200);
    assert.ok(whole.bytes.equals(png));
  });

  void it('If-Unmodified-Since before the file was stored → 412', async () => {
    const res = await request(url(), { headers: { 'if-unmodified-since': 'Mon, 01 Jan 2001 00:00:00 GMT' } });
    assert.equal(res.status, 412);
  });

  void it('a POST generation ignores Range and conditional headers: always the whole new image (was 206 / 304)', async () => {
    const res = await request(`${s.url}/v1/image/qwen/generate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', range: 'bytes=0-9', 'if-none-match': '*', 'if-match': '"nope"' },
      body: JSON.stringify(generateBody({ steps: 1 })),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-range'), null);
    assert.equal(res.bytes.subarray(1, 4).toString('latin1'), 'PNG');
    assert.equal(String(res.bytes.length), res.headers.get('content-length'));
  });
});

void describe('methods', () => {
  void it('a known path with another method → 405 with Allow (was 404); an unknown path stays 404', async () => {
    for (const [method, path, allow] of [
      ['PUT', `/v1/files/${stored.file_id}`, 'DELETE, GET, HEAD'],
      ['TRACE', '/health', 'GET, HEAD'],
      ['QUERY', '/v1/jobs', 'GET, HEAD'],
      ['GET', '/v1/image/qwen/generate', 'POST'],
      ['DELETE', '/v1/files', 'GET, HEAD, POST'],
    ] as const) {
      const res = await rawRequest(s.url, method, path);
      assert.equal(res.status, 405, `${method} ${path}: ${res.body.toString()}`);
      assert.equal(res.headers.allow, allow, `${method} ${path}`);
      assert.match(String((res.json as { detail: string }).detail), /^Method Not Allowed/);
    }
    assert.equal((await rawRequest(s.url, 'PUT', '/v1/nothing-here')).status, 404);
  });
});

void describe('a request refused before its body was read', () => {
  void it('is answered with Connection: close, so no client reuses a connection the server closes', async () => {
    const res = await rawRequest(s.url, 'POST', '/v1/image/qwen/generate', { 'content-type': 'text/plain' }, Buffer.alloc(256 * 1024, 0x41));
    assert.equal(res.status, 415);
    assert.equal(res.headers.connection, 'close');
  });
});

void describe('the documents say what the server sends', () => {
  interface Doc {
    paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema?: { $ref?: string } }> }> }>>;
  }

  void it('root: downloads are documented as binary image types and any stored type (*/*), upload with 400/507, download with 412; every error has the error body', async () => {
    const doc = (await request<Doc>(`${s.url}/openapi.json`)).json;
    const download = doc.paths['/v1/files/{file_id}/download']!.get!.responses;
    const types = ['application/octet-stream', 'image/png', 'image/jpeg', 'image/webp', '*/*'];
    assert.deepEqual(Object.keys(download['200']!.content!), types);
    assert.deepEqual(Object.keys(download['206']!.content!), types);
    assert.ok(download['412']);
    const upload = doc.paths['/v1/files']!.post!.responses;
    for (const code of ['400', '408', '413', '422', '507']) assert.ok(upload[code], `upload documents ${code}`);
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const [code, res] of Object.entries(op.responses)) {
          if (Number(code) < 400) continue;
          // The OpenAI-compatible routes answer in OpenAI's shape; a too-long path segment is refused by the router, before any route.
          const openAi = /^\/v1\/(images|models)/.test(path) && code !== '414';
          const body = openAi ? '#/components/schemas/OpenAIError' : '#/components/schemas/ErrorResponse';
          assert.equal(res.content?.['application/json']?.schema?.$ref, body, `${method} ${path} ${code}`);
        }
      }
    }
  });

  void it('families: generation endpoints document 415 and 507 with the error body', async () => {
    for (const [family, paths] of [
      ['qwen', ['/v1/image/qwen/generate', '/v1/image/qwen/edit']],
      ['ideogram4', ['/v1/image/ideogram4/generate']],
    ] as const) {
      const doc = (await request<Doc>(`${s.url}/v1/image/${family}/openapi.json`)).json;
      for (const p of paths) {
        for (const code of ['413', '415', '422', '429', '507']) {
          assert.equal(doc.paths[p]!.post!.responses[code]?.content?.['application/json']?.schema?.$ref, '#/components/schemas/ErrorResponse', `${p} ${code}`);
        }
      }
    }
  });
});
