/**
 * Cursor paging of GET /v1/jobs and GET /v1/files (limit / after / before, has_more / first_id /
 * last_id), the jobs' status and type filters and the files' content_type and job_id filters, the
 * whole list for clients that do not page, the served OpenAPI's description of both, and
 * KIAPI_FILE_RETENTION_S.
 */
import { JobStore } from '../../src/core/jobs/job-store.js';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../support/server.js';
import { getJson, listFiles, pngBytes, pollUntil, request, sendJson, uploadFile, waitFinished, waitForStatus, type FileRecordJson, type JobJson } from '../support/api.js';

interface Page<T> {
  object: 'list';
  data: T[];
  has_more: boolean;
  first_id: string | null;
  last_id: string | null;
}

interface Issue {
  loc: (string | number)[];
  msg: string;
}

void describe('job list paging', () => {
  let s: TestServer;
  /** Every job id, newest first, as the unpaged list gives them. */
  let all: string[];

  before(async () => {
    s = await startServer();
    // 30 jobs of two types; some with one shared created_at, so the rowid tie-break is exercised.
    const now = Date.now() / 1000;
    // Written straight to the database (finished jobs need no queue).
    const store = new JobStore(s.ctx.db);
    for (let i = 0; i < 30; i++) {
      const job = store.create(i % 3 === 0 ? 'qwen-edit' : 'qwen', { prompt: `job ${i}` });
      job.status = i % 2 === 0 ? 'succeeded' : 'failed';
      job.finished_at = now;
      store.save(job);
    }
    s.ctx.db.prepare("UPDATE jobs SET created_at = ? WHERE params LIKE '%job 1_%'").run(now - 5);
    const res = await getJson<Page<JobJson>>(`${s.url}/v1/jobs`);
    all = res.json.data.map((j) => j.id);
  });

  after(async () => {
    await s.close();
  });

  const page = (query: string) => getJson<Page<JobJson>>(`${s.url}/v1/jobs?${query}`);

  void it('without paging parameters the whole list comes back, newest first, with has_more false', async () => {
    const res = await getJson<Page<JobJson>>(`${s.url}/v1/jobs`);
    assert.equal(res.status, 200);
    assert.equal(res.json.data.length, 30);
    assert.equal(res.json.has_more, false);
    assert.equal(res.json.first_id, all[0]);
    assert.equal(res.json.last_id, all[29]);
    const keys = res.json.data.map((j) => j.created_at);
    assert.deepEqual(keys, [...keys].sort((a, b) => b - a), 'newest first');
  });

  void it('after walks forward through every job exactly once, in list order', async () => {
    const seen: string[] = [];
    const hasMore: boolean[] = [];
    let cursor = '';
    for (;;) {
      const res = await page(`limit=7${cursor ? `&after=${cursor}` : ''}`);
      assert.equal(res.status, 200);
      seen.push(...res.json.data.map((j) => j.id));
      hasMore.push(res.json.has_more);
      assert.equal(res.json.first_id, res.json.data[0]?.id ?? null);
      assert.equal(res.json.last_id, res.json.data.at(-1)?.id ?? null);
      if (!res.json.has_more) break;
      cursor = res.json.last_id!;
    }
    assert.deepEqual(seen, all);
    assert.deepEqual(hasMore, [true, true, true, true, false]);
  });

  void it('before pages back to the records right before the cursor, newest first', async () => {
    const res = await page(`limit=5&before=${all[12]}`);
    assert.deepEqual(res.json.data.map((j) => j.id), all.slice(7, 12));
    assert.equal(res.json.has_more, true, 'newer jobs remain before this page');
    const first = await page(`limit=5&before=${all[5]}`);
    assert.deepEqual(first.json.data.map((j) => j.id), all.slice(0, 5));
    assert.equal(first.json.has_more, false);
    const both = await page(`after=${all[3]}&before=${all[9]}`);
    assert.deepEqual(both.json.data.map((j) => j.id), all.slice(4, 9));
  });

  void it('a cursor alone pages with the default limit; the last record after nothing is an empty page', async () => {
    const res = await page(`after=${all[0]}`);
    assert.deepEqual(res.json.data.map((j) => j.id), all.slice(1));
    assert.equal(res.json.has_more, false);
    const end = await page(`after=${all[29]}`);
    assert.deepEqual(end.json, { object: 'list', data: [], has_more: false, first_id: null, last_id: null });
  });

  void it('status and type filter, and page within the filter', async () => {
    const full = (await page('type=qwen-edit')).json.data;
    assert.equal(full.length, 10);
    assert.ok(full.every((j) => j.type === 'qwen-edit'));
    const failedEdits = (await page('type=qwen-edit&status=failed')).json.data;
    assert.ok(failedEdits.every((j) => j.type === 'qwen-edit' && j.status === 'failed'));
    assert.equal(failedEdits.length, 5);
    const p1 = await page('status=succeeded&limit=10');
    const p2 = await page(`status=succeeded&limit=10&after=${p1.json.last_id}`);
    assert.equal(p1.json.has_more, true);
    assert.equal(p2.json.has_more, false);
    const walked = [...p1.json.data, ...p2.json.data];
    assert.ok(walked.every((j) => j.status === 'succeeded'));
    assert.deepEqual(walked.map((j) => j.id), all.filter((id) => walked.some((j) => j.id === id)));
    assert.equal(walked.length, 15);
    assert.deepEqual((await page('status=running')).json.data, []);
  });

  void it('a cursor that names no job is a 400 naming the parameter', async () => {
    const gone = 'job_0123456789abcdef0123456789abcdef';
    for (const param of ['after', 'before']) {
      const res = await getJson<{ detail: string }>(`${s.url}/v1/jobs?${param}=${gone}`);
      assert.equal(res.status, 400);
      assert.match(res.json.detail, new RegExp(`^${param}: no job '${gone}'`));
    }
  });

  void it('malformed parameters are a 422 naming the parameter', async () => {
    const cases: [string, string][] = [
      ['limit=0', 'limit'],
      ['limit=1001', 'limit'],
      ['limit=ten', 'limit'],
      ['limit=1.5', 'limit'],
      ['after=file_0123', 'after'],
      ['before=..%2Fx', 'before'],
      ['status=done', 'status'],
    ];
    for (const [query, param] of cases) {
      const res = await getJson<{ detail: Issue[] }>(`${s.url}/v1/jobs?${query}`);
      assert.equal(res.status, 422, query);
      assert.deepEqual(res.json.detail[0]!.loc, ['query', param], query);
      assert.match(res.json.detail[0]!.msg, new RegExp(`'${param}'`), query);
    }
    assert.equal((await page('limit=1000')).status, 200);
    assert.equal((await page('limit=1')).json.data.length, 1);
  });
});

