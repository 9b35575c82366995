/**
 * ideogram4 over real HTTP with the preview engine: JSON captions (key order kept), plain prompts
 * and their warning, presets (steps and one progress event per step), sync raw / Job JSON / async,
 * output formats, stored artifacts and determinism (docs/compatibility.md §1.8, §3.4, §9).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PLAIN_PROMPT_WARNING } from '../../src/capabilities/ideogram4/caption-verifier.js';
import { getJson, pollUntil, sendJson, waitFinished, type JobJson } from '../support/api.js';
import { checkArtifact, imageInfo, magicOf, RecordingPreviewEngine } from '../support/image-flows.js';
import { startServer, type TestServer } from '../support/server.js';

const GENERATE = '/v1/image/ideogram4/generate';
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

let nextSeed = 2000;
const seed = () => nextSeed++;

/** Keys deliberately not in alphabetical order, at every level, so a re-sort would show. */
function caption(): Record<string, unknown> {
  return {
    high_level_description: 'A poster that reads OPEN LATE above a neon coffee cup.',
    style_description: {
      aesthetics: 'retro neon signage',
      lighting: 'glowing tubes at night',
      photo: 'straight-on shot, 35mm',
      medium: 'photograph',
      color_palette: ['#FF2D95', '#1B1B3A'],
    },
    compositional_deconstruction: {
      background: 'Dark brick wall.',
      elements: [
        { type: 'text', bbox: [100, 200, 300, 800], text: 'OPEN LATE', desc: 'Pink neon letters.' },
        { type: 'obj', bbox: [400, 350, 900, 650], desc: 'A neon coffee cup with steam.' },
      ],
    },
  };
}

async function postJob(body: Record<string, unknown>): Promise<JobJson> {
  const res = await sendJson<JobJson>('POST', `${url}${GENERATE}`, body, JSON_ACCEPT);
  assert.equal(res.status, 200, res.bytes.toString('utf8'));
  return res.json;
}

