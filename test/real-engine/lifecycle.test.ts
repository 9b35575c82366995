/**
 * The engine's life on the real engine (mflux + MLX, tiny checkpoints): measured build sizes that
 * drive eviction under a small budget across a restart, a worker that exits cleanly, and the CLI
 * (`kiapi check`, `kiapi status --json`) against the tiny models.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { getJson, sendJson } from '../support/api.js';
import { cleanEnv, runCli } from '../support/activation.js';
import { imageInfo } from '../support/image-flows.js';
import { realEngine, realEngineEnv, solidPng, tempDir, withRealServer } from './support.js';

interface Loaded {
  name: string;
  key: string;
  loads: number;
  weight_gb: number;
  measured: boolean;
}

async function loaded(url: string): Promise<Loaded[]> {
  return (await getJson<{ memory: { loaded: Loaded[] } }>(`${url}/health`)).json.memory.loaded;
}

async function generate(url: string): Promise<void> {
  const res = await sendJson('POST', `${url}/v1/image/qwen/generate`, { prompt: 'a tree', width: 64, height: 64, steps: 2, seed: 1 });
  assert.equal(res.status, 200, res.bytes.toString());
}

async function edit(url: string): Promise<void> {
  const data = `data:image/png;base64,${(await solidPng('#208020')).toString('base64')}`;
  const res = await sendJson('POST', `${url}/v1/image/qwen/edit`, { prompt: 'greener', images: [{ data_url: data }], width: 64, height: 64, steps: 2, seed: 1 });
  assert.equal(res.status, 200, res.bytes.toString());
}

/** Collects a server's JSON log lines. */
function logSink(): { stream: PassThrough; lines: () => Record<string, unknown>[] } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  return {
    stream,
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

void describe('engine lifecycle on the real engine', () => {
  void it('measures each build, and evicts by the measured sizes under a small budget after a restart', async () => {
    const dataDir = tempDir('kiapi-real-life-');
    try {
      // First run, a roomy budget: both builds load, and the worker measures what each occupies.
      const sizes = await withRealServer({}, async (s) => {
        await generate(s.url);
        await edit(s.url);
        const all = await loaded(s.url);
        assert.deepEqual(all.map((m) => m.name).sort(), ['edit-2509', 'image']);
        for (const m of all) {
          assert.equal(m.measured, true, `${m.key} was measured`);
          assert.ok(m.weight_gb > 0.001, `${m.key}: ${m.weight_gb} GiB, not ~0`);
        }
        return Object.fromEntries(all.map((m) => [m.name, m.weight_gb]));
      }, { dataDir });
      // Second run: a budget that holds one build plus Qwen's headroom (8 GiB), not both. The
      // estimates (22 GiB each) would refuse every request; the remembered measurements fit one.
      const one = Math.max(sizes.image!, sizes['edit-2509']!);
      const budget = 8 + one + Math.min(sizes.image!, sizes['edit-2509']!) / 2;
      await withRealServer({ KIAPI_MEMORY_LIMIT_GB: budget.toFixed(4) }, async (s) => {
        await generate(s.url);
        assert.deepEqual((await loaded(s.url)).map((m) => m.name), ['image']);
        await edit(s.url);
        assert.deepEqual((await loaded(s.url)).map((m) => m.name), ['edit-2509'], 'image was evicted to make room');
        await generate(s.url);
        const now = await loaded(s.url);
        assert.deepEqual(now.map((m) => m.name), ['image']);
        assert.equal(now[0]!.loads, 2, 'image was loaded again after its eviction');
      }, { dataDir });
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  void it('the worker exits cleanly (code 0, no abort) when the server stops with models loaded', async () => {
    const sink = logSink();
    await withRealServer({}, async (s) => {
      await generate(s.url);
      await edit(s.url);
    }, { logStream: sink.stream });
    const lines = sink.lines();
    const stopped = lines.find((l) => l.msg === 'mflux worker stopped');
    const unclean = lines.find((l) => l.msg === 'mflux worker did not exit cleanly');
    assert.equal(unclean, undefined, JSON.stringify(unclean));
    assert.ok(stopped, 'the stop was logged');
    assert.equal(stopped.code, 0);
  });

  void it('kiapi check runs every tiny model and writes the images; kiapi status --json reports the engine versions', async () => {
    const dir = tempDir('kiapi-real-cli-');
    try {
      const env = cleanEnv({ ...realEngineEnv(), KIAPI_DATA_DIR: path.join(dir, 'data') });
      const out = path.join(dir, 'check');
      const check = await runCli(['check', '--out', out], env, 600_000);
      assert.equal(check.code, 0, `${check.stdout}\n${check.stderr}`);
      for (const name of ['qwen-image.png', 'qwen-edit-2509.png', 'ideogram4-fp8.png']) {
        const info = await imageInfo(fs.readFileSync(path.join(out, name)));
        assert.equal(info.format, 'png', name);
      }
      const status = await runCli(['status', '--json'], env);
      assert.equal(status.code, 0, status.stderr);
      const report = JSON.parse(status.stdout) as { engine: { ready: boolean; versions: Record<string, string> }; models: { name: string; ready: boolean }[] };
      assert.equal(report.engine.ready, true);
      assert.match(report.engine.versions.mflux ?? '', /^\d+\.\d+\.\d+/);
      assert.match(report.engine.versions.mlx ?? '', /^\d+\.\d+\.\d+/);
      assert.equal(report.engine.versions.device, realEngine().python.includes('engine-venv-cpu') ? 'cpu' : report.engine.versions.device);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
