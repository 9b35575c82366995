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
    assert.match(detail2[0]!.msg, /'mode' must be one of: "sync", "async"/);
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
