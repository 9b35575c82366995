/**
 * The OpenAI Images API surface through the official `openai` npm package, unchanged, pointed at
 * a real kiapi server by `baseURL`: generations (b64_json, url, every output format, n = 2),
 * edits with one and two images, streaming with partial images, the error cases in OpenAI's
 * shape, and the model list. Every image is also a kiapi job and file.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import OpenAI, { APIError, toFile } from 'openai';
import sharp from 'sharp';
import { listFiles, listJobs, pngBytes, submitAsync, waitFinished, waitForStatus, request } from '../support/api.js';
import { fakeMfluxEnv } from '../support/fake-mflux.js';
import { stored } from '../support/image-flows.js';
import { startServer, tempDir, type TestServer } from '../support/server.js';

function client(s: TestServer, apiKey = 'any-key'): OpenAI {
  // No retries: a 429 or 503 must reach the test as the server sent it.
  return new OpenAI({ baseURL: `${s.url}/v1`, apiKey, maxRetries: 0 });
}

/** Kiapi extras ride as extra body fields, as an application would send them. */
const small = { size: '64x64', steps: 2 } as const;

async function meta(b64: string) {
  return sharp(Buffer.from(b64, 'base64')).metadata();
}

async function expectApiError(p: Promise<unknown>, status: number, param: string | null, message: RegExp): Promise<APIError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof APIError, String(err));
    assert.equal(err.status, status, JSON.stringify(err.error));
    const body = err.error as { message: string; type: string; param: string | null; code: string | null };
    assert.equal(body.param, param, JSON.stringify(body));
    assert.match(body.message, message);
    assert.equal(typeof body.type, 'string');
    return err;
  }
  assert.fail('expected an API error');
}

