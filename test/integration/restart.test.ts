/**
 * State across process lifetimes: files and jobs survive a restart; jobs a crashed process left
 * queued or running come back `failed` with a reason; SIGTERM lets the running job finish;
 * finished jobs past KIAPI_JOB_RETENTION_S are pruned.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { fakeMfluxEnv } from '../support/fake-mflux.js';
import { spawnServer, startServer, tempDir, type SpawnedServer } from '../support/server.js';
import {
  getJob,
  getJson,
  pngBytes,
  pollUntil,
  request,
  sendJson,
  stopWithin,
  submitAsync,
  uploadFile,
  waitFinished,
  waitForStatus,
  type FileRecordJson,
  type JobJson,
} from '../support/api.js';

const dirs: string[] = [];

function newDataDir(): string {
  const d = tempDir('kiapi-restart-');
  dirs.push(d);
  return d;
}

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
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

/** SQLite's own consistency check of the data dir's database ('ok' when intact). */
function integrityCheck(dataDir: string): string {
  const db = new Database(path.join(dataDir, 'kiapi.db'));
  try {
    return db.pragma('integrity_check', { simple: true }) as string;
  } finally {
    db.close();
  }
}

async function download(url: string, fileId: string): Promise<Buffer> {
  const res = await request(`${url}/v1/files/${fileId}/download`);
  assert.equal(res.status, 200, `download ${fileId}`);
  return res.bytes;
}

void describe('restart persistence', () => {
  void it('files and jobs are still there after a clean restart on the same data dir', async () => {
    const dataDir = newDataDir();
    const first = await startServer({}, { dataDir });
    let upload: FileRecordJson;
    let job: JobJson;
    let uploadBytes: Buffer;
    let artifactBytes: Buffer;
    try {
      uploadBytes = await pngBytes(20, 20);
      upload = (await uploadFile(first.url, { filename: 'kept.png', contentType: 'image/png', data: uploadBytes })).json;
      const res = await sendJson<JobJson>('POST', `${first.url}/v1/image/qwen/generate`, { prompt: 'persist me', width: 64, height: 64, steps: 2 }, { accept: 'application/json' });
      assert.equal(res.status, 200);
      job = res.json;
      artifactBytes = await download(first.url, job.artifacts[0]!);
    } finally {
      await first.close();
    }

    const second = await startServer({}, { dataDir });
    try {
      assert.deepEqual((await getJson(`${second.url}/v1/files/${upload.file_id}`)).json, upload);
      assert.ok((await download(second.url, upload.file_id)).equals(uploadBytes));
      assert.deepEqual(await getJob(second.url, job.id), job);
      assert.ok((await download(second.url, job.artifacts[0]!)).equals(artifactBytes));
      const files = (await getJson<{ data: FileRecordJson[] }>(`${second.url}/v1/files`)).json.data.map((f) => f.file_id);
      assert.deepEqual(files.sort(), [upload.file_id, job.artifacts[0]!].sort());
    } finally {
      await second.close();
    }
  });
});

