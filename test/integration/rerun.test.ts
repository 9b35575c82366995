/**
 * The reproducibility record and POST /v1/jobs/{job_id}/rerun on the preview engine, over real
 * HTTP with real SQLite and real encoding: every family's result carries the record, a rerun makes
 * the same bytes from it, and a rerun that cannot be what the record says is refused naming why.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { dataUrl, getJob, getJson, pngBytes, pollUntil, request, sendJson, uploadFile, waitFinished, type FileRecordJson, type JobJson } from '../support/api.js';
import { fakeMfluxEnv } from '../support/fake-mflux.js';
import { startServer, tempDir, type TestServer } from '../support/server.js';
import { startReceiver } from '../support/webhook-receiver.js';

const PKG_VERSION = (JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

interface Record_ {
  kiapi_version: string;
  operation: string;
  engine: { name: string; version: string; python: string | null; mflux: string | null; mlx: string | null; device: string | null };
  encoder: { sharp: string; libvips: string };
  model: { family: string; name: string; repo: string; revision: string | null; quantize: number | null };
  loras: { file_id: string; filename: string; sha256: string; scale: number }[];
  inputs: { kind: string; file_id: string; filename: string; sha256: string }[];
  params: Record<string, unknown>;
  rerun_of: string | null;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A minimal safetensors file whose one tensor name marks it as adapter weights. */
