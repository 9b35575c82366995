/**
 * No 5xx from any input, and answers that do not leak (issue 10, items 4–6), over real HTTP:
 * deeply nested JSON, inputs that are not the documented image formats, inputs deleted while
 * their job waits, response headers, error bodies, credentials in url inputs, file names with
 * bidi controls, negative_prompt bounds, and 413 before an oversized upload is read.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  BOUNDARY,
  dataUrl,
  generateBody,
  getJob,
  ids,
  listFiles,
  pngBytes,
  pollUntil,
  rawRequest,
  request,
  sendJson,
  submitAsync,
  uploadFile,
  waitFinished,
  type JobJson,
} from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

const MIB = 1024 * 1024;
let s: TestServer;

before(async () => {
  s = await startServer({ KIAPI_PREVIEW_STEP_MS: '20', KIAPI_MAX_PROMPT_CHARS: '100', KIAPI_MAX_UPLOAD_BYTES: String(MIB), KIAPI_NET_ALLOW_PRIVATE_URLS: 'true' });
});

after(async () => {
  await s.close();
});

const deep = (levels: number, leaf = '1') => '['.repeat(levels) + leaf + ']'.repeat(levels);

async function healthy(): Promise<void> {
  assert.equal((await request(`${s.url}/health`)).status, 200);
}

void describe('deeply nested JSON', () => {
  const cases: [string, string, string][] = [
    ['width', '/v1/image/qwen/generate', `{"prompt":"x","width":${deep(20_000)}}`],
    ['a caption', '/v1/image/ideogram4/generate', `{"prompt":{"high_level_description":"x","compositional_deconstruction":{"elements":${deep(20_000, '{}')}}}}`],
    ['extra keys of a FileRef with a data_url', '/v1/image/qwen/generate', ''],
  ];
  for (const [what, route, body] of cases) {
    void it(`20 000 levels in ${what} → 422 json_too_deep; nothing stored; the server is healthy`, async () => {
      const filesBefore = ids(await listFiles(s.url));
      const text = body || `{"prompt":"x","init_image":{"data_url":"${dataUrl(await pngBytes())}","extra":${deep(20_000)}}}`;
      const headerSets: Record<string, string>[] = [{ 'content-type': 'application/json' }, {}];
      for (const headers of headerSets) {
        const res = await rawRequest(s.url, 'POST', route, headers, Buffer.from(text));
        assert.equal(res.status, 422, res.body.toString().slice(0, 300));
        const detail = (res.json as { detail: { type: string; msg: string }[] }).detail;
        assert.equal(detail[0]!.type, 'json_too_deep');
        assert.match(detail[0]!.msg, /64 levels/);
      }
      assert.deepEqual(ids(await listFiles(s.url)), filesBefore);
      await healthy();
    });
  }

  void it('moderately nested extra keys (40 levels) are still accepted', async () => {
    const text = `{"prompt":"x","width":64,"height":64,"steps":1,"init_image":{"data_url":"${dataUrl(await pngBytes())}","extra":${deep(40)}}}`;
    const res = await rawRequest(s.url, 'POST', '/v1/image/qwen/generate', { 'content-type': 'application/json', accept: 'application/json' }, Buffer.from(text));
    assert.equal(res.status, 200, res.body.toString().slice(0, 300));
  });
});

void describe('image inputs: png, jpeg, webp, gif only, decoded before queueing', () => {
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="red"/></svg>';

  void it('an SVG init_image (data URL or upload) → 400 naming the accepted formats; nothing stored, no job', async () => {
    const filesBefore = ids(await listFiles(s.url));
    const res = await sendJson('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ init_image: { data_url: `data:image/svg+xml;base64,${Buffer.from(svg).toString('base64')}` } }));
    assert.equal(res.status, 400, res.bytes.toString());
    assert.match((res.json as { detail: string }).detail, /^init_image is not a readable image \(png, jpeg, webp or gif\): .* svg format/);
    assert.deepEqual(ids(await listFiles(s.url)), filesBefore);

    const up = await uploadFile(s.url, { filename: 'x.svg', contentType: 'image/svg+xml', data: svg });
    const edit = await sendJson('POST', `${s.url}/v1/image/qwen/edit`, { prompt: 'x', width: 64, height: 64, images: [{ file_id: up.json.file_id }] });
    assert.equal(edit.status, 400, edit.bytes.toString());
    assert.match((edit.json as { detail: string }).detail, /^images\[0\] is not a readable image \(png, jpeg, webp or gif\)/);
  });

  void it('a truncated PNG → 400 "cannot be decoded"; the data_url inputs resolved before it are removed', async () => {
    const filesBefore = ids(await listFiles(s.url));
    const png = await pngBytes(256, 256);
    const res = await sendJson('POST', `${s.url}/v1/image/qwen/edit`, {
      prompt: 'x',
      width: 64,
      height: 64,
      images: [{ data_url: dataUrl(png) }, { data_url: dataUrl(png.subarray(0, Math.floor(png.length / 2))) }],
    });
    assert.equal(res.status, 400, res.bytes.toString());
    assert.match((res.json as { detail: string }).detail, /^images\[1\] is not a readable image .*cannot be decoded/);
    assert.doesNotMatch((res.json as { detail: string }).detail, new RegExp(s.dataDir));
    assert.deepEqual(ids(await listFiles(s.url)), filesBefore);
  });
});

void describe('inputs of a queued job', () => {
  /** A job that keeps the single worker busy, so the next one waits in the queue. */
  async function busy(): Promise<string> {
    const id = await submitAsync(s.url, { steps: 100 });
    await pollUntil(() => getJob(s.url, id), (j) => j.status === 'running', 'the blocking job to run');
    return id;
  }

  void it('a file deleted through the API while its job is queued: the job still gets it; the bytes go afterwards', async () => {
    const up = await uploadFile(s.url, { filename: 'in.png', contentType: 'image/png', data: await pngBytes(64, 64) });
    const blocker = await busy();
    const queued = await submitAsync(s.url, { init_image: { file_id: up.json.file_id } });
    assert.equal((await getJob(s.url, queued)).status, 'queued');
    assert.equal((await request(`${s.url}/v1/files/${up.json.file_id}`, { method: 'DELETE' })).status, 200);
    assert.equal((await request(`${s.url}/v1/files/${up.json.file_id}`)).status, 404);
    await waitFinished(s.url, blocker);
    const done = await waitFinished(s.url, queued);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    const blob = path.join(s.config.filesRoot, up.json.file_id);
    await pollUntil(async () => fs.existsSync(blob), (exists) => !exists, 'the deleted input’s bytes to be removed');
  });

  void it('an input removed from disk by hand while queued: the sync answer is a 400 by file id, no path, not a 5xx', async () => {
    const up = await uploadFile(s.url, { filename: 'in.png', contentType: 'image/png', data: await pngBytes(64, 64) });
    await busy();
    const answer = sendJson<{ detail: string }>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ init_image: { file_id: up.json.file_id } }));
    await pollUntil(
      async () => (await (await fetch(`${s.url}/v1/jobs`)).json()) as { data: JobJson[] },
      (l) => l.data.some((j) => j.status === 'queued'),
      'the sync job to be queued',
    );
    fs.rmSync(path.join(s.config.filesRoot, up.json.file_id));
    const res = await answer;
    assert.equal(res.status, 400, res.bytes.toString());
    assert.match(res.json.detail, new RegExp(`init_image \\(${up.json.file_id}\\) is no longer on disk`));
    assert.ok(!res.json.detail.includes(s.dataDir), res.json.detail);
  });
});