void describe('file list paging', () => {
  let s: TestServer;
  let all: string[];

  before(async () => {
    s = await startServer();
    const png = await pngBytes();
    for (let i = 0; i < 5; i++) {
      const res = await uploadFile(s.url, { filename: `f${i}.png`, contentType: 'image/png', data: png });
      assert.equal(res.status, 200);
    }
    all = (await getJson<Page<FileRecordJson>>(`${s.url}/v1/files`)).json.data.map((f) => f.file_id);
  });

  after(async () => {
    await s.close();
  });

  void it('pages forward and back by file id', async () => {
    assert.equal(all.length, 5);
    const p1 = await getJson<Page<FileRecordJson>>(`${s.url}/v1/files?limit=2`);
    assert.deepEqual(p1.json.data.map((f) => f.file_id), all.slice(0, 2));
    assert.equal(p1.json.has_more, true);
    assert.equal(p1.json.last_id, all[1]);
    const p3 = await getJson<Page<FileRecordJson>>(`${s.url}/v1/files?limit=2&after=${all[3]}`);
    assert.deepEqual(p3.json.data.map((f) => f.file_id), all.slice(4));
    assert.equal(p3.json.has_more, false);
    const back = await getJson<Page<FileRecordJson>>(`${s.url}/v1/files?limit=2&before=${all[3]}`);
    assert.deepEqual(back.json.data.map((f) => f.file_id), all.slice(1, 3));
    assert.equal(back.json.has_more, true);
  });

  void it('bad cursors and limits name the parameter', async () => {
    const unknown = await getJson<{ detail: string }>(`${s.url}/v1/files?after=file_0123456789abcdef0123456789abcdef`);
    assert.equal(unknown.status, 400);
    assert.match(unknown.json.detail, /^after: no file/);
    const bad = await getJson<{ detail: Issue[] }>(`${s.url}/v1/files?before=job_0123`);
    assert.equal(bad.status, 422);
    assert.deepEqual(bad.json.detail[0]!.loc, ['query', 'before']);
    const big = await getJson<{ detail: Issue[] }>(`${s.url}/v1/files?limit=5000`);
    assert.equal(big.status, 422);
    assert.deepEqual(big.json.detail[0]!.loc, ['query', 'limit']);
  });

  void it('the served OpenAPI documents the paging parameters and fields', async () => {
    const doc = (await getJson<{ paths: Record<string, Record<string, { parameters?: { name: string; in: string }[] }>>; components: { schemas: Record<string, { properties: Record<string, unknown> }> } }>(`${s.url}/openapi.json`)).json;
    const names = (p: string) => (doc.paths[p]!.get!.parameters ?? []).filter((x) => x.in === 'query').map((x) => x.name).sort();
    assert.deepEqual(names('/v1/jobs'), ['after', 'before', 'limit', 'status', 'type']);
    assert.deepEqual(names('/v1/files'), ['after', 'before', 'content_type', 'job_id', 'limit']);
    for (const list of ['JobList', 'FileList']) {
      for (const field of ['object', 'data', 'has_more', 'first_id', 'last_id']) {
        assert.ok(field in doc.components.schemas[list]!.properties, `${list}.${field}`);
      }
    }
  });
});

