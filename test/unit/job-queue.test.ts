/**
 * JobQueue against a real JobStore on a temp SQLite database, driven by a test handler whose
 * every job starts and ends exactly when the test says so (no timing involved).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import { openDb, type Db } from '../../src/core/db.js';
import { BusyError, CanceledError, ConflictError, NotFoundError, UnavailableError } from '../../src/core/errors.js';
import { JobQueue, type JobContext, type JobHandler, type JobOutput } from '../../src/core/jobs/job-queue.js';
import { JobStore } from '../../src/core/jobs/job-store.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

interface Control {
  /** Resolves with the job context once the handler runs. */
  started: Deferred<JobContext>;
  /** Resolve to let the job succeed, reject to make it fail. */
  gate: Deferred<JobOutput>;
  calls: number;
}

/** Counts concurrent executions and records the order jobs started in. */
class Harness {
  active = 0;
  maxActive = 0;
  readonly order: string[] = [];
  readonly controls = new Map<string, Control>();

  /** A handler that runs until its gate settles; with `honourSignal`, an abort rejects it with the signal's reason. */
  handler(name: string, honourSignal = true): JobHandler {
    const control: Control = { started: deferred(), gate: deferred(), calls: 0 };
    // Unobserved rejections of gates that are never awaited must not fail the test run.
    control.gate.promise.catch(() => undefined);
    this.controls.set(name, control);
    return async (ctx) => {
      control.calls++;
      this.active++;
      this.maxActive = Math.max(this.maxActive, this.active);
      this.order.push(name);
      control.started.resolve(ctx);
      try {
        if (!honourSignal) return await control.gate.promise;
        return await new Promise<JobOutput>((resolve, reject) => {
          const onAbort = () => reject(ctx.signal.reason instanceof Error ? ctx.signal.reason : new Error('aborted'));
          if (ctx.signal.aborted) onAbort();
          ctx.signal.addEventListener('abort', onAbort, { once: true });
          control.gate.promise.then(resolve, reject);
        });
      } finally {
        this.active--;
      }
    };
  }

  control(name: string): Control {
    const c = this.controls.get(name);
    if (!c) throw new Error(`no handler ${name}`);
    return c;
  }
}

function output(name: string): JobOutput {
  return { result: { name }, artifacts: [`file_${Buffer.from(name).toString('hex')}`] };
}

let db: Db;
let store: JobStore;
let queue: JobQueue;
let h: Harness;

beforeEach(() => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-queue-'));
  dirs.push(dir);
  db = openDb(dir);
  store = new JobStore(db);
  queue = new JobQueue(store, log, 10);
  h = new Harness();
});

afterEach(async () => {
  await queue.close(0);
  db.close();
});

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

