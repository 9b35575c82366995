/**
 * Inputs as the original's clients send them, over HTTP: the lax spellings pydantic accepted for
 * integer, number and boolean fields (and nothing more), misspelt fields reported as warnings
 * (header and job result), and 422 messages that say once what a field must be.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { getJob, sendJson, waitFinished, type JobJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

const QG = '/v1/image/qwen/generate';
const IG = '/v1/image/ideogram4/generate';

interface Issue {
  type: string;
  loc: (string | number)[];
  msg: string;
  input?: unknown;
}

let server: TestServer;
let url: string;

before(async () => {
  server = await startServer();
  url = server.url;
});

after(async () => {
  await server.close();
});

const qg = (o: Record<string, unknown> = {}) => ({ prompt: 'a cat', width: 64, height: 64, steps: 2, seed: 1, ...o });
const ig = (o: Record<string, unknown> = {}) => ({ prompt: 'a sign', width: 256, height: 256, preset: 'V4_TURBO_12', seed: 1, ...o });
const JSON_ACCEPT = { accept: 'application/json' };

async function issuesFor(path: string, body: Record<string, unknown>): Promise<Issue[]> {
  const res = await sendJson<{ detail: Issue[] }>('POST', `${url}${path}`, body);
  assert.equal(res.status, 422, res.bytes.toString('utf8'));
  return res.json.detail;
}

void describe("the original's lax inputs", () => {
  void it('numeric strings for integer and number fields run, and params record the converted values', async () => {
    const res = await sendJson<JobJson>('POST', `${url}${QG}`, qg({ width: '64', height: '48.0', steps: '2', guidance: '2.5', seed: '7', quantize: '8', quality: '80' }), JSON_ACCEPT);
    assert.equal(res.status, 200, res.bytes.toString('utf8'));
    const job = res.json;
    const p = job.params;
    assert.deepEqual([p.width, p.height, p.steps, p.guidance, p.seed, p.quantize, p.quality], [64, 48, 2, 2.5, 7, 8, 80]);
    const r = job.result!.params as Record<string, unknown>;
    assert.deepEqual([r.width, r.height, r.steps, r.guidance, r.seed], [64, 48, 2, 2.5, 7]);
    // GET shows the stored record, converted values included.
    const again = await getJob(url, job.id);
    assert.equal((again.params).width, 64);
  });

  void it('numbers inside nested objects (loras[].scale) and exponent forms for number fields', async () => {
    const lora = (scale: unknown) => [{ file: { type: 'file_id', file_id: 'file_0123456789abcdef0123456789abcdef' }, scale }];
    const res = await sendJson<{ detail: unknown }>('POST', `${url}${QG}`, qg({ guidance: '1e0', loras: lora('0.5') }));
    // The LoRA file does not exist: a 400 from input resolution, so validation passed.
    assert.equal(res.status, 400, res.bytes.toString('utf8'));
    assert.match(String(res.json.detail), /unknown loras\[0\] file_id/);
    const detail = await issuesFor(QG, qg({ loras: lora('half') }));
    assert.deepEqual(detail.map((i) => [i.loc.join('.'), i.msg]), [['body.loras.0.scale', `'loras.0.scale' must be a number; got "half"`]]);
  });

  void it('boolean spellings (true/false, 1/0, yes/no, on/off, t/f, y/n, any case, and the numbers 0/1)', async () => {
    for (const [sent, expected] of [
      ['no', false],
      ['False', false],
      ['0', false],
      ['OFF', false],
      ['f', false],
      ['n', false],
      [0, false],
    ] as const) {
      const res = await sendJson<JobJson>('POST', `${url}${IG}`, ig({ strict_caption_validation: sent, warn_on_caption_issues: sent }), JSON_ACCEPT);
      assert.equal(res.status, 200, `${JSON.stringify(sent)}: ${res.bytes.toString('utf8')}`);
      const p = res.json.params;
      assert.equal(p.strict_caption_validation, expected);
      assert.equal(p.warn_on_caption_issues, expected);
    }
    // Truthy spellings turn strict validation on: a plain-text prompt then fails it (400).
    for (const sent of ['yes', 'TRUE', '1', 'on', 't', 'Y', 1]) {
      const res = await sendJson('POST', `${url}${IG}`, ig({ strict_caption_validation: sent }));
      assert.equal(res.status, 400, `${JSON.stringify(sent)}: ${res.bytes.toString('utf8')}`);
    }
  });

  void it('async submissions convert too, and the stored job keeps the converted values', async () => {
    const res = await sendJson<{ job_id: string }>('POST', `${url}${QG}`, qg({ mode: 'async', steps: '3', width: '32' }));
    assert.equal(res.status, 202);
    const job = await waitFinished(url, res.json.job_id);
    assert.equal(job.status, 'succeeded');
    assert.equal((job.params).steps, 3);
    assert.equal((job.result!.params as Record<string, unknown>).width, 32);
  });

  void it('anything else stays refused: null is never a number, "" never 0, non-canonical numbers and words are 422', async () => {
    // null still means "use the default", not 0.
    const res = await sendJson<JobJson>('POST', `${url}${QG}`, qg({ seed: null, steps: null }), JSON_ACCEPT);
    assert.equal(res.status, 200);
    assert.equal((res.json.result!.params as Record<string, unknown>).steps, 30);
    for (const [field, bad] of [
      ['width', ''],
      ['width', ' 64'],
      ['width', '64px'],
      ['width', '6.4e1'],
      ['width', '0x40'],
      ['width', '+64'],
      ['steps', '2.5'],
      ['steps', '99999999999999999999'],
      ['guidance', 'inf'],
      ['guidance', 'NaN'],
      ['guidance', '1.'],
      ['guidance', true],
    ] as const) {
      const detail = await issuesFor(QG, qg({ [field]: bad }));
      assert.equal(detail.length, 1, JSON.stringify(detail));
      assert.deepEqual(detail[0]!.loc, ['body', field]);
      assert.deepEqual(detail[0]!.input, bad);
    }
    for (const bad of ['maybe', '', '2', 'yess', 2, null]) {
      const detail = await issuesFor(IG, ig({ strict_caption_validation: bad }));
      assert.deepEqual(detail[0]!.loc, ['body', 'strict_caption_validation'], JSON.stringify(detail));
    }
  });

  void it('a number is never turned into a prompt or other string field', async () => {
    const detail = await issuesFor(QG, { prompt: 5 });
    assert.deepEqual(detail[0]!.loc, ['body', 'prompt']);
    const detail2 = await issuesFor(QG, qg({ scheduler: 1 }));
    assert.deepEqual(detail2[0]!.loc, ['body', 'scheduler']);
    // A prompt spelt like a number stays the text it is.
    const res = await sendJson<JobJson>('POST', `${url}${QG}`, qg({ prompt: '123', negative_prompt: 'true' }), JSON_ACCEPT);
    assert.equal(res.status, 200);
    assert.equal(res.json.result!.prompt, '123');
    assert.equal((res.json.params).negative_prompt, 'true');
  });
});

void describe('misspelt fields are reported, not silently dropped', () => {
  void it('sync raw-image answer: Warning header with a suggestion; the job result lists it too', async () => {
    const res = await fetch(`${url}${QG}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(qg({ widht: 512 })) });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/png');
    assert.equal(res.headers.get('warning'), `299 - "unknown field 'widht' ignored; did you mean 'width'?"`);
    await res.arrayBuffer();
    const job = await getJob(url, res.headers.get('x-kiapi-job-id')!);
    assert.deepEqual(job.result!.warnings, ["unknown field 'widht' ignored; did you mean 'width'?"]);
  });

  void it('sync JSON and async answers carry the header; GET /v1/jobs/{id} shows result.warnings', async () => {
    const sync = await sendJson<JobJson>('POST', `${url}${QG}`, qg({ Steps: 3, colour: 'red' }), JSON_ACCEPT);
    assert.equal(sync.status, 200);
    const expected = ["unknown field 'Steps' ignored; did you mean 'steps'?", "unknown field 'colour' ignored"];
    assert.equal(sync.headers.get('warning'), expected.map((w) => `299 - "${w}"`).join(', '));
    assert.deepEqual(sync.json.result!.warnings, expected);

    const res = await sendJson<{ job_id: string }>('POST', `${url}${IG}`, ig({ mode: 'async', strict_caption_validaton: true }));
    assert.equal(res.status, 202);
    const w = "unknown field 'strict_caption_validaton' ignored; did you mean 'strict_caption_validation'?";
    assert.equal(res.headers.get('warning'), `299 - "${w}"`);
    const job = await waitFinished(url, res.json.job_id);
    assert.equal(job.status, 'succeeded');
    assert.deepEqual(job.result!.warnings, [w]);
  });

  void it('a correct request has no Warning header and no warnings field', async () => {
    const res = await sendJson<JobJson>('POST', `${url}${QG}`, qg(), JSON_ACCEPT);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('warning'), null);
    assert.equal('warnings' in res.json.result!, false);
  });

  void it('hostile names: header stays visible ASCII, many unknown keys give a bounded list', async () => {
    const body: Record<string, unknown> = qg({ 'wé"ird\\name': 1 });
    for (let i = 0; i < 50; i++) body[`extra_${i}`] = i;
    const res = await sendJson<JobJson>('POST', `${url}${QG}`, body, JSON_ACCEPT);
    assert.equal(res.status, 200);
    const header = res.headers.get('warning')!;
    assert.match(header, /^[\x20-\x7e]+$/);
    assert.ok(header.startsWith(`299 - "unknown field 'w?\\"ird\\\\name' ignored"`), header);
    const warnings = res.json.result!.warnings as string[];
    assert.equal(warnings.length, 11);
    assert.equal(warnings[0], `unknown field 'wé"ird\\name' ignored`);
    assert.equal(warnings[10], '41 more unknown fields ignored');
  });
});

void describe('validation messages a person understands', () => {
  void it('a nullable field is described once: what it must be, or null, and what was sent', async () => {
    const detail = await issuesFor(QG, qg({ steps: -1 }));
    assert.deepEqual(detail, [{ type: 'minimum', loc: ['body', 'steps'], msg: "'steps' must be an integer >= 1, or null; got -1", input: -1 }]);
    const detail2 = await issuesFor(QG, qg({ width: 'wide' }));
    assert.deepEqual(detail2, [{ type: 'type', loc: ['body', 'width'], msg: `'width' must be an integer, or null; got "wide"`, input: 'wide' }]);
    const detail3 = await issuesFor(QG, qg({ guidance: [1] }));
    assert.deepEqual(detail3.map((i) => i.msg), [`'guidance' must be a number, or null; got [1]`]);
  });

  void it('plain scalar fields say their range; enums their values; required fields stay as they were', async () => {
    const detail = await issuesFor(QG, qg({ quality: 0 }));
    assert.deepEqual(detail, [{ type: 'minimum', loc: ['body', 'quality'], msg: "'quality' must be an integer from 1 to 100; got 0", input: 0 }]);
    const detail2 = await issuesFor(QG, qg({ mode: 'later' }));
    assert.equal(detail2.length, 1);
    assert.equal(detail2[0]!.msg, `'mode' must be one of "sync", "async"; got "later"`);
    // Neither a string nor in the enum: still one entry.
    const detail2b = await issuesFor(QG, qg({ mode: 5 }));
    assert.deepEqual(detail2b, [{ type: 'type', loc: ['body', 'mode'], msg: `'mode' must be one of "sync", "async"; got 5`, input: 5 }]);
    const detail3 = await issuesFor(QG, { width: 64 });
    assert.deepEqual(detail3, [{ type: 'required', loc: ['body', 'prompt'], msg: "Field required: 'prompt' is missing" }]);
    const detail4 = await issuesFor(QG, qg({ prompt: '' }));
    assert.deepEqual(detail4.map((i) => i.msg), [`'prompt' must be a non-empty string; got ""`]);
  });

  void it('a FileRef union reports the branch the value was meant for, or one line naming the forms', async () => {
    // `type: url` picks the url branch: its own problem is reported, not the other branches'.
    const detail = await issuesFor(QG, qg({ init_image: { type: 'url', url: '' } }));
    assert.deepEqual(detail.map((i) => [i.loc.join('.'), i.type]), [['body.init_image.url', 'minLength']]);
    // No type, but a file_id: the file_id branch.
    const detail2 = await issuesFor(QG, qg({ init_image: { file_id: 5 } }));
    assert.deepEqual(detail2.map((i) => i.loc.join('.')), ['body.init_image.file_id']);
    // An unknown type: one line listing the forms.
    const detail3 = await issuesFor(QG, qg({ init_image: { type: 'ftp', url: 'x' } }));
    assert.equal(detail3.length, 1, JSON.stringify(detail3));
    assert.deepEqual(detail3[0]!.loc, ['body', 'init_image']);
    assert.match(detail3[0]!.msg, /^'init_image' must be an object with 'file_id' \(type 'file_id'\), an object with 'url' \(type 'url'\) or an object with 'data_url' \(type 'data_url'\); got \{"type":"ftp","url":"x"\}$/);
    // Items of a list are named by index.
    const detail4 = await issuesFor('/v1/image/qwen/edit', { prompt: 'x', images: [42] });
    assert.equal(detail4.length, 1, JSON.stringify(detail4));
    assert.deepEqual(detail4[0]!.loc, ['body', 'images', 0]);
  });
});
