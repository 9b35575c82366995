/**
 * Qwen-Image and Qwen-Image-Edit-2509 on the real engine (mflux + MLX, tiny checkpoints) through
 * kiapi's HTTP server: what users hit on day one and a fake engine cannot show.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { getJob, getJson, pollUntil, sendJson, uploadFile, waitFinished, type JobJson } from '../support/api.js';
import { imageInfo } from '../support/image-flows.js';
import type { TestServer } from '../support/server.js';
import { startServer } from '../support/server.js';
import { makeLora, pixels, realEngineEnv, solidPng, tempDir } from './support.js';

const GENERATE = '/v1/image/qwen/generate';
const EDIT = '/v1/image/qwen/edit';

interface Health {
  memory: { loaded: { name: string; key: string; loads: number; weight_gb: number; measured: boolean }[]; resident_gb: number };
}

async function health(url: string): Promise<Health> {
  return (await getJson<Health>(`${url}/health`)).json;
}

async function upload(url: string, name: string, data: Buffer, contentType = 'image/png'): Promise<string> {
  const res = await uploadFile(url, { filename: name, contentType, data });
  assert.equal(res.status, 200, res.bytes.toString());
  return (res.json as { file_id: string }).file_id;
}

/** A sync generation's PNG bytes (asserting success). */
async function image(url: string, route: string, body: Record<string, unknown>): Promise<Buffer> {
  const res = await sendJson('POST', `${url}${route}`, { width: 64, height: 64, steps: 2, seed: 5, ...body });
  assert.equal(res.status, 200, `${route} → ${res.status} ${res.bytes.toString().slice(0, 4000)}`);
  assert.deepEqual(await imageInfo(res.bytes), { format: 'png', width: 64, height: 64 });
  return res.bytes;
}

async function same(a: Buffer, b: Buffer): Promise<boolean> {
  return (await pixels(a)).equals(await pixels(b));
}