void describe('crash recovery (SIGKILL)', () => {
  void it('a running and a queued job come back failed with a reason; finished artifacts are intact', async () => {
    const dataDir = newDataDir();
    const env = { KIAPI_DATA_DIR: dataDir, KIAPI_PREVIEW_STEP_MS: '100', KIAPI_LOG_LEVEL: 'warn' };
    const state = await withSpawned(env, async (s) => {
      const done = await submitAsync(s.url, { steps: 1, prompt: 'finished before the crash' });
      const doneJob = await waitFinished(s.url, done);
      assert.equal(doneJob.status, 'succeeded');
      const artifact = await download(s.url, doneJob.artifacts[0]!);
      // 100 steps × 100 ms: still running when the kill lands (the kill follows the first poll that sees it running).
      const running = await submitAsync(s.url, { steps: 100, prompt: 'running at the crash' });
      const queued = await submitAsync(s.url, { steps: 1, prompt: 'queued at the crash' });
      await waitForStatus(s.url, running, ['running']);
      assert.equal((await getJob(s.url, queued)).status, 'queued');
      const code = await stopWithin(s, 'SIGKILL');
      assert.equal(code, null, 'killed by the signal');
      return { doneJob, artifactSha: sha(artifact), running, queued };
    });
    // The database the killed process left (its WAL not checkpointed) is consistent.
    assert.equal(integrityCheck(dataDir), 'ok');

    const after = await startServer({}, { dataDir });
    try {
      const running = await getJob(after.url, state.running);
      assert.equal(running.status, 'failed');
      assert.match(running.error ?? '', /server stopped while this job was running/);
      assert.ok(running.finished_at !== null);
      const queued = await getJob(after.url, state.queued);
      assert.equal(queued.status, 'failed');
      assert.match(queued.error ?? '', /server stopped while this job was queued/);
      assert.equal(queued.started_at, null);

      assert.deepEqual(await getJob(after.url, state.doneJob.id), state.doneJob);
      assert.equal(sha(await download(after.url, state.doneJob.artifacts[0]!)), state.artifactSha);
      // Only the finished job's artifact is listed: no partial outputs of the killed job.
      const files = (await getJson<{ data: FileRecordJson[] }>(`${after.url}/v1/files`)).json.data;
      assert.deepEqual(files.map((f) => f.file_id), state.doneJob.artifacts);
      // No blob without a record, no temp file of the killed job.
      assert.deepEqual(fs.readdirSync(path.join(dataDir, 'files')), state.doneJob.artifacts);
      assert.deepEqual(fs.readdirSync(path.join(dataDir, 'tmp')), []);
      // The new process serves new work.
      assert.equal((await waitFinished(after.url, await submitAsync(after.url, { steps: 1 }))).status, 'succeeded');
    } finally {
      await after.close();
    }
    assert.equal(integrityCheck(dataDir), 'ok');
  });

  void it('kill -9 in a burst of writes (jobs finishing, an upload streaming): SQLite intact, every record has its bytes, nothing orphaned', async () => {
    const dataDir = newDataDir();
    const env = { KIAPI_DATA_DIR: dataDir, KIAPI_PREVIEW_STEP_MS: '0', KIAPI_LOG_LEVEL: 'warn' };
    const submitted = await withSpawned(env, async (s) => {
      const jobIds: string[] = [];
      for (let i = 0; i < 40; i++) jobIds.push(await submitAsync(s.url, { steps: 1, width: 256, height: 256, seed: i, prompt: `burst ${i}` }));
      // An upload still streaming when the kill lands: 1 MiB every 20 ms, at most 500 MiB, and
      // aborted after the kill (a client must not keep feeding a dead connection).
      const chunk = Buffer.alloc(1024 * 1024, 0x42);
      const abort = new AbortController();
      let sent = 0;
      const upload = fetch(`${s.url}/v1/files`, {
        method: 'POST',
        headers: { 'content-type': 'multipart/form-data; boundary=kiapi-crash' },
        signal: abort.signal,
        body: new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(Buffer.from('--kiapi-crash\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n\r\n'));
          },
          async pull(c) {
            if (abort.signal.aborted || sent >= 500) return c.close();
            await new Promise((r) => setTimeout(r, 20));
            sent++;
            c.enqueue(chunk);
          },
        }),
        duplex: 'half',
      }).catch(() => null);
      await pollUntil(
        // An upload's temp file has no suffix before `.part` (the engine's are `.png.part`, …).
        async () =>
          fs.readdirSync(path.join(dataDir, 'tmp')).some((n) => /^file_[0-9a-f]+\.part$/.test(n)) &&
          (await getJob(s.url, jobIds[5]!)).status === 'succeeded',
        (ready) => ready,
        'the upload to be streaming and some jobs to be done',
      );
      assert.equal(await stopWithin(s, 'SIGKILL'), null, 'killed by the signal');
      abort.abort();
      await upload;
      return jobIds;
    });
    assert.equal(integrityCheck(dataDir), 'ok');

    const after = await startServer({}, { dataDir });
    try {
      const files = (await getJson<{ data: FileRecordJson[] }>(`${after.url}/v1/files`)).json.data;
      for (const f of files) assert.equal((await download(after.url, f.file_id)).length, f.size, `bytes of ${f.file_id}`);
      assert.ok(files.every((f) => f.filename !== 'cut.bin'), 'the cut upload is not listed');
      // Blobs on disk are exactly the listed files; the cut upload's temp file is gone.
      assert.deepEqual(fs.readdirSync(path.join(dataDir, 'files')).sort(), files.map((f) => f.file_id).sort());
      assert.deepEqual(fs.readdirSync(path.join(dataDir, 'tmp')), []);
      let succeeded = 0;
      for (const id of submitted) {
        const job = await getJob(after.url, id);
        if (job.status === 'succeeded') {
          succeeded++;
          assert.ok(files.some((f) => f.file_id === job.artifacts[0]), `artifact of ${id} is listed`);
        } else {
          assert.equal(job.status, 'failed', JSON.stringify(job));
          assert.match(job.error ?? '', /server stopped while this job was (queued|running)/);
        }
      }
      assert.ok(succeeded >= 6, `${succeeded} jobs finished before the kill`);
      // Every listed file is an artifact of a succeeded job: nothing half-written was recorded.
      assert.equal(files.length, succeeded);
    } finally {
      await after.close();
    }
    assert.equal(integrityCheck(dataDir), 'ok');
  });
});

