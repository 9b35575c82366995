/**
 * FileRef inputs through the API (qwen generate `init_image`, edit `images`, `loras`): URL safety,
 * size caps, data URLs, file ids (incl. path traversal), and — for every rejected request — that
 * nothing was stored: no file record, no job, no blob, no temp file (docs/compatibility.md §3.2, §3.3,
 * docs/compatibility.md §11.16, §11.17). Redirects to private addresses are covered at the fetcher level in
 * test/unit/remote-input.test.ts: through the API the first hop must already be public.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { startServer, type TestServer } from '../support/server.js';
import {
  dataUrl,
  ids,
  listFiles,
  listJobs,
  pngBytes,
  request,
  sendJson,
  uploadFile,
  waitFinished,
  type FileRecordJson,
  type JobJson,
} from '../support/api.js';

const MAX_INPUT = 8192;

let png: Buffer;
let bigPng: Buffer;
let origin: http.Server;
let originUrl: string;
const originHits: string[] = [];

/** A loopback "remote" server for URL inputs. */
function startOrigin(): Promise<void> {
  origin = http.createServer((req, res) => {
    const p = (req.url ?? '/').split('?')[0]!;
    originHits.push(p);
    switch (p) {
      case '/img.png':
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length });
        res.end(png);
        return;
      case '/big.png':
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': bigPng.length });
        res.end(bigPng);
        return;
      case '/big-chunked.png':
        // No Content-Length: the cap must trip while streaming.
        res.writeHead(200, { 'content-type': 'image/png' });
        res.write(bigPng.subarray(0, 4096));
        res.end(bigPng.subarray(4096));
        return;
      case '/to-img':
        res.writeHead(302, { location: '/img.png' });
        res.end();
        return;
      case '/to-file':
        res.writeHead(302, { location: 'file:///etc/passwd' });
        res.end();
        return;
      case '/text':
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('not an image');
        return;
      default:
        res.writeHead(404);
        res.end();
    }
  });
  return new Promise((resolve) =>
    origin.listen(0, '127.0.0.1', () => {
      originUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`;
      resolve();
    }),
  );
}

interface Snapshot {
  files: string[];
  jobs: string[];
  blobs: string[];
  tmp: string[];
}

async function snapshot(s: TestServer): Promise<Snapshot> {
  return {
    files: ids(await listFiles(s.url)),
    jobs: ids(await listJobs(s.url)),
    blobs: fs.readdirSync(s.config.filesRoot).sort(),
    tmp: fs.readdirSync(s.config.tmpDir).sort(),
  };
}

/**
 * POSTs `body` in sync and async mode and expects the same rejection both times (inputs are
 * resolved before queueing), with nothing stored afterwards.
 */
async function expectRejected(s: TestServer, op: 'generate' | 'edit', body: Record<string, unknown>, status: number, detail: RegExp): Promise<void> {
  const before = await snapshot(s);
  for (const mode of ['sync', 'async']) {
    const res = await sendJson<{ detail: unknown }>('POST', `${s.url}/v1/image/qwen/${op}`, { width: 64, height: 64, steps: 1, ...body, mode });
    assert.equal(res.status, status, `${mode}: ${res.bytes.toString()}`);
    assert.equal(typeof res.json.detail, 'string', JSON.stringify(res.json));
    assert.match(res.json.detail as string, detail);
  }
  assert.deepEqual(await snapshot(s), before, 'a rejected request must leave nothing behind');
}

before(async () => {
  png = await pngBytes(24, 16);
  // Noise does not compress: comfortably over MAX_INPUT and still a valid PNG.
  const noise = randomBytes(64 * 64 * 3);
  bigPng = await sharp(noise, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
  assert.ok(bigPng.length > MAX_INPUT);
  await startOrigin();
});

after(async () => {
  if (origin) await new Promise((r) => origin.close(r));
});

void describe('inputs with private URLs refused (the default)', () => {
  let s: TestServer;

  before(async () => {
    s = await startServer({ KIAPI_MAX_INPUT_BYTES: String(MAX_INPUT) });
  });

  after(async () => {
    await s.close();
  });

  void it('a loopback URL → 400 naming init_image; the URL is never fetched', async () => {
    const hits = originHits.length;
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: `${originUrl}/img.png` } }, 400, /^init_image url host '127\.0\.0\.1' resolves to non-public address 127\.0\.0\.1$/);
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { url: `http://localhost:${new URL(originUrl).port}/img.png` } }, 400, /init_image url host 'localhost' resolves to non-public address/);
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: `http://[::1]:${new URL(originUrl).port}/img.png` } }, 400, /init_image .*non-public/);
    assert.equal(originHits.length, hits);
  });

  for (const privateUrl of ['http://10.1.2.3/x.png', 'http://192.168.0.10/x.png', 'http://169.254.169.254/latest/meta-data', 'http://100.64.0.1/x.png', 'http://0x7f.1/x.png', 'http://[::ffff:127.0.0.1]/x.png']) {
    void it(`a private address (${privateUrl}) → 400, no connection attempted`, async () => {
      await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: privateUrl } }, 400, /^init_image url host .* resolves to non-public address/);
    });
  }

  for (const badScheme of ['ftp://example.com/x.png', 'file:///etc/passwd', 'gopher://example.com/', 'javascript:alert(1)', 'not a url', '//example.com/x.png']) {
    void it(`a non-http(s) URL (${badScheme}) → 400 naming init_image`, async () => {
      await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: badScheme } }, 400, /^init_image url must be an absolute http:\/\/ or https:\/\/ URL/);
    });
  }

  void it('edit: images[1] loopback after a valid images[0] data URL → 400 naming images[1]; images[0] is not left behind', async () => {
    await expectRejected(
      s,
      'edit',
      { prompt: 'p', images: [{ type: 'data_url', data_url: dataUrl(png) }, { type: 'url', url: `${originUrl}/img.png` }] },
      400,
      /^images\[1\] url host '127\.0\.0\.1' resolves to non-public address/,
    );
  });

  void it('data_url with bad base64 → 400', async () => {
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'data_url', data_url: 'data:image/png;base64,@@@@' } }, 400, /^invalid init_image data_url payload: /);
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'data_url', data_url: 'data:image/png;base64,iVBORw0KGgo' } }, 400, /^invalid init_image data_url payload: length \d+ is not a multiple of 4$/);
  });

  void it('edit: images[0] valid + images[1] bad base64 → 400 naming images[1]; the first is not left behind', async () => {
    await expectRejected(
      s,
      'edit',
      { prompt: 'p', images: [{ type: 'data_url', data_url: dataUrl(png) }, { type: 'data_url', data_url: 'data:image/png;base64,!!!!' }] },
      400,
      /^invalid images\[1\] data_url payload/,
    );
  });

  void it('a string that is not a data URL → 400', async () => {
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'data_url', data_url: 'hello' } }, 400, /^init_image data_url must be a data URL/);
  });

  void it('an oversize data URL → 413 (KIAPI_MAX_INPUT_BYTES)', async () => {
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'data_url', data_url: dataUrl(bigPng) } }, 413, /^init_image is larger than the 8192 byte limit \(KIAPI_MAX_INPUT_BYTES\)$/);
  });

  void it('a data URL that is not an image → 400, and its stored copy is removed', async () => {
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'data_url', data_url: 'data:text/plain,hello' } }, 400, /^init_image is not a readable image/);
  });

  void it('an unknown file_id → 400', async () => {
    const id = 'file_0123456789abcdef0123456789abcdef';
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'file_id', file_id: id } }, 400, new RegExp(`^unknown init_image file_id '${id}'$`));
    await expectRejected(s, 'edit', { prompt: 'p', images: [{ file_id: id }] }, 400, /^unknown images\[0\] file_id/);
    await expectRejected(s, 'generate', { prompt: 'p', loras: [{ file: { file_id: id } }] }, 400, /^unknown loras\[0\] file_id/);
  });

  void it('a path-traversal file_id in a FileRef → 400 and nothing is read', async () => {
    // A readable PNG where `<filesRoot>/../x` (and `x.json`) would point: using it would make the job succeed.
    const decoy = path.join(path.dirname(s.config.filesRoot), 'x');
    fs.writeFileSync(decoy, png);
    fs.writeFileSync(`${decoy}.json`, JSON.stringify({ file_id: 'file_0', filename: 'x', content_type: 'image/png', size: png.length, created_at: 0, meta: {} }));
    try {
      for (const bad of ['../x', 'file_../../x', 'file_0/../../x', '/etc/passwd', 'file_0123\u0000', 'FILE_0123ABCD']) {
        await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'file_id', file_id: bad } }, 400, /^init_image file_id '.*' is not a file id/s);
      }
    } finally {
      fs.rmSync(decoy, { force: true });
      fs.rmSync(`${decoy}.json`, { force: true });
    }
  });

  void it('a valid data URL is stored as a Files record with meta.source = "data_url" and used', async () => {
    const before = ids(await listFiles(s.url));
    const res = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, { prompt: 'p', width: 64, height: 64, steps: 1, init_image: { type: 'data_url', data_url: dataUrl(png) } }, { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString());
    const job = res.json;
    assert.equal(job.status, 'succeeded');
    const created = (await listFiles(s.url)).filter((f) => !before.includes(f.file_id) && !job.artifacts.includes(f.file_id));
    assert.equal(created.length, 1);
    const input = created[0]!;
    assert.deepEqual(input.meta, { source: 'data_url', kind: 'init_image' });
    assert.equal(input.content_type, 'image/png');
    assert.equal(input.filename, 'init_image.png');
    assert.equal(input.size, png.length);
    assert.ok((await request(`${s.url}/v1/files/${input.file_id}/download`)).bytes.equals(png));
    const params = (job.result as { params: { kind: string; init_image_file_id: string } }).params;
    assert.equal(params.kind, 'img2img');
    assert.equal(params.init_image_file_id, input.file_id);
  });

  void it('a file_id input is used as is (no copy) and recorded in the result', async () => {
    const up = await uploadFile(s.url, { filename: 'ref.png', contentType: 'image/png', data: png });
    const before = ids(await listFiles(s.url));
    const res = await sendJson<JobJson>(
      'POST',
      `${s.url}/v1/image/qwen/edit`,
      { prompt: 'p', width: 64, height: 64, steps: 1, images: [{ file_id: up.json.file_id }, { type: 'data_url', data_url: dataUrl(png) }] },
      { accept: 'application/json' },
    );
    assert.equal(res.status, 200, res.bytes.toString());
    const params = (res.json.result as { params: { image_file_ids: string[] } }).params;
    assert.equal(params.image_file_ids[0], up.json.file_id);
    const after = ids(await listFiles(s.url));
    // One new data-URL input and one artifact.
    assert.equal(after.length, before.length + 2);
    assert.ok(after.includes(params.image_file_ids[1]!));
  });
});

