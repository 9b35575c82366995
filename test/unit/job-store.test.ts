/** JobStore on a temp SQLite database: records, crash recovery and retention pruning. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import { openDb, type Db } from '../../src/core/db.js';
import { NotFoundError } from '../../src/core/errors.js';
import { JobStore, type JobRecord } from '../../src/core/jobs/job-store.js';

const dirs: string[] = [];
let dir: string;
let db: Db;
let store: JobStore;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-store-'));
  dirs.push(dir);
  db = openDb(dir);
  store = new JobStore(db);
});

afterEach(() => {
  if (db.open) db.close();
});

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function finish(job: JobRecord, status: 'succeeded' | 'failed' | 'canceled', finishedAt: number): void {
  job.status = status;
  job.started_at = finishedAt;
  job.finished_at = finishedAt;
  store.save(job);
}

void describe('JobStore', () => {
  void it('creates queued records with the reference fields and finds them again after reopening', async () => {
    const job = store.create('qwen', { prompt: 'p' });
    assert.match(job.id, /^job_[0-9a-f]{32}$/);
    assert.deepEqual(Object.keys(job), [
      'type', 'params', 'id', 'status', 'result', 'artifacts', 'error',
      'created_at', 'started_at', 'finished_at', 'progress', 'progress_label',
    ]);
    assert.equal(job.status, 'queued');
    assert.equal(job.progress_label, 'queued');
    db.close();
    db = openDb(dir);
    const reopened = new JobStore(db).getNow(job.id);
    assert.deepEqual(reopened, job);
  });

  void it('lists newest first', async () => {
    const ids = [store.create('t', {}).id, store.create('t', {}).id, store.create('t', {}).id];
    assert.deepEqual((await store.list()).data.map((j) => j.id), ids.reverse());
  });

  void it('unknown or malformed ids → NotFoundError with the original text', async () => {
    assert.throws(() => store.getNow('job_0123456789abcdef0123456789abcdef'), { message: "unknown job 'job_0123456789abcdef0123456789abcdef'" });
    assert.throws(() => store.getNow("job_1' OR '1'='1"), NotFoundError);
  });

  void it('failInterrupted marks queued and running jobs failed with a reason, leaves finished ones alone', async () => {
    const queued = store.create('t', {});
    const running = store.create('t', {});
    running.status = 'running';
    running.started_at = Date.now() / 1000;
    store.save(running);
    const done = store.create('t', {});
    finish(done, 'succeeded', Date.now() / 1000);
    db.close();
    db = openDb(dir);
    store = new JobStore(db);
    assert.deepEqual((await store.failInterrupted()), { failed: 2, recovered: 0 });
    const q = store.getNow(queued.id);
    const r = store.getNow(running.id);
    assert.equal(q.status, 'failed');
    assert.match(q.error ?? '', /stopped while this job was queued/);
    assert.equal(r.status, 'failed');
    assert.match(r.error ?? '', /stopped while this job was running/);
    assert.ok(q.finished_at !== null && r.finished_at !== null);
    assert.equal(store.getNow(done.id).status, 'succeeded');
    assert.deepEqual((await store.failInterrupted()), { failed: 0, recovered: 0 });
  });

  void it('failInterrupted completes a running job whose output was stored before the crash', async () => {
    const running = store.create('t', {});
    running.status = 'running';
    store.save(running);
    const queued = store.create('t', {});
    db.close();
    db = openDb(dir);
    store = new JobStore(db);
    const result = { file_id: 'file_0123456789abcdef0123456789abcdef', image_bytes: 3 };
    // A queued job never ran, so it is never recovered even if the callback had something.
    const seen: string[] = [];
    const counts = await store.failInterrupted(async (job) => {
      seen.push(job.id);
      return { result, artifacts: [result.file_id] };
    });
    assert.deepEqual(counts, { failed: 1, recovered: 1 });
    assert.deepEqual(seen, [running.id]);
    const r = store.getNow(running.id);
    assert.equal(r.status, 'succeeded');
    assert.deepEqual(r.result, result);
    assert.deepEqual(r.artifacts, [result.file_id]);
    assert.equal(r.progress_label, 'done');
    assert.equal(store.getNow(queued.id).status, 'failed');
  });

  void it('prune removes finished jobs older than the retention, never unfinished ones', async () => {
    const now = 1_000_000;
    const old = store.create('t', {});
    finish(old, 'succeeded', now - 100);
    const oldFailed = store.create('t', {});
    finish(oldFailed, 'failed', now - 100);
    const oldCanceled = store.create('t', {});
    finish(oldCanceled, 'canceled', now - 100);
    const recent = store.create('t', {});
    finish(recent, 'succeeded', now - 0.5);
    const queued = store.create('t', {});
    assert.equal(store.prune(1, now), 3);
    const left = (await store.list()).data.map((j) => j.id).sort();
    assert.deepEqual(left, [recent.id, queued.id].sort());
  });
});

void describe('JobStore transition hooks', () => {
  void it('run in the transaction of the write: what they record commits with the transition, and a hook that fails undoes it', async () => {
    db.exec('CREATE TABLE hook_log (job_id TEXT, status TEXT)');
    const log = db.prepare('INSERT INTO hook_log VALUES (?, ?)');
    let failNext = false;
    store.onTransition((job) => {
      log.run(job.id, job.status);
      if (failNext) throw new Error('hook failed');
    });
    const job = store.create('qwen', { prompt: 'p' }, (j) => {
      log.run(j.id, 'subscribed');
    });
    job.status = 'running';
    store.save(job);
    failNext = true;
    job.status = 'succeeded';
    assert.throws(() => store.save(job), /hook failed/);
    const fresh = new JobStore(db);
    assert.equal(fresh.getNow(job.id).status, 'running', 'the failed transition was not written');
    assert.deepEqual(
      db.prepare<[], { status: string }>('SELECT status FROM hook_log').all().map((r) => r.status),
      ['subscribed', 'running'],
    );
  });

  void it('run for the jobs start-up fails, so their final state is reported like any other', async () => {
    const job = store.create('qwen', { prompt: 'p' });
    const seen: string[] = [];
    const restarted = new JobStore(db);
    restarted.onTransition((j) => seen.push(`${j.id}:${j.status}`));
    await restarted.failInterrupted();
    assert.deepEqual(seen, [`${job.id}:failed`]);
  });

  void it('a creation whose `within` fails records no job', async () => {
    assert.throws(() => store.create('qwen', { prompt: 'p' }, () => {
      throw new Error('subscription failed');
    }), /subscription failed/);
    assert.deepEqual((await store.list()).data, []);
  });
});
