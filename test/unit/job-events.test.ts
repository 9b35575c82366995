/**
 * The event hub and the ETA model on their own: event ids and replay, the bounded history,
 * preview demand as watchers come and go; ETA measurements, scaling, moving averages, and their
 * survival in SQLite.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { openDb } from '../../src/core/db.js';
import { EtaModel, type Workload } from '../../src/core/jobs/eta.js';
import { JobEvents, terminalEventId, type JobEvent } from '../../src/core/jobs/job-events.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

void describe('JobEvents', () => {
  void it('gives every event a distinct id, the terminal one derived from the job, and replays what follows an id', async () => {
    const hub = new JobEvents();
    const seen: JobEvent[] = [];
    const stop = hub.subscribeJob('job_a', (e) => seen.push(e));
    const q = hub.emit('job_a', 'qwen', 'queued', 'queued', { queue_position: 1 });
    const s = hub.emit('job_a', 'qwen', 'running', 'started', {});
    const p = hub.emit('job_a', 'qwen', 'running', 'progress', { step: 1 });
    assert.deepEqual((await hub.replayJob('job_a', q.id))?.map((e) => e.event), ['started', 'progress']);
    assert.deepEqual((await hub.replayJob('job_a', p.id)), []);
    assert.equal((await hub.replayJob('job_a', 'unknown-id')), null);
    const end = hub.emit('job_a', 'qwen', 'succeeded', 'succeeded', {});
    assert.equal(end.id, terminalEventId('job_a'));
    assert.equal(new Set([q.id, s.id, p.id, end.id]).size, 4);
    assert.deepEqual(seen.map((e) => e.event), ['queued', 'started', 'progress', 'succeeded']);
    // A finished job keeps no per-job history; the all-jobs history still replays it.
    assert.deepEqual((await hub.historyOf('job_a')), []);
    assert.deepEqual((await hub.replayAll(p.id))?.map((e) => e.event), ['succeeded']);
    stop();
    assert.equal(hub.watcherCount, 0);
  });

  void it('keeps a bounded history per job and over all jobs', async () => {
    const hub = new JobEvents();
    const first = hub.emit('job_b', 'qwen', 'running', 'progress', { step: 0 });
    for (let i = 1; i <= 2000; i++) hub.emit('job_b', 'qwen', 'running', 'progress', { step: i });
    assert.equal((await hub.historyOf('job_b')).length, 256);
    assert.equal((await hub.replayJob('job_b', first.id)), null, 'evicted: the route falls back to the current state');
    assert.equal((await hub.replayAll(first.id)), null);
  });

  void it('previews go only to live watchers and are never kept', async () => {
    const hub = new JobEvents();
    const got: JobEvent[] = [];
    hub.subscribeJob('job_c', (e) => got.push(e));
    hub.preview('job_c', 'qwen', { step: 2, total: 4, width: 8, height: 8, jpeg: Buffer.from([0xff, 0xd8]), costMs: 1 });
    assert.equal(got.length, 1);
    assert.match(String(got[0]!.data.image), /^data:image\/jpeg;base64,/);
    assert.deepEqual((await hub.historyOf('job_c')), []);
  });

  void it('preview demand: the most frequent cadence and largest size asked, null once the last watcher leaves', async () => {
    const hub = new JobEvents();
    const demand = hub.demand('job_d');
    let changes = 0;
    const unsubscribe = demand.subscribe(() => changes++);
    assert.equal(demand.current(), null);
    const a = hub.watchPreviews('job_d', { every: 4, maxSize: 128 });
    const b = hub.watchPreviews('job_d', { every: 2, maxSize: 64 });
    assert.deepEqual(demand.current(), { every: 2, maxSize: 128 });
    b();
    assert.deepEqual(demand.current(), { every: 4, maxSize: 128 });
    a();
    a(); // a second release changes nothing
    assert.equal(demand.current(), null);
    assert.equal(changes, 4);
    unsubscribe();
    // Sizes are bounded whatever a caller asks.
    const c = hub.watchPreviews('job_d', { every: 0, maxSize: 100_000 });
    assert.deepEqual(demand.current(), { every: 1, maxSize: 512 });
    c();
  });
});

void describe('EtaModel', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-eta-'));
  dirs.push(dir);
  const w = (width: number, steps = 10, group = 'qwen.generate/image/q-'): Workload => ({ group, key: `${group}/${width}x${width}`, pixels: width * width, steps });

  void it('no history: no estimate; one measurement: that; more: a moving average; another size: scaled by pixels', async () => {
    const db = openDb(dir);
    const eta = new EtaModel(db);
    assert.equal(eta.profile(w(64)), null);
    assert.equal(eta.wholeJobS(w(64)), null);
    eta.observe(w(64), { stepS: 1, preS: 2, postS: 0.5 });
    assert.deepEqual(eta.profile(w(64)), { stepS: 1, preS: 2, postS: 0.5, basis: 'measured' });
    assert.equal(eta.wholeJobS(w(64, 10)), 12.5);
    eta.observe(w(64), { stepS: 2, preS: 2, postS: 0.5 });
    const mixed = eta.profile(w(64))!;
    assert.ok(mixed.stepS > 1 && mixed.stepS < 2, `${mixed.stepS}`);
    const scaled = eta.profile(w(128))!;
    assert.equal(scaled.basis, 'scaled');
    assert.ok(Math.abs(scaled.stepS - mixed.stepS * 4) < 1e-9);
    // Another model borrows nothing.
    assert.equal(eta.profile(w(64, 10, 'ideogram4.generate/fp8/q-')), null);
    // Nonsense measurements are ignored.
    eta.observe(w(64), { stepS: Number.NaN, preS: 1, postS: 1 });
    assert.deepEqual(eta.profile(w(64)), mixed);
    db.close();
  });

  void it('measurements survive reopening the database', async () => {
    const db = openDb(dir);
    const eta = new EtaModel(db);
    assert.equal(eta.profile(w(64))?.basis, 'measured');
    db.close();
  });
});