void describe('OpenAI Images API (official openai npm package)', () => {
  let s: TestServer;
  let ai: OpenAI;
  before(async () => {
    s = await startServer({ KIAPI_PREVIEW_STEP_MS: '25', KIAPI_MAX_QUEUE: '3', KIAPI_MAX_INPUT_BYTES: '65536' });
    ai = client(s);
  });
  after(async () => s.close());

  void it('generates b64_json PNGs at the asked size; each is a kiapi job and file', async () => {
    const before = await stored(s.url);
    const res = await ai.images.generate({ prompt: 'a lighthouse at dusk', ...small, seed: 7 } as OpenAI.ImageGenerateParamsNonStreaming);
    assert.equal(res.data?.length, 1);
    const m = await meta(res.data[0]!.b64_json!);
    assert.deepEqual([m.format, m.width, m.height], ['png', 64, 64]);
    assert.equal(res.output_format, 'png');
    assert.equal(res.size, '64x64');
    assert.equal(res.usage, undefined, 'no invented token counts');
    const jobs = (await listJobs(s.url)).filter((j) => !before.jobs.includes(j.id));
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0]!.type, 'qwen');
    assert.equal(jobs[0]!.params.seed, 7);
    assert.equal((await listFiles(s.url)).length, before.files.length + 1);
  });

  void it('n = 2 runs two jobs with consecutive seeds', async () => {
    const before = await stored(s.url);
    const res = await ai.images.generate({ prompt: 'two boats', n: 2, ...small, seed: 100 } as OpenAI.ImageGenerateParamsNonStreaming);
    assert.equal(res.data?.length, 2);
    const jobs = (await listJobs(s.url)).filter((j) => !before.jobs.includes(j.id));
    assert.deepEqual(jobs.map((j) => j.params.seed).sort(), [100, 101]);
  });

  void it('answers url as an absolute download URL of the stored file', async () => {
    const res = await ai.images.generate({ prompt: 'a red kite', response_format: 'url', ...small } as OpenAI.ImageGenerateParamsNonStreaming);
    const url = res.data![0]!.url!;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/v1\/files\/file_[0-9a-f]+\/download$/);
    const got = await fetch(url);
    assert.equal(got.status, 200);
    assert.equal((await sharp(Buffer.from(await got.arrayBuffer())).metadata()).format, 'png');
  });

  void it('encodes each output format, output_compression as the encoder quality', async () => {
    for (const [format, sharpName] of [['png', 'png'], ['jpeg', 'jpeg'], ['webp', 'webp']] as const) {
      const res = await ai.images.generate({ prompt: 'a square', output_format: format, output_compression: 50, ...small } as OpenAI.ImageGenerateParamsNonStreaming);
      assert.equal((await meta(res.data![0]!.b64_json!)).format, sharpName, format);
      assert.equal(res.output_format, format);
    }
    const jobs = await listJobs(s.url);
    assert.ok(jobs.some((j) => j.params.format === 'jpeg' && j.params.quality === 50));
  });

  void it('maps quality to steps (Qwen) and presets (Ideogram 4); takes a JSON caption as the prompt', async () => {
    const before = await stored(s.url);
    await ai.images.generate({ prompt: 'low', quality: 'low', size: '64x64' });
    const caption = JSON.stringify({ high_level_description: 'A shop sign that says OPEN' });
    const res = await ai.images.generate({ model: 'ideogram-4', prompt: caption, quality: 'low', size: '256x256' });
    assert.equal((await meta(res.data![0]!.b64_json!)).width, 256);
    const jobs = (await listJobs(s.url)).filter((j) => !before.jobs.includes(j.id));
    const qwen = jobs.find((j) => j.type === 'qwen')!;
    assert.equal(qwen.params.steps, 15, 'low = half the default 30 steps');
    const ideo = jobs.find((j) => j.type === 'ideogram4')!;
    assert.equal(ideo.params.preset, 'V4_TURBO_12');
    assert.deepEqual(ideo.params.prompt, JSON.parse(caption));
  });

  void it('edits one image and two images (image[]) with Qwen Image Edit', async () => {
    const a = await toFile(await pngBytes(32, 32), 'a.png', { type: 'image/png' });
    const one = await ai.images.edit({ image: a, prompt: 'make it blue', ...small } as OpenAI.ImageEditParamsNonStreaming);
    assert.equal((await meta(one.data![0]!.b64_json!)).width, 64);
    const b = await toFile(await pngBytes(16, 16, { r: 0, g: 200, b: 0 }), 'b.png', { type: 'image/png' });
    const c = await toFile(await pngBytes(16, 16, { r: 0, g: 0, b: 200 }), 'c.png', { type: 'image/png' });
    const before = await stored(s.url);
    const two = await ai.images.edit({ image: [b, c], prompt: 'combine them', response_format: 'url', ...small } as OpenAI.ImageEditParamsNonStreaming);
    assert.match(two.data![0]!.url!, /\/v1\/files\/file_[0-9a-f]+\/download$/);
    const job = (await listJobs(s.url)).find((j) => !before.jobs.includes(j.id))!;
    assert.equal(job.type, 'qwen-edit');
    assert.equal((job.result as { params: { image_file_ids: string[] } }).params.image_file_ids.length, 2);
  });

  void it('streams partial images from the step previews, then the completed image', async () => {
    const stream = await ai.images.generate({ prompt: 'streamed', stream: true, partial_images: 2, size: '64x64', steps: 6 } as unknown as OpenAI.ImageGenerateParamsStreaming);
    const events: OpenAI.ImageGenStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    assert.deepEqual(
      events.map((e) => e.type),
      ['image_generation.partial_image', 'image_generation.partial_image', 'image_generation.completed'],
    );
    const partials = events.filter((e): e is OpenAI.ImageGenPartialImageEvent => e.type === 'image_generation.partial_image');
    assert.deepEqual(partials.map((p) => p.partial_image_index), [0, 1]);
    assert.equal((await meta(partials[0]!.b64_json)).format, 'jpeg');
    const done = events.at(-1) as OpenAI.ImageGenCompletedEvent;
    assert.equal((await meta(done.b64_json)).format, 'png');

    const edit = await ai.images.edit({
      image: await toFile(await pngBytes(16, 16), 'x.png', { type: 'image/png' }),
      prompt: 'streamed edit',
      stream: true,
      partial_images: 1,
      size: '64x64',
      steps: 4,
    } as unknown as OpenAI.ImageEditParamsStreaming);
    const editTypes: string[] = [];
    for await (const e of edit) editTypes.push(e.type);
    assert.deepEqual(editTypes, ['image_edit.partial_image', 'image_edit.completed']);
  });

  void it('refuses bad input with 400 naming the field, and stores nothing', async () => {
    const before = await stored(s.url);
    await expectApiError(ai.images.generate({ prompt: 'x', size: '65x64' } as OpenAI.ImageGenerateParams), 400, 'size', /multiples of 16/);
    await expectApiError(ai.images.generate({ prompt: 'x', size: 'big' } as unknown as OpenAI.ImageGenerateParams), 400, 'size', /size/);
    await expectApiError(ai.images.generate({ prompt: 'x', n: 9 }), 400, 'n', /'n' must be an integer from 1 to 4/);
    await expectApiError(ai.images.generate({ prompt: '' }), 400, 'prompt', /prompt/);
    await expectApiError(ai.images.generate({ prompt: 'x', model: 'dall-e-3' }), 400, 'model', /unknown model 'dall-e-3'/);
    await expectApiError(ai.images.generate({ prompt: 'x', background: 'transparent' }), 400, 'background', /transparent/);
    await expectApiError(ai.images.generate({ prompt: 'x', colour: 'red' } as unknown as OpenAI.ImageGenerateParams), 400, 'colour', /Unknown parameter/);
    await expectApiError(ai.images.generate({ prompt: 'x', model: 'ideogram-4', steps: 3 } as unknown as OpenAI.ImageGenerateParams), 400, 'steps', /preset/);
    await expectApiError(ai.images.generate({ prompt: 'x', stream: true, n: 2 } as unknown as OpenAI.ImageGenerateParamsStreaming), 400, 'n', /stream/);
    const img = () => toFile(fs.readFileSync(new URL(import.meta.url)), 'not-an-image.txt', { type: 'text/plain' });
    await expectApiError(ai.images.edit({ image: await img(), prompt: 'x' }), 400, 'image', /not a png/);
    const png = await toFile(await pngBytes(8, 8), 'a.png', { type: 'image/png' });
    await expectApiError(ai.images.edit({ image: png, mask: png, prompt: 'x' }), 400, 'mask', /masks are not supported/);
    await expectApiError(ai.images.edit({ image: png, prompt: 'x', model: 'ideogram-4' }), 400, 'model', /cannot be used with POST \/v1\/images\/edits/);
    await expectApiError(ai.images.edit({ image: png, prompt: 'x', n: 0 } as OpenAI.ImageEditParams), 400, 'n', /'n' must be/);
    await expectApiError(ai.images.createVariation({ image: png }), 400, null, /variations are not supported/);
    const big = await toFile(Buffer.alloc(100_000, 1), 'big.png', { type: 'image/png' });
    await expectApiError(ai.images.edit({ image: big, prompt: 'x' }), 413, 'image', /KIAPI_MAX_INPUT_BYTES/);
    assert.deepEqual(await stored(s.url), before);
  });

  void it('a full queue is 429 with Retry-After in the OpenAI shape, and n jobs are queued all or none', async () => {
    const running = await submitAsync(s.url, { steps: 100, prompt: 'blocker' });
    await waitForStatus(s.url, running, ['running']);
    const queued = [await submitAsync(s.url, { steps: 1 }), await submitAsync(s.url, { steps: 1 })];
    try {
      const before = await stored(s.url);
      const err = await expectApiError(ai.images.generate({ prompt: 'x', n: 2, size: '64x64' }), 429, null, /room for 1 more jobs and this request needs 2/);
      assert.match(err.headers?.get('retry-after') ?? '', /^[1-9]\d*$/);
      queued.push(await submitAsync(s.url, { steps: 1 }));
      const full = await expectApiError(ai.images.generate({ prompt: 'x', size: '64x64' }), 429, null, /queue is full/);
      assert.equal((full.error as { type: string }).type, 'rate_limit_error');
      assert.deepEqual((await stored(s.url)).files, before.files);
    } finally {
      for (const id of [...queued, running]) await request(`${s.url}/v1/jobs/${id}/cancel`, { method: 'POST' });
      for (const id of [...queued, running]) await waitFinished(s.url, id);
    }
  });

  void it('lists the image models and answers each by id and alias; 404 otherwise', async () => {
    const ids: string[] = [];
    for await (const m of ai.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['qwen-image', 'qwen-image-edit', 'ideogram-4']);
    for (const id of ids) assert.equal((await ai.models.retrieve(id)).id, id);
    assert.equal((await ai.models.retrieve('edit-2509')).id, 'qwen-image-edit');
    const err = await expectApiError(ai.models.retrieve('gpt-image-1'), 404, 'model', /does not exist/);
    assert.equal((err.error as { code: string }).code, 'model_not_found');
  });

  void it('a multipart edit without its boundary is a 400 in the OpenAI shape', async () => {
    const res = await request<{ error: { message: string } }>(`${s.url}/v1/images/edits`, {
      method: 'POST',
      headers: { 'content-type': 'multipart/form-data' },
      body: 'prompt=x',
    });
    assert.equal(res.status, 400);
    assert.match(res.json.error.message, /malformed multipart body/);
  });

  void it('keeps the rest of the API in its {"detail": ...} shape', async () => {
    const res = await request<{ detail: string }>(`${s.url}/v1/jobs/job_0000`);
    assert.equal(res.status, 404);
    assert.equal(typeof res.json.detail, 'string');
    const unknown = await request<{ error: { code: string } }>(`${s.url}/v1/images/nothing`, { method: 'POST' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'not_found');
  });
});