void describe('kill -9 right after sync answers', () => {
  // A sync answer is sent once the job's final state and its file are committed. The commits are
  // in SQLite's WAL until the checkpoint thread copies them over (every second): a kill straight
  // after the answers finds most of them there still, and the next start must replay them.
  for (const engine of ['preview', 'mflux'] as const) {
    void it(`every answered job is succeeded after the restart, with the very bytes it answered (${engine} engine)`, async () => {
      const dataDir = newDataDir();
      const env = {
        ...(engine === 'mflux' ? fakeMfluxEnv(dataDir, { KIAPI_MEMORY_LIMIT_GB: '200' }) : { KIAPI_PREVIEW_STEP_MS: '0' }),
        KIAPI_DATA_DIR: dataDir,
        KIAPI_LOG_LEVEL: 'warn',
      };
      const answered = await withSpawned(env, async (s) => {
        const got: { jobId: string; fileId: string; sha: string }[] = [];
        for (let i = 0; i < 30; i++) {
          const res = await sendJson('POST', `${s.url}/v1/image/qwen/generate`, { prompt: `kept ${i}`, width: 64, height: 64, steps: 1, seed: i });
          assert.equal(res.status, 200, JSON.stringify(res.json));
          got.push({ jobId: res.headers.get('x-kiapi-job-id')!, fileId: res.headers.get('x-kiapi-file-id')!, sha: sha(res.bytes) });
        }
        assert.equal(await stopWithin(s, 'SIGKILL'), null, 'killed by the signal');
        return got;
      });
      assert.equal(integrityCheck(dataDir), 'ok');
      // The preview engine: reading what the killed server recorded needs no engine.
      const after = await startServer({}, { dataDir });
      try {
        for (const a of answered) {
          const job = await getJob(after.url, a.jobId);
          assert.equal(job.status, 'succeeded', JSON.stringify(job));
          assert.deepEqual(job.artifacts, [a.fileId]);
          assert.equal(sha(await download(after.url, a.fileId)), a.sha, `bytes of ${a.fileId}`);
        }
      } finally {
        await after.close();
      }
    });
  }
});

void describe('graceful shutdown (SIGTERM)', () => {
  void it('the running job finishes, the queued one fails with a reason, exit code 0, state persisted', async () => {
    const dataDir = newDataDir();
    const env = { KIAPI_DATA_DIR: dataDir, KIAPI_PREVIEW_STEP_MS: '50', KIAPI_SHUTDOWN_GRACE_S: '120' };
    const ids = await withSpawned(env, async (s) => {
      // 40 steps × 50 ms; the queued job failing "before it started" below proves SIGTERM came while this one ran.
      const running = await submitAsync(s.url, { steps: 40, prompt: 'finishes during shutdown' });
      const queued = await submitAsync(s.url, { steps: 1, prompt: 'never started' });
      await waitForStatus(s.url, running, ['running']);
      const code = await stopWithin(s, 'SIGTERM');
      assert.equal(code, 0, s.output());
      assert.match(s.output(), /letting the running job finish/);
      assert.match(s.output(), /state persisted/);
      return { running, queued };
    });

    const after = await startServer({}, { dataDir });
    try {
      const running = await getJob(after.url, ids.running);
      assert.equal(running.status, 'succeeded', JSON.stringify(running));
      assert.equal(running.artifacts.length, 1);
      assert.equal((await getJson(`${after.url}/v1/files/${running.artifacts[0]!}`)).status, 200);
      const queued = await getJob(after.url, ids.queued);
      assert.equal(queued.status, 'failed');
      assert.match(queued.error ?? '', /shut down before this job started/);
      assert.equal(queued.started_at, null);
    } finally {
      await after.close();
    }
  });
});

void describe('retention (KIAPI_JOB_RETENTION_S)', () => {
  void it('prunes finished jobs older than the retention at start, keeps younger ones', async () => {
    const dataDir = newDataDir();
    const first = await startServer({}, { dataDir });
    let old: string;
    let young: string;
    try {
      old = await submitAsync(first.url, { steps: 1 });
      young = await submitAsync(first.url, { steps: 1 });
      await waitFinished(first.url, old);
      await waitFinished(first.url, young);
    } finally {
      await first.close();
    }
    // Age one job by 10 minutes instead of waiting for it to age.
    const db = new Database(path.join(dataDir, 'kiapi.db'));
    try {
      db.prepare('UPDATE jobs SET created_at = created_at - 600, finished_at = finished_at - 600 WHERE id = ?').run(old);
    } finally {
      db.close();
    }

    const second = await startServer({ KIAPI_JOB_RETENTION_S: '300' }, { dataDir });
    try {
      assert.equal((await getJson(`${second.url}/v1/jobs/${old}`)).status, 404);
      assert.equal((await getJob(second.url, young)).status, 'succeeded');
    } finally {
      await second.close();
    }
  });

  void it('with KIAPI_JOB_RETENTION_S=1 a running server prunes finished jobs, never queued or running ones', async () => {
    const dataDir = newDataDir();
    // 1 s per step: the 100-step job cannot finish during the test; the 1-step job takes a second.
    const s = await startServer({ KIAPI_JOB_RETENTION_S: '1', KIAPI_PREVIEW_STEP_MS: '1000' }, { dataDir });
    try {
      const finished = await submitAsync(s.url, { steps: 1 });
      await waitFinished(s.url, finished);
      const running = await submitAsync(s.url, { steps: 100 });
      const queued = await submitAsync(s.url, { steps: 1 });
      await waitForStatus(s.url, running, ['running']);
      await pollUntil(() => getJson(`${s.url}/v1/jobs/${finished}`), (r) => r.status === 404, 'the finished job to be pruned');
      assert.equal((await getJob(s.url, running)).status, 'running');
      assert.equal((await getJob(s.url, queued)).status, 'queued');
      for (const id of [queued, running]) await request(`${s.url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    } finally {
      await s.close();
    }
  });
});
