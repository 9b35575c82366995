/**
 * Idempotency-Key on the generation routes, over real HTTP with the preview engine: a repeat
 * with the key gets the first request's job and answer (sync bytes, async 202), racing repeats
 * make one job (and store one copy of their inputs), another body with the key is a 422, a bad
 * key a 400, a refused request stores no key, an expired key acts as new; the key holds across a
 * restart, a kill -9 while its job runs and a kill -9 right after the 202, and a kill -9 before the
 * job was recorded leaves the key free. The OpenAI routes (one key for `n` jobs, multipart edits)
 * go through the official `openai` package.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import OpenAI, { APIError, toFile } from 'openai';
import {
  dataUrl,
  generateBody,
  getJob,
  listFiles,
  listJobs,
  pngBytes,
  pollUntil,
  rawRequest,
  request,
  sendJson,
  stopWithin,
  waitFinished,
  type JobJson,
} from '../support/api.js';
import { spawnServer, startServer, tempDir, type SpawnedServer, type TestServer } from '../support/server.js';

const GENERATE = '/v1/image/qwen/generate';
const dirs: string[] = [];

function newDataDir(): string {
  const d = tempDir('kiapi-idem-');
  dirs.push(d);
  return d;
}

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

let counter = 0;
/** A key no other test uses. */
function newKey(): string {
  return `test-key-${process.pid}-${++counter}-${Math.random().toString(36).slice(2)}`;
}

function post(url: string, body: unknown, key: string | null, headers: Record<string, string> = {}) {
  return sendJson<Record<string, unknown>>('POST', url, body, { ...(key === null ? {} : { 'idempotency-key': key }), ...headers });
}

async function jobCount(url: string): Promise<number> {
  return (await listJobs(url)).length;
}

/** Kills the child if a test failed before stopping it (no leaked processes). */
async function withSpawned<T>(env: Record<string, string>, fn: (s: SpawnedServer) => Promise<T>): Promise<T> {
  const s = await spawnServer(env);
  try {
    return await fn(s);
  } finally {
    if (s.child.exitCode === null && s.child.signalCode === null) await stopWithin(s, 'SIGKILL');
  }
}

