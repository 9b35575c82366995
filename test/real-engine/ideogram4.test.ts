/**
 * Ideogram 4 (FP8 checkpoint) on the real engine (mflux + MLX, tiny checkpoint) through kiapi's
 * HTTP server: a JSON caption under each preset, and the quantized builds.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EXAMPLE_CAPTION } from '../../src/capabilities/ideogram4/description.js';
import { PRESET_STEPS } from '../../src/capabilities/ideogram4/settings.js';
import { getJson, sendJson } from '../support/api.js';
import { imageInfo } from '../support/image-flows.js';
import { startServer, type TestServer } from '../support/server.js';
import { pixels, realEngineEnv } from './support.js';

const GENERATE = '/v1/image/ideogram4/generate';

void describe('ideogram4 on the real engine', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer(realEngineEnv());
  });
  after(async () => {
    await server.close();
  });

  const generate = async (body: Record<string, unknown>) => {
    const res = await sendJson('POST', `${server.url}${GENERATE}`, { prompt: EXAMPLE_CAPTION, width: 256, height: 256, seed: 3, strict_caption_validation: true, ...body });
    assert.equal(res.status, 200, `${res.status} ${res.bytes.toString().slice(0, 4000)}`);
    assert.deepEqual(await imageInfo(res.bytes), { format: 'png', width: 256, height: 256 });
    return res;
  };

  for (const preset of Object.keys(PRESET_STEPS)) {
    void it(`a strict JSON caption under ${preset}`, async () => {
      const res = await generate({ preset, mode: 'sync' });
      const jobId = res.headers.get('x-kiapi-job-id') ?? '';
      const job = (await getJson<{ result: { params: Record<string, unknown> } }>(`${server.url}/v1/jobs/${jobId}`)).json;
      assert.equal(job.result.params.preset, preset);
      assert.equal(job.result.params.steps, PRESET_STEPS[preset as keyof typeof PRESET_STEPS]);
      assert.equal(job.result.params.engine, 'mflux');
    });
  }

  void it('is deterministic for a seed; quantize 8 and 4 are their own builds', async () => {
    const a = await pixels((await generate({ preset: 'V4_TURBO_12' })).bytes);
    const b = await pixels((await generate({ preset: 'V4_TURBO_12' })).bytes);
    assert.ok(a.equals(b), 'same seed, same pixels');
    const q4 = await pixels((await generate({ preset: 'V4_TURBO_12', quantize: 4 })).bytes);
    await generate({ preset: 'V4_TURBO_12', quantize: 8 });
    assert.ok(!a.equals(q4), 'the 4-bit build changes the image');
    const keys = (await getJson<{ memory: { loaded: { key: string }[] } }>(`${server.url}/health`)).json.memory.loaded.map((m) => m.key);
    for (const q of ['@full', '@q8', '@q4']) assert.ok(keys.includes(`ideogram4/fp8${q}`), `${q} in ${keys.join(', ')}`);
  });
});