void describe('qwen on the real engine', () => {
  let server: TestServer;
  let url: string;
  let dir: string;
  before(async () => {
    dir = tempDir('kiapi-real-qwen-');
    server = await startServer(realEngineEnv());
    url = server.url;
  });
  after(async () => {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  void it('txt2img: a 64x64 PNG from mflux, the same for the same seed and another for another seed', async () => {
    const a = await image(url, GENERATE, { prompt: 'a red fox' });
    const b = await image(url, GENERATE, { prompt: 'a red fox' });
    const c = await image(url, GENERATE, { prompt: 'a red fox', seed: 6 });
    assert.ok(await same(a, b), 'same seed, same pixels');
    assert.ok(!(await same(a, c)), 'another seed, another image');
  });

  void it('reports the real engine in the result and a measured, non-zero build size in /health', async () => {
    const res = await sendJson<{ job_id: string }>('POST', `${url}${GENERATE}`, { prompt: 'x', width: 64, height: 64, steps: 2, seed: 1, mode: 'async' });
    assert.equal(res.status, 202);
    const job = await waitFinished(url, res.json.job_id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    assert.equal((job.result!.params as Record<string, unknown>).engine, 'mflux');
    const loaded = (await health(url)).memory.loaded.find((m) => m.name === 'image' && m.key.endsWith('@full'));
    assert.ok(loaded, 'the full-precision build is resident');
    // Qwen's initializer leaves MLX's weights lazy: without materialising them at load the
    // measured size was ~0 and the first generation paid the load.
    assert.equal(loaded.measured, true);
    assert.ok(loaded.weight_gb > 0.001, `measured ${loaded.weight_gb} GiB`);
  });

  void it('img2img: the output depends on the init image and on image_strength', async () => {
    const red = await upload(url, 'red.png', await solidPng('#e02020'));
    const blue = await upload(url, 'blue.png', await solidPng('#2040e0'));
    const body = { prompt: 'a house', steps: 4 };
    const fromRed = await image(url, GENERATE, { ...body, init_image: { file_id: red }, image_strength: 0.6 });
    const fromBlue = await image(url, GENERATE, { ...body, init_image: { file_id: blue }, image_strength: 0.6 });
    const weaker = await image(url, GENERATE, { ...body, init_image: { file_id: red }, image_strength: 0.3 });
    assert.ok(!(await same(fromRed, fromBlue)), 'another init image, another output');
    assert.ok(!(await same(fromRed, weaker)), 'another image_strength, another output');
    // A higher strength keeps more of the init image: the red one stays redder.
    const redness = async (png: Buffer) => {
      const px = await pixels(png);
      let r = 0;
      let b = 0;
      for (let i = 0; i < px.length; i += 3) {
        r += px[i]!;
        b += px[i + 2]!;
      }
      return r - b;
    };
    assert.ok((await redness(fromRed)) > (await redness(fromBlue)), 'the red init image gives a redder result than the blue one');
  });

  void it('edit with one and with three images', async () => {
    const ids = await Promise.all(['#c03030', '#30c030', '#3030c0'].map(async (c, i) => upload(url, `in${i}.png`, await solidPng(c))));
    const one = await image(url, EDIT, { prompt: 'make it brighter', images: [{ file_id: ids[0] }] });
    const three = await image(url, EDIT, { prompt: 'make it brighter', images: ids.map((id) => ({ file_id: id })) });
    assert.ok(!(await same(one, three)), 'three input images give another result than one');
  });

  void it('quantize 4 and 8 are their own builds and change the image', async () => {
    const full = await image(url, GENERATE, { prompt: 'a boat' });
    const q8 = await image(url, GENERATE, { prompt: 'a boat', quantize: 8 });
    const q4 = await image(url, GENERATE, { prompt: 'a boat', quantize: 4 });
    assert.ok(!(await same(full, q4)), 'q4 differs from full precision');
    assert.ok(!(await same(q8, q4)), 'q4 differs from q8');
    const keys = (await health(url)).memory.loaded.map((m) => m.key);
    for (const q of ['@full', '@q8', '@q4']) assert.ok(keys.some((k) => k.startsWith('qwen/image') && k.endsWith(q)), `${q} build in ${keys.join(', ')}`);
  });

  void it('a LoRA uploaded through the Files API changes the image; two together differ again', async () => {
    const base = await image(url, GENERATE, { prompt: 'a cat', seed: 9 });
    const l1 = await upload(url, 'style.safetensors', fs.readFileSync(makeLora(dir, 1)), 'application/octet-stream');
    const l2 = await upload(url, 'other.safetensors', fs.readFileSync(makeLora(dir, 2)), 'application/octet-stream');
    const one = await image(url, GENERATE, { prompt: 'a cat', seed: 9, loras: [{ file: { file_id: l1 }, scale: 1.0 }] });
    const two = await image(url, GENERATE, { prompt: 'a cat', seed: 9, loras: [{ file: { file_id: l1 }, scale: 1.0 }, { file: { file_id: l2 }, scale: 1.0 }] });
    // Stored blobs have no extension; MLX took the format from the path and mflux skipped the
    // LoRA, so the "LoRA" image was the base image pixel for pixel.
    assert.ok(!(await same(base, one)), 'the LoRA changed the image');
    assert.ok(!(await same(one, two)), 'a second LoRA changed it again');
  });

  void it('the same LoRA uploaded twice reuses one build', async () => {
    const bytes = fs.readFileSync(makeLora(dir, 3));
    const first = await upload(url, 'a.safetensors', bytes, 'application/octet-stream');
    const second = await upload(url, 'b.safetensors', bytes, 'application/octet-stream');
    const a = await image(url, GENERATE, { prompt: 'a dog', loras: [{ file: { file_id: first }, scale: 0.8 }] });
    const b = await image(url, GENERATE, { prompt: 'a dog', loras: [{ file: { file_id: second }, scale: 0.8 }] });
    assert.ok(await same(a, b));
    const builds = (await health(url)).memory.loaded.filter((m) => m.key.includes('*0.8'));
    assert.equal(builds.length, 1, JSON.stringify(builds));
    assert.equal(builds[0]!.loads, 1);
  });

  void it('a file that is not a LoRA is a 400 before any job is queued, sync and async', async () => {
    const png = await upload(url, 'not-a-lora.png', await solidPng('#777777'));
    const jobsBefore = (await getJson<{ data: unknown[] }>(`${url}/v1/jobs`)).json.data.length;
    for (const mode of ['sync', 'async']) {
      const res = await sendJson<{ detail: string }>('POST', `${url}${GENERATE}`, { prompt: 'x', width: 64, height: 64, steps: 2, mode, loras: [{ file: { file_id: png } }] });
      assert.equal(res.status, 400, `${mode}: ${res.bytes.toString()}`);
      assert.match(res.json.detail, /loras\[0\] is not a LoRA/);
    }
    assert.equal((await getJson<{ data: unknown[] }>(`${url}/v1/jobs`)).json.data.length, jobsBefore, 'no job was created');
  });

  void it('a LoRA that matches no layer fails its job with a message that says so, and leaks no path', async () => {
    const id = await upload(url, 'nomatch.safetensors', fs.readFileSync(makeLora(dir, 4, { noMatch: true })), 'application/octet-stream');
    const res = await sendJson<{ job_id: string }>('POST', `${url}${GENERATE}`, { prompt: 'x', width: 64, height: 64, steps: 2, mode: 'async', loras: [{ file: { file_id: id } }] });
    assert.equal(res.status, 202);
    const job = await waitFinished(url, res.json.job_id);
    assert.equal(job.status, 'failed');
    const error = JSON.stringify(job.error);
    assert.match(error, /matches no layer/i);
    assert.doesNotMatch(error, new RegExp(server.dataDir.replaceAll('/', '\\/')), 'no data-dir path in the error');
    // The server is fine afterwards.
    await image(url, GENERATE, { prompt: 'after' });
  });

  void it('reports per-step progress while denoising, and cancel stops mid-run with no artifact', async () => {
    const res = await sendJson<{ job_id: string }>('POST', `${url}${GENERATE}`, { prompt: 'slow', width: 64, height: 64, steps: 100, seed: 2, mode: 'async' });
    assert.equal(res.status, 202);
    const id = res.json.job_id;
    const midway = await pollUntil(
      () => getJob(url, id),
      (j) => j.status !== 'queued' && j.status !== 'running' ? true : (j.progress ?? 0) > 0 && (j.progress ?? 0) < 1 && j.progress_label === 'denoising',
      'denoising progress',
      120_000,
    );
    assert.equal(midway.status, 'running', `the job was still running when progress showed: ${JSON.stringify(midway)}`);
    const filesBefore = (await getJson<{ data: unknown[] }>(`${url}/v1/files`)).json.data.length;
    assert.equal((await sendJson('POST', `${url}/v1/jobs/${id}/cancel`, {})).status, 200);
    const done = await waitFinished(url, id);
    assert.equal(done.status, 'canceled');
    assert.deepEqual(done.artifacts, []);
    assert.equal((await getJson<{ data: unknown[] }>(`${url}/v1/files`)).json.data.length, filesBefore, 'no file was stored');
  });

  void it('the worker killed mid-run fails the job clearly, and the next job works', async () => {
    const res = await sendJson<{ job_id: string }>('POST', `${url}${GENERATE}`, { prompt: 'doomed', width: 64, height: 64, steps: 100, mode: 'async' });
    const id = res.json.job_id;
    await pollUntil(() => getJob(url, id), (j) => (j.progress ?? 0) > 0 || j.status !== 'running' && j.status !== 'queued', 'the run to start', 120_000);
    const pids = workerPids();
    assert.equal(pids.length, 1, `one worker process (${pids.join(',')})`);
    process.kill(pids[0]!, 'SIGKILL');
    const job: JobJson = await waitFinished(url, id);
    assert.equal(job.status, 'failed');
    assert.match(JSON.stringify(job.error), /engine process exited|killed|signal/i);
    await image(url, GENERATE, { prompt: 'after the crash' });
  });
});

/** The kiapi_worker processes this test process started (its server runs in-process). */
function workerPids(): number[] {
  return execFileSync('ps', ['-A', '-o', 'pid=,ppid=,command='], { encoding: 'utf8' })
    .split('\n')
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && Number(m[2]) === process.pid && m[3]!.includes('kiapi_worker'))
    .map((m) => Number(m[1]));
}
