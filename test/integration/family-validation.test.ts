/**
 * Every way a qwen / ideogram4 request is refused before it is queued, with the original's status
 * and message (docs/compatibility.md §4.1, §4.3, §8.6 order, §9.3), and — for each refusal — that no job and
 * no file was stored. Also what is deliberately accepted: unknown extra fields, explicit nulls,
 * a strict caption that passes, a non-strict bad caption (warnings in the result).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { strictFailureMessage, verifyCaption } from '../../src/capabilities/ideogram4/caption-verifier.js';
import { dataUrl, getJson, pngBytes, sendJson, uploadFile, type JobJson } from '../support/api.js';
import { expectRejected, stored } from '../support/image-flows.js';
import { startServer, type TestServer } from '../support/server.js';

const QG = '/v1/image/qwen/generate';
const QE = '/v1/image/qwen/edit';
const IG = '/v1/image/ideogram4/generate';

let server: TestServer;
let url: string;
let imageId: string;

before(async () => {
  server = await startServer();
  url = server.url;
  const up = await uploadFile(url, { filename: 'in.png', contentType: 'image/png', data: await pngBytes(16, 16) });
  assert.equal(up.status, 200);
  imageId = up.json.file_id;
});

after(async () => {
  await server.close();
});

/** Small valid bodies; each case overrides one thing (or a few, for the order checks). */
const qg = (o: Record<string, unknown> = {}) => ({ prompt: 'a cat', width: 64, height: 64, steps: 2, seed: 1, ...o });
const qe = (o: Record<string, unknown> = {}) => ({ prompt: 'make it blue', images: [{ type: 'file_id', file_id: imageId }], width: 64, height: 64, steps: 2, seed: 1, ...o });
const ig = (o: Record<string, unknown> = {}) => ({ prompt: 'a sign', width: 256, height: 256, preset: 'V4_TURBO_12', seed: 1, ...o });
/** A small PNG as a data URL, made in `before` (used lazily by the cases below). */
let DATA_URL = '';
const lora = { file: { type: 'file_id', file_id: 'file_0123456789abcdef0123456789abcdef' } };

interface Case {
  name: string;
  path: string;
  body: () => Record<string, unknown>;
  status: number;
  detail: string | RegExp | { list: string };
}