void describe('ideogram4 generate', () => {
  void it('sync without Accept: raw PNG with X-Kiapi-* headers, stored as ideogram4_<unix>.png', async () => {
    const res = await sendJson('POST', `${url}${GENERATE}`, { prompt: caption(), width: 256, height: 320, preset: 'V4_TURBO_12', seed: seed() });
    assert.equal(res.status, 200, res.bytes.toString('utf8').slice(0, 300));
    assert.equal(res.headers.get('content-type'), 'image/png');
    assert.match(res.headers.get('x-kiapi-file-id') ?? '', /^file_[0-9a-f]{32}$/);
    assert.match(res.headers.get('x-kiapi-job-id') ?? '', /^job_[0-9a-f]{32}$/);
    assert.match(res.headers.get('content-disposition') ?? '', /^attachment; filename="ideogram4_\d{10}\.png"$/);
    assert.deepEqual(await imageInfo(res.bytes), { format: 'png', width: 256, height: 320 });
    const job = (await getJson<JobJson>(`${url}/v1/jobs/${res.headers.get('x-kiapi-job-id')}`)).json;
    assert.equal(job.type, 'ideogram4');
    const bytes = await checkArtifact(url, job, 'ideogram4', 'png');
    assert.ok(bytes.equals(res.bytes));
  });

  void it('a JSON caption keeps its key order into result.prompt and params.prompt; defaults are resolved', async () => {
    const sent = caption();
    const job = await postJob({ prompt: sent, width: 256, height: 256 });
    const result = job.result!;
    const p = result.params as Record<string, unknown>;
    // JSON.stringify writes keys in insertion order, so equal strings mean equal order everywhere.
    assert.equal(JSON.stringify(result.prompt), JSON.stringify(sent));
    assert.equal(JSON.stringify(p.prompt), JSON.stringify(sent));
    assert.equal(JSON.stringify(job.params.prompt), JSON.stringify(sent));
    assert.equal(result.model, 'fp8');
    assert.equal(typeof result.safety_filter_note, 'string');
    assert.match(result.safety_filter_note as string, /Image blocked by safety filter/);
    const usedSeed = p.seed as number;
    assert.ok(Number.isInteger(usedSeed) && usedSeed >= 0 && usedSeed < 2 ** 31);
    assert.deepEqual(p, {
      kind: 'txt2img',
      model: 'fp8',
      prompt: sent,
      preset: 'V4_DEFAULT_20',
      steps: 20,
      seed: usedSeed,
      width: 256,
      height: 256,
      quantize: null,
      strict_caption_validation: false,
      warn_on_caption_issues: true,
      format: 'png',
      quality: 90,
      caption_warnings: [],
      engine: 'preview',
    });
    assert.equal(job.params.seed, null);
    assert.equal(job.params.model, 'fp8');
    // The engine got the caption object, in the client's key order.
    assert.equal(JSON.stringify(engine.runWithSeed(usedSeed).task.prompt), JSON.stringify(sent));
    await checkArtifact(url, job, 'ideogram4', 'png');
  });

  void it('a plain-text prompt works and records the plain-prompt warning in params.caption_warnings', async () => {
    const job = await postJob({ prompt: 'a neon sign that says OPEN', width: 256, height: 256, preset: 'V4_TURBO_12', seed: seed() });
    const p = job.result!.params as Record<string, unknown>;
    assert.equal(job.result!.prompt, 'a neon sign that says OPEN');
    assert.equal(p.prompt, 'a neon sign that says OPEN');
    assert.deepEqual(p.caption_warnings, [PLAIN_PROMPT_WARNING]);
    assert.match(PLAIN_PROMPT_WARNING, /^plain prompt: /);
  });

  void it('warn_on_caption_issues=false records no warnings', async () => {
    const job = await postJob({ prompt: 'plain', width: 256, height: 256, preset: 'V4_TURBO_12', seed: seed(), warn_on_caption_issues: false });
    assert.deepEqual((job.result!.params as Record<string, unknown>).caption_warnings, []);
  });

  for (const [preset, steps] of [['V4_TURBO_12', 12], ['V4_DEFAULT_20', 20], ['V4_QUALITY_48', 48]] as const) {
    void it(`${preset}: ${steps} steps recorded, one progress event per step`, async () => {
      const s = seed();
      const job = await postJob({ prompt: caption(), width: 256, height: 256, preset, seed: s });
      const p = job.result!.params as Record<string, unknown>;
      assert.equal(p.preset, preset);
      assert.equal(p.steps, steps);
      assert.equal(job.params.preset, preset);
      const run = engine.runWithSeed(s);
      assert.equal(run.task.preset, preset);
      assert.equal(run.task.steps, steps);
      assert.deepEqual(
        run.events,
        Array.from({ length: steps }, (_, i) => ({ step: i + 1, total: steps, label: 'denoising' })),
      );
      assert.equal(job.progress, 1);
      assert.equal(job.progress_label, 'done');
    });
  }

  void it('async: 202, poll, download', async () => {
    const res = await sendJson<{ job_id: string; type: string; status: string }>('POST', `${url}${GENERATE}`, {
      prompt: caption(),
      width: 256,
      height: 256,
      preset: 'V4_TURBO_12',
      seed: seed(),
      mode: 'async',
    });
    assert.equal(res.status, 202);
    assert.deepEqual(res.json, { job_id: res.json.job_id, type: 'ideogram4', status: 'queued' });
    const job = await waitFinished(url, res.json.job_id);
    const bytes = await checkArtifact(url, job, 'ideogram4', 'png');
    assert.deepEqual(await imageInfo(bytes), { format: 'png', width: 256, height: 256 });
  });

  for (const format of ['jpeg', 'webp'] as const) {
    void it(`${format}: stored type and magic bytes; lower quality → smaller file`, async () => {
      const sizes: number[] = [];
      for (const quality of [95, 15]) {
        const res = await sendJson('POST', `${url}${GENERATE}`, { prompt: caption(), width: 256, height: 256, preset: 'V4_TURBO_12', seed: 9, format, quality });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('content-type'), `image/${format}`);
        assert.equal(magicOf(res.bytes), format);
        assert.deepEqual(await imageInfo(res.bytes), { format, width: 256, height: 256 });
        const job = (await getJson<JobJson>(`${url}/v1/jobs/${res.headers.get('x-kiapi-job-id')}`)).json;
        assert.equal((job.result!.params as Record<string, unknown>).quality, quality);
        await checkArtifact(url, job, 'ideogram4', format);
        sizes.push(res.bytes.length);
      }
      assert.ok(sizes[1]! < sizes[0]!, `quality 15 (${sizes[1]} B) is smaller than quality 95 (${sizes[0]} B)`);
    });
  }

  void it('same caption and seed → byte-identical image; another seed → different bytes', async () => {
    const body = { prompt: caption(), width: 256, height: 256, preset: 'V4_TURBO_12' };
    const [a, b, c] = [
      await sendJson('POST', `${url}${GENERATE}`, { ...body, seed: 31337 }),
      await sendJson('POST', `${url}${GENERATE}`, { ...body, seed: 31337 }),
      await sendJson('POST', `${url}${GENERATE}`, { ...body, seed: 31338 }),
    ];
    for (const r of [a, b, c]) assert.equal(r.status, 200);
    assert.ok(a.bytes.equals(b.bytes), 'same seed → same bytes');
    assert.ok(!a.bytes.equals(c.bytes), 'another seed → other bytes');
  });
});

void describe('ideogram4 progress', () => {
  let slow: TestServer;
  before(async () => {
    slow = await startServer({ KIAPI_PREVIEW_STEP_MS: '20' });
  });
  after(async () => {
    await slow.close();
  });

  void it('a running V4_TURBO_12 job reports progress strictly between 0 and 1 in twelfths', async () => {
    const res = await sendJson<{ job_id: string }>('POST', `${slow.url}${GENERATE}`, {
      prompt: caption(),
      width: 256,
      height: 256,
      preset: 'V4_TURBO_12',
      seed: 5,
      mode: 'async',
    });
    assert.equal(res.status, 202);
    const id = res.json.job_id;
    const mid = await pollUntil(
      async () => (await getJson<JobJson>(`${slow.url}/v1/jobs/${id}`)).json,
      (j) => j.status !== 'queued' && (j.status !== 'running' || (j.progress !== null && j.progress > 0 && j.progress < 1)),
      `job ${id} to report partial progress`,
    );
    assert.equal(mid.status, 'running', JSON.stringify(mid));
    assert.equal(mid.progress_label, 'denoising');
    const k = mid.progress! * 12;
    assert.ok(Math.abs(k - Math.round(k)) < 1e-9, `a whole step of 12: ${mid.progress}`);
    const done = await waitFinished(slow.url, id);
    assert.equal(done.status, 'succeeded');
    assert.equal((done.result!.params as Record<string, unknown>).steps, 12);
  });
});
