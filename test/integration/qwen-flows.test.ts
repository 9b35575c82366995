/**
 * qwen over real HTTP with the preview engine: the original's README flows (sync raw bytes, Job
 * JSON, async + poll + download, img2img by file id and data URL, edit with one and three images),
 * output formats, stored artifacts, determinism and progress (docs/compatibility.md §1.8, §3.4, §8).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { dataUrl, getJson, pngBytes, pollUntil, request, sendJson, uploadFile, waitFinished, type JobJson } from '../support/api.js';
import { checkArtifact, imageInfo, magicOf, RecordingPreviewEngine, resultMeta } from '../support/image-flows.js';
import { startServer, type TestServer } from '../support/server.js';

const GENERATE = '/v1/image/qwen/generate';
const EDIT = '/v1/image/qwen/edit';
const JSON_ACCEPT = { accept: 'application/json' };

let server: TestServer;
let url: string;
const engine = new RecordingPreviewEngine({ stepMs: 0 });

before(async () => {
  server = await startServer({}, { engine });
  url = server.url;
});

after(async () => {
  await server.close();
});

/** Every test uses its own seed so its engine run can be found. */
let nextSeed = 1000;
const seed = () => nextSeed++;

async function postJob(path: string, body: Record<string, unknown>): Promise<JobJson> {
  const res = await sendJson<JobJson>('POST', `${url}${path}`, body, JSON_ACCEPT);
  assert.equal(res.status, 200, res.bytes.toString('utf8'));
  assert.equal(res.headers.get('x-kiapi-file-id'), null, 'no X-Kiapi-* headers on Job JSON');
  return res.json;
}

async function upload(width = 40, height = 24, color = { r: 30, g: 160, b: 60 }): Promise<string> {
  const res = await uploadFile(url, { filename: 'input.png', contentType: 'image/png', data: await pngBytes(width, height, color) });
  assert.equal(res.status, 200);
  return res.json.file_id;
}

/** The img2img strength the served schema documents for an init_image sent without one. */
async function documentedDefaultStrength(): Promise<number> {
  const doc = await getJson<{ components: { schemas: Record<string, { properties: Record<string, { description: string }> }> } }>(
    `${url}/v1/image/qwen/openapi.json`,
  );
  const text = doc.json.components.schemas.GenerateRequest!.properties.image_strength!.description;
  const m = /Omitted with an `init_image`: ([0-9]+(?:\.[0-9]+)?)/.exec(text);
  assert.ok(m, `the image_strength description states its default: ${text}`);
  return Number(m[1]);
}