function loraBytes(seed: number): Buffer {
  const header = Buffer.from(JSON.stringify({ 'transformer.blocks.0.attn.to_q.lora_A.weight': { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const data = Buffer.alloc(4);
  data.writeFloatLE(seed);
  return Buffer.concat([len, header, data]);
}

function recordOf(job: JobJson): Record_ {
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  const record = job.result?.record as Record_ | undefined;
  assert.ok(record, `job ${job.id} has a record: ${JSON.stringify(job.result)}`);
  return record;
}

void describe('reproducibility record and rerun (preview engine)', () => {
  let s: TestServer;
  let url: string;

  before(async () => {
    s = await startServer();
    url = s.url;
  });
  after(async () => {
    await s.close();
  });

  const upload = async (filename: string, data: Buffer, contentType: string): Promise<string> => {
    const res = await uploadFile(url, { filename, contentType, data });
    assert.equal(res.status, 200, res.bytes.toString());
    return res.json.file_id;
  };

  /** Submits async, waits, and returns the job and its image's bytes. */
  const generate = async (route: string, body: Record<string, unknown>): Promise<{ job: JobJson; bytes: Buffer }> => {
    const res = await sendJson<{ job_id: string }>('POST', `${url}${route}`, { ...body, mode: 'async' });
    assert.equal(res.status, 202, res.bytes.toString());
    const job = await waitFinished(url, res.json.job_id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    return { job, bytes: await download(job.artifacts[0]!) };
  };

  const download = async (fileId: string): Promise<Buffer> => {
    const res = await request(`${url}/v1/files/${fileId}/download`);
    assert.equal(res.status, 200);
    return res.bytes;
  };

  const rerun = (jobId: string, body?: unknown, headers: Record<string, string> = {}) =>
    body === undefined ? request(`${url}/v1/jobs/${jobId}/rerun`, { method: 'POST', headers }) : sendJson('POST', `${url}/v1/jobs/${jobId}/rerun`, body, headers);

  /** Edits a finished job's stored result as a user's upgrade (or an older kiapi) would have left it. */
  const editResult = (jobId: string, edit: (result: Record<string, unknown>) => void) => {
    const row = s.ctx.db.prepare<[string], { result: string }>('SELECT result FROM jobs WHERE id = ?').get(jobId)!;
    const result = JSON.parse(row.result) as Record<string, unknown>;
    edit(result);
    s.ctx.db.prepare('UPDATE jobs SET result = ? WHERE id = ?').run(JSON.stringify(result), jobId);
  };

  void it('qwen generate with a LoRA: the record names everything, and a sync rerun answers the same bytes', async () => {
    const lora = loraBytes(1);
    const loraId = await upload('style.safetensors', lora, 'application/octet-stream');
    const { job, bytes } = await generate('/v1/image/qwen/generate', {
      prompt: 'a lighthouse at dusk',
      width: 64,
      height: 48,
      steps: 3,
      guidance: 3.5,
      format: 'jpeg',
      quality: 70,
      loras: [{ file: { type: 'file_id', file_id: loraId }, scale: 0.75 }],
    });
    const record = recordOf(job);
    assert.equal(record.kiapi_version, PKG_VERSION);
    assert.equal(record.operation, 'qwen.generate');
    assert.deepEqual(record.engine, { name: 'preview', version: PKG_VERSION, python: null, mflux: null, mlx: null, device: null });
    assert.deepEqual(record.encoder, { sharp: sharp.versions.sharp, libvips: sharp.versions.vips });
    assert.deepEqual(record.model, { family: 'qwen', name: 'image', repo: 'Qwen/Qwen-Image', revision: null, quantize: 8 });
    assert.deepEqual(record.loras, [{ file_id: loraId, filename: 'style.safetensors', sha256: sha256(lora), scale: 0.75 }]);
    assert.deepEqual(record.inputs, []);
    // The seed was left out: the record has the one drawn.
    const seed = (job.result!.params as { seed: number }).seed;
    assert.ok(Number.isInteger(seed));
    assert.deepEqual(record.params, {
      prompt: 'a lighthouse at dusk',
      negative_prompt: null,
      width: 64,
      height: 48,
      seed,
      steps: 3,
      guidance: 3.5,
      scheduler: 'linear',
      format: 'jpeg',
      quality: 70,
    });
    assert.equal(record.rerun_of, null);
    // The image file's meta carries the same record.
    const file = await getJson<FileRecordJson>(`${url}/v1/files/${job.artifacts[0]}`);
    assert.deepEqual(file.json.meta.record, record);

    // No body: sync, the image bytes themselves, as a generation answers.
    const res = await rerun(job.id);
    assert.equal(res.status, 200, res.bytes.toString());
    assert.equal(res.headers.get('content-type'), 'image/jpeg');
    assert.equal(sha256(res.bytes), sha256(bytes), 'the rerun made the same bytes');
    const newJobId = res.headers.get('x-kiapi-job-id')!;
    assert.notEqual(newJobId, job.id);
    assert.equal(res.headers.get('warning'), null);
    const again = await getJob(url, newJobId);
    assert.equal(again.type, 'qwen');
    assert.equal(again.params.rerun_of, job.id);
    assert.equal(again.artifacts[0], res.headers.get('x-kiapi-file-id'));
    assert.deepEqual(recordOf(again), { ...record, rerun_of: job.id });
    const { record: _a, timings: _t, file_id: _f, image_bytes: _b, ...sameResult } = job.result!;
    const { record: _a2, timings: _t2, file_id: _f2, image_bytes: _b2, ...rerunResult } = again.result!;
    assert.deepEqual(rerunResult, sameResult, 'the rerun result has the original shape and values');
  });

  void it('qwen edit with uploaded and data_url images: async rerun, same bytes, inputs by digest', async () => {
    const red = await pngBytes(40, 40, { r: 200, g: 40, b: 40 });
    const blue = await pngBytes(32, 24, { r: 20, g: 40, b: 220 });
    const redId = await upload('red.png', red, 'image/png');
    const { job, bytes } = await generate('/v1/image/qwen/edit', {
      prompt: 'combine them',
      images: [{ type: 'file_id', file_id: redId }, { type: 'data_url', data_url: dataUrl(blue) }],
      width: 64,
      height: 64,
      steps: 2,
      seed: 7,
      format: 'webp',
    });
    const record = recordOf(job);
    assert.equal(record.operation, 'qwen.edit');
    assert.equal(record.model.name, 'edit-2509');
    assert.equal(record.inputs.length, 2);
    assert.deepEqual(record.inputs[0], { kind: 'images[0]', file_id: redId, filename: 'red.png', sha256: sha256(red) });
    assert.equal(record.inputs[1]!.kind, 'images[1]');
    assert.equal(record.inputs[1]!.sha256, sha256(blue));
    assert.equal(record.params.seed, 7);

    const res = await rerun(job.id, { mode: 'async' });
    assert.equal(res.status, 202, res.bytes.toString());
    const again = await waitFinished(url, (res.json as { job_id: string }).job_id);
    assert.equal(again.type, 'qwen-edit');
    assert.equal(recordOf(again).rerun_of, job.id);
    assert.deepEqual(recordOf(again).inputs, record.inputs);
    assert.equal(sha256(await download(again.artifacts[0]!)), sha256(bytes));
  });

  void it('qwen img2img: the init image and image_strength are recorded and reused', async () => {
    const init = await pngBytes(64, 64, { r: 30, g: 160, b: 60 });
    const { job, bytes } = await generate('/v1/image/qwen/generate', {
      prompt: 'a meadow',
      init_image: { type: 'data_url', data_url: dataUrl(init) },
      image_strength: 0.4,
      width: 64,
      height: 64,
      steps: 2,
      seed: 3,
    });
    const record = recordOf(job);
    assert.equal(record.inputs[0]!.kind, 'init_image');
    assert.equal(record.inputs[0]!.sha256, sha256(init));
    assert.equal(record.params.image_strength, 0.4);
    const res = await rerun(job.id, {}, { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString());
    const again = res.json as JobJson;
    assert.equal(again.status, 'succeeded');
    assert.equal(sha256(await download(again.artifacts[0]!)), sha256(bytes));
  });

  void it('ideogram4 with a JSON caption: same bytes, preset and caption flags recorded', async () => {
    const caption = { high_level_description: 'A poster that says HELLO', compositional_deconstruction: { elements: [{ type: 'text', text: 'HELLO', bbox: [100, 100, 300, 900] }] } };
    const { job, bytes } = await generate('/v1/image/ideogram4/generate', { prompt: caption, preset: 'V4_TURBO_12', width: 256, height: 256, seed: 11 });
    const record = recordOf(job);
    assert.equal(record.operation, 'ideogram4.generate');
    assert.deepEqual(record.model, { family: 'ideogram4', name: 'fp8', repo: 'ideogram-ai/ideogram-4-fp8', revision: null, quantize: record.model.quantize });
    assert.deepEqual(record.params.prompt, caption);
    assert.equal(record.params.preset, 'V4_TURBO_12');
    assert.equal(record.params.steps, 12);
    assert.equal(record.params.strict_caption_validation, false);
    assert.equal(record.params.warn_on_caption_issues, true);
    const res = await rerun(job.id, { mode: 'sync' });
    assert.equal(res.status, 200, res.bytes.toString());
    assert.equal(sha256(res.bytes), sha256(bytes));
    assert.equal(((await getJob(url, res.headers.get('x-kiapi-job-id')!)).result!.record as Record_).rerun_of, job.id);
  });

  void it('a deleted input or LoRA, or one whose content changed → 409 naming it; nothing is queued', async () => {
    const img = await pngBytes(16, 16);
    const imgId = await upload('gone.png', img, 'image/png');
    const { job } = await generate('/v1/image/qwen/edit', { prompt: 'x', images: [{ type: 'file_id', file_id: imgId }], width: 64, height: 64, steps: 1, seed: 1 });
    const jobsBefore = (await getJson<{ data: unknown[] }>(`${url}/v1/jobs`)).json.data.length;
    assert.equal((await request(`${url}/v1/files/${imgId}`, { method: 'DELETE' })).status, 200);
    const res = await rerun(job.id);
    assert.equal(res.status, 409);
    const detail = (res.json as { detail: string }).detail;
    assert.match(detail, /images\[0\]/);
    assert.ok(detail.includes(imgId) && detail.includes('gone.png') && detail.includes('deleted'), detail);
    assert.equal((await getJson<{ data: unknown[] }>(`${url}/v1/jobs`)).json.data.length, jobsBefore, 'no job was recorded');

    const loraId = await upload('l.safetensors', loraBytes(2), 'application/octet-stream');
    const withLora = await generate('/v1/image/qwen/generate', { prompt: 'x', width: 64, height: 64, steps: 1, seed: 1, loras: [{ file: { type: 'file_id', file_id: loraId } }] });
    editResult(withLora.job.id, (r) => {
      (r.record as Record_).loras[0]!.sha256 = '0'.repeat(64);
    });
    const changed = await rerun(withLora.job.id);
    assert.equal(changed.status, 409);
    assert.match((changed.json as { detail: string }).detail, /loras\[0\] .*no longer has the recorded content/);
  });

  void it('an engine or model revision other than the recorded one → 409 naming each difference; allow_different runs it with warnings', async () => {
    const { job, bytes } = await generate('/v1/image/qwen/generate', { prompt: 'upgrade', width: 64, height: 64, steps: 1, seed: 5 });
    editResult(job.id, (r) => {
      const record = r.record as Record_;
      record.engine.version = '0.0.1';
      record.model.revision = 'a'.repeat(40);
    });
    const res = await rerun(job.id);
    assert.equal(res.status, 409);
    const detail = (res.json as { detail: string }).detail;
    assert.ok(detail.includes(`the preview engine version was 0.0.1 when the job ran, ${PKG_VERSION} now`), detail);
    assert.ok(detail.includes(`the revision of Qwen/Qwen-Image was ${'a'.repeat(40)} when the job ran, none now`), detail);
    assert.ok(detail.includes('"allow_different": true'), detail);

    const forced = await rerun(job.id, { allow_different: true });
    assert.equal(forced.status, 200, forced.bytes.toString());
    const warning = forced.headers.get('warning') ?? '';
    assert.match(warning, /^299 - "rerun on a different installation: the preview engine version was 0\.0\.1/);
    const again = await getJob(url, forced.headers.get('x-kiapi-job-id')!);
    assert.equal((again.result!.warnings as string[]).length, 2);
    // Nothing about the pixels changed in fact here (the DB row was edited): the same bytes.
    assert.equal(sha256(forced.bytes), sha256(bytes));
    // The new record says what ran now, not what the old one claimed.
    assert.equal(recordOf(again).engine.version, PKG_VERSION);

    editResult(job.id, (r) => {
      (r.record as Record_).engine.name = 'mflux';
    });
    const other = await rerun(job.id);
    assert.equal(other.status, 409);
    assert.match((other.json as { detail: string }).detail, /the engine was mflux when the job ran, preview now/);
  });

  void it('jobs without a record, not succeeded, unknown or malformed ids, and bad bodies are refused with the reason', async () => {
    const { job } = await generate('/v1/image/qwen/generate', { prompt: 'old', width: 64, height: 64, steps: 1, seed: 1 });
    editResult(job.id, (r) => {
      delete r.record;
    });
    const old = await rerun(job.id);
    assert.equal(old.status, 409);
    assert.match((old.json as { detail: string }).detail, /has no reproducibility record/);

    const { job: garbled } = await generate('/v1/image/qwen/generate', { prompt: 'garbled', width: 64, height: 64, steps: 1, seed: 1 });
    editResult(garbled.id, (r) => {
      (r.record as Record_).params.width = 'wide';
    });
    const unreadable = await rerun(garbled.id);
    assert.equal(unreadable.status, 409);
    assert.match((unreadable.json as { detail: string }).detail, /has a reproducibility record this kiapi cannot read/);

    // A failed job, as the store keeps one (the preview engine does not fail on demand).
    const failing = await generate('/v1/image/qwen/generate', { prompt: 'f', width: 64, height: 64, steps: 1, seed: 1 });
    s.ctx.db.prepare("UPDATE jobs SET status = 'failed', result = NULL, artifacts = '[]', error = 'engine error' WHERE id = ?").run(failing.job.id);
    const failed = await rerun(failing.job.id);
    assert.equal(failed.status, 409);
    assert.match((failed.json as { detail: string }).detail, new RegExp(`job ${failing.job.id} is failed: only a succeeded image job can be rerun`));

    const unknown = await rerun('job_0123456789abcdef0123456789abcdef');
    assert.equal(unknown.status, 404);
    assert.equal((await rerun('nope')).status, 422);
    const bad = await rerun(job.id, { mode: 'later' });
    assert.equal(bad.status, 422);
    const typo = await rerun(job.id, { allow_diferent: true });
    assert.equal(typo.status, 422);
    assert.match(typo.bytes.toString(), /allow_diferent/);
  });

  void it('an Idempotency-Key makes one rerun: a retry answers the same new job, another body with the key is a 422', async () => {
    const { job } = await generate('/v1/image/qwen/generate', { prompt: 'retry me', width: 64, height: 64, steps: 1, seed: 2 });
    const headers = { 'idempotency-key': `rerun-${job.id}` };
    const first = await rerun(job.id, { mode: 'async' }, headers);
    assert.equal(first.status, 202, first.bytes.toString());
    const second = await rerun(job.id, { mode: 'async' }, headers);
    assert.equal(second.status, 202);
    assert.equal((second.json as { job_id: string }).job_id, (first.json as { job_id: string }).job_id);
    assert.equal(second.headers.get('idempotent-replayed'), 'true');
    const other = await rerun(job.id, { mode: 'async', allow_different: true }, headers);
    assert.equal(other.status, 422, other.bytes.toString());
  });

  void it('the served OpenAPI documents the route and the record', async () => {
    const root = (await getJson<{ paths: Record<string, Record<string, { requestBody?: { required: boolean }; responses: Record<string, unknown> }>> }>(`${url}/openapi.json`)).json;
    const op = root.paths['/v1/jobs/{job_id}/rerun']?.post;
    assert.ok(op, 'documented');
    assert.equal(op.requestBody?.required, false);
    for (const code of ['200', '202', '404', '409', '422']) assert.ok(op.responses[code], code);
    const qwen = (await getJson<{ components: { schemas: Record<string, { properties?: Record<string, unknown> }> } }>(`${url}/v1/image/qwen/openapi.json`)).json;
    assert.ok(qwen.components.schemas.ImageResponse?.properties?.record);
    assert.ok(qwen.components.schemas.ReproRecord);
  });
});

void describe('rerun after a restart on another engine', () => {
  void it('a job made by the mflux worker (fake mflux), rerun after a restart on the preview engine → 409 naming the engine; allow_different runs it', async () => {
    const dir = tempDir('kiapi-rerun-engines-');
    const dataDir = path.join(dir, 'data');
    const env = fakeMfluxEnv(dir, { KIAPI_MEMORY_LIMIT_GB: '200' });
    let s = await startServer(env, { dataDir });
    try {
      const res = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, { prompt: 'before the upgrade', width: 64, height: 64, steps: 2, seed: 3 }, { accept: 'application/json' });
      assert.equal(res.status, 200, res.bytes.toString());
      const record = recordOf(res.json);
      // The worker's ready message names the versions of its Python, mflux and MLX (here the fake's).
      assert.equal(record.engine.name, 'mflux');
      assert.equal(record.engine.version, record.engine.mflux);
      for (const k of ['python', 'mflux', 'mlx', 'device'] as const) assert.ok(record.engine[k], `engine.${k} is recorded`);
      // A local model directory has no Hub revision.
      assert.equal(record.model.repo, env.KIAPI_QWEN_IMAGE_MODEL);
      assert.equal(record.model.revision, null);
      const same = await sendJson<JobJson>('POST', `${s.url}/v1/jobs/${res.json.id}/rerun`, {}, { accept: 'application/json' });
      assert.equal(same.status, 200, same.bytes.toString());
      assert.equal(recordOf(same.json).rerun_of, res.json.id);
      await s.close({ keepData: true });

      s = await startServer({ ...env, KIAPI_ENGINE: 'preview' }, { dataDir });
      const refused = await request(`${s.url}/v1/jobs/${res.json.id}/rerun`, { method: 'POST' });
      assert.equal(refused.status, 409);
      const detail = (refused.json as { detail: string }).detail;
      assert.match(detail, /: the engine was mflux when the job ran, preview now\. The image would likely differ/);
      const forced = await sendJson('POST', `${s.url}/v1/jobs/${res.json.id}/rerun`, { allow_different: true });
      assert.equal(forced.status, 200, forced.bytes.toString());
      assert.equal(forced.headers.get('warning'), '299 - "rerun on a different installation: the engine was mflux when the job ran, preview now"');
      const again = await getJob(s.url, forced.headers.get('x-kiapi-job-id')!);
      assert.equal(recordOf(again).engine.name, 'preview');
      assert.equal((again.result!.params as { engine: string }).engine, 'preview', 'the result names the engine that ran the rerun');
    } finally {
      await s.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

void describe('rerun with a webhook', () => {
  void it('the rerun job POSTs its own webhook (as a generation does), its data naming the original in record.rerun_of', async () => {
    const hooks = await startReceiver();
    const s = await startServer({ KIAPI_NET_ALLOW_PRIVATE_URLS: 'true' });
    try {
      const made = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, { prompt: 'hooked', width: 64, height: 64, steps: 1, seed: 1 }, { accept: 'application/json' });
      assert.equal(made.status, 200);
      assert.equal(hooks.received.length, 0, 'no webhook for the original');
      const res = await sendJson<{ job_id: string }>('POST', `${s.url}/v1/jobs/${made.json.id}/rerun`, { mode: 'async', webhook: hooks.url });
      assert.equal(res.status, 202, res.bytes.toString());
      await pollUntil(async () => hooks.received.length, (n) => n >= 1, 'the rerun job’s webhook');
      const body = JSON.parse(hooks.received[0]!.body) as { type: string; data: JobJson };
      assert.equal(body.type, 'job.succeeded');
      assert.equal(body.data.id, res.json.job_id);
      assert.equal((body.data.result!.record as Record_).rerun_of, made.json.id);
    } finally {
      await s.close();
      await hooks.close();
    }
  });
});
