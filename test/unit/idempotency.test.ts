/**
 * IdempotencyKeys and the job transaction it rides in, on a temp SQLite database: the key and
 * its jobs commit together or not at all, racing claims run the submission once, a failed
 * submission leaves the key free, fingerprints ignore key order, malformed keys are refused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import { openDb, type Db } from '../../src/core/db.js';
import { InputError, RuleError } from '../../src/core/errors.js';
import { IdempotencyKeys, readIdempotencyKey, requestFingerprint, type KeyRecorder } from '../../src/core/jobs/idempotency.js';
import { JobStore } from '../../src/core/jobs/job-store.js';

const dirs: string[] = [];
let db: Db;
let store: JobStore;
let keys: IdempotencyKeys;

beforeEach(() => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-idem-unit-'));
  dirs.push(dir);
  db = openDb(dir);
  store = new JobStore(db);
  keys = new IdempotencyKeys(db, 3600);
});

afterEach(() => {
  if (db.open) db.close();
});

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function count(table: 'jobs' | 'idempotency_keys'): number {
  return (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
}

void describe('IdempotencyKeys', () => {
  void it('records the key in the jobs transaction: a failing write leaves neither the key nor the jobs', async () => {
    await assert.rejects(
      keys.once('/r', 'k', 'h', async (record) =>
        store.createAll([{ type: 'qwen', params: {} }, { type: 'qwen', params: {} }], (jobs, tx) => {
          void record(jobs.map((j) => j.id), tx);
          throw new Error('disk gone');
        }),
      ),
      /disk gone/,
    );
    assert.equal(count('jobs'), 0);
    assert.equal(count('idempotency_keys'), 0);
    // The key is free again.
    const out = await keys.once('/r', 'k', 'h', async (record) => store.createAll([{ type: 'qwen', params: {} }], (jobs, tx) => record(jobs.map((j) => j.id), tx)));
    assert.ok('fresh' in out);
    assert.equal(count('jobs'), 1);
    assert.equal(count('idempotency_keys'), 1);
  });

  void it('racing claims run the submission once; the others replay its job ids; another hash is refused', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let runs = 0;
    const submit = async (record: KeyRecorder) => {
      runs++;
      await gate; // still resolving inputs
      return store.createAll([{ type: 'qwen', params: {} }], (jobs, tx) => record(jobs.map((j) => j.id), tx))[0]!.id;
    };
    const racing = Array.from({ length: 5 }, () => keys.once('/r', 'k', 'h', submit));
    await assert.rejects(keys.once('/r', 'k', 'other', submit), (err) => err instanceof RuleError && /still being submitted/.test(err.message));
    release();
    const outcomes = await Promise.all(racing);
    assert.equal(runs, 1);
    const fresh = outcomes.filter((o) => 'fresh' in o);
    assert.equal(fresh.length, 1);
    const id = (fresh[0] as { fresh: string }).fresh;
    for (const o of outcomes.filter((o) => 'replay' in o)) assert.deepEqual(o, { replay: [id] });
    await assert.rejects(keys.once('/r', 'k', 'other', submit), (err) => err instanceof RuleError && /different request body \(at /.test(err.message));
    // Another route is another key.
    assert.ok('fresh' in (await keys.once('/other-route', 'k', 'other', submit)));
  });

  void it('a failed submission leaves the key free for the request waiting on it', async () => {
    let fail!: (e: Error) => void;
    const first = keys.once('/r', 'k', 'h', () => new Promise((_, reject) => (fail = reject)));
    const second = keys.once('/r', 'k', 'h', async (record) => {
      void record(['job_x'], undefined);
      return 'second';
    });
    fail(new Error('422 from the rules'));
    await assert.rejects(first, /422 from the rules/);
    assert.deepEqual(await second, { fresh: 'second' });
  });

  void it('expired keys act as new and are pruned', async () => {
    await keys.once('/r', 'k', 'h', async (record) => record(['job_a'], undefined));
    db.prepare('UPDATE idempotency_keys SET expires_at = ?').run(Date.now() / 1000 - 1);
    assert.ok('fresh' in (await keys.once('/r', 'k', 'other', async (record) => record(['job_b'], undefined))));
    assert.deepEqual(await keys.once('/r', 'k', 'other', async () => undefined), { replay: ['job_b'] });
    assert.equal(await keys.prune(Date.now() / 1000 + 7200), 1);
    assert.equal(count('idempotency_keys'), 0);
  });
});

void describe('request fingerprints and key syntax', () => {
  void it('key order does not change a fingerprint; a value does', () => {
    const a = requestFingerprint({ prompt: 'p', options: { n: 2, size: '64x64' }, images: ['x', 'y'] });
    assert.equal(a, requestFingerprint({ images: ['x', 'y'], options: { size: '64x64', n: 2 }, prompt: 'p' }));
    assert.notEqual(a, requestFingerprint({ prompt: 'p', options: { n: 2, size: '64x64' }, images: ['y', 'x'] }));
    assert.notEqual(a, requestFingerprint({ prompt: 'p', options: { n: 3, size: '64x64' }, images: ['x', 'y'] }));
  });

  void it('accepts 1..255 visible ASCII characters; refuses the rest naming the header', () => {
    assert.equal(readIdempotencyKey(undefined), null);
    assert.equal(readIdempotencyKey('0b7e1c7e-6f3a-4d2a-9c1e-3f5d2b8a9e10'), '0b7e1c7e-6f3a-4d2a-9c1e-3f5d2b8a9e10');
    assert.equal(readIdempotencyKey('~'.repeat(255)), '~'.repeat(255));
    for (const bad of ['', 'a'.repeat(256), 'a b', 'tab\there', 'café', ['a', 'b']]) {
      assert.throws(() => readIdempotencyKey(bad), (err) => err instanceof InputError && /Idempotency-Key/.test(err.message), JSON.stringify(bad));
    }
  });
});