const QWEN_CASES: Case[] = [
  // capability rules (422 string), docs/compatibility.md §4.3
  { name: 'width not a multiple of 16', path: QG, body: () => qg({ width: 70 }), status: 422, detail: 'width and height must be multiples of 16' },
  { name: 'height not a multiple of 16 (edit)', path: QE, body: () => qe({ height: 100 }), status: 422, detail: 'width and height must be multiples of 16' },
  { name: 'width over the cap', path: QG, body: () => qg({ width: 2064 }), status: 422, detail: 'size 2064x64 exceeds the cap 2048x2048' },
  { name: 'height over the cap (edit)', path: QE, body: () => qe({ height: 4096 }), status: 422, detail: 'size 64x4096 exceeds the cap 2048x2048' },
  { name: 'width 0', path: QG, body: () => qg({ width: 0 }), status: 422, detail: 'width and height must be positive' },
  { name: 'negative height', path: QG, body: () => qg({ height: -16 }), status: 422, detail: 'width and height must be positive' },
  { name: 'steps 101', path: QG, body: () => qg({ steps: 101 }), status: 422, detail: 'steps must be in 1..100' },
  { name: 'steps 101 (edit)', path: QE, body: () => qe({ steps: 101 }), status: 422, detail: 'steps must be in 1..100' },
  { name: 'quantize 7', path: QG, body: () => qg({ quantize: 7 }), status: 422, detail: 'quantize must be one of 3, 4, 5, 6, 8' },
  { name: 'five loras', path: QG, body: () => qg({ loras: [lora, lora, lora, lora, lora] }), status: 422, detail: 'at most 4 loras may be applied' },
  { name: 'five loras (edit)', path: QE, body: () => qe({ loras: [lora, lora, lora, lora, lora] }), status: 422, detail: 'at most 4 loras may be applied' },
  { name: 'image_strength 1.5', path: QG, body: () => qg({ image_strength: 1.5 }), status: 422, detail: 'image_strength must be in 0..1' },
  { name: 'image_strength -0.1', path: QG, body: () => qg({ image_strength: -0.1 }), status: 422, detail: 'image_strength must be in 0..1' },
  // models (400), docs/compatibility.md §4.1
  { name: 'edit variant on /generate', path: QG, body: () => qg({ model: 'edit-2509' }), status: 400, detail: "qwen generate requires model 'image'" },
  { name: 'edit alias on /generate', path: QG, body: () => qg({ model: 'Qwen-Edit' }), status: 400, detail: "qwen generate requires model 'image'" },
  { name: 'image variant on /edit', path: QE, body: () => qe({ model: 'image' }), status: 400, detail: "qwen edit requires model 'edit-2509'" },
  { name: 'unknown model', path: QG, body: () => qg({ model: 'nope' }), status: 400, detail: "unknown qwen model 'nope'; available: ['edit-2509', 'image']" },
  { name: 'unknown model (edit)', path: QE, body: () => qe({ model: 'nope' }), status: 400, detail: "unknown qwen model 'nope'; available: ['edit-2509', 'image']" },
  // unknown scheduler: a 422 before queueing (the original forwarded it and failed with 500, docs/compatibility.md §11.18)
  { name: 'unknown scheduler', path: QG, body: () => qg({ scheduler: 'ddim' }), status: 422, detail: /scheduler 'ddim'/ },
  { name: 'dotted scheduler (edit)', path: QE, body: () => qe({ scheduler: 'os.System' }), status: 422, detail: /scheduler 'os\.System'/ },
  // schema (422 list)
  { name: 'steps 0', path: QG, body: () => qg({ steps: 0 }), status: 422, detail: { list: 'steps' } },
  { name: 'empty prompt', path: QG, body: () => qg({ prompt: '' }), status: 422, detail: { list: 'prompt' } },
  { name: 'missing prompt', path: QG, body: () => ({ width: 64, height: 64 }), status: 422, detail: { list: 'prompt' } },
  { name: 'number prompt', path: QG, body: () => qg({ prompt: 5 }), status: 422, detail: { list: 'prompt' } },
  { name: 'missing images', path: QE, body: () => ({ prompt: 'x', width: 64, height: 64 }), status: 422, detail: { list: 'images' } },
  { name: 'empty images', path: QE, body: () => qe({ images: [] }), status: 422, detail: { list: 'images' } },
  { name: 'format gif', path: QG, body: () => qg({ format: 'gif' }), status: 422, detail: { list: 'format' } },
  { name: 'quality 0', path: QG, body: () => qg({ format: 'jpeg', quality: 0 }), status: 422, detail: { list: 'quality' } },
  { name: 'quality 101 (edit)', path: QE, body: () => qe({ format: 'webp', quality: 101 }), status: 422, detail: { list: 'quality' } },
  { name: 'mode sometimes', path: QG, body: () => qg({ mode: 'sometimes' }), status: 422, detail: { list: 'mode' } },
  { name: 'fractional width', path: QG, body: () => qg({ width: 64.5 }), status: 422, detail: { list: 'width' } },
  { name: 'init_image without a known type', path: QG, body: () => qg({ init_image: { type: 'ftp', url: 'x' } }), status: 422, detail: { list: 'init_image' } },
  // order of the checks (docs/compatibility.md §8.6): model → variant → size (positive → 16 → cap) → steps → quantize → loras → strength
  { name: 'order: unknown model before size', path: QG, body: () => qg({ model: 'nope', width: 70 }), status: 400, detail: "unknown qwen model 'nope'; available: ['edit-2509', 'image']" },
  { name: 'order: variant before size', path: QE, body: () => qe({ model: 'image', width: 70 }), status: 400, detail: "qwen edit requires model 'edit-2509'" },
  { name: 'order: positive before multiple of 16', path: QG, body: () => qg({ width: 0, height: 70 }), status: 422, detail: 'width and height must be positive' },
  { name: 'order: multiple of 16 before cap', path: QG, body: () => qg({ width: 4100 }), status: 422, detail: 'width and height must be multiples of 16' },
  { name: 'order: size before steps', path: QG, body: () => qg({ width: 2064, steps: 101 }), status: 422, detail: 'size 2064x64 exceeds the cap 2048x2048' },
  { name: 'order: steps before quantize', path: QG, body: () => qg({ steps: 101, quantize: 7 }), status: 422, detail: 'steps must be in 1..100' },
  { name: 'order: quantize before loras', path: QG, body: () => qg({ quantize: 7, loras: [lora, lora, lora, lora, lora] }), status: 422, detail: 'quantize must be one of 3, 4, 5, 6, 8' },
  { name: 'order: loras before image_strength', path: QG, body: () => qg({ loras: [lora, lora, lora, lora, lora], image_strength: 2 }), status: 422, detail: 'at most 4 loras may be applied' },
  // inputs that cannot be resolved (400); inputs already stored by the request are removed again
  {
    name: 'unknown image file id after a data URL image (the stored data URL input is discarded)',
    path: QE,
    body: () => qe({ images: [{ type: 'data_url', data_url: DATA_URL }, { type: 'file_id', file_id: 'file_ffffffffffffffffffffffffffffffff' }] }),
    status: 400,
    detail: /file_id 'file_ffffffffffffffffffffffffffffffff'/,
  },
  { name: 'invalid data URL', path: QG, body: () => qg({ init_image: { type: 'data_url', data_url: 'not a data url' } }), status: 400, detail: /data_url/ },
];

