/**
 * The single-flight FIFO queue seen through HTTP with the preview engine: submission order, one
 * job at a time, cancel of queued / running / finished jobs, DELETE of a queued job (it never
 * runs: the original still ran it, docs/compatibility.md §2.4, §11.2).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../support/server.js';
import { getJob, getJson, listFiles, request, submitAsync, waitFinished, waitForStatus, type JobJson } from '../support/api.js';

let server: TestServer;
let url: string;

before(async () => {
  server = await startServer({ KIAPI_PREVIEW_STEP_MS: '50' });
  url = server.url;
});

after(async () => {
  await server.close();
});

/** A job that runs until canceled (100 steps × 50 ms) and is running when this returns. */
async function holdWorker(): Promise<string> {
  const id = await submitAsync(url, { steps: 100, prompt: 'blocker' });
  await waitForStatus(url, id, ['running']);
  return id;
}

async function release(id: string): Promise<void> {
  await request(`${url}/v1/jobs/${id}/cancel`, { method: 'POST' });
  await waitFinished(url, id);
}

void describe('queue order and single flight', () => {
  void it('runs jobs in submission order, never two at once', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await submitAsync(url, { steps: 3, seed: i }));
    const jobs: JobJson[] = [];
    for (const id of ids) jobs.push(await waitFinished(url, id));
    for (const j of jobs) assert.equal(j.status, 'succeeded');
    for (let i = 1; i < jobs.length; i++) {
      const prev = jobs[i - 1]!;
      const cur = jobs[i]!;
      assert.ok(prev.created_at <= cur.created_at);
      // FIFO: started in submission order; single flight: each starts after the previous finished.
      assert.ok(prev.started_at! <= cur.started_at!, `job ${i} started before job ${i - 1}`);
      assert.ok(prev.finished_at! <= cur.started_at!, `job ${i} started before job ${i - 1} finished`);
    }
  });

  void it('queued jobs stay queued (no started_at, progress label "queued") while another runs', async () => {
    const blocker = await holdWorker();
    const queued = [await submitAsync(url), await submitAsync(url)];
    for (const id of queued) {
      const j = await getJob(url, id);
      assert.equal(j.status, 'queued');
      assert.equal(j.started_at, null);
      assert.equal(j.progress, null);
      assert.equal(j.progress_label, 'queued');
    }
    const running = await getJob(url, blocker);
    assert.equal(running.status, 'running');
    assert.ok(running.started_at !== null);
    await release(blocker);
    for (const id of queued) assert.equal((await waitFinished(url, id)).status, 'succeeded');
  });
});

void describe('cancel', () => {
  void it('a queued job → canceled at once and it never runs', async () => {
    const blocker = await holdWorker();
    const victim = await submitAsync(url, { prompt: 'never runs' });
    const after = await submitAsync(url);
    const res = await request<JobJson>(`${url}/v1/jobs/${victim}/cancel`, { method: 'POST' });
    assert.equal(res.status, 200);
    // Synchronous: the answer itself already says canceled.
    assert.equal(res.json.status, 'canceled');
    assert.equal(res.json.started_at, null);
    assert.ok(res.json.finished_at !== null);
    assert.match(res.json.error ?? '', /before it started/);
    assert.equal((await getJson<{ queue_len: number }>(`${url}/health`)).json.queue_len, 1);
    await release(blocker);
    assert.equal((await waitFinished(url, after)).status, 'succeeded');
    const victimAfter = await getJob(url, victim);
    assert.equal(victimAfter.status, 'canceled');
    assert.equal(victimAfter.started_at, null, 'a canceled queued job must never start');
    assert.deepEqual(victimAfter.artifacts, []);
  });

  void it('a running job stops at the next step → canceled, no artifact, the queue moves on', async () => {
    const filesBefore = (await listFiles(url)).length;
    const id = await submitAsync(url, { steps: 100 });
    const next = await submitAsync(url, { steps: 1 });
    await waitForStatus(url, id, ['running']);
    await request(`${url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    const job = await waitFinished(url, id);
    assert.equal(job.status, 'canceled');
    assert.match(job.error ?? '', /^preview stopped at step (\d+)\/100$/);
    const step = Number(/step (\d+)\//.exec(job.error ?? '')![1]);
    assert.ok(step < 100, 'stopped before the end');
    assert.equal((await waitFinished(url, next)).status, 'succeeded');
    assert.equal((await listFiles(url)).length, filesBefore + 1, 'only the follow-up job stored an artifact');
  });

  void it('a finished job → 409 and it stays as it was', async () => {
    const id = await submitAsync(url, { steps: 1 });
    await waitFinished(url, id);
    const res = await request<{ detail: string }>(`${url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 409);
    assert.equal(typeof res.json.detail, 'string');
    assert.equal((await getJob(url, id)).status, 'succeeded');
  });
});

void describe('DELETE of a queued job', () => {
  void it('removes it and it never runs (no artifact, not counted in queue_len)', async () => {
    const blocker = await holdWorker();
    const victim = await submitAsync(url, { prompt: 'deleted before running' });
    const marker = await submitAsync(url, { steps: 1 });
    const filesBefore = (await listFiles(url)).length;
    const res = await request(`${url}/v1/jobs/${victim}`, { method: 'DELETE' });
    assert.deepEqual(res.json, { deleted: true, job_id: victim, was_running: false });
    assert.equal((await getJson(`${url}/v1/jobs/${victim}`)).status, 404);
    assert.equal((await getJson<{ queue_len: number }>(`${url}/health`)).json.queue_len, 1);
    await release(blocker);
    // FIFO: had the deleted job run, it would have run before the marker.
    assert.equal((await waitFinished(url, marker)).status, 'succeeded');
    assert.equal((await listFiles(url)).length, filesBefore + 1, 'only the marker job stored an artifact');
    assert.equal((await getJson(`${url}/v1/jobs/${victim}`)).status, 404);
  });
});