void describe('response hygiene', () => {
  void it('downloads and raw image answers carry X-Content-Type-Options: nosniff', async () => {
    const raw = await request(`${s.url}/v1/image/qwen/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(generateBody()) });
    assert.equal(raw.status, 200);
    assert.equal(raw.headers.get('x-content-type-options'), 'nosniff');
    const dl = await request(`${s.url}/v1/files/${raw.headers.get('x-kiapi-file-id')!}/download`);
    assert.equal(dl.headers.get('x-content-type-options'), 'nosniff');
    assert.notEqual(dl.headers.get('cache-control'), 'no-store', 'no token: caching is left as it was');
  });

  void it('with a token configured, answers are Cache-Control: no-store', async () => {
    const t = await startServer({ KIAPI_AUTH_TOKEN: 'secret' });
    try {
      const auth = { authorization: 'Bearer secret' };
      const raw = await request(`${t.url}/v1/image/qwen/generate`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(generateBody()) });
      assert.equal(raw.headers.get('cache-control'), 'no-store');
      const dl = await request(`${t.url}/v1/files/${raw.headers.get('x-kiapi-file-id')!}/download`, { headers: auth });
      assert.equal(dl.headers.get('cache-control'), 'no-store');
      assert.equal((await request(`${t.url}/v1/jobs`, { headers: auth })).headers.get('cache-control'), 'no-store');
    } finally {
      await t.close();
    }
  });

  void it('every error body is {"detail"}, a too-long id and a broken URL included, quoting at most a few hundred characters', async () => {
    for (const p of [`/v1/files/${'f'.repeat(5000)}`, `/v1/jobs/job_${'a'.repeat(300)}`, '/v1/files/%E0%A4%A', `/nowhere/${'x'.repeat(5000)}`]) {
      const res = await rawRequest(s.url, 'GET', p);
      assert.ok(res.status >= 400 && res.status < 500, `${p.slice(0, 40)} → ${res.status}`);
      const body = res.json as Record<string, unknown>;
      assert.deepEqual(Object.keys(body), ['detail'], res.body.toString().slice(0, 200));
      assert.ok(res.body.length < 1000, `${res.body.length} bytes answered`);
    }
    const model = await sendJson<{ detail: string }>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ model: 'm'.repeat(50_000) }));
    assert.equal(model.status, 400);
    assert.ok(model.json.detail.length < 500, model.json.detail.slice(0, 100));
  });

  void it('negative_prompt is bounded like prompt (KIAPI_MAX_PROMPT_CHARS)', async () => {
    const res = await sendJson<{ detail: string }>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ negative_prompt: 'n'.repeat(101) }));
    assert.equal(res.status, 422);
    assert.match(res.json.detail, /negative_prompt is 101 characters.*KIAPI_MAX_PROMPT_CHARS/);
  });

  void it('bidi and other format characters are removed from stored file names', async () => {
    const up = await uploadFile(s.url, { filename: 'invoice\u202Egnp.exe\u200B\u2066x\u2069.png', contentType: 'image/png', data: await pngBytes() });
    assert.equal(up.status, 200);
    assert.equal(up.json.filename, 'invoicegnp.exex.png');
  });

  void it('credentials in a url input are in neither the job params nor the stored file meta', async () => {
    const png = await pngBytes(64, 64);
    const origin = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'image/png' }).end(png));
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    try {
      const port = (origin.address() as net.AddressInfo).port;
      const url = `http://user:hunter2@127.0.0.1:${port}/in.png`;
      const res = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ init_image: { url } }), { accept: 'application/json' });
      assert.equal(res.status, 200, res.bytes.toString());
      const everything = JSON.stringify(await getJob(s.url, res.json.id)) + JSON.stringify(await listFiles(s.url));
      assert.ok(!everything.includes('hunter2'), 'the password is stored nowhere');
      assert.ok(everything.includes(`http://127.0.0.1:${port}/in.png`), 'the url is kept without credentials');
    } finally {
      origin.close();
    }
  });
});