const IDEOGRAM_CASES: Case[] = [
  { name: 'width 240', path: IG, body: () => ig({ width: 240 }), status: 422, detail: 'width and height must be >= 256x256' },
  { name: 'height 0', path: IG, body: () => ig({ height: 0 }), status: 422, detail: 'width and height must be >= 256x256' },
  { name: 'width 2064', path: IG, body: () => ig({ width: 2064 }), status: 422, detail: 'size 2064x256 exceeds the cap 2048x2048' },
  { name: 'height not a multiple of 16', path: IG, body: () => ig({ height: 264 }), status: 422, detail: 'width and height must be multiples of 16' },
  { name: 'quantize 7', path: IG, body: () => ig({ quantize: 7 }), status: 422, detail: 'quantize must be one of 3, 4, 5, 6, 8' },
  { name: 'blank prompt', path: IG, body: () => ig({ prompt: '   ' }), status: 422, detail: 'prompt must not be empty' },
  { name: 'empty string prompt', path: IG, body: () => ig({ prompt: '' }), status: 422, detail: 'prompt must not be empty' },
  { name: 'empty JSON prompt', path: IG, body: () => ig({ prompt: {} }), status: 422, detail: 'prompt JSON must not be empty' },
  { name: 'array prompt', path: IG, body: () => ig({ prompt: ['a', 'b'] }), status: 422, detail: { list: 'prompt' } },
  { name: 'number prompt', path: IG, body: () => ig({ prompt: 42 }), status: 422, detail: { list: 'prompt' } },
  { name: 'boolean prompt', path: IG, body: () => ig({ prompt: true }), status: 422, detail: { list: 'prompt' } },
  { name: 'null prompt', path: IG, body: () => ig({ prompt: null }), status: 422, detail: { list: 'prompt' } },
  { name: 'missing prompt', path: IG, body: () => ({ width: 256, height: 256 }), status: 422, detail: { list: 'prompt' } },
  { name: 'unknown preset', path: IG, body: () => ig({ preset: 'V4_FAST_4' }), status: 422, detail: { list: 'preset' } },
  { name: 'preset in lower case', path: IG, body: () => ig({ preset: 'v4_turbo_12' }), status: 422, detail: { list: 'preset' } },
  { name: 'format gif', path: IG, body: () => ig({ format: 'gif' }), status: 422, detail: { list: 'format' } },
  { name: 'quality 0', path: IG, body: () => ig({ quality: 0 }), status: 422, detail: { list: 'quality' } },
  { name: 'quality 101', path: IG, body: () => ig({ quality: 101 }), status: 422, detail: { list: 'quality' } },
  { name: 'strict flag null', path: IG, body: () => ig({ strict_caption_validation: null }), status: 422, detail: { list: 'strict_caption_validation' } },
  { name: 'unknown model', path: IG, body: () => ig({ model: 'nope' }), status: 400, detail: "unknown ideogram4 model 'nope'; available: ['fp8']" },
  // order (docs/compatibility.md §9.3): model → min size → multiple of 16 → cap → quantize → prompt emptiness
  { name: 'order: model before size', path: IG, body: () => ig({ model: 'nope', width: 240 }), status: 400, detail: "unknown ideogram4 model 'nope'; available: ['fp8']" },
  { name: 'order: minimum before multiple of 16', path: IG, body: () => ig({ width: 8 }), status: 422, detail: 'width and height must be >= 256x256' },
  { name: 'order: multiple of 16 before cap', path: IG, body: () => ig({ width: 4100 }), status: 422, detail: 'width and height must be multiples of 16' },
  { name: 'order: quantize before prompt', path: IG, body: () => ig({ quantize: 7, prompt: ' ' }), status: 422, detail: 'quantize must be one of 3, 4, 5, 6, 8' },
  { name: 'order: size before prompt', path: IG, body: () => ig({ width: 240, prompt: {} }), status: 422, detail: 'width and height must be >= 256x256' },
];

