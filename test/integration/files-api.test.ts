/**
 * Files API over real HTTP on loopback: upload (content type rules, filename), list, metadata,
 * download (headers, Range, ETag), delete, id validation (docs/compatibility.md §1.4, §11.15, §11.16).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../support/server.js';
import {
  BOUNDARY,
  getJson,
  listFiles,
  multipartBody,
  pngBytes,
  rawRequest,
  request,
  uploadFile,
  type FileRecordJson,
} from '../support/api.js';

let server: TestServer;
let url: string;

before(async () => {
  server = await startServer();
  url = server.url;
});

after(async () => {
  await server.close();
});

const JPEG_HEAD = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01]);
const GIF_HEAD = Buffer.from('GIF89a\x01\x00\x01\x00\x00\x00\x00', 'latin1');
const WEBP_HEAD = Buffer.concat([Buffer.from('RIFF'), Buffer.from([0x24, 0, 0, 0]), Buffer.from('WEBPVP8 ')]);

async function upload(part: Parameters<typeof uploadFile>[1]): Promise<FileRecordJson> {
  const res = await uploadFile(url, part);
  assert.equal(res.status, 200, res.bytes.toString());
  return res.json;
}

void describe('POST /v1/files', () => {
  void it('stores the bytes and returns a FileRecord (200, not 201) with the part type and filename', async () => {
    const bytes = await pngBytes();
    const res = await uploadFile(url, { filename: 'cat.png', contentType: 'image/png', data: bytes });
    assert.equal(res.status, 200);
    const rec = res.json;
    assert.deepEqual(Object.keys(rec), ['file_id', 'filename', 'content_type', 'size', 'created_at', 'meta']);
    assert.match(rec.file_id, /^file_[0-9a-f]{32}$/);
    assert.equal(rec.filename, 'cat.png');
    assert.equal(rec.content_type, 'image/png');
    assert.equal(rec.size, bytes.length);
    assert.equal(typeof rec.created_at, 'number');
    assert.deepEqual(rec.meta, {});
    const dl = await request(`${url}/v1/files/${rec.file_id}/download`);
    assert.ok(dl.bytes.equals(bytes));
  });

  void it("keeps the part's own Content-Type even when the bytes and name say otherwise", async () => {
    const rec = await upload({ filename: 'x.png', contentType: 'application/x-kiapi-test', data: await pngBytes() });
    assert.equal(rec.content_type, 'application/x-kiapi-test');
  });

  void it('treats text/plain (what the multipart parser reports for a part without a type) as "not stated"', async () => {
    assert.equal((await upload({ filename: 'x.png', contentType: 'text/plain', data: await pngBytes() })).content_type, 'image/png');
    assert.equal((await upload({ filename: 'notes.txt', contentType: 'text/plain; charset=utf-8', data: 'hi' })).content_type, 'text/plain');
  });

  for (const [kind, head, expected] of [
    ['png', null, 'image/png'],
    ['jpeg', JPEG_HEAD, 'image/jpeg'],
    ['webp', WEBP_HEAD, 'image/webp'],
    ['gif', GIF_HEAD, 'image/gif'],
  ] as const) {
    void it(`sniffs ${kind} from magic bytes when the part has no Content-Type (name without extension)`, async () => {
      const data = head ?? (await pngBytes());
      const rec = await upload({ filename: 'blob', data });
      assert.equal(rec.content_type, expected);
    });
  }

  void it('treats application/octet-stream as "not stated" and sniffs', async () => {
    const rec = await upload({ filename: 'blob', contentType: 'application/octet-stream', data: JPEG_HEAD });
    assert.equal(rec.content_type, 'image/jpeg');
  });

  void it('falls back to the extension, then to application/octet-stream', async () => {
    assert.equal((await upload({ filename: 'notes.txt', data: 'hello' })).content_type, 'text/plain');
    assert.equal((await upload({ filename: 'photo.JPG', data: 'not really a jpeg' })).content_type, 'image/jpeg');
    assert.equal((await upload({ filename: 'mystery', data: 'zzz' })).content_type, 'application/octet-stream');
  });

  void it('a `file` part without a filename is a form field, not a file → 422', async () => {
    // As in FastAPI, a part with no filename is a plain field and does not satisfy `file: UploadFile`.
    const res = await request(`${url}/v1/files`, {
      method: 'POST',
      headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` },
      body: multipartBody([{ name: 'file', data: 'just a field' }]),
    });
    assert.equal(res.status, 422);
  });

  void it('stores an empty filename as "upload"', async () => {
    const rec = await upload({ filename: '', contentType: 'text/plain', data: 'x' });
    assert.equal(rec.filename, 'upload');
  });

  void it('strips path components from the client filename', async () => {
    const rec = await upload({ filename: '../../etc/passwd', contentType: 'text/plain', data: 'x' });
    assert.ok(!rec.filename.includes('/'), rec.filename);
  });

  void it('missing `file` field → 422 FastAPI-style list', async () => {
    const before = await listFiles(url);
    const res = await request<{ detail: { type: string; loc: string[]; msg: string }[] }>(`${url}/v1/files`, {
      method: 'POST',
      headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` },
      body: multipartBody([{ name: 'other', filename: 'a.txt', contentType: 'text/plain', data: 'x' }]),
    });
    assert.equal(res.status, 422);
    assert.ok(Array.isArray(res.json.detail));
    const issue = res.json.detail[0]!;
    assert.equal(typeof issue.type, 'string');
    assert.deepEqual(issue.loc, ['body', 'file']);
    assert.equal(typeof issue.msg, 'string');
    assert.equal((await listFiles(url)).length, before.length);
  });

  void it('a body that is not multipart → 422', async () => {
    const res = await request<{ detail: unknown }>(`${url}/v1/files`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(res.status, 422);
    assert.ok(Array.isArray(res.json.detail));
  });

  void it('a .json upload downloads its own bytes, not metadata (docs/compatibility.md §11.15)', async () => {
    const payload = JSON.stringify({ hello: 'world', n: [1, 2, 3] });
    const rec = await upload({ filename: 'data.json', data: payload });
    assert.equal(rec.content_type, 'application/json');
    assert.equal(rec.filename, 'data.json');
    const dl = await request(`${url}/v1/files/${rec.file_id}/download`);
    assert.equal(dl.status, 200);
    assert.equal(dl.bytes.toString('utf8'), payload);
    // And the metadata is still the record, not the payload.
    const meta = await getJson<FileRecordJson>(`${url}/v1/files/${rec.file_id}`);
    assert.equal(meta.json.size, Buffer.byteLength(payload));
  });
});

void describe('GET /v1/files', () => {
  void it('lists every file newest first as {object:"list", data}', async () => {
    const a = await upload({ filename: 'a.txt', data: 'a' });
    const b = await upload({ filename: 'b.txt', data: 'b' });
    const c = await upload({ filename: 'c.txt', data: 'c' });
    const res = await getJson<{ object: string; data: FileRecordJson[] }>(`${url}/v1/files`);
    assert.equal(res.status, 200);
    assert.equal(res.json.object, 'list');
    const order = res.json.data.map((f) => f.file_id);
    const ia = order.indexOf(a.file_id);
    const ib = order.indexOf(b.file_id);
    const ic = order.indexOf(c.file_id);
    assert.ok(ic >= 0 && ic < ib && ib < ia, `expected c, b, a order; got ${ic}, ${ib}, ${ia}`);
    for (let i = 1; i < res.json.data.length; i++) {
      assert.ok(res.json.data[i - 1]!.created_at >= res.json.data[i]!.created_at);
    }
  });
});

void describe('GET /v1/files/{file_id}', () => {
  void it('returns the record', async () => {
    const rec = await upload({ filename: 'meta.txt', data: 'meta' });
    const res = await getJson<FileRecordJson>(`${url}/v1/files/${rec.file_id}`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, rec);
  });

  void it('unknown well-formed id → 404 with the original text', async () => {
    const id = 'file_0123456789abcdef0123456789abcdef';
    for (const path of [`/v1/files/${id}`, `/v1/files/${id}/download`]) {
      const res = await getJson<{ detail: string }>(`${url}${path}`);
      assert.equal(res.status, 404);
      assert.deepEqual(res.json, { detail: `unknown file '${id}'` });
    }
    const del = await request<{ detail: string }>(`${url}/v1/files/${id}`, { method: 'DELETE' });
    assert.equal(del.status, 404);
    assert.deepEqual(del.json, { detail: `unknown file '${id}'` });
  });

  for (const bad of ['file_..%2F..%2Fetc', '%2e%2e', 'file_XYZ', 'job_0123abcd', 'file_', 'file_' + 'a'.repeat(80)]) {
    void it(`malformed id ${bad} → 422 with a detail list whose loc names the path`, async () => {
      for (const [method, path] of [
        ['GET', `/v1/files/${bad}`],
        ['GET', `/v1/files/${bad}/download`],
        ['DELETE', `/v1/files/${bad}`],
      ] as const) {
        const res = await rawRequest(url, method, path);
        assert.equal(res.status, 422, `${method} ${path}: ${res.body.toString()}`);
        const detail = (res.json as { detail: { type: string; loc: unknown[]; msg: string }[] }).detail;
        assert.ok(Array.isArray(detail) && detail.length > 0);
        assert.deepEqual(detail[0]!.loc, ['path', 'file_id']);
        assert.equal(typeof detail[0]!.msg, 'string');
        assert.equal(typeof detail[0]!.type, 'string');
      }
    });
  }
});

void describe('GET /v1/files/{file_id}/download', () => {
  let rec: FileRecordJson;
  let bytes: Buffer;

  before(async () => {
    bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
    rec = await upload({ filename: 'bytes.bin', contentType: 'application/x-test', data: bytes });
  });

  void it('sends Content-Type, Content-Length, Content-Disposition and an ETag', async () => {
    const res = await request(`${url}/v1/files/${rec.file_id}/download`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/x-test');
    assert.equal(res.headers.get('content-length'), '1000');
    assert.equal(res.headers.get('content-disposition'), 'attachment; filename="bytes.bin"');
    assert.ok(res.headers.get('etag'));
    assert.equal(res.headers.get('accept-ranges'), 'bytes');
    assert.ok(res.bytes.equals(bytes));
  });

  void it('uses filename* (RFC 5987) for a non-ASCII filename', async () => {
    const name = 'ねこ café.png';
    const up = await uploadFile(url, {
      disposition: `form-data; name="file"; filename="${name}"`,
      contentType: 'image/png',
      data: await pngBytes(),
    });
    assert.equal(up.status, 200);
    assert.equal(up.json.filename, name);
    const res = await request(`${url}/v1/files/${up.json.file_id}/download`);
    const cd = res.headers.get('content-disposition') ?? '';
    assert.match(cd, /^attachment;/);
    assert.ok(cd.includes(`filename*=UTF-8''${encodeURIComponent(name)}`), cd);
    // The header itself stays ASCII.
    assert.match(cd, /^[\x20-\x7e]*$/);
  });

  void it('Range → 206 with Content-Range and exactly those bytes', async () => {
    const res = await request(`${url}/v1/files/${rec.file_id}/download`, { headers: { range: 'bytes=10-19' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), 'bytes 10-19/1000');
    assert.equal(res.headers.get('content-length'), '10');
    assert.ok(res.bytes.equals(bytes.subarray(10, 20)));
    const tail = await request(`${url}/v1/files/${rec.file_id}/download`, { headers: { range: 'bytes=-5' } });
    assert.equal(tail.status, 206);
    assert.ok(tail.bytes.equals(bytes.subarray(995)));
  });

  void it('unsatisfiable Range → 416', async () => {
    const res = await request<{ detail: string }>(`${url}/v1/files/${rec.file_id}/download`, { headers: { range: 'bytes=5000-6000' } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('content-range'), 'bytes */1000');
    assert.equal(typeof res.json.detail, 'string');
  });

  void it('If-None-Match with the ETag → 304 without a body', async () => {
    const first = await request(`${url}/v1/files/${rec.file_id}/download`);
    const etag = first.headers.get('etag')!;
    const res = await request(`${url}/v1/files/${rec.file_id}/download`, { headers: { 'if-none-match': etag } });
    assert.equal(res.status, 304);
    assert.equal(res.bytes.length, 0);
    assert.equal(res.headers.get('etag'), etag);
    const other = await request(`${url}/v1/files/${rec.file_id}/download`, { headers: { 'if-none-match': '"something-else"' } });
    assert.equal(other.status, 200);
  });
});

void describe('DELETE /v1/files/{file_id}', () => {
  void it('returns {deleted:true, file_id}; then the id is unknown everywhere', async () => {
    const rec = await upload({ filename: 'gone.txt', data: 'bye' });
    const res = await request(`${url}/v1/files/${rec.file_id}`, { method: 'DELETE' });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { deleted: true, file_id: rec.file_id });
    assert.equal((await getJson(`${url}/v1/files/${rec.file_id}`)).status, 404);
    assert.equal((await getJson(`${url}/v1/files/${rec.file_id}/download`)).status, 404);
    const again = await request<{ detail: string }>(`${url}/v1/files/${rec.file_id}`, { method: 'DELETE' });
    assert.equal(again.status, 404);
    assert.deepEqual(again.json, { detail: `unknown file '${rec.file_id}'` });
    assert.ok(!(await listFiles(url)).some((f) => f.file_id === rec.file_id));
  });
});
