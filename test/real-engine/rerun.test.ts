/**
 * The reproducibility record and POST /v1/jobs/{job_id}/rerun on the real engine (mflux + MLX,
 * tiny checkpoints): the record names the worker's mflux, MLX and Python and the commit of the
 * tiny model's snapshot, and a rerun makes the very same bytes — in the same server and after a
 * restart, in a fresh worker process that has to build the model (and its LoRA) again.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { getJob, request, sendJson, uploadFile, waitFinished, type JobJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';
import { makeLora, realEngine, realEngineEnv, solidPng, tempDir } from './support.js';

interface Record_ {
  engine: { name: string; version: string; python: string | null; mflux: string | null; mlx: string | null; device: string | null };
  model: { family: string; name: string; repo: string; revision: string | null; quantize: number | null };
  loras: { file_id: string; sha256: string; scale: number }[];
  inputs: { kind: string; file_id: string; sha256: string }[];
  params: Record<string, unknown>;
  rerun_of: string | null;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The versions the engine venv really has, asked of its own Python. */
function venvVersions(): { python: string; mflux: string; mlx: string } {
  const out = execFileSync(
    realEngine().python,
    ['-c', 'import json, platform, importlib.metadata as m; print(json.dumps({"python": platform.python_version(), "mflux": m.version("mflux"), "mlx": m.version("mlx")}))'],
    { encoding: 'utf8' },
  );
  return JSON.parse(out) as { python: string; mflux: string; mlx: string };
}

void describe('rerun on the real engine', () => {
  const dataDir = tempDir('kiapi-real-rerun-data-');
  const dir = tempDir('kiapi-real-rerun-');
  let server: TestServer;
  let url: string;
  const start = async () => {
    server = await startServer(realEngineEnv(), { dataDir });
    url = server.url;
  };

  before(start);
  after(async () => {
    await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const generate = async (route: string, body: Record<string, unknown>): Promise<{ job: JobJson; bytes: Buffer }> => {
    const res = await sendJson<{ job_id: string }>('POST', `${url}${route}`, { width: 64, height: 64, steps: 2, ...body, mode: 'async' });
    assert.equal(res.status, 202, res.bytes.toString());
    const job = await waitFinished(url, res.json.job_id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const file = await request(`${url}/v1/files/${job.artifacts[0]}/download`);
    assert.equal(file.status, 200);
    return { job, bytes: file.bytes };
  };

  const rerunBytes = async (jobId: string): Promise<{ bytes: Buffer; job: JobJson }> => {
    const res = await request(`${url}/v1/jobs/${jobId}/rerun`, { method: 'POST' });
    assert.equal(res.status, 200, res.bytes.toString());
    assert.equal(res.headers.get('warning'), null, 'nothing differs from the record');
    return { bytes: res.bytes, job: await getJob(url, res.headers.get('x-kiapi-job-id')!) };
  };

  const upload = async (name: string, data: Buffer, contentType: string) => {
    const res = await uploadFile(url, { filename: name, contentType, data });
    assert.equal(res.status, 200, res.bytes.toString());
    return res.json.file_id;
  };

  let withLora: { job: JobJson; bytes: Buffer };
  let edit: { job: JobJson; bytes: Buffer };

  void it('the record names the worker’s mflux, MLX and Python and the tiny model’s commit; a rerun makes the same bytes', async () => {
    const loraBytes = fs.readFileSync(makeLora(dir, 1));
    const lora = await upload('style.safetensors', loraBytes, 'application/octet-stream');
    // No seed: the record keeps the one drawn.
    withLora = await generate('/v1/image/qwen/generate', { prompt: 'a red fox', loras: [{ file: { file_id: lora }, scale: 0.9 }] });
    const record = withLora.job.result!.record as Record_;
    const versions = venvVersions();
    assert.deepEqual(record.engine, {
      name: 'mflux',
      version: versions.mflux,
      python: versions.python,
      mflux: versions.mflux,
      mlx: versions.mlx,
      device: record.engine.device,
    });
    assert.match(record.engine.device ?? '', /cpu/i, 'the CPU lane runs on the cpu device');
    const tiny = realEngine().models.find((m) => m.repo === 'Qwen/Qwen-Image');
    assert.ok(tiny, 'the tiny Qwen-Image model is in the lane');
    assert.deepEqual(record.model, { family: 'qwen', name: 'image', repo: 'Qwen/Qwen-Image', revision: tiny.revision, quantize: null });
    assert.deepEqual(record.loras, [{ file_id: lora, filename: 'style.safetensors', sha256: sha256(loraBytes), scale: 0.9 }]);
    assert.equal(record.params.seed, (withLora.job.result!.params as { seed: number }).seed);

    const again = await rerunBytes(withLora.job.id);
    assert.equal(sha256(again.bytes), sha256(withLora.bytes), 'the rerun made the same bytes');
    assert.equal((again.job.result!.record as Record_).rerun_of, withLora.job.id);
  });

  void it('qwen edit with an input image: the same bytes again', async () => {
    const input = await solidPng('#3080c0');
    const id = await upload('in.png', input, 'image/png');
    edit = await generate('/v1/image/qwen/edit', { prompt: 'make it brighter', images: [{ file_id: id }], seed: 4 });
    const record = edit.job.result!.record as Record_;
    assert.deepEqual(record.inputs, [{ kind: 'images[0]', file_id: id, filename: 'in.png', sha256: sha256(input) }]);
    const tiny = realEngine().models.find((m) => m.repo === 'Qwen/Qwen-Image-Edit-2509');
    assert.equal(record.model.revision, tiny?.revision);
    const again = await rerunBytes(edit.job.id);
    assert.equal(sha256(again.bytes), sha256(edit.bytes));
  });

  void it('after a restart (a fresh worker that builds the model and LoRA again) the reruns still make the same bytes', async () => {
    await server.close({ keepData: true });
    await start();
    for (const original of [withLora, edit]) {
      const again = await rerunBytes(original.job.id);
      assert.equal(sha256(again.bytes), sha256(original.bytes), `rerun of ${original.job.type} after a restart`);
    }
  });
});