void describe('early 413 for uploads', () => {
  /** Reads the answer on a raw socket until the server closes it. */
  function answerOf(sock: net.Socket): Promise<string> {
    return new Promise((resolve) => {
      let text = '';
      sock.on('data', (d: Buffer) => (text += d.toString('latin1')));
      sock.on('error', () => undefined);
      sock.on('close', () => resolve(text));
    });
  }

  void it('a Content-Length over KIAPI_MAX_UPLOAD_BYTES is refused before any body byte is sent', async () => {
    const sock = net.connect(s.port, '127.0.0.1');
    const answer = answerOf(sock);
    sock.write(`POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${50 * MIB}\r\n\r\n`);
    const text = await answer; // the server answers and closes without waiting for the body
    assert.match(text, /^HTTP\/1\.1 413 /);
    assert.match(text, /connection: close/i);
    assert.match(text, /KIAPI_MAX_UPLOAD_BYTES/);
    await healthy();
  });

  void it('a chunked upload is cut off once it passes the limit: 413, connection closed, nothing stored', async () => {
    const filesBefore = ids(await listFiles(s.url));
    const sock = net.connect(s.port, '127.0.0.1');
    const answer = answerOf(sock);
    let closed = false;
    sock.on('close', () => (closed = true));
    const chunk = (b: Buffer | string) => {
      const buf = Buffer.from(b);
      return Buffer.concat([Buffer.from(`${buf.length.toString(16)}\r\n`), buf, Buffer.from('\r\n')]);
    };
    sock.write(`POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    sock.write(chunk(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`));
    let sent = 0;
    const piece = chunk(Buffer.alloc(64 * 1024, 7));
    // Up to 64 MiB, 64× the limit; the server must stop us long before.
    while (!closed && sent < 64 * MIB) {
      if (!sock.write(piece)) await new Promise((resolve) => { sock.once('drain', resolve); sock.once('close', resolve); });
      sent += 64 * 1024;
    }
    const text = await answer;
    assert.match(text, /^HTTP\/1\.1 413 /, text.slice(0, 200));
    assert.ok(sent < 64 * MIB, `the connection was closed after ${sent} bytes`);
    assert.deepEqual(ids(await listFiles(s.url)), filesBefore);
    await pollUntil(async () => fs.readdirSync(s.config.tmpDir), (names) => names.length === 0, 'the temp file to be removed');
  });
});