void describe('JobQueue: order and single flight', () => {
  void it('runs jobs one at a time in submission order', async () => {
    const a = await queue.submit('t', { n: 1 }, h.handler('a'));
    const b = await queue.submit('t', { n: 2 }, h.handler('b'));
    const c = await queue.submit('t', { n: 3 }, h.handler('c'));
    assert.equal(a.status, 'queued');

    await h.control('a').started.promise;
    assert.equal(queue.runningJobId, a.id);
    assert.equal(queue.queueLength, 2);
    assert.equal(store.getNow(a.id).status, 'running');
    assert.equal(store.getNow(b.id).status, 'queued');
    assert.equal(store.getNow(c.id).started_at, null);

    h.control('a').gate.resolve(output('a'));
    await h.control('b').started.promise;
    assert.equal(store.getNow(a.id).status, 'succeeded');
    assert.equal(store.getNow(c.id).status, 'queued');
    h.control('b').gate.resolve(output('b'));
    await h.control('c').started.promise;
    h.control('c').gate.resolve(output('c'));
    const done = await queue.wait(c.id, 10_000);
    assert.equal(done?.job.status, 'succeeded');

    assert.deepEqual(h.order, ['a', 'b', 'c']);
    assert.equal(h.maxActive, 1);
    const [ja, jb, jc] = [a, b, c].map((j) => store.getNow(j.id));
    assert.ok(ja!.finished_at! <= jb!.started_at! && jb!.finished_at! <= jc!.started_at!);
    assert.equal(queue.runningJobId, null);
    assert.equal(queue.queueLength, 0);
  });

  void it('a succeeded job keeps result, artifacts, progress 1 and label done; all persisted', async () => {
    const job = await queue.submit('t', { p: 'x' }, h.handler('a'));
    const ctx = await h.control('a').started.promise;
    assert.equal(ctx.job.id, job.id);
    assert.equal(store.getNow(job.id).progress, 0);
    assert.equal(store.getNow(job.id).progress_label, 'running');
    ctx.progress(0.5, 'denoising');
    assert.equal(store.getNow(job.id).progress, 0.5);
    assert.equal(store.getNow(job.id).progress_label, 'denoising');
    ctx.progress(7);
    assert.equal(store.getNow(job.id).progress, 1, 'clamped to [0,1]');
    assert.equal(store.getNow(job.id).progress_label, 'denoising', 'no label keeps the last one');
    h.control('a').gate.resolve(output('a'));
    const outcome = await queue.wait(job.id, 10_000);
    assert.ok(outcome);
    // Read back from SQLite through a second store: nothing lives only in memory.
    const persisted = new JobStore(db).getNow(job.id);
    assert.equal(persisted.status, 'succeeded');
    assert.deepEqual(persisted.result, { name: 'a' });
    assert.deepEqual(persisted.artifacts, output('a').artifacts);
    assert.equal(persisted.progress, 1);
    assert.equal(persisted.progress_label, 'done');
    assert.deepEqual(persisted.params, { p: 'x' });
    // Progress after the end changes nothing.
    ctx.progress(0.1, 'late');
    assert.equal(store.getNow(job.id).progress_label, 'done');
  });

  void it('a failing job is failed with its message, and the queue goes on', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    const b = await queue.submit('t', {}, h.handler('b'));
    await h.control('a').started.promise;
    const boom = new Error('engine exploded');
    h.control('a').gate.reject(boom);
    await h.control('b').started.promise;
    const failed = store.getNow(a.id);
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error, 'engine exploded');
    assert.ok(failed.finished_at !== null);
    assert.equal((await queue.wait(a.id, 10))?.job.status, 'failed');
    h.control('b').gate.resolve(output('b'));
    assert.equal((await queue.wait(b.id, 10_000))?.job.status, 'succeeded');
  });

  void it('a waiter gets the error object of a failure', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    const waiting = queue.wait(a.id, 60_000);
    await h.control('a').started.promise;
    const boom = new Error('with cause');
    h.control('a').gate.reject(boom);
    const outcome = await waiting;
    assert.equal(outcome?.job.status, 'failed');
    assert.equal(outcome?.error, boom);
  });
});

void describe('JobQueue: cancel', () => {
  void it('a queued job is canceled at once and its handler never runs', async () => {
    await queue.submit('t', {}, h.handler('a'));
    const b = await queue.submit('t', {}, h.handler('b'));
    const c = await queue.submit('t', {}, h.handler('c'));
    await h.control('a').started.promise;
    const waiting = queue.wait(b.id, 60_000);
    const canceled = await queue.cancel(b.id);
    assert.equal(canceled.status, 'canceled');
    assert.equal(canceled.started_at, null);
    assert.ok(canceled.finished_at !== null);
    assert.equal(canceled.progress_label, 'canceled');
    assert.match(canceled.error ?? '', /before it started/);
    assert.equal((await waiting)?.job.status, 'canceled');
    assert.equal(queue.queueLength, 1);

    h.control('a').gate.resolve(output('a'));
    await h.control('c').started.promise;
    h.control('c').gate.resolve(output('c'));
    await queue.wait(c.id, 10_000);
    assert.equal(h.control('b').calls, 0);
    assert.deepEqual(h.order, ['a', 'c']);
    assert.equal(new JobStore(db).getNow(b.id).status, 'canceled');
  });

  void it('a running job gets the abort signal, reports canceling, and ends canceled', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    const ctx = await h.control('a').started.promise;
    const returned = await queue.cancel(a.id);
    assert.equal(returned.status, 'running');
    assert.equal(returned.progress_label, 'canceling');
    assert.ok(ctx.signal.aborted);
    assert.ok(ctx.signal.reason instanceof CanceledError);
    const outcome = await queue.wait(a.id, 10_000);
    assert.equal(outcome?.job.status, 'canceled');
    assert.equal(outcome?.job.error, 'canceled by request');
    assert.equal(outcome?.job.progress_label, 'canceled');
    assert.ok(outcome?.job.finished_at);
    // A second cancel of the same (now finished) job is a conflict.
    await assert.rejects(() => queue.cancel(a.id), ConflictError);
  });

  void it('an aborted handler that fails with some other error still ends canceled', async () => {
    const started = deferred();
    const a = await queue.submit('t', {}, async (ctx) => {
      started.resolve();
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
      throw new Error('AbortError: the operation was aborted');
    });
    await started.promise;
    await queue.cancel(a.id);
    assert.equal((await queue.wait(a.id, 10_000))?.job.status, 'canceled');
  });

  void it('a finished job → ConflictError; an unknown job → NotFoundError', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    await h.control('a').started.promise;
    h.control('a').gate.resolve(output('a'));
    await queue.wait(a.id, 10_000);
    await assert.rejects(() => queue.cancel(a.id), (err: unknown) => err instanceof ConflictError && err.status === 409 && /succeeded/.test(err.message));
    await assert.rejects(() => queue.cancel('job_0123456789abcdef0123456789abcdef'), NotFoundError);
    await assert.rejects(() => queue.cancel('../etc'), NotFoundError);
  });
});