void describe('OpenAI Images API: auth and activation', () => {
  void it('checks Authorization: Bearer against KIAPI_AUTH_TOKEN (401 in the OpenAI shape)', async () => {
    const s = await startServer({ KIAPI_AUTH_TOKEN: 'sekrit' });
    try {
      const err = await expectApiError(client(s, 'wrong').images.generate({ prompt: 'x', size: '64x64' }), 401, null, /unauthorized/);
      assert.equal((err.error as { code: string }).code, 'invalid_api_key');
      const ok = await client(s, 'sekrit').images.generate({ prompt: 'x', ...small } as OpenAI.ImageGenerateParamsNonStreaming);
      assert.equal(ok.data?.length, 1);
    } finally {
      await s.close();
    }
  });

  void it('a model that is not activated is 503 naming the kiapi activate command', async () => {
    const dir = tempDir('kiapi-openai-');
    // The real engine with Qwen-Image named by a hub repo that is not in the (empty) cache.
    const s = await startServer(fakeMfluxEnv(dir, { KIAPI_MEMORY_LIMIT_GB: '200', KIAPI_QWEN_IMAGE_MODEL: 'Qwen/Qwen-Image' }));
    try {
      const before = await stored(s.url);
      const err = await expectApiError(client(s).images.generate({ prompt: 'x', model: 'qwen-image', size: '64x64' }), 503, null, /kiapi activate --model image/);
      assert.equal((err.error as { code: string }).code, 'model_not_activated');
      const models = await client(s).models.list();
      assert.equal((models.data.find((m) => m.id === 'qwen-image') as unknown as { ready: boolean }).ready, false);
      assert.deepEqual(await stored(s.url), before);
    } finally {
      await s.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