void describe('Idempotency-Key on the family routes', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ KIAPI_PREVIEW_STEP_MS: '20' });
  });
  after(async () => s.close());

  void it('sync: a repeat gets the same bytes and job, marked replayed; key order and lax spellings do not make another body', async () => {
    const key = newKey();
    const before = await jobCount(s.url);
    const first = await post(`${s.url}${GENERATE}`, generateBody({ seed: 11 }), key);
    assert.equal(first.status, 200, first.bytes.toString());
    assert.equal(first.headers.get('idempotent-replayed'), null);
    const jobId = first.headers.get('x-kiapi-job-id');
    assert.ok(jobId);

    // The same request written differently: keys reversed, width as the original's lax "64".
    const reordered = Object.fromEntries(Object.entries({ ...generateBody({ seed: 11 }), width: '64' }).reverse());
    const again = await post(`${s.url}${GENERATE}`, reordered, key);
    assert.equal(again.status, 200, again.bytes.toString());
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(again.headers.get('x-kiapi-job-id'), jobId);
    assert.equal(again.headers.get('content-type'), first.headers.get('content-type'));
    assert.ok(again.bytes.equals(first.bytes), 'the same image bytes');

    // `mode` left out is `mode: "sync"`, its schema default.
    const explicit = await post(`${s.url}${GENERATE}`, generateBody({ seed: 11, mode: 'sync' }), key);
    assert.equal(explicit.headers.get('idempotent-replayed'), 'true');
    assert.equal(explicit.headers.get('x-kiapi-job-id'), jobId);

    // Asked as JSON, the replay is the same job's JSON.
    const asJson = await post(`${s.url}${GENERATE}`, generateBody({ seed: 11 }), key, { accept: 'application/json' });
    assert.equal(asJson.status, 200);
    assert.equal(asJson.json.id, jobId);
    assert.equal(await jobCount(s.url), before + 1, 'one job for four requests');
  });

  void it('async: a repeat gets the same 202 (job_id, type), never a second job', async () => {
    const key = newKey();
    const before = await jobCount(s.url);
    const body = generateBody({ mode: 'async', seed: 12 });
    const first = await post(`${s.url}${GENERATE}`, body, key);
    assert.equal(first.status, 202);
    const again = await post(`${s.url}${GENERATE}`, body, key);
    assert.equal(again.status, 202);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(again.json.job_id, first.json.job_id);
    assert.equal(again.json.type, first.json.type);
    assert.equal((await waitFinished(s.url, first.json.job_id as string)).status, 'succeeded');
    const late = await post(`${s.url}${GENERATE}`, body, key);
    assert.deepEqual(late.json, { job_id: first.json.job_id, type: 'qwen', status: 'succeeded' });
    assert.equal(await jobCount(s.url), before + 1);
  });

  void it('5 parallel requests with one key (an input still resolving) make one job, one stored input and one answer', async () => {
    const key = newKey();
    const jobsBefore = await jobCount(s.url);
    const filesBefore = (await listFiles(s.url)).length;
    const init = dataUrl(await pngBytes(32, 32, { r: 10, g: 120, b: 200 }));
    const body = generateBody({ seed: 13, steps: 5, init_image: { type: 'data_url', data_url: init } });
    const answers = await Promise.all(Array.from({ length: 5 }, () => post(`${s.url}${GENERATE}`, body, key)));
    for (const a of answers) assert.equal(a.status, 200, a.bytes.toString());
    const jobIds = new Set(answers.map((a) => a.headers.get('x-kiapi-job-id')));
    assert.equal(jobIds.size, 1, 'one job');
    assert.ok(answers.every((a) => a.bytes.equals(answers[0]!.bytes)), 'the same bytes for all');
    assert.equal(answers.filter((a) => a.headers.get('idempotent-replayed') === 'true').length, 4, 'one fresh answer, four replays');
    assert.equal(await jobCount(s.url), jobsBefore + 1);
    // The data_url input is stored once (by the request that made the job), plus the image.
    assert.equal((await listFiles(s.url)).length, filesBefore + 2);
  });

  void it('a repeat while the job runs waits for it and gets its image', async () => {
    const key = newKey();
    const body = generateBody({ seed: 14, steps: 40 });
    const first = post(`${s.url}${GENERATE}`, body, key);
    const running = await pollUntil(
      () => listJobs(s.url),
      (jobs) => jobs.some((j) => j.params.seed === 14 && j.status === 'running'),
      'the keyed job to run',
    );
    const jobId = running.find((j) => j.params.seed === 14)!.id;
    const again = await post(`${s.url}${GENERATE}`, body, key);
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('x-kiapi-job-id'), jobId);
    assert.ok(again.bytes.equals((await first).bytes));
  });

  void it('the same key with another body is a 422 naming the header; nothing is made', async () => {
    const key = newKey();
    assert.equal((await post(`${s.url}${GENERATE}`, generateBody({ seed: 15, mode: 'async' }), key)).status, 202);
    const before = await jobCount(s.url);
    const files = (await listFiles(s.url)).length;
    const other = await post(`${s.url}${GENERATE}`, generateBody({ seed: 16, mode: 'async' }), key);
    assert.equal(other.status, 422);
    assert.match(String(other.json.detail), /Idempotency-Key '.+' was already used on POST \/v1\/image\/qwen\/generate with a different request body/);
    assert.match(String(other.json.detail), /new key/);
    // sync instead of async is another body too.
    assert.equal((await post(`${s.url}${GENERATE}`, generateBody({ seed: 15 }), key)).status, 422);
    assert.equal(await jobCount(s.url), before);
    assert.equal((await listFiles(s.url)).length, files);
    // The key is per route: the same key on another route is a new request.
    const ideogram = await post(`${s.url}/v1/image/ideogram4/generate`, { prompt: 'a sign', width: 256, height: 256, mode: 'async' }, key);
    assert.equal(ideogram.status, 202);
    assert.equal(ideogram.headers.get('idempotent-replayed'), null);
  });

  void it('a bad key is a 400 naming Idempotency-Key, before anything is stored', async () => {
    const before = await jobCount(s.url);
    const body = generateBody({ mode: 'async' });
    for (const key of ['', 'x'.repeat(256), 'two words']) {
      const res = await post(`${s.url}${GENERATE}`, body, key);
      assert.equal(res.status, 400, `key ${JSON.stringify(key.slice(0, 20))}`);
      assert.match(String(res.json.detail), /Idempotency-Key/);
    }
    // A byte outside ASCII (fetch refuses to send one; node:http sends latin-1 as is).
    const raw = await rawRequest(s.url, 'POST', GENERATE, { 'content-type': 'application/json', 'idempotency-key': 'caf\xe9' }, Buffer.from(JSON.stringify(body)));
    assert.equal(raw.status, 400);
    assert.match(String((raw.json as { detail: string }).detail), /Idempotency-Key may hold only visible ASCII/);
    assert.equal((await post(`${s.url}${GENERATE}`, body, 'x'.repeat(255))).status, 202, '255 characters is allowed');
    assert.equal(await jobCount(s.url), before + 1);
  });

  void it('a refused request stores no key: the key then serves a valid request', async () => {
    const key = newKey();
    const refused = await post(`${s.url}${GENERATE}`, generateBody({ width: 17, mode: 'async' }), key);
    assert.equal(refused.status, 422);
    const ok = await post(`${s.url}${GENERATE}`, generateBody({ mode: 'async', seed: 17 }), key);
    assert.equal(ok.status, 202);
    assert.equal(ok.headers.get('idempotent-replayed'), null);
  });

  void it('a canceled job replays its failure, and says a new key is needed to try again', async () => {
    // 100 steps of a second: the job cannot finish before the test cancels it.
    const slow = await startServer({ KIAPI_PREVIEW_STEP_MS: '1000' });
    try {
      const key = newKey();
      const body = generateBody({ seed: 18, steps: 100 });
      const first = post(`${slow.url}${GENERATE}`, body, key);
      const jobs = await pollUntil(() => listJobs(slow.url), (js) => js.length > 0, 'the keyed job to be queued');
      const jobId = jobs[0]!.id;
      assert.equal((await request(`${slow.url}/v1/jobs/${jobId}/cancel`, { method: 'POST' })).status, 200);
      assert.equal((await first).status, 409);
      const again = await post(`${slow.url}${GENERATE}`, body, key);
      assert.equal(again.status, 409);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.match(String(again.json.detail), new RegExp(`job ${jobId} was canceled.*send a new key to try again`));
    } finally {
      await slow.close();
    }
  });

  void it('a replay whose image or job was deleted is a 409 that says so', async () => {
    const key = newKey();
    const body = generateBody({ seed: 19 });
    const first = await post(`${s.url}${GENERATE}`, body, key);
    const fileId = first.headers.get('x-kiapi-file-id')!;
    const jobId = first.headers.get('x-kiapi-job-id')!;
    assert.equal((await request(`${s.url}/v1/files/${fileId}`, { method: 'DELETE' })).status, 200);
    const noImage = await post(`${s.url}${GENERATE}`, body, key);
    assert.equal(noImage.status, 409);
    assert.match(String(noImage.json.detail), new RegExp(`image of job ${jobId} \\(file ${fileId}\\) has been deleted`));
    assert.equal((await request(`${s.url}/v1/jobs/${jobId}`, { method: 'DELETE' })).status, 200);
    const noJob = await post(`${s.url}${GENERATE}`, body, key);
    assert.equal(noJob.status, 409);
    assert.match(String(noJob.json.detail), new RegExp(`job ${jobId}, made by the earlier request with this Idempotency-Key, has been deleted`));
  });

  void it('an expired key acts as new, and pruning forgets it', async () => {
    const key = newKey();
    const body = generateBody({ mode: 'async', seed: 20 });
    const first = await post(`${s.url}${GENERATE}`, body, key);
    // Age the key past KIAPI_IDEMPOTENCY_TTL_H instead of waiting a day.
    s.ctx.db.prepare('UPDATE idempotency_keys SET expires_at = ? WHERE key = ?').run(Date.now() / 1000 - 1, key);
    const again = await post(`${s.url}${GENERATE}`, generateBody({ mode: 'async', seed: 21 }), key);
    assert.equal(again.status, 202, 'another body is fine once the key expired');
    assert.notEqual(again.json.job_id, first.json.job_id);
    assert.equal(again.headers.get('idempotent-replayed'), null);
    assert.equal((await post(`${s.url}${GENERATE}`, generateBody({ mode: 'async', seed: 21 }), key)).json.job_id, again.json.job_id);
    s.ctx.db.prepare('UPDATE idempotency_keys SET expires_at = ? WHERE key = ?').run(Date.now() / 1000 - 1, key);
    assert.ok((await s.ctx.idempotency.prune()) >= 1);
    assert.deepEqual(s.ctx.db.prepare('SELECT COUNT(*) AS n FROM idempotency_keys WHERE key = ?').get(key), { n: 0 });
  });
});

