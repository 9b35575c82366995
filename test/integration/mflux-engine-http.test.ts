/**
 * The real-engine path over HTTP: `KIAPI_ENGINE=mflux` with the real Python worker on the fake
 * mflux package. Proves what reaches mflux (constructor and generate_image keywords), residency
 * and eviction under a budget, LoRA build reuse, cancel at a step boundary, crash and hang.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { fakeMfluxEnv, readFakeCalls } from '../support/fake-mflux.js';
import { postJson, startServer, tempDir, waitForJob, type TestServer } from '../support/server.js';

interface Health {
  memory: { loaded: { name: string; family: string; key: string; loads: number }[]; resident_gb: number; budget_gb: number };
  engine: { name: string };
}

async function health(s: TestServer): Promise<Health> {
  return (await (await fetch(`${s.url}/health`)).json()) as Health;
}

async function upload(s: TestServer, name: string, bytes: Buffer): Promise<string> {
  const form = new FormData();
  form.append('file', new Blob([bytes]), name);
  const rec = (await (await fetch(`${s.url}/v1/files`, { method: 'POST', body: form })).json()) as { file_id: string };
  return rec.file_id;
}

async function pngBytes(color: string): Promise<Buffer> {
  return sharp({ create: { width: 32, height: 32, channels: 3, background: color } }).png().toBuffer();
}

async function withServer(env: Record<string, string>, fn: (s: TestServer, dir: string) => Promise<void>): Promise<void> {
  const dir = tempDir('kiapi-mflux-');
  // The machine's default budget (80% of RAM) is below one Qwen model; tests set their own.
  const server = await startServer(fakeMfluxEnv(dir, { KIAPI_MEMORY_LIMIT_GB: '200', ...env }));
  try {
    await fn(server, dir);
  } finally {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const small = { width: 64, height: 64, steps: 2, seed: 3 };

void describe('mflux engine over HTTP (fake mflux)', () => {
  let dir: string;
  let server: TestServer;
  before(async () => {
    dir = tempDir('kiapi-mflux-');
    server = await startServer(fakeMfluxEnv(dir, { KIAPI_MEMORY_LIMIT_GB: '200' }));
  });
  after(async () => {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  void it('generates through the worker and passes mflux the reference keywords', async () => {
    const res = await postJson(`${server.url}/v1/image/qwen/generate`, { prompt: 'a fox', negative_prompt: 'blur', ...small, guidance: 3.5 });
    assert.equal(res.status, 200);
    const meta = await sharp(res.bytes).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
    const calls = readFakeCalls(dir);
    const init = calls.find((c) => c.event === 'init' && c.class === 'QwenImage');
    assert.ok(init, 'QwenImage was constructed');
    assert.equal(init.kwargs.quantize, 8);
    assert.equal(init.kwargs.model_path, path.join(dir, 'models', 'qwen-image'));
    assert.equal(init.kwargs.lora_paths, null);
    const gen = calls.find((c) => c.event === 'generate_image' && c.class === 'QwenImage');
    assert.ok(gen);
    assert.deepEqual(
      Object.keys(gen.kwargs).sort(),
      ['guidance', 'height', 'image_path', 'image_strength', 'negative_prompt', 'num_inference_steps', 'prompt', 'scheduler', 'seed', 'width'],
    );
    assert.equal(gen.kwargs.num_inference_steps, 2);
    assert.equal(gen.kwargs.guidance, 3.5);
    assert.equal(gen.kwargs.negative_prompt, 'blur');
    const h = await health(server);
    assert.equal(h.engine.name, 'mflux');
    assert.ok(h.memory.loaded.some((m) => m.name === 'image' && m.loads === 1));
  });

  void it('img2img passes the init image and strength', async () => {
    const fileId = await upload(server, 'in.png', await pngBytes('#00ff00'));
    const res = await postJson(`${server.url}/v1/image/qwen/generate`, { prompt: 'x', ...small, init_image: { type: 'file_id', file_id: fileId }, image_strength: 0.5 }, { accept: 'application/json' });
    assert.equal(res.status, 200);
    const gen = readFakeCalls(dir).filter((c) => c.event === 'generate_image').at(-1)!;
    assert.equal(gen.kwargs.image_strength, 0.5);
    assert.match(String(gen.kwargs.image_path), new RegExp(fileId));
  });

  void it('edits several images in order', async () => {
    const a = await upload(server, 'a.png', await pngBytes('#ff0000'));
    const b = await upload(server, 'b.png', await pngBytes('#0000ff'));
    const res = await postJson(`${server.url}/v1/image/qwen/edit`, { prompt: 'combine', images: [{ type: 'file_id', file_id: a }, { type: 'file_id', file_id: b }], ...small }, { accept: 'application/json' });
    assert.equal(res.status, 200);
    const calls = readFakeCalls(dir);
    assert.ok(calls.some((c) => c.event === 'init' && c.class === 'QwenImageEdit'));
    const gen = calls.filter((c) => c.event === 'generate_image' && c.class === 'QwenImageEdit').at(-1)!;
    const paths = gen.kwargs.image_paths as string[];
    assert.equal(paths.length, 2);
    assert.match(paths[0]!, new RegExp(a));
    assert.match(paths[1]!, new RegExp(b));
    assert.equal(gen.kwargs.image_path, paths[0]);
    const job = res.json as { result: { params: { image_file_ids: string[]; engine: string } } };
    assert.deepEqual(job.result.params.image_file_ids, [a, b]);
    assert.equal(job.result.params.engine, 'mflux');
  });

  void it('runs Ideogram 4 with preset and caption flags, the caption as an object in key order', async () => {
    const caption = { high_level_description: 'card', compositional_deconstruction: { background: 'paper', elements: [] } };
    const res = await postJson(`${server.url}/v1/image/ideogram4/generate`, { prompt: caption, preset: 'V4_TURBO_12', width: 256, height: 256, seed: 1, warn_on_caption_issues: false }, { accept: 'application/json' });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const gen = readFakeCalls(dir).filter((c) => c.event === 'generate_image' && c.class === 'Ideogram4').at(-1)!;
    assert.equal(gen.kwargs.preset, 'V4_TURBO_12');
    assert.equal(gen.kwargs.warn_on_caption_issues, false);
    assert.equal(gen.kwargs.strict_caption_validation, false);
    assert.deepEqual(Object.keys(gen.kwargs.prompt as object), ['high_level_description', 'compositional_deconstruction']);
    assert.equal(gen.kwargs.num_inference_steps, undefined);
  });

  void it('builds a LoRA model once and reuses it for identical requests, also from another upload of the same file', async () => {
    // A minimal valid safetensors file: u64 little-endian header length, then the JSON header.
    const header = Buffer.from('{"__metadata__":{}}    ');
    const lora = Buffer.concat([Buffer.alloc(8), header]);
    lora.writeBigUInt64LE(BigInt(header.length), 0);
    const f1 = await upload(server, 'style.safetensors', lora);
    const f2 = await upload(server, 'style-copy.safetensors', lora);
    const before = readFakeCalls(dir).filter((c) => c.event === 'init').length;
    for (const fileId of [f1, f1, f2]) {
      const res = await postJson(`${server.url}/v1/image/qwen/generate`, { prompt: 'styled', ...small, loras: [{ file: { type: 'file_id', file_id: fileId }, scale: 0.7 }] });
      assert.equal(res.status, 200);
    }
    const inits = readFakeCalls(dir).filter((c) => c.event === 'init').slice(before);
    assert.equal(inits.length, 1, 'one LoRA build for three identical requests');
    assert.deepEqual(inits[0]!.kwargs.lora_scales, [0.7]);
    assert.match(String((inits[0]!.kwargs.lora_paths as string[])[0]), new RegExp(f1));
    const h = await health(server);
    assert.ok(h.memory.loaded.some((m) => m.key.includes('+lora[') && m.loads === 1));
  });

  void it('builds a quantize override separately', async () => {
    const res = await postJson(`${server.url}/v1/image/qwen/generate`, { prompt: 'q4', ...small, quantize: 4 });
    assert.equal(res.status, 200);
    const init = readFakeCalls(dir).filter((c) => c.event === 'init').at(-1)!;
    assert.equal(init.kwargs.quantize, 4);
  });
});

void describe('mflux engine faults and budget (fake mflux)', () => {
  void it('cancels a running job at a step boundary', async () => {
    await withServer({ FAKE_MFLUX_STEP_S: '0.1' }, async (s) => {
      const sub = await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'slow', width: 64, height: 64, steps: 40, mode: 'async' });
      assert.equal(sub.status, 202, JSON.stringify(sub.json));
      const id = (sub.json as { job_id: string }).job_id;
      for (const deadline = Date.now() + 20_000; Date.now() < deadline; ) {
        const job = (await (await fetch(`${s.url}/v1/jobs/${id}`)).json()) as { progress: number | null; progress_label: string };
        if ((job.progress ?? 0) > 0 && job.progress_label === 'denoising') break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal((await fetch(`${s.url}/v1/jobs/${id}/cancel`, { method: 'POST' })).status, 200);
      const job = await waitForJob(s.url, id);
      assert.equal(job.status, 'canceled');
      assert.ok((job.progress as number) < 1);
      // The worker survives a cancel: the next job runs on the same resident model.
      const next = await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'next', width: 64, height: 64, steps: 1 });
      assert.equal(next.status, 200);
    });
  });

  void it('fails the running job when the worker crashes, and the next job gets a fresh worker', async () => {
    await withServer({ FAKE_MFLUX_CRASH_AT_STEP: '2' }, async (s) => {
      const res = await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'crash', width: 64, height: 64, steps: 3 }, { accept: 'application/json' });
      assert.equal(res.status, 500);
      assert.match((res.json as { detail: string }).detail, /engine process exited \(code 9\)/);
      const jobs = (await (await fetch(`${s.url}/v1/jobs`)).json()) as { data: { status: string; error: string }[] };
      assert.equal(jobs.data[0]!.status, 'failed');
      const ok = await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'fine', width: 64, height: 64, steps: 1 });
      assert.equal(ok.status, 200);
    });
  });

  void it('kills a worker that goes silent during a run (KIAPI_ENGINE_TIMEOUT_S)', async () => {
    await withServer({ FAKE_MFLUX_HANG_AT_STEP: '2', KIAPI_ENGINE_TIMEOUT_S: '1' }, async (s) => {
      const res = await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'hang', width: 64, height: 64, steps: 3 }, { accept: 'application/json' });
      assert.equal(res.status, 500);
      assert.match((res.json as { detail: string }).detail, /silent for 1s/);
      const ok = await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'fine', width: 64, height: 64, steps: 1 });
      assert.equal(ok.status, 200);
    });
  });

  void it('evicts the least recently used model when the budget needs room', async () => {
    // image (22+8) and edit (22+8) fit in 60 GB together only as 44 GB of weights + 8 headroom;
    // ideogram (26+4) then needs the least recently used one to go.
    await withServer({ KIAPI_MEMORY_LIMIT_GB: '60' }, async (s) => {
      const png = await pngBytes('#123456');
      const img = await upload(s, 'x.png', png);
      assert.equal((await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'a', ...small })).status, 200);
      assert.equal((await postJson(`${s.url}/v1/image/qwen/edit`, { prompt: 'b', images: [{ type: 'file_id', file_id: img }], ...small })).status, 200);
      assert.deepEqual((await health(s)).memory.loaded.map((m) => m.name), ['image', 'edit-2509']);
      assert.equal((await postJson(`${s.url}/v1/image/ideogram4/generate`, { prompt: 'c', width: 256, height: 256, preset: 'V4_TURBO_12' })).status, 200);
      assert.deepEqual((await health(s)).memory.loaded.map((m) => m.name), ['edit-2509', 'fp8']);
    });
  });

  void it('answers 503 for a model that can never fit, sync and async, and loads nothing', async () => {
    // Both families need ~30 GB (weights + headroom); the eviction side is covered in residency.test.
    await withServer({ KIAPI_MEMORY_LIMIT_GB: '29' }, async (s) => {
      for (const mode of ['sync', 'async']) {
        const res = await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'too big', ...small, mode });
        assert.equal(res.status, 503);
        assert.match((res.json as { detail: string }).detail, /needs ~30\.0 GB .* budget is 29\.0 GB/);
      }
      assert.deepEqual((await health(s)).memory.loaded, []);
      const jobs = (await (await fetch(`${s.url}/v1/jobs`)).json()) as { data: unknown[] };
      assert.equal(jobs.data.length, 0);
    });
  });

  void it('warms up KIAPI_WARMUP models at start and skips ones that are not activated', async () => {
    await withServer({ KIAPI_WARMUP: '["image", "fp8"]', KIAPI_IDEOGRAM4_MODEL_REPO: 'ideogram-ai/ideogram-4-fp8' }, async (s) => {
      let h = await health(s);
      for (const deadline = Date.now() + 20_000; !(h as unknown as { warm: boolean }).warm && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 50));
        h = await health(s);
      }
      assert.equal((h as unknown as { warm: boolean }).warm, true);
      assert.deepEqual(h.memory.loaded.map((m) => m.name), ['image']);
    });
  });

  void it('answers 503 with the activation command when weights are missing, sync and async', async () => {
    await withServer({ KIAPI_QWEN_IMAGE_MODEL: 'Qwen/Qwen-Image' }, async (s) => {
      for (const mode of ['sync', 'async']) {
        const res = await postJson(`${s.url}/v1/image/qwen/generate`, { prompt: 'x', ...small, mode });
        assert.equal(res.status, 503);
        assert.match((res.json as { detail: string }).detail, /kiapi activate --model image/);
      }
      const jobs = (await (await fetch(`${s.url}/v1/jobs`)).json()) as { data: unknown[] };
      assert.equal(jobs.data.length, 0);
    });
  });
});