void describe('inputs with KIAPI_NET_ALLOW_PRIVATE_URLS=true', () => {
  let s: TestServer;

  before(async () => {
    s = await startServer({ KIAPI_MAX_INPUT_BYTES: String(MAX_INPUT), KIAPI_NET_ALLOW_PRIVATE_URLS: 'true' });
  });

  after(async () => {
    await s.close();
  });

  async function generateWithUrl(url: string): Promise<{ job: JobJson; input: FileRecordJson }> {
    const before = ids(await listFiles(s.url));
    const res = await sendJson<{ job_id: string }>('POST', `${s.url}/v1/image/qwen/generate`, { prompt: 'p', width: 64, height: 64, steps: 1, mode: 'async', init_image: { type: 'url', url } });
    assert.equal(res.status, 202, res.bytes.toString());
    const job = await waitFinished(s.url, res.json.job_id);
    assert.equal(job.status, 'succeeded', job.error ?? '');
    const created = (await listFiles(s.url)).filter((f) => !before.includes(f.file_id) && !job.artifacts.includes(f.file_id));
    assert.equal(created.length, 1);
    return { job, input: created[0]! };
  }

  void it("a local server's PNG is fetched and stored with meta.source = \"url\"", async () => {
    const url = `${originUrl}/img.png`;
    const { job, input } = await generateWithUrl(url);
    assert.deepEqual(input.meta, { source: 'url', url, kind: 'init_image' });
    assert.equal(input.filename, 'img.png');
    assert.equal(input.content_type, 'image/png');
    assert.ok((await request(`${s.url}/v1/files/${input.file_id}/download`)).bytes.equals(png));
    assert.equal((job.result as { params: { init_image_file_id: string } }).params.init_image_file_id, input.file_id);
    // The job params snapshot the reference, not the bytes.
    assert.deepEqual(job.params.init_image, { type: 'url', url });
  });

  void it('a redirect to another http URL is followed', async () => {
    const { input } = await generateWithUrl(`${originUrl}/to-img`);
    assert.equal(input.filename, 'img.png');
    assert.equal(input.size, png.length);
  });

  void it('a redirect to a non-http scheme → 400', async () => {
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: `${originUrl}/to-file` } }, 400, /^init_image url must be an absolute http:\/\/ or https:\/\/ URL, got 'file:\/\/\/etc\/passwd'$/);
  });

  void it('an oversize body → 413, with or without Content-Length', async () => {
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: `${originUrl}/big.png` } }, 413, /^init_image is larger than the 8192 byte limit/);
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: `${originUrl}/big-chunked.png` } }, 413, /^init_image is larger than the 8192 byte limit/);
  });

  void it('an HTTP error or a non-image body → 400 naming the field', async () => {
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: `${originUrl}/missing.png` } }, 400, /^failed to fetch init_image url '.*\/missing\.png': HTTP 404$/);
    await expectRejected(s, 'edit', { prompt: 'p', images: [{ url: `${originUrl}/img.png` }, { url: `${originUrl}/text` }] }, 400, /^images\[1\] is not a readable image/);
  });

  void it('non-http schemes are still refused', async () => {
    await expectRejected(s, 'generate', { prompt: 'p', init_image: { type: 'url', url: 'file:///etc/passwd' } }, 400, /^init_image url must be an absolute http/);
  });
});
