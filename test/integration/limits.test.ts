/**
 * The request limits, each at a small configured value: a JSON body over KIAPI_MAX_BODY_BYTES and
 * an upload over KIAPI_MAX_UPLOAD_BYTES → 413, more inputs than KIAPI_MAX_INPUTS and a prompt over
 * KIAPI_MAX_PROMPT_CHARS → 422, a full queue (KIAPI_MAX_QUEUE) → 429 with Retry-After. Every
 * refusal names its setting and leaves nothing behind: no job, no file record, no blob, no temp
 * file. Values at the limit are accepted.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import {
  BOUNDARY,
  dataUrl,
  generateBody,
  ids,
  listFiles,
  listJobs,
  pngBytes,
  request,
  sendJson,
  submitAsync,
  uploadFile,
  waitFinished,
  waitForStatus,
} from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

const MAX_BODY = 4096;
const MAX_UPLOAD = 1000;
const MAX_INPUTS = 2;
const MAX_PROMPT = 50;
const MAX_QUEUE = 2;

let s: TestServer;
let imageId: string;

before(async () => {
  s = await startServer({
    KIAPI_MAX_BODY_BYTES: String(MAX_BODY),
    KIAPI_MAX_UPLOAD_BYTES: String(MAX_UPLOAD),
    KIAPI_MAX_INPUTS: String(MAX_INPUTS),
    KIAPI_MAX_PROMPT_CHARS: String(MAX_PROMPT),
    KIAPI_MAX_QUEUE: String(MAX_QUEUE),
    KIAPI_PREVIEW_STEP_MS: '50',
  });
  const up = await uploadFile(s.url, { filename: 'in.png', contentType: 'image/png', data: await pngBytes(16, 16) });
  assert.equal(up.status, 200);
  imageId = up.json.file_id;
});

after(async () => {
  await s.close();
});

interface Stored {
  jobs: string[];
  files: string[];
  blobs: string[];
  tmp: string[];
}

async function stored(): Promise<Stored> {
  return {
    jobs: ids(await listJobs(s.url)),
    files: ids(await listFiles(s.url)),
    blobs: fs.readdirSync(s.config.filesRoot).sort(),
    tmp: fs.readdirSync(s.config.tmpDir).sort(),
  };
}

async function assertNothingStored(before: Stored, what: string): Promise<void> {
  assert.deepEqual(await stored(), before, `nothing may be stored for ${what}`);
}

const QG = '/v1/image/qwen/generate';
const QE = '/v1/image/qwen/edit';
const IG = '/v1/image/ideogram4/generate';

/** POSTs in sync and async mode; both must be refused the same way with nothing stored. */
async function expectRefused(path: string, body: Record<string, unknown>, status: number, detail: RegExp): Promise<void> {
  const before = await stored();
  for (const mode of ['sync', 'async']) {
    const res = await sendJson<{ detail: unknown }>('POST', `${s.url}${path}`, { ...body, mode }, { accept: 'application/json' });
    assert.equal(res.status, status, `${mode}: ${res.bytes.toString()}`);
    assert.equal(typeof res.json.detail, 'string', res.bytes.toString());
    assert.match(res.json.detail as string, detail);
  }
  await assertNothingStored(before, `${path} ${JSON.stringify(body).slice(0, 120)}`);
}