void describe('qwen: refused before queueing, nothing stored', () => {
  before(async () => {
    DATA_URL = dataUrl(await pngBytes(8, 8));
  });
  for (const c of QWEN_CASES) {
    void it(`${c.name} → ${c.status}`, async () => {
      await expectRejected(url, c.path, c.body(), c.status, c.detail);
    });
  }
});

void describe('ideogram4: refused before queueing, nothing stored', () => {
  for (const c of IDEOGRAM_CASES) {
    void it(`${c.name} → ${c.status}`, async () => {
      await expectRejected(url, c.path, c.body(), c.status, c.detail);
    });
  }
});

/** A caption with several problems at once (mflux's verifier rules, docs/compatibility.md §9.6). */
function badCaption(): Record<string, unknown> {
  return {
    high_level_description: 7,
    style_description: { lighting: 'soft', aesthetics: 'calm', photo: 'x', medium: 'photo' },
    compositional_deconstruction: {
      elements: [
        { type: 'obj', bbox: [0, 0, 1200, 10.5], desc: 'a box' },
        { type: 'text', desc: 'no text field' },
      ],
    },
  };
}

/** The caption the served ideogram4 description shows as passing strict validation. */
async function describedCaption(): Promise<Record<string, unknown>> {
  const doc = await getJson<{ info: { description: string } }>(`${url}/v1/image/ideogram4/openapi.json`);
  const m = /```json\n([\s\S]*?)\n```/.exec(doc.json.info.description);
  assert.ok(m, 'the ideogram4 description has a JSON caption example');
  return JSON.parse(m[1]!) as Record<string, unknown>;
}

