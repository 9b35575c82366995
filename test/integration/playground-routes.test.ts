/**
 * What the playground page needs from the server, over real HTTP: the page shell and its built
 * assets (public, like the docs), file thumbnails (`GET /v1/files/{id}/thumbnail`), and the
 * Ideogram caption check without generating (`POST /v1/image/ideogram4/captions/validate`, the
 * same verifier and texts `/generate` uses). Bad input is a 4xx naming the parameter; nothing is
 * stored or queued by a check.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { EXAMPLE_CAPTION } from '../../src/capabilities/ideogram4/description.js';
import { getJson, listJobs, pngBytes, request, sendJson, uploadFile } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

const TOKEN = 'playground-routes-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const VALIDATE = '/v1/image/ideogram4/captions/validate';
let srv: TestServer;

before(async () => {
  srv = await startServer({ KIAPI_AUTH_TOKEN: TOKEN });
});
after(async () => {
  await srv.close();
});

async function generated(width: number, height: number): Promise<string> {
  const res = await sendJson<{ artifacts: string[] }>('POST', `${srv.url}/v1/image/qwen/generate`, { prompt: 'thumb source', width, height, steps: 1 }, { ...AUTH, accept: 'application/json' });
  assert.equal(res.status, 200, res.bytes.toString());
  return res.json.artifacts[0]!;
}

void describe('the playground page', () => {
  void it('is served at / with its built script and stylesheet, without a token', async () => {
    const res = await request(`${srv.url}/`, { headers: { accept: 'text/html' } });
    assert.equal(res.status, 200);
    const html = res.bytes.toString();
    assert.match(html, /<script type="module" src="\/playground\/app\.js"><\/script>/);
    assert.match(html, /<link rel="stylesheet" href="\/playground\/app\.css">/);
    // The page learns whether to ask for a token from the shell.
    assert.match(html, /data-auth="on"/);
    const js = await request(`${srv.url}/playground/app.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type') ?? '', /^application\/javascript/);
    assert.ok(js.bytes.length > 1000);
    // Offline: the bundle names no other host.
    assert.doesNotMatch(js.bytes.toString(), /https?:\/\/(?!127\.0\.0\.1|localhost)[a-z0-9.-]+\.[a-z]{2,}\//i);
    const css = await request(`${srv.url}/playground/app.css`);
    assert.equal(css.status, 200);
    assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
    assert.doesNotMatch(css.bytes.toString(), /url\((?!data:)/);
  });

  void it('answers 404 for an asset it does not have', async () => {
    const res = await getJson<{ detail: string }>(`${srv.url}/playground/secret.js`);
    assert.equal(res.status, 404);
    assert.match(res.json.detail, /no playground asset 'secret\.js'/);
    const traversal = await getJson(`${srv.url}/playground/..%2Fpackage.json`);
    assert.equal(traversal.status, 404);
  });
});

void describe('GET /v1/files/{file_id}/thumbnail', () => {
  void it('answers a small WebP, longest side at most `size`, aspect ratio kept', async () => {
    const id = await generated(512, 256);
    const res = await request(`${srv.url}/v1/files/${id}/thumbnail`, { headers: AUTH });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/webp');
    const meta = await sharp(res.bytes).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['webp', 256, 128]);
    const small = await request(`${srv.url}/v1/files/${id}/thumbnail?size=64`, { headers: AUTH });
    assert.equal(small.status, 200);
    const m2 = await sharp(small.bytes).metadata();
    assert.deepEqual([m2.width, m2.height], [64, 32]);
    assert.ok(small.bytes.length < res.bytes.length);
  });

  void it('never enlarges a small image, and answers 304 to its own ETag', async () => {
    const up = await uploadFile(srv.url, { filename: 'tiny.png', contentType: 'image/png', data: await pngBytes(24, 16) }, AUTH);
    assert.equal(up.status, 200);
    const res = await request(`${srv.url}/v1/files/${up.json.file_id}/thumbnail?size=512`, { headers: AUTH });
    assert.equal(res.status, 200);
    const meta = await sharp(res.bytes).metadata();
    assert.deepEqual([meta.width, meta.height], [24, 16]);
    const etag = res.headers.get('etag');
    assert.equal(etag, `"${up.json.file_id}-512"`);
    const again = await request(`${srv.url}/v1/files/${up.json.file_id}/thumbnail?size=512`, { headers: { ...AUTH, 'if-none-match': etag ?? '' } });
    assert.equal(again.status, 304);
  });

  void it('refuses a size out of range or not a number with 422 naming `size`', async () => {
    const id = await generated(64, 64);
    for (const size of ['8', '2000', 'big', '1.5']) {
      const res = await getJson<{ detail: unknown }>(`${srv.url}/v1/files/${id}/thumbnail?size=${size}`, AUTH);
      assert.equal(res.status, 422, size);
      assert.match(JSON.stringify(res.json.detail), /size/, size);
    }
  });

  void it('refuses a file that is not an image with 400 saying why, and knows no unknown id', async () => {
    const up = await uploadFile(srv.url, { filename: 'notes.txt', contentType: 'text/csv', data: Buffer.from('a,b\n1,2\n') }, AUTH);
    assert.equal(up.status, 200);
    const res = await getJson<{ detail: string }>(`${srv.url}/v1/files/${up.json.file_id}/thumbnail`, AUTH);
    assert.equal(res.status, 400);
    assert.match(res.json.detail, new RegExp(`file_id ${up.json.file_id} is text/csv, not a raster image`));
    const broken = await uploadFile(srv.url, { filename: 'broken.png', contentType: 'image/png', data: Buffer.from('not really a png') }, AUTH);
    const b = await getJson<{ detail: string }>(`${srv.url}/v1/files/${broken.json.file_id}/thumbnail`, AUTH);
    assert.equal(b.status, 400);
    assert.match(b.json.detail, /cannot be decoded as an image/);
    const missing = await getJson(`${srv.url}/v1/files/file_00000000000000000000000000000000/thumbnail`, AUTH);
    assert.equal(missing.status, 404);
  });

  void it('needs the token', async () => {
    const id = await generated(64, 64);
    const res = await getJson(`${srv.url}/v1/files/${id}/thumbnail`);
    assert.equal(res.status, 401);
  });
});

void describe(`POST ${VALIDATE}`, () => {
  interface Check {
    valid: boolean;
    problems: string[];
    strict_error: string | null;
  }

  void it('accepts the documented example caption', async () => {
    const res = await sendJson<Check>('POST', `${srv.url}${VALIDATE}`, { prompt: EXAMPLE_CAPTION }, AUTH);
    assert.equal(res.status, 200, res.bytes.toString());
    assert.deepEqual(res.json, { valid: true, problems: [], strict_error: null });
  });

  void it('lists every problem, with the very message strict /generate answers', async () => {
    const caption = structuredClone(EXAMPLE_CAPTION) as unknown as { compositional_deconstruction: { elements: Array<Record<string, unknown>> } };
    caption.compositional_deconstruction.elements[0]!.bbox = [900, 300, 100, 700];
    caption.compositional_deconstruction.elements[1]!.color_palette = ['red'];
    const res = await sendJson<Check>('POST', `${srv.url}${VALIDATE}`, { prompt: caption }, AUTH);
    assert.equal(res.status, 200);
    assert.equal(res.json.valid, false);
    assert.deepEqual(res.json.problems, [
      'elements[0].bbox: y_min (900) should be <= y_max (100)',
      'elements[1].color_palette[0]: expected uppercase #RRGGBB hex color',
    ]);
    const gen = await sendJson<{ detail: string }>(
      'POST',
      `${srv.url}/v1/image/ideogram4/generate`,
      { prompt: caption, strict_caption_validation: true, width: 256, height: 256, preset: 'V4_TURBO_12' },
      AUTH,
    );
    assert.equal(gen.status, 400);
    assert.equal(gen.json.detail, res.json.strict_error);
  });

  void it('reads a text prompt as the generate route does', async () => {
    const plain = await sendJson<Check>('POST', `${srv.url}${VALIDATE}`, { prompt: 'a poster' }, AUTH);
    assert.equal(plain.status, 200);
    assert.match(plain.json.problems[0] ?? '', /^plain prompt:/);
    const text = await sendJson<Check>('POST', `${srv.url}${VALIDATE}`, { prompt: JSON.stringify(EXAMPLE_CAPTION) }, AUTH);
    assert.equal(text.json.valid, true);
  });

  void it('refuses what is no caption request with a 4xx naming the field, and queues nothing', async () => {
    const missing = await sendJson<{ detail: unknown }>('POST', `${srv.url}${VALIDATE}`, {}, AUTH);
    assert.equal(missing.status, 422);
    assert.match(JSON.stringify(missing.json.detail), /prompt/);
    const extra = await sendJson<{ detail: unknown }>('POST', `${srv.url}${VALIDATE}`, { prompt: 'x', promt: 'y' }, AUTH);
    assert.equal(extra.status, 422);
    assert.match(JSON.stringify(extra.json.detail), /promt/);
    const unusable = await sendJson<{ detail: string }>(
      'POST',
      `${srv.url}${VALIDATE}`,
      { prompt: { high_level_description: 'x', compositional_deconstruction: { background: 'b', elements: [{ type: ['text'], desc: 'd' }] } } },
      AUTH,
    );
    assert.equal(unusable.status, 400);
    assert.match(unusable.json.detail, /^prompt caption cannot be used/);
    const noToken = await sendJson('POST', `${srv.url}${VALIDATE}`, { prompt: 'x' });
    assert.equal(noToken.status, 401);
    const jobsBefore = (await listJobs(srv.url, AUTH)).filter((j) => j.type === 'ideogram4').length;
    await sendJson('POST', `${srv.url}${VALIDATE}`, { prompt: EXAMPLE_CAPTION }, AUTH);
    assert.equal((await listJobs(srv.url, AUTH)).filter((j) => j.type === 'ideogram4').length, jobsBefore);
  });

  void it('is documented in the Ideogram family document, with a working example', async () => {
    const doc = await getJson<{ paths: Record<string, { post?: { operationId: string; requestBody: { content: { 'application/json': { example: unknown } } }; responses: Record<string, unknown> } }> }>(
      `${srv.url}/v1/image/ideogram4/openapi.json`,
    );
    const op = doc.json.paths[VALIDATE]?.post;
    assert.ok(op);
    assert.equal(op.operationId, 'validate_caption_v1_image_ideogram4_captions_validate_post');
    assert.ok(op.responses['200'] && op.responses['422'] && op.responses['401']);
    const example = op.requestBody.content['application/json'].example;
    const res = await sendJson<Check>('POST', `${srv.url}${VALIDATE}`, example, AUTH);
    assert.equal(res.json.valid, true);
  });
});