/** Sends `body` with Transfer-Encoding: chunked (no Content-Length for the server to check first). */
function postChunked(path: string, body: Buffer): Promise<{ status: number; json: { detail?: unknown } | null }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${s.url}${path}`,
      { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as { detail?: unknown }) : null });
        });
        res.on('error', reject);
      },
    );
    // The server may answer and close before all chunks are written: that is the point.
    req.on('error', (err) => (err as NodeJS.ErrnoException).code === 'EPIPE' || (err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err));
    for (let i = 0; i < body.length; i += 512) req.write(body.subarray(i, i + 512));
    req.end();
  });
}

void describe('KIAPI_MAX_BODY_BYTES', () => {
  void it('a JSON body over the limit → 413 naming the setting; nothing stored', async () => {
    const body = JSON.stringify(generateBody({ prompt: 'x'.repeat(40), negative_prompt: 'n'.repeat(MAX_BODY) }));
    assert.ok(Buffer.byteLength(body) > MAX_BODY);
    const before = await stored();
    const res = await request<{ detail: string }>(`${s.url}${QG}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    assert.equal(res.status, 413, res.bytes.toString());
    assert.match(res.json.detail, new RegExp(`larger than the ${MAX_BODY} byte limit \\(KIAPI_MAX_BODY_BYTES\\)`));
    assert.match(res.json.detail, /POST \/v1\/files/, 'says how to send large inputs instead');
    await assertNothingStored(before, 'an oversized JSON body');
  });

  void it('the same without Content-Length (chunked) → 413; nothing stored', async () => {
    const body = Buffer.from(JSON.stringify(generateBody({ negative_prompt: 'n'.repeat(MAX_BODY * 4) })));
    const before = await stored();
    const res = await postChunked(QG, body);
    assert.equal(res.status, 413, JSON.stringify(res.json));
    assert.match(String(res.json?.detail), /KIAPI_MAX_BODY_BYTES/);
    await assertNothingStored(before, 'an oversized chunked JSON body');
  });

  void it('a body just under the limit is accepted', async () => {
    // The filler goes in an extra key (the request models accept extra keys): negative_prompt is
    // bounded by KIAPI_MAX_PROMPT_CHARS like prompt.
    const base = JSON.stringify({ ...generateBody({ steps: 1 }), filler: '' });
    const body = JSON.stringify({ ...generateBody({ steps: 1 }), filler: 'n'.repeat(MAX_BODY - Buffer.byteLength(base)) });
    assert.equal(Buffer.byteLength(body), MAX_BODY);
    const res = await request(`${s.url}${QG}`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body });
    assert.equal(res.status, 200, res.bytes.toString());
  });
});

void describe('KIAPI_MAX_UPLOAD_BYTES', () => {
  void it('an upload over the limit → 413 naming the setting; no record, no blob, no temp file', async () => {
    const before = await stored();
    const res = await uploadFile(s.url, { filename: 'big.bin', contentType: 'application/octet-stream', data: Buffer.alloc(MAX_UPLOAD * 5, 7) });
    assert.equal(res.status, 413, res.bytes.toString());
    assert.match((res.json as unknown as { detail: string }).detail, new RegExp(`larger than the ${MAX_UPLOAD} byte limit \\(KIAPI_MAX_UPLOAD_BYTES\\)`));
    await assertNothingStored(before, 'an oversized upload');
  });

  void it('one byte over the limit → 413; exactly the limit → 200', async () => {
    const before = await stored();
    const over = await uploadFile(s.url, { filename: 'over.bin', contentType: 'application/octet-stream', data: Buffer.alloc(MAX_UPLOAD + 1, 1) });
    assert.equal(over.status, 413, over.bytes.toString());
    await assertNothingStored(before, 'an upload one byte over the limit');
    const exact = await uploadFile(s.url, { filename: 'exact.bin', contentType: 'application/octet-stream', data: Buffer.alloc(MAX_UPLOAD, 1) });
    assert.equal(exact.status, 200, exact.bytes.toString());
    assert.equal(exact.json.size, MAX_UPLOAD);
  });

  void it('an oversized upload streamed without Content-Length → 413; nothing stored', async () => {
    const before = await stored();
    const head = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
    const tail = Buffer.from(`\r\n--${BOUNDARY}--\r\n`);
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        `${s.url}/v1/files`,
        { method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'transfer-encoding': 'chunked' }, agent: false },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'EPIPE' || (err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)));
      req.write(head);
      for (let i = 0; i < 10; i++) req.write(Buffer.alloc(MAX_UPLOAD, 2));
      req.end(tail);
    });
    assert.equal(status, 413);
    await assertNothingStored(before, 'an oversized chunked upload');
  });
});