void describe('Idempotency-Key on the OpenAI routes (official openai package)', () => {
  let s: TestServer;
  let ai: OpenAI;
  before(async () => {
    s = await startServer({ KIAPI_PREVIEW_STEP_MS: '5' });
    ai = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'any', maxRetries: 0 });
  });
  after(async () => s.close());

  void it('generations: one key covers all n images; a repeat gets the same images', async () => {
    const key = newKey();
    const before = await jobCount(s.url);
    const params = { prompt: 'two lighthouses', size: '64x64', n: 2, steps: 2 } as OpenAI.ImageGenerateParamsNonStreaming;
    const first = await ai.images.generate(params, { headers: { 'Idempotency-Key': key } });
    const { data: again, response } = await ai.images.generate(params, { headers: { 'Idempotency-Key': key } }).withResponse();
    assert.equal(response.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(again.data?.map((d) => d.b64_json), first.data?.map((d) => d.b64_json));
    assert.equal(await jobCount(s.url), before + 2);
    try {
      await ai.images.generate({ ...params, n: 1 }, { headers: { 'Idempotency-Key': key } });
      assert.fail('expected a refusal');
    } catch (err) {
      assert.ok(err instanceof APIError);
      assert.equal(err.status, 400);
      assert.equal((err.error as { code: string }).code, 'idempotency_key_reused');
    }
    assert.equal(await jobCount(s.url), before + 2);
  });

  void it('edits: the same image bytes replay, other bytes are another request', async () => {
    const key = newKey();
    const before = await jobCount(s.url);
    const png = await pngBytes(32, 32);
    const edit = async (bytes: Buffer) =>
      ai.images.edit({ image: await toFile(bytes, 'in.png', { type: 'image/png' }), prompt: 'make it blue', size: '64x64', steps: 2 } as OpenAI.ImageEditParamsNonStreaming, {
        headers: { 'Idempotency-Key': key },
      });
    const first = await edit(png);
    const again = await edit(Buffer.from(png));
    assert.equal(again.data?.[0]?.b64_json, first.data?.[0]?.b64_json);
    await assert.rejects(edit(await pngBytes(32, 32, { r: 0, g: 0, b: 0 })), (err: unknown) => err instanceof APIError && err.status === 400 && /different request body/.test(err.message));
    assert.equal(await jobCount(s.url), before + 1);
  });
});