void describe('file list filters (content_type, job_id)', () => {
  let s: TestServer;
  /** Every file record, newest first. */
  let all: FileRecordJson[];
  let input: string;
  let edit: JobJson;
  let generate: JobJson;

  const ids = (records: FileRecordJson[]) => records.map((f) => f.file_id);
  const list = (query: string) => getJson<Page<FileRecordJson>>(`${s.url}/v1/files?${query}`);

  before(async () => {
    s = await startServer();
    const png = await pngBytes();
    // Stated types are kept as stated (lower-cased), so any bytes do for the non-image ones.
    const uploads: [string, string, Buffer | string][] = [
      ['a.png', 'image/png', png],
      ['b.jpg', 'image/jpeg', png],
      ['c.pdf', 'application/pdf', '%PDF-1.4 not really'],
      ['d.png', 'IMAGE/PNG', png],
      ['e.json', 'application/json', '{}'],
    ];
    for (const [filename, contentType, data] of uploads) {
      const res = await uploadFile(s.url, { filename, contentType, data });
      assert.equal(res.status, 200, res.bytes.toString());
    }
    input = (await listFiles(s.url)).find((f) => f.filename === 'a.png')!.file_id;
    const body = { width: 64, height: 64, steps: 1 };
    const edited = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/edit`, { ...body, prompt: 'edit', images: [{ type: 'file_id', file_id: input }] }, { accept: 'application/json' });
    assert.equal(edited.status, 200, edited.bytes.toString());
    edit = edited.json;
    const generated = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, { ...body, prompt: 'jpeg', format: 'jpeg' }, { accept: 'application/json' });
    assert.equal(generated.status, 200, generated.bytes.toString());
    generate = generated.json;
    all = await listFiles(s.url);
  });

  after(async () => {
    await s.close();
  });

  void it('content_type: an exact type, compared case-insensitively, newest first', async () => {
    const png = all.filter((f) => f.content_type === 'image/png');
    assert.equal(png.length, 3, 'two uploads and the edit artifact');
    assert.deepEqual(all.find((f) => f.filename === 'd.png')?.content_type, 'image/png', 'stored lower-cased');
    for (const q of ['content_type=image/png', 'content_type=Image/PNG', 'content_type=image%2Fpng']) {
      const res = await list(q);
      assert.equal(res.status, 200, q);
      assert.deepEqual(ids(res.json.data), ids(png), q);
      assert.equal(res.json.has_more, false, q);
    }
    assert.deepEqual(ids((await list('content_type=application/pdf')).json.data), ids(all.filter((f) => f.filename === 'c.pdf')));
    assert.deepEqual((await list('content_type=image/gif')).json.data, []);
  });

  void it('content_type: a family with a * subtype', async () => {
    const images = all.filter((f) => f.content_type.startsWith('image/'));
    assert.equal(images.length, 5);
    assert.deepEqual(ids((await list('content_type=image/*')).json.data), ids(images));
    assert.deepEqual(ids((await list('content_type=application%2F*')).json.data), ids(all.filter((f) => f.content_type.startsWith('application/'))));
    assert.deepEqual((await list('content_type=video/*')).json.data, []);
  });

  void it('job_id: the artifacts of that job only, not the inputs it was given', async () => {
    assert.equal(edit.artifacts.length, 1);
    const res = await list(`job_id=${edit.id}`);
    assert.equal(res.status, 200);
    assert.deepEqual(ids(res.json.data), edit.artifacts);
    assert.ok(!ids(res.json.data).includes(input));
    assert.deepEqual(ids((await list(`job_id=${generate.id}`)).json.data), generate.artifacts);
    // Filters combine: the jpeg job's artifact is no png.
    assert.deepEqual((await list(`job_id=${generate.id}&content_type=image/png`)).json.data, []);
    assert.deepEqual(ids((await list(`job_id=${generate.id}&content_type=image/jpeg`)).json.data), generate.artifacts);
    // A job that produced nothing (or never existed) has an empty list, not an error.
    assert.deepEqual((await list('job_id=job_0123456789abcdef0123456789abcdef')).json.data, []);
    // The artifacts keep the job's id after the job record is gone.
    assert.equal((await request(`${s.url}/v1/jobs/${edit.id}`, { method: 'DELETE' })).status, 200);
    assert.deepEqual(ids((await list(`job_id=${edit.id}`)).json.data), edit.artifacts);
  });

  void it('pages within a filter, forwards and back', async () => {
    const images = ids(all.filter((f) => f.content_type.startsWith('image/')));
    const seen: string[] = [];
    let cursor = '';
    for (;;) {
      const res = await list(`content_type=image/*&limit=2${cursor ? `&after=${cursor}` : ''}`);
      assert.equal(res.status, 200);
      seen.push(...ids(res.json.data));
      if (!res.json.has_more) break;
      cursor = res.json.last_id!;
    }
    assert.deepEqual(seen, images);
    // A cursor need not match the filter: it marks a place in the whole list.
    const pdf = all.find((f) => f.filename === 'c.pdf')!.file_id;
    const olderThanPdf = all.slice(all.findIndex((f) => f.file_id === pdf) + 1).filter((f) => f.content_type.startsWith('image/'));
    assert.deepEqual(ids((await list(`content_type=image/*&after=${pdf}`)).json.data), ids(olderThanPdf));
    const back = await list(`content_type=image/*&limit=2&before=${images[4]}`);
    assert.deepEqual(ids(back.json.data), images.slice(2, 4));
    assert.equal(back.json.has_more, true);
  });

  void it('malformed filters are a 422 naming the parameter and showing what passes', async () => {
    const cases: [string, string][] = [
      ['content_type=png', 'content_type'],
      ['content_type=image/', 'content_type'],
      ['content_type=*/*', 'content_type'],
      ['content_type=image/p*', 'content_type'],
      ['content_type=image/png;%20charset=utf-8', 'content_type'],
      [`content_type=image/${'x'.repeat(300)}`, 'content_type'],
      ['job_id=file_0123456789abcdef0123456789abcdef', 'job_id'],
      ['job_id=job_XYZ', 'job_id'],
    ];
    for (const [query, param] of cases) {
      const res = await getJson<{ detail: Issue[] }>(`${s.url}/v1/files?${query}`);
      assert.equal(res.status, 422, query);
      assert.deepEqual(res.json.detail[0]!.loc, ['query', param], query);
      assert.match(res.json.detail[0]!.msg, new RegExp(`^'${param}' `), query);
    }
    const res = await getJson<{ detail: Issue[] }>(`${s.url}/v1/files?content_type=png`);
    assert.equal(res.json.detail[0]!.msg.endsWith(' (for example "image/png" or "image/*"); got "png"'), true, res.json.detail[0]!.msg);
  });

  void it('a long value quoted in a 422 is clipped between characters, never inside one', async () => {
    // Each '𝕏' is two UTF-16 units: a clip at an odd unit would leave half of one (no character).
    const lone = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
    for (const value of ['𝕏'.repeat(150), `x${'𝕏'.repeat(150)}`]) {
      const res = await getJson<{ detail: (Issue & { input?: unknown })[] }>(`${s.url}/v1/files?content_type=${encodeURIComponent(value)}`);
      assert.equal(res.status, 422);
      const issue = res.json.detail[0]!;
      assert.match(issue.msg, /got "x?𝕏/);
      assert.doesNotMatch(issue.msg, lone, 'the message');
      assert.equal(typeof issue.input, 'string');
      assert.doesNotMatch(issue.input as string, lone, 'the quoted input');
    }
  });
});