void describe('KIAPI_MAX_INPUTS', () => {
  const ref = () => ({ type: 'file_id', file_id: imageId });
  const lora = { file: { type: 'file_id', file_id: 'file_0123456789abcdef0123456789abcdef' } };

  void it('more edit images than the limit → 422 naming the setting; no data URL input is stored', async () => {
    const png = dataUrl(await pngBytes(8, 8));
    await expectRefused(
      QE,
      { prompt: 'combine', images: [ref(), { type: 'data_url', data_url: png }, { type: 'data_url', data_url: png }], width: 64, height: 64, steps: 1 },
      422,
      new RegExp(`^images has 3 entries; at most ${MAX_INPUTS} inputs per request are allowed \\(KIAPI_MAX_INPUTS\\)$`),
    );
  });

  void it('more LoRAs than the limit (but within KIAPI_QWEN_MAX_LORAS) → 422 naming the setting', async () => {
    await expectRefused(QG, generateBody({ loras: [lora, lora, lora] }), 422, /^loras has 3 entries; at most 2 inputs per request are allowed \(KIAPI_MAX_INPUTS\)$/);
  });

  void it('images and LoRAs count together → 422 naming both; generate counts init_image with the LoRAs', async () => {
    await expectRefused(
      QE,
      { prompt: 'combine', images: [ref(), ref()], loras: [lora], width: 64, height: 64, steps: 1 },
      422,
      /^images and loras have 3 entries; at most 2 inputs per request are allowed \(KIAPI_MAX_INPUTS\)$/,
    );
    await expectRefused(
      QG,
      generateBody({ init_image: ref(), loras: [lora, lora] }),
      422,
      /^init_image and loras have 3 entries; at most 2 inputs per request are allowed \(KIAPI_MAX_INPUTS\)$/,
    );
  });

  void it('exactly the limit is accepted', async () => {
    const res = await sendJson<{ status: string }>('POST', `${s.url}${QE}`, { prompt: 'combine', images: [ref(), ref()], width: 64, height: 64, steps: 1 }, { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString());
    assert.equal(res.json.status, 'succeeded');
  });
});

void describe('KIAPI_MAX_PROMPT_CHARS', () => {
  const over = 'p'.repeat(MAX_PROMPT + 1);

  void it('qwen generate and edit: a longer prompt → 422 naming the setting', async () => {
    const detail = new RegExp(`^prompt is ${MAX_PROMPT + 1} characters; at most ${MAX_PROMPT} are allowed \\(KIAPI_MAX_PROMPT_CHARS\\)$`);
    await expectRefused(QG, generateBody({ prompt: over }), 422, detail);
    await expectRefused(QE, { prompt: over, images: [{ type: 'file_id', file_id: imageId }], width: 64, height: 64, steps: 1 }, 422, detail);
  });

  void it('ideogram4: a longer plain prompt, and a JSON caption longer as JSON → 422', async () => {
    await expectRefused(IG, { prompt: over, width: 256, height: 256, preset: 'V4_TURBO_12' }, 422, /KIAPI_MAX_PROMPT_CHARS/);
    const caption = { high_level_description: 'h'.repeat(MAX_PROMPT) };
    await expectRefused(IG, { prompt: caption, width: 256, height: 256, preset: 'V4_TURBO_12' }, 422, /KIAPI_MAX_PROMPT_CHARS/);
  });

  void it('a prompt of exactly the limit is accepted', async () => {
    const res = await sendJson('POST', `${s.url}${QG}`, generateBody({ prompt: 'p'.repeat(MAX_PROMPT), steps: 1 }), { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString());
  });
});

void describe('KIAPI_MAX_QUEUE', () => {
  void it('a full queue → 429 with Retry-After, sync and async; nothing stored, not even a data URL input', async () => {
    // One job running (100 steps × 50 ms) and MAX_QUEUE queued behind it.
    const running = await submitAsync(s.url, { steps: 100, prompt: 'blocker' });
    await waitForStatus(s.url, running, ['running']);
    const queued: string[] = [];
    for (let i = 0; i < MAX_QUEUE; i++) queued.push(await submitAsync(s.url, { steps: 1, seed: i }));
    try {
      const before = await stored();
      const input = dataUrl(await pngBytes(12, 12));
      for (const mode of ['sync', 'async']) {
        for (const body of [generateBody({ mode }), generateBody({ mode, init_image: { type: 'data_url', data_url: input } })]) {
          const res = await sendJson<{ detail: string }>('POST', `${s.url}${QG}`, body, { accept: 'application/json' });
          assert.equal(res.status, 429, `${mode}: ${res.bytes.toString()}`);
          assert.match(res.json.detail, new RegExp(`^the job queue is full \\(${MAX_QUEUE} queued, KIAPI_MAX_QUEUE=${MAX_QUEUE}\\); retry later$`));
          const retryAfter = res.headers.get('retry-after');
          assert.match(retryAfter ?? '', /^[1-9]\d*$/, `Retry-After is whole seconds ≥ 1: ${retryAfter}`);
        }
      }
      await assertNothingStored(before, 'requests refused by a full queue');
      assert.equal((await request<{ queue_len: number }>(`${s.url}/health`)).json.queue_len, MAX_QUEUE);
    } finally {
      for (const id of [...queued, running]) await request(`${s.url}/v1/jobs/${id}/cancel`, { method: 'POST' });
      for (const id of [...queued, running]) await waitFinished(s.url, id);
    }
    // Room again: the next request is accepted.
    const res = await sendJson('POST', `${s.url}${QG}`, generateBody({ steps: 1 }), { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString());
  });
});