void describe('qwen generate (txt2img)', () => {
  void it('sync without Accept: raw PNG bytes with X-Kiapi-File-Id / X-Kiapi-Job-Id, stored as qwen_<unix>.png', async () => {
    const res = await sendJson('POST', `${url}${GENERATE}`, { prompt: 'a red fox in snow', width: 64, height: 48, steps: 3, seed: seed() });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/png');
    const fileId = res.headers.get('x-kiapi-file-id') ?? '';
    const jobId = res.headers.get('x-kiapi-job-id') ?? '';
    assert.match(fileId, /^file_[0-9a-f]{32}$/);
    assert.match(jobId, /^job_[0-9a-f]{32}$/);
    assert.match(res.headers.get('content-disposition') ?? '', /^attachment; filename="qwen_\d{10}\.png"$/);
    assert.deepEqual(await imageInfo(res.bytes), { format: 'png', width: 64, height: 48 });

    const job = (await getJson<JobJson>(`${url}/v1/jobs/${jobId}`)).json;
    assert.equal(job.type, 'qwen');
    const bytes = await checkArtifact(url, job, 'qwen', 'png');
    assert.ok(bytes.equals(res.bytes), 'the raw response is the stored artifact');
    assert.equal(job.result!.file_id, fileId);
  });

  void it('`*/*` and an image Accept still get raw bytes of the stored type', async () => {
    for (const accept of ['*/*', 'image/webp']) {
      const res = await sendJson('POST', `${url}${GENERATE}`, { prompt: 'x', width: 32, height: 32, steps: 1, seed: seed() }, { accept });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'image/png', accept);
      assert.ok(res.headers.get('x-kiapi-file-id'));
    }
  });

  void it('Accept: application/json → the Job JSON; result per ImageResponse with every default resolved', async () => {
    const job = await postJob(GENERATE, { prompt: 'a lighthouse', width: 64, height: 64 });
    assert.deepEqual(Object.keys(job), [
      'type', 'params', 'id', 'status', 'result', 'artifacts', 'error', 'created_at', 'started_at', 'finished_at', 'progress', 'progress_label',
      'queue_position', 'eta_s',
    ]);
    assert.equal(job.type, 'qwen');
    assert.equal(job.status, 'succeeded');
    assert.equal(job.error, null);
    assert.equal(job.progress, 1);
    assert.equal(job.progress_label, 'done');
    // The request snapshot keeps what the client sent (nulls for omitted values).
    assert.equal(job.params.prompt, 'a lighthouse');
    assert.equal(job.params.seed, null);
    assert.equal(job.params.steps, null);
    assert.equal(job.params.model, 'image');
    assert.equal(job.params.mode, 'sync');

    const result = job.result!;
    for (const key of ['model', 'prompt', 'file_id', 'image_bytes', 'width', 'height', 'params', 'timings']) assert.ok(key in result, key);
    assert.equal(result.model, 'image');
    assert.equal(result.prompt, 'a lighthouse');
    assert.equal(result.width, 64);
    assert.equal(result.height, 64);
    assert.equal(typeof (result.timings as { total_s: unknown }).total_s, 'number');
    const p = result.params as Record<string, unknown>;
    const usedSeed = p.seed as number;
    assert.ok(Number.isInteger(usedSeed) && usedSeed >= 0 && usedSeed < 2 ** 31, `random seed in 0..2^31-1: ${usedSeed}`);
    assert.deepEqual(p, {
      kind: 'txt2img',
      model: 'image',
      prompt: 'a lighthouse',
      negative_prompt: null,
      init_image_file_id: null,
      image_strength: null,
      seed: usedSeed,
      width: 64,
      height: 64,
      steps: 30,
      guidance: 4,
      quantize: 8,
      scheduler: 'linear',
      format: 'png',
      quality: 90,
      loras: [],
      engine: 'preview',
    });
    // The seed recorded is the seed used: the engine ran with it, for the default step count.
    const run = engine.runWithSeed(usedSeed);
    assert.equal(run.task.steps, 30);
    assert.equal(run.events.length, 30);
    await checkArtifact(url, job, 'qwen', 'png');
  });

  void it('width and height default to 1024 when omitted or null', async () => {
    const job = await postJob(GENERATE, { prompt: 'defaults', width: null, steps: 1, seed: seed(), negative_prompt: null, guidance: null, quantize: null });
    const p = job.result!.params as Record<string, unknown>;
    assert.equal(p.width, 1024);
    assert.equal(p.height, 1024);
    assert.equal(p.guidance, 4);
    assert.equal(p.quantize, 8);
    assert.equal(p.negative_prompt, null);
    const dl = await request(`${url}/v1/files/${String(job.result!.file_id)}/download`);
    assert.deepEqual(await imageInfo(dl.bytes), { format: 'png', width: 1024, height: 1024 });
  });

  void it('async: 202 {job_id, type, status}, poll until succeeded, download the artifact', async () => {
    const res = await sendJson<{ job_id: string; type: string; status: string }>('POST', `${url}${GENERATE}`, {
      prompt: 'async cat',
      width: 48,
      height: 32,
      steps: 2,
      seed: seed(),
      mode: 'async',
    });
    assert.equal(res.status, 202);
    assert.deepEqual(Object.keys(res.json), ['job_id', 'type', 'status']);
    assert.match(res.json.job_id, /^job_[0-9a-f]{32}$/);
    assert.equal(res.json.type, 'qwen');
    assert.equal(res.json.status, 'queued');
    const job = await waitFinished(url, res.json.job_id);
    assert.equal(job.params.mode, 'async');
    const bytes = await checkArtifact(url, job, 'qwen', 'png');
    assert.deepEqual(await imageInfo(bytes), { format: 'png', width: 48, height: 32 });
  });

  void it('img2img by file id records the input file id and the given strength', async () => {
    const input = await upload();
    const s = seed();
    const job = await postJob(GENERATE, {
      prompt: 'make it autumn',
      init_image: { type: 'file_id', file_id: input },
      image_strength: 0.6,
      width: 64,
      height: 64,
      steps: 5,
      seed: s,
    });
    const p = job.result!.params as Record<string, unknown>;
    assert.equal(p.kind, 'img2img');
    assert.equal(p.init_image_file_id, input);
    assert.equal(p.image_strength, 0.6);
    assert.deepEqual(job.params.init_image, { type: 'file_id', file_id: input });
    const run = engine.runWithSeed(s);
    assert.deepEqual(run.task.initImage?.fileId, input);
    assert.equal(run.task.imageStrength, 0.6);
    await checkArtifact(url, job, 'qwen', 'png');
  });

  void it('img2img by data URL: the input is stored as a file; without image_strength the documented default is used and recorded', async () => {
    const strength = await documentedDefaultStrength();
    assert.ok(strength > 0 && strength <= 1);
    const bytes = await pngBytes(32, 32, { r: 10, g: 20, b: 200 });
    const withDefault = await postJob(GENERATE, {
      prompt: 'a blue square, but a painting',
      init_image: { type: 'data_url', data_url: dataUrl(bytes) },
      width: 64,
      height: 64,
      steps: 4,
      seed: seed(),
    });
    const p = withDefault.result!.params as Record<string, unknown>;
    assert.equal(p.kind, 'img2img');
    assert.equal(p.image_strength, strength);
    assert.equal(withDefault.params.image_strength, null, 'the request snapshot keeps the omitted value');
    const inputId = p.init_image_file_id as string;
    assert.match(inputId, /^file_[0-9a-f]{32}$/);
    const rec = await getJson<{ content_type: string; size: number; meta: Record<string, unknown> }>(`${url}/v1/files/${inputId}`);
    assert.equal(rec.status, 200);
    assert.equal(rec.json.content_type, 'image/png');
    assert.equal(rec.json.size, bytes.length);
    assert.equal(rec.json.meta.source, 'data_url');
    const stored = await request(`${url}/v1/files/${inputId}/download`);
    assert.ok(stored.bytes.equals(bytes));

    const explicit = await postJob(GENERATE, {
      prompt: 'a blue square, but a painting',
      init_image: { type: 'data_url', data_url: dataUrl(bytes) },
      image_strength: 0.25,
      width: 64,
      height: 64,
      steps: 4,
      seed: seed(),
    });
    assert.equal((explicit.result!.params as Record<string, unknown>).image_strength, 0.25);
  });
});