void describe('Idempotency-Key across restarts and crashes', () => {
  void it('after a clean restart on the same data dir the key replays the same job and bytes', async () => {
    const dataDir = newDataDir();
    const key = newKey();
    const body = generateBody({ seed: 30 });
    const first = await startServer({}, { dataDir });
    let bytes: Buffer;
    let jobId: string | null;
    try {
      const res = await post(`${first.url}${GENERATE}`, body, key);
      assert.equal(res.status, 200);
      bytes = res.bytes;
      jobId = res.headers.get('x-kiapi-job-id');
    } finally {
      await first.close();
    }
    const second = await startServer({}, { dataDir });
    try {
      const res = await post(`${second.url}${GENERATE}`, body, key);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('idempotent-replayed'), 'true');
      assert.equal(res.headers.get('x-kiapi-job-id'), jobId);
      assert.ok(res.bytes.equals(bytes));
      assert.equal(await jobCount(second.url), 1);
    } finally {
      await second.close();
    }
  });

  void it('kill -9 while a keyed sync job runs, and right after a 202: each key still names its job after the restart', async () => {
    const dataDir = newDataDir();
    // 100 steps of a second: the job still runs when the kill lands.
    const env = { KIAPI_DATA_DIR: dataDir, KIAPI_PREVIEW_STEP_MS: '1000', KIAPI_LOG_LEVEL: 'warn' };
    const runningKey = newKey();
    const queuedKey = newKey();
    const runningBody = generateBody({ seed: 31, steps: 100 });
    const queuedBody = generateBody({ mode: 'async', seed: 32 });
    const ids = await withSpawned(env, async (sp) => {
      // A sync request waiting for its job when the server dies.
      const waiting = post(`${sp.url}${GENERATE}`, runningBody, runningKey).catch(() => null);
      const jobs = await pollUntil(() => listJobs(sp.url), (js) => js.some((j) => j.status === 'running'), 'the keyed job to run');
      // The kill follows this 202 at once: its job is queued behind the running one.
      const queued = await post(`${sp.url}${GENERATE}`, queuedBody, queuedKey);
      assert.equal(queued.status, 202);
      assert.equal(await stopWithin(sp, 'SIGKILL'), null, 'killed by the signal');
      assert.equal(await waiting, null, 'the sync request died with the server');
      return { running: jobs.find((j) => j.status === 'running')!.id, queued: queued.json.job_id as string };
    });

    const after = await startServer({}, { dataDir });
    try {
      // Restart recovery failed both interrupted jobs; each key keeps naming its job.
      const queued = await post(`${after.url}${GENERATE}`, queuedBody, queuedKey);
      assert.equal(queued.status, 202);
      assert.equal(queued.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(queued.json, { job_id: ids.queued, type: 'qwen', status: 'failed' });

      const running = await post(`${after.url}${GENERATE}`, runningBody, runningKey, { accept: 'application/json' });
      assert.equal(running.status, 500, 'the job\'s failure, replayed');
      assert.equal(running.headers.get('idempotent-replayed'), 'true');
      assert.match(String(running.json.detail), /server stopped while this job was running.*send a new key to try again/);
      assert.equal((await getJob(after.url, ids.running)).status, 'failed');
      assert.equal(await jobCount(after.url), 2, 'no new job for either key');
    } finally {
      await after.close();
    }
  });

  void it('kill -9 while the request is still resolving its input: nothing was recorded, the key makes the job after the restart', async () => {
    // A URL input that never finishes downloading holds the request before its job is recorded.
    const requests: http.IncomingMessage[] = [];
    const slow = http.createServer((req, res) => {
      requests.push(req);
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': '100000' });
      res.write(Buffer.alloc(10));
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/in.png`;
    try {
      const dataDir = newDataDir();
      const key = newKey();
      const body = generateBody({ mode: 'async', seed: 33, init_image: { type: 'url', url } });
      const env = { KIAPI_DATA_DIR: dataDir, KIAPI_NET_ALLOW_PRIVATE_URLS: 'true', KIAPI_LOG_LEVEL: 'warn' };
      await withSpawned(env, async (sp) => {
        const pending = post(`${sp.url}${GENERATE}`, body, key).catch(() => null);
        await pollUntil(async () => requests.length, (n) => n > 0, 'kiapi to start downloading the input');
        assert.equal(await stopWithin(sp, 'SIGKILL'), null);
        assert.equal(await pending, null, 'the request died with the server');
      });
      slow.closeAllConnections();

      const after = await startServer({ KIAPI_NET_ALLOW_PRIVATE_URLS: 'true' }, { dataDir });
      try {
        assert.equal(await jobCount(after.url), 0, 'no job was recorded');
        // Now the download would hang again: a body without the input shows the key is free.
        const res = await post(`${after.url}${GENERATE}`, generateBody({ mode: 'async', seed: 33 }), key);
        assert.equal(res.status, 202);
        assert.equal(res.headers.get('idempotent-replayed'), null);
        const job: JobJson = await getJob(after.url, res.json.job_id as string);
        assert.equal(job.params.seed, 33);
      } finally {
        await after.close();
      }
    } finally {
      slow.closeAllConnections();
      await new Promise((r) => slow.close(r));
    }
  });
});