void describe('JobQueue: delete', () => {
  void it('a queued job is removed and never runs', async () => {
    await queue.submit('t', {}, h.handler('a'));
    const b = await queue.submit('t', {}, h.handler('b'));
    const c = await queue.submit('t', {}, h.handler('c'));
    await h.control('a').started.promise;
    assert.equal(await queue.delete(b.id), false);
    assert.throws(() => store.getNow(b.id), NotFoundError);
    assert.equal(queue.queueLength, 1);
    h.control('a').gate.resolve(output('a'));
    await h.control('c').started.promise;
    h.control('c').gate.resolve(output('c'));
    await queue.wait(c.id, 10_000);
    assert.equal(h.control('b').calls, 0);
    assert.ok(!(await store.list()).data.some((j) => j.id === b.id));
  });

  void it('a running job: was_running, aborted, and its record stays deleted after it ends', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    const b = await queue.submit('t', {}, h.handler('b'));
    const ctx = await h.control('a').started.promise;
    assert.equal(await queue.delete(a.id), true);
    assert.ok(ctx.signal.aborted);
    await h.control('b').started.promise; // a has ended
    assert.throws(() => store.getNow(a.id), NotFoundError);
    assert.ok(!(await new JobStore(db).list()).data.some((j) => j.id === a.id));
    h.control('b').gate.resolve(output('b'));
    await queue.wait(b.id, 10_000);
  });

  void it('a finished job: was_running false', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    await h.control('a').started.promise;
    h.control('a').gate.resolve(output('a'));
    await queue.wait(a.id, 10_000);
    assert.equal(await queue.delete(a.id), false);
    assert.throws(() => store.getNow(a.id), NotFoundError);
  });
});

void describe('JobQueue: limits, waits and shutdown', () => {
  void it('a full queue → BusyError (429, Retry-After) and nothing recorded', async () => {
    const small = new JobQueue(store, log, 2);
    await small.submit('t', {}, h.handler('a'));
    await h.control('a').started.promise;
    await small.submit('t', {}, h.handler('b'));
    await small.submit('t', {}, h.handler('c'));
    const count = (await store.list()).data.length;
    await assert.rejects(
      () => small.submit('t', {}, h.handler('d')),
      (err: unknown) => err instanceof BusyError && err.status === 429 && Number(err.headers['retry-after']) >= 1,
    );
    assert.equal((await store.list()).data.length, count);
    await small.close(0);
  });

  void it('wait returns null on timeout and on abort, without touching the job', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    await h.control('a').started.promise;
    assert.equal(await queue.wait(a.id, 1), null);
    const abort = new AbortController();
    const waiting = queue.wait(a.id, 60_000, abort.signal);
    abort.abort();
    assert.equal(await waiting, null);
    assert.equal(store.getNow(a.id).status, 'running');
    h.control('a').gate.resolve(output('a'));
    assert.equal((await queue.wait(a.id, 10_000))?.job.status, 'succeeded');
  });

  void it('close: queued jobs fail with a reason, the running one may finish, new submits are refused', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    const b = await queue.submit('t', {}, h.handler('b'));
    await h.control('a').started.promise;
    const closing = queue.close(60_000);
    const queued = store.getNow(b.id);
    assert.equal(queued.status, 'failed');
    assert.match(queued.error ?? '', /shut down before this job started/);
    await assert.rejects(() => queue.submit('t', {}, h.handler('x')), UnavailableError);
    h.control('a').gate.resolve(output('a'));
    await closing;
    assert.equal(store.getNow(a.id).status, 'succeeded');
    assert.equal(h.control('b').calls, 0);
  });

  void it('close: a running job past the grace period is aborted and failed (not canceled)', async () => {
    const a = await queue.submit('t', {}, h.handler('a'));
    const ctx = await h.control('a').started.promise;
    await queue.close(1);
    assert.ok(ctx.signal.aborted);
    const job = new JobStore(db).getNow(a.id);
    assert.equal(job.status, 'failed');
    assert.match(job.error ?? '', /the server shut down while this job was running/);
  });
});