void describe('ideogram4 caption validation', () => {
  void it('strict with a bad caption → 400 listing every problem (the original answered 500: docs/compatibility.md §11.5), nothing stored', async () => {
    const problems = verifyCaption(badCaption());
    assert.ok(problems.length >= 4, `several problems: ${problems.join(' | ')}`);
    const res = await expectRejected(url, IG, ig({ prompt: badCaption(), strict_caption_validation: true }), 400, strictFailureMessage(problems));
    const lines = String(res.json.detail).split('\n');
    assert.equal(lines[0], 'Ideogram 4 caption validation failed:');
    assert.equal(lines.length, problems.length + 1);
    for (const line of lines.slice(1)) assert.match(line, /^- /);
  });

  void it('strict with a plain-text prompt → 400 naming the plain-prompt warning', async () => {
    await expectRejected(url, IG, ig({ prompt: 'just words', strict_caption_validation: true }), 400, /^Ideogram 4 caption validation failed:\n- plain prompt: /);
  });

  void it("strict with the served description's example caption → 200, no warnings", async () => {
    const example = await describedCaption();
    const res = await sendJson<JobJson>('POST', `${url}${IG}`, ig({ prompt: example, strict_caption_validation: true }), { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString('utf8'));
    const p = res.json.result!.params as Record<string, unknown>;
    assert.equal(p.strict_caption_validation, true);
    assert.deepEqual(p.caption_warnings, []);
    assert.equal(JSON.stringify(p.prompt), JSON.stringify(example));
  });

  void it('non-strict with a bad caption → 200 with every problem in params.caption_warnings', async () => {
    const res = await sendJson<JobJson>('POST', `${url}${IG}`, ig({ prompt: badCaption() }), { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString('utf8'));
    assert.equal(res.json.status, 'succeeded');
    assert.deepEqual((res.json.result!.params as Record<string, unknown>).caption_warnings, verifyCaption(badCaption()));
  });
});

void describe('accepted as the original accepts them', () => {
  void it('unknown extra fields are ignored (qwen generate, qwen edit, ideogram4)', async () => {
    for (const [path, body] of [
      [QG, qg({ init_image_file_id: 'file_123', foo: { bar: [1, 2] } })],
      [QE, qe({ strength: 3, negative: 'x' })],
      [IG, ig({ steps: 99, guidance: 3.5, negative_prompt: 'blurry' })],
    ] as const) {
      const before = await stored(url);
      const res = await sendJson<JobJson>('POST', `${url}${path}`, body, { accept: 'application/json' });
      assert.equal(res.status, 200, `${path}: ${res.bytes.toString('utf8')}`);
      assert.equal(res.json.status, 'succeeded');
      const after = await stored(url);
      assert.equal(after.jobs.length, before.jobs.length + 1);
    }
    // ideogram4 has no steps field: the preset still decides.
    const jobs = (await getJson<{ data: JobJson[] }>(`${url}/v1/jobs`)).json.data;
    const ideo = jobs.find((j) => j.type === 'ideogram4')!;
    assert.equal((ideo.result!.params as Record<string, unknown>).steps, 12);
  });

  void it('explicit nulls mean "use the default"; strings that are not a lax number form are refused (lax-inputs.test.ts has the forms accepted)', async () => {
    const res = await sendJson<JobJson>(
      'POST',
      `${url}${QG}`,
      { prompt: 'nulls', width: 64, height: 64, steps: null, seed: null, guidance: null, quantize: null, negative_prompt: null, model: null, init_image: null, image_strength: null },
      { accept: 'application/json' },
    );
    assert.equal(res.status, 200, res.bytes.toString('utf8'));
    const p = res.json.result!.params as Record<string, unknown>;
    assert.equal(p.width, 64);
    assert.equal(p.steps, 30);
    assert.equal(p.guidance, 4);
    assert.equal(p.quantize, 8);
    assert.equal(p.kind, 'txt2img');
    assert.equal(p.model, 'image');
    assert.equal(p.negative_prompt, null);
    const res2 = await sendJson<JobJson>('POST', `${url}${IG}`, ig({ width: null, seed: null, quantize: null, model: null }), { accept: 'application/json' });
    assert.equal(res2.status, 200, res2.bytes.toString('utf8'));
    assert.equal((res2.json.result!.params as Record<string, unknown>).width, 1024);
    const res3 = await sendJson<{ detail: { loc: unknown[] }[] }>('POST', `${url}${QG}`, { prompt: 'str', width: '64px', height: 64 });
    assert.equal(res3.status, 422);
    assert.deepEqual(res3.json.detail[0]!.loc, ['body', 'width']);
    const res4 = await sendJson<{ detail: { loc: unknown[] }[] }>('POST', `${url}${QG}`, { prompt: 5 });
    assert.equal(res4.status, 422);
  });
});