void describe('qwen edit', () => {
  void it('one image: Job JSON with kind edit, the input file id, edit defaults (guidance 2.5), job type qwen-edit', async () => {
    const input = await upload(30, 50);
    const job = await postJob(EDIT, { prompt: 'make the box red', images: [{ type: 'file_id', file_id: input }], width: 64, height: 80 });
    assert.equal(job.type, 'qwen-edit');
    assert.equal(job.params.model, 'edit-2509');
    const p = job.result!.params as Record<string, unknown>;
    assert.equal(job.result!.model, 'edit-2509');
    assert.deepEqual(
      { kind: p.kind, model: p.model, image_file_ids: p.image_file_ids, steps: p.steps, guidance: p.guidance, width: p.width, height: p.height, quantize: p.quantize, scheduler: p.scheduler, engine: p.engine },
      { kind: 'edit', model: 'edit-2509', image_file_ids: [input], steps: 30, guidance: 2.5, width: 64, height: 80, quantize: 8, scheduler: 'linear', engine: 'preview' },
    );
    assert.ok(!('init_image_file_id' in p));
    const bytes = await checkArtifact(url, job, 'qwen', 'png');
    assert.deepEqual(await imageInfo(bytes), { format: 'png', width: 64, height: 80 });
  });

  void it('three images (file ids and a data URL) in request order; raw bytes in sync mode', async () => {
    const a = await upload(20, 20, { r: 255, g: 0, b: 0 });
    const b = await upload(20, 40, { r: 0, g: 255, b: 0 });
    const c = await pngBytes(40, 20, { r: 0, g: 0, b: 255 });
    const s = seed();
    const res = await sendJson('POST', `${url}${EDIT}`, {
      prompt: 'combine the three',
      images: [{ type: 'file_id', file_id: a }, { type: 'data_url', data_url: dataUrl(c) }, { type: 'file_id', file_id: b }],
      width: 96,
      height: 64,
      steps: 2,
      seed: s,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/png');
    assert.deepEqual(await imageInfo(res.bytes), { format: 'png', width: 96, height: 64 });
    const job = (await getJson<JobJson>(`${url}/v1/jobs/${res.headers.get('x-kiapi-job-id')}`)).json;
    const fileIds = (job.result!.params as { image_file_ids: string[] }).image_file_ids;
    assert.equal(fileIds.length, 3);
    assert.equal(fileIds[0], a);
    assert.equal(fileIds[2], b);
    assert.match(fileIds[1]!, /^file_[0-9a-f]{32}$/);
    assert.notEqual(fileIds[1], a);
    assert.deepEqual(engine.runWithSeed(s).task.images?.map((i) => i.fileId), fileIds);
    await checkArtifact(url, job, 'qwen', 'png');
  });
});

void describe('qwen output formats and determinism', () => {
  for (const format of ['jpeg', 'webp'] as const) {
    void it(`${format}: stored type and magic bytes; lower quality → smaller file`, async () => {
      const sizes: number[] = [];
      for (const quality of [95, 15]) {
        const body = { prompt: 'a detailed city skyline at night with many lit windows', width: 128, height: 128, steps: 1, seed: 77, format, quality };
        const res = await sendJson('POST', `${url}${GENERATE}`, body);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('content-type'), `image/${format}`);
        assert.equal(magicOf(res.bytes), format);
        assert.match(res.headers.get('content-disposition') ?? '', new RegExp(`filename="qwen_\\d{10}\\.${format === 'jpeg' ? 'jpg' : 'webp'}"`));
        assert.deepEqual(await imageInfo(res.bytes), { format, width: 128, height: 128 });
        const job = (await getJson<JobJson>(`${url}/v1/jobs/${res.headers.get('x-kiapi-job-id')}`)).json;
        assert.equal((job.result!.params as Record<string, unknown>).quality, quality);
        assert.equal((job.result!.params as Record<string, unknown>).format, format);
        await checkArtifact(url, job, 'qwen', format);
        sizes.push(res.bytes.length);
      }
      assert.ok(sizes[1]! < sizes[0]!, `quality 15 (${sizes[1]} B) is smaller than quality 95 (${sizes[0]} B)`);
    });
  }

  void it('the same request with the same seed gives byte-identical images; another seed differs', async () => {
    const body = { prompt: 'a teapot on a table', width: 64, height: 64, steps: 2 };
    const first = await sendJson('POST', `${url}${GENERATE}`, { ...body, seed: 4242 });
    const second = await sendJson('POST', `${url}${GENERATE}`, { ...body, seed: 4242 });
    const other = await sendJson('POST', `${url}${GENERATE}`, { ...body, seed: 4243 });
    for (const r of [first, second, other]) assert.equal(r.status, 200);
    assert.notEqual(first.headers.get('x-kiapi-file-id'), second.headers.get('x-kiapi-file-id'), 'two artifacts');
    assert.ok(first.bytes.equals(second.bytes), 'same seed → same bytes');
    assert.ok(!first.bytes.equals(other.bytes), 'another seed → other bytes');
  });

  void it('the stored meta is the result minus file_id and image_bytes', async () => {
    const job = await postJob(GENERATE, { prompt: 'meta check', width: 32, height: 32, steps: 1, seed: seed(), format: 'webp', quality: 50 });
    const rec = await getJson<{ meta: Record<string, unknown> }>(`${url}/v1/files/${String(job.result!.file_id)}`);
    assert.deepEqual(rec.json.meta, resultMeta(job.result!));
    assert.ok(!('file_id' in rec.json.meta) && !('image_bytes' in rec.json.meta));
  });
});

void describe('qwen progress', () => {
  let slow: TestServer;
  before(async () => {
    slow = await startServer({ KIAPI_PREVIEW_STEP_MS: '30' });
  });
  after(async () => {
    await slow.close();
  });

  void it('a running job reports denoising progress strictly between 0 and 1, then done', async () => {
    const res = await sendJson<{ job_id: string }>('POST', `${slow.url}${GENERATE}`, {
      prompt: 'slow',
      width: 32,
      height: 32,
      steps: 8,
      seed: 1,
      mode: 'async',
    });
    assert.equal(res.status, 202);
    const id = res.json.job_id;
    const mid = await pollUntil(
      async () => (await getJson<JobJson>(`${slow.url}/v1/jobs/${id}`)).json,
      (j) => j.status !== 'queued' && (j.status !== 'running' || (j.progress !== null && j.progress > 0 && j.progress < 1)),
      `job ${id} to report partial progress`,
    );
    assert.equal(mid.status, 'running', `observed while running: ${JSON.stringify(mid)}`);
    assert.equal(mid.progress_label, 'denoising');
    const k = mid.progress! * 8;
    assert.ok(Math.abs(k - Math.round(k)) < 1e-9, `progress is a whole step of 8: ${mid.progress}`);
    const done = await waitFinished(slow.url, id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.progress, 1);
    assert.equal(done.progress_label, 'done');
  });
});
