/**
 * The mflux path over HTTP where the real engine cannot go on demand: the real Python worker on
 * the fake mflux package (needs the fake: it crashes, hangs and loads instantly), plus the 503s
 * decided before any engine work (budget, activation, warmup). Everything the real engine can show
 * (images, LoRAs, quantize, cancel, residency by measured size) is in test/real-engine.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { fakeMfluxEnv } from '../support/fake-mflux.js';
import { postJson, startServer, tempDir, type TestServer } from '../support/server.js';

interface Health {
  memory: { loaded: { name: string; family: string; key: string; loads: number }[]; resident_gb: number; budget_gb: number };
  engine: { name: string };
}

async function health(s: TestServer): Promise<Health> {
  return (await (await fetch(`${s.url}/health`)).json()) as Health;
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

void describe('mflux engine faults and budget (fake mflux)', () => {
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
