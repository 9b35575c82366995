/**
 * Jobs API (list, get, delete, cancel, id validation) and the generation endpoints' sync/async
 * contract (docs/compatibility.md §1.5, §1.8, §2.6).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../support/server.js';
import {
  generateBody,
  getJob,
  getJson,
  listJobs,
  pollUntil,
  rawRequest,
  request,
  sendJson,
  submitAsync,
  waitFinished,
  waitForStatus,
  type FileRecordJson,
  type JobJson,
} from '../support/api.js';

let server: TestServer;
let url: string;

before(async () => {
  server = await startServer({ KIAPI_PREVIEW_STEP_MS: '50' });
  url = server.url;
});

after(async () => {
  await server.close();
});

const JOB_KEYS = [
  'type',
  'params',
  'id',
  'status',
  'result',
  'artifacts',
  'error',
  'created_at',
  'started_at',
  'finished_at',
  'progress',
  'progress_label',
  // kiapi's additions, after the original's fields (clients of the original ignore them).
  'queue_position',
  'eta_s',
];

void describe('GET /v1/jobs and /v1/jobs/{job_id}', () => {
  void it('lists newest first as {object:"list", data}; get returns the same record', async () => {
    const a = await submitAsync(url, { steps: 1 });
    const b = await submitAsync(url, { steps: 1 });
    const c = await submitAsync(url, { steps: 1 });
    for (const id of [a, b, c]) await waitFinished(url, id);
    const res = await getJson<{ object: string; data: JobJson[] }>(`${url}/v1/jobs`);
    assert.equal(res.status, 200);
    assert.equal(res.json.object, 'list');
    const order = res.json.data.map((j) => j.id);
    assert.ok(order.indexOf(c) < order.indexOf(b) && order.indexOf(b) < order.indexOf(a), order.join(','));
    for (let i = 1; i < res.json.data.length; i++) assert.ok(res.json.data[i - 1]!.created_at >= res.json.data[i]!.created_at);

    const job = await getJob(url, b);
    assert.deepEqual(Object.keys(job), JOB_KEYS);
    assert.equal(job.id, b);
    assert.equal(job.type, 'qwen');
    assert.equal(job.status, 'succeeded');
    assert.equal(job.progress, 1);
    assert.equal(job.progress_label, 'done');
    assert.equal(job.error, null);
    assert.equal(job.artifacts.length, 1);
    assert.equal((job.result as { file_id: string }).file_id, job.artifacts[0]);
    assert.ok(job.started_at !== null && job.finished_at !== null && job.created_at <= job.started_at && job.started_at <= job.finished_at);
    assert.equal(job.params.prompt, 'a lighthouse at dusk');
    assert.deepEqual(res.json.data.find((j) => j.id === b), job);
  });

  void it('unknown well-formed id → 404 {"detail":"unknown job \'…\'"} on every route', async () => {
    const id = 'job_0123456789abcdef0123456789abcdef';
    const expected = { detail: `unknown job '${id}'` };
    for (const [method, path] of [
      ['GET', `/v1/jobs/${id}`],
      ['DELETE', `/v1/jobs/${id}`],
      ['POST', `/v1/jobs/${id}/cancel`],
    ] as const) {
      const res = await request(`${url}${path}`, { method });
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.deepEqual(res.json, expected);
    }
  });

  for (const bad of ['job_XYZ', '%2e%2e', 'job_..%2F..%2Fetc', 'file_0123abcd', 'job_' + 'a'.repeat(80)]) {
    void it(`malformed id ${bad} → 422 list with loc ['path', 'job_id']`, async () => {
      for (const [method, path] of [
        ['GET', `/v1/jobs/${bad}`],
        ['DELETE', `/v1/jobs/${bad}`],
        ['POST', `/v1/jobs/${bad}/cancel`],
      ] as const) {
        const res = await rawRequest(url, method, path);
        assert.equal(res.status, 422, `${method} ${path}: ${res.body.toString()}`);
        const detail = (res.json as { detail: { type: string; loc: unknown[]; msg: string }[] }).detail;
        assert.ok(Array.isArray(detail) && detail.length > 0);
        assert.deepEqual(detail[0]!.loc, ['path', 'job_id']);
        assert.equal(typeof detail[0]!.msg, 'string');
      }
    });
  }
});

void describe('DELETE /v1/jobs/{job_id}', () => {
  void it('a finished job → {deleted:true, job_id, was_running:false}; then 404; its artifact stays', async () => {
    const id = await submitAsync(url, { steps: 1 });
    const job = await waitFinished(url, id);
    const res = await request(`${url}/v1/jobs/${id}`, { method: 'DELETE' });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { deleted: true, job_id: id, was_running: false });
    assert.equal((await getJson(`${url}/v1/jobs/${id}`)).status, 404);
    assert.ok(!(await listJobs(url)).some((j) => j.id === id));
    assert.equal((await getJson(`${url}/v1/files/${job.artifacts[0]!}`)).status, 200);
  });

  void it('a running job → was_running:true, the job stops and leaves no artifact', async () => {
    const id = await submitAsync(url, { steps: 100 });
    await waitForStatus(url, id, ['running']);
    const filesBefore = (await getJson<{ data: FileRecordJson[] }>(`${url}/v1/files`)).json.data.length;
    const res = await request(`${url}/v1/jobs/${id}`, { method: 'DELETE' });
    assert.deepEqual(res.json, { deleted: true, job_id: id, was_running: true });
    assert.equal((await getJson(`${url}/v1/jobs/${id}`)).status, 404);
    // Single flight: the next job starts only once the deleted one has stopped.
    const next = await submitAsync(url, { steps: 1 });
    assert.equal((await waitFinished(url, next)).status, 'succeeded');
    assert.equal((await getJson(`${url}/v1/jobs/${id}`)).status, 404, 'a deleted job must not come back');
    const filesAfter = (await getJson<{ data: FileRecordJson[] }>(`${url}/v1/files`)).json.data.length;
    assert.equal(filesAfter, filesBefore + 1, 'only the follow-up job stored an artifact');
  });
});

void describe('POST /v1/jobs/{job_id}/cancel', () => {
  void it('a finished job → 409 {"detail": string}', async () => {
    const id = await submitAsync(url, { steps: 1 });
    await waitFinished(url, id);
    const res = await request<{ detail: string }>(`${url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 409);
    assert.match(res.json.detail, /succeeded/);
    assert.equal((await getJob(url, id)).status, 'succeeded');
  });

  void it('returns the Job; a running job reports canceling, then ends canceled with finished_at', async () => {
    const id = await submitAsync(url, { steps: 100 });
    await waitForStatus(url, id, ['running']);
    const res = await request<JobJson>(`${url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 200);
    assert.deepEqual(Object.keys(res.json), JOB_KEYS);
    assert.equal(res.json.id, id);
    assert.ok(['running', 'canceled'].includes(res.json.status));
    if (res.json.status === 'running') assert.equal(res.json.progress_label, 'canceling');
    const job = await waitFinished(url, id);
    assert.equal(job.status, 'canceled');
    assert.equal(job.progress_label, 'canceled');
    assert.match(job.error ?? '', /stopped at step \d+\/100/);
    assert.ok(job.finished_at !== null);
    assert.deepEqual(job.artifacts, []);
    // Canceling again is a conflict.
    assert.equal((await request(`${url}/v1/jobs/${id}/cancel`, { method: 'POST' })).status, 409);
  });
});

void describe('sync / async submission contract', () => {
  const generate = () => `${url}/v1/image/qwen/generate`;

  async function expectRawImage(res: { status: number; headers: Headers | Record<string, string | string[] | undefined>; bytes: Buffer }, type = 'image/png') {
    const get = (name: string) => (res.headers instanceof Headers ? res.headers.get(name) : (res.headers[name] as string | undefined));
    assert.equal(res.status, 200);
    assert.equal(get('content-type'), type);
    const fileId = get('x-kiapi-file-id');
    const jobId = get('x-kiapi-job-id');
    assert.match(fileId ?? '', /^file_[0-9a-f]{32}$/);
    assert.match(jobId ?? '', /^job_[0-9a-f]{32}$/);
    assert.match(get('content-disposition') ?? '', /^attachment; filename="qwen_\d+\.(png|jpg|webp)"$/);
    assert.equal(get('content-length'), String(res.bytes.length));
    const job = await getJob(url, jobId!);
    assert.equal(job.status, 'succeeded');
    assert.deepEqual(job.artifacts, [fileId]);
    const dl = await request(`${url}/v1/files/${fileId!}/download`);
    assert.ok(dl.bytes.equals(res.bytes), 'the raw response is the artifact');
    return { fileId: fileId!, jobId: jobId! };
  }

  void it('sync without Accept → raw image bytes with X-Kiapi-File-Id / X-Kiapi-Job-Id', async () => {
    // node:http sends no Accept header at all (fetch would add */*).
    const res = await rawRequest(url, 'POST', '/v1/image/qwen/generate', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(generateBody())));
    await expectRawImage({ status: res.status, headers: res.headers, bytes: res.body });
  });

  void it('sync with Accept: */* and Accept: image/png → raw bytes; the stored type wins over Accept', async () => {
    for (const accept of ['*/*', 'image/png', 'image/webp']) {
      const res = await sendJson('POST', generate(), generateBody(), { accept });
      await expectRawImage(res);
    }
    const jpeg = await sendJson('POST', generate(), generateBody({ format: 'jpeg' }), { accept: '*/*' });
    await expectRawImage(jpeg, 'image/jpeg');
  });

  void it('sync with Accept containing application/json (any case) → the Job JSON, no X-Kiapi headers', async () => {
    for (const accept of ['application/json', 'text/html, APPLICATION/JSON;q=0.9']) {
      const res = await sendJson<JobJson>('POST', generate(), generateBody(), { accept });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      assert.equal(res.headers.get('x-kiapi-file-id'), null);
      assert.equal(res.headers.get('x-kiapi-job-id'), null);
      assert.deepEqual(Object.keys(res.json), JOB_KEYS);
      assert.equal(res.json.status, 'succeeded');
      assert.equal(res.json.artifacts.length, 1);
      assert.deepEqual(res.json, await getJob(url, res.json.id));
    }
  });

  void it('async → 202 {job_id, type, status:"queued"} at once; the job later succeeds', async () => {
    const res = await sendJson<{ job_id: string; type: string; status: string }>('POST', generate(), generateBody({ mode: 'async' }));
    assert.equal(res.status, 202);
    assert.deepEqual(Object.keys(res.json), ['job_id', 'type', 'status']);
    assert.match(res.json.job_id, /^job_[0-9a-f]{32}$/);
    assert.equal(res.json.type, 'qwen');
    assert.equal(res.json.status, 'queued');
    assert.equal((await waitFinished(url, res.json.job_id)).status, 'succeeded');
  });

  void it('a sync job canceled while the client waits → 409', async () => {
    const pending = sendJson<{ detail: string }>('POST', generate(), generateBody({ steps: 100, prompt: 'cancel me while waiting' }));
    const job = await pollUntil(
      () => listJobs(url),
      (jobs) => jobs.some((j) => j.params.prompt === 'cancel me while waiting' && j.status === 'running'),
      'the sync job to run',
    ).then((jobs) => jobs.find((j) => j.params.prompt === 'cancel me while waiting')!);
    await request(`${url}/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    const res = await pending;
    assert.equal(res.status, 409);
    assert.match(res.json.detail, /canceled/);
  });
});

void describe('sync timeout', () => {
  let slow: TestServer;

  before(async () => {
    slow = await startServer({ KIAPI_SYNC_TIMEOUT_S: '0.2', KIAPI_PREVIEW_STEP_MS: '50' });
  });

  after(async () => {
    await slow.close();
  });

  void it("→ 504 with the original's text; the job keeps running and succeeds", async () => {
    // 20 steps × 50 ms of sleep: the job cannot finish before the 0.2 s wait ends.
    const res = await sendJson<{ detail: string }>('POST', `${slow.url}/v1/image/qwen/generate`, generateBody({ steps: 20 }));
    assert.equal(res.status, 504);
    const m = /^qwen job (job_[0-9a-f]{32}) exceeded sync timeout \(0\.2s\); it keeps running — poll \/v1\/jobs\/(job_[0-9a-f]{32})$/.exec(res.json.detail);
    assert.ok(m, res.json.detail);
    assert.equal(m[1], m[2]);
    const job = await waitFinished(slow.url, m[1]!);
    assert.equal(job.status, 'succeeded');
    assert.equal(job.artifacts.length, 1);
  });
});