void describe('file retention (KIAPI_FILE_RETENTION_S)', () => {
  let s: TestServer;

  before(async () => {
    // Slow steps keep the job that holds an input running well past the 1 s retention.
    s = await startServer({ KIAPI_FILE_RETENTION_S: '1', KIAPI_PREVIEW_STEP_MS: '400' });
  });

  after(async () => {
    await s.close();
  });

  const listed = async () => (await getJson<Page<FileRecordJson>>(`${s.url}/v1/files`)).json.data.map((f) => f.file_id);

  void it('deletes old files with their bytes, but never the input of an unfinished job', async () => {
    const png = await pngBytes(32, 32);
    const loose = (await uploadFile(s.url, { filename: 'loose.png', contentType: 'image/png', data: png })).json.file_id;
    const input = (await uploadFile(s.url, { filename: 'input.png', contentType: 'image/png', data: png })).json.file_id;
    const res = await sendJson<{ job_id: string }>('POST', `${s.url}/v1/image/qwen/edit`, {
      prompt: 'keep my input',
      images: [{ type: 'file_id', file_id: input }],
      width: 64,
      height: 64,
      steps: 12,
      mode: 'async',
    });
    assert.equal(res.status, 202, JSON.stringify(res.json));
    await waitForStatus(s.url, res.json.job_id, ['running']);

    await pollUntil(listed, (ids) => !ids.includes(loose), 'the unheld upload to be pruned');
    assert.equal((await getJson(`${s.url}/v1/files/${loose}/download`)).status, 404);
    const job = await getJson<JobJson>(`${s.url}/v1/jobs/${res.json.job_id}`);
    assert.ok(job.json.status === 'running' || job.json.status === 'queued', `still unfinished: ${job.json.status}`);
    assert.ok((await listed()).includes(input), 'the running job\'s input is kept');

    const done = await waitFinished(s.url, res.json.job_id);
    assert.equal(done.status, 'succeeded', done.error ?? '');
    await pollUntil(listed, (ids) => !ids.includes(input) && !ids.includes(done.artifacts[0]!), 'the input and the artifact to be pruned once the job finished');
  });
});
