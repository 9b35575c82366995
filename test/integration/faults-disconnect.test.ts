/**
 * Clients that go away in the middle of a sync generation: the job runs to its end and stores its
 * artifact (another client can fetch it), the queue holds no waiter afterwards, nothing is logged
 * at error level and no promise rejection goes unhandled; the server answers the next client
 * normally. The in-process server exposes the queue, so the waiter count is read directly.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { generateBody, listFiles, listJobs, pollUntil, request, sendJson, waitFinished, type JobJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

let s: TestServer;
const logLines: string[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

before(async () => {
  process.on('unhandledRejection', onUnhandled);
  const logStream = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  s = await startServer({ KIAPI_PREVIEW_STEP_MS: '50' }, { logStream });
});

after(async () => {
  await s.close();
  process.off('unhandledRejection', onUnhandled);
});

/** Starts a sync generation over node:http and returns the request, so the test can cut it. */
function syncRequest(body: Record<string, unknown>): http.ClientRequest {
  const req = http.request(`${s.url}/v1/image/qwen/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, agent: false });
  req.on('error', () => undefined); // "socket hang up" once the test destroys it: expected
  req.on('response', (res) => res.resume());
  req.end(JSON.stringify(body));
  return req;
}

async function jobWithPrompt(prompt: string, statuses: JobJson['status'][]): Promise<JobJson> {
  const jobs = await pollUntil(
    () => listJobs(s.url),
    (list) => list.some((j) => j.params.prompt === prompt && statuses.includes(j.status)),
    `a ${statuses.join('|')} job with prompt '${prompt}'`,
  );
  return jobs.find((j) => j.params.prompt === prompt)!;
}

function errorLogs(): string[] {
  return logLines.filter((l) => (JSON.parse(l) as { level: number }).level >= 50);
}

function waiterCount(): number {
  return s.ctx.queue.waiterCount;
}

void describe('a client that disconnects during a sync wait', () => {
  void it('the running job finishes and stores its artifact; no waiter, no error, no unhandled rejection', async () => {
    const prompt = 'the client leaves while this runs';
    const req = syncRequest(generateBody({ prompt, steps: 20, seed: 101 }));
    const running = await jobWithPrompt(prompt, ['running']);
    assert.equal(waiterCount(), 1, 'the sync client waits on its job');
    req.destroy();
    await pollUntil(async () => waiterCount(), (n) => n === 0, 'the waiter of the gone client to be dropped');

    const done = await waitFinished(s.url, running.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.equal(done.artifacts.length, 1);
    const dl = await request(`${s.url}/v1/files/${done.artifacts[0]!}/download`);
    assert.equal(dl.status, 200);
    assert.equal(dl.bytes.length, (done.result as { image_bytes: number }).image_bytes);

    assert.equal(waiterCount(), 0);
    assert.deepEqual(errorLogs(), []);
    assert.deepEqual(unhandled, []);
  });

  void it('a client whose job is still queued leaves: the job runs later all the same', async () => {
    const blocker = 'holds the queue';
    const queuedPrompt = 'queued when the client left';
    const blockReq = syncRequest(generateBody({ prompt: blocker, steps: 20, seed: 102 }));
    await jobWithPrompt(blocker, ['running']);
    const req = syncRequest(generateBody({ prompt: queuedPrompt, steps: 2, seed: 103 }));
    const queued = await jobWithPrompt(queuedPrompt, ['queued']);
    assert.equal(waiterCount(), 2);
    req.destroy();
    blockReq.destroy();
    await pollUntil(async () => waiterCount(), (n) => n === 0, 'both waiters to be dropped');
    const done = await waitFinished(s.url, queued.id);
    assert.equal(done.status, 'succeeded');
    assert.ok((await listFiles(s.url)).some((f) => f.file_id === done.artifacts[0]));
    assert.deepEqual(errorLogs(), []);
    assert.deepEqual(unhandled, []);
  });

  void it('ten clients leave at once: ten jobs succeed, nothing leaks, and the next client is served', async () => {
    const prompts = Array.from({ length: 10 }, (_, i) => `crowd ${i}`);
    const reqs = prompts.map((prompt, i) => syncRequest(generateBody({ prompt, steps: 3, seed: 200 + i })));
    await pollUntil(() => listJobs(s.url), (jobs) => prompts.every((p) => jobs.some((j) => j.params.prompt === p)), 'all ten jobs to be submitted');
    for (const r of reqs) r.destroy();
    const jobs = (await listJobs(s.url)).filter((j) => prompts.includes(j.params.prompt as string));
    for (const j of jobs) assert.equal((await waitFinished(s.url, j.id)).status, 'succeeded');
    await pollUntil(async () => waiterCount(), (n) => n === 0, 'every waiter to be dropped');

    const next = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ steps: 1, seed: 300 }), { accept: 'application/json' });
    assert.equal(next.status, 200, next.bytes.toString());
    assert.equal(waiterCount(), 0);
    assert.deepEqual(errorLogs(), []);
    assert.deepEqual(unhandled, []);
  });
});
