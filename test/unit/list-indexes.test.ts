/**
 * The indexes behind the list filters: a database an older kiapi left is upgraded in place (the
 * file filters' column and indexes added, its rows kept and found by the filters), and every
 * filtered page is an index walk in list order from the cursor — no scan of the table and no
 * sort of every match — which is what keeps a page as cheap at 100 000 rows as at 1 000.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { SCHEMA_VERSION, migrate, openDb, type Db } from '../../src/core/db.js';
import { FileStore, type FileFilter } from '../../src/core/files/file-store.js';
import { KeysetPager, type PageQuery } from '../../src/core/paging.js';

const silent = pino({ level: 'silent' });
const dirs: string[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-indexes-'));
  dirs.push(dir);
  return dir;
}

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function fileStore(db: Db, dir: string): FileStore {
  return new FileStore(db, path.join(dir, 'files'), path.join(dir, 'tmp'), silent);
}

function indexes(db: Db, table: string): string[] {
  return db
    .prepare<[string], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .all(table)
    .map((r) => r.name);
}

const insertFile = (db: Db, id: string, contentType: string, createdAt: number, jobId: string | null) =>
  db
    .prepare("INSERT INTO files (id, filename, content_type, size, created_at, meta, job_id) VALUES (?, 'f', ?, 1, ?, '{}', ?)")
    .run(id, contentType, createdAt, jobId);

const id = (n: number, prefix = 'file') => `${prefix}_${n.toString(16).padStart(32, '0')}`;

void describe('upgrading a database kiapi made before the file filters', () => {
  void it('adds the filter column and indexes in place; the old rows are kept and found by each filter', async () => {
    const dir = tempDir();
    // Schema version 6 (the ETA history) is the last one before the file filters' migration.
    const old = new Database(path.join(dir, 'kiapi.db'));
    migrate(old, 6);
    assert.ok(indexes(old, 'files').includes('files_job'));
    insertFile(old, id(1), 'image/png', 100, id(9, 'job'));
    insertFile(old, id(2), 'image/jpeg', 200, null);
    insertFile(old, id(3), 'application/pdf', 300, null);
    insertFile(old, id(4), 'image/png', 400, null);
    old.close();

    const db = openDb(dir);
    try {
      assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
      assert.deepEqual(indexes(db, 'files'), ['files_created', 'files_family_created', 'files_job_created', 'files_type_created']);
      const files = fileStore(db, dir);
      const ids = async (filter: FileFilter) => (await files.list({}, filter)).data.map((f) => f.file_id);
      assert.deepEqual(await ids({}), [id(4), id(3), id(2), id(1)], 'every row kept');
      assert.deepEqual(await ids({ contentType: 'image/png' }), [id(4), id(1)]);
      assert.deepEqual(await ids({ contentType: 'image/*' }), [id(4), id(2), id(1)]);
      assert.deepEqual(await ids({ contentType: 'application/*' }), [id(3)]);
      assert.deepEqual(await ids({ jobId: id(9, 'job') }), [id(1)]);
      // The job's artifact is still found through the replaced index (start-up recovery uses it).
      assert.equal((await files.artifactOf(id(9, 'job')))?.file_id, id(1));
    } finally {
      db.close();
    }
  });
});

void describe('filtered list pages are index walks from the cursor', () => {
  let dir: string;
  let db: Db;
  let files: FileStore;
  let jobs: KeysetPager<unknown>;

  before(() => {
    dir = tempDir();
    db = openDb(dir);
    files = fileStore(db, dir);
    // The same pager and filter columns JobStore uses for GET /v1/jobs.
    jobs = new KeysetPager(db, 'jobs', 'job', ['status', 'type']);
    // Cursors must name existing records; the plan itself does not depend on the row count.
    insertFile(db, id(1), 'image/png', 100, id(2, 'job'));
    db.prepare(
      "INSERT INTO jobs (id, type, params, status, artifacts, created_at, progress_label) VALUES (?, 'qwen', '{}', 'succeeded', '[]', 100, 'done')",
    ).run(id(2, 'job'));
  });

  after(() => db.close());

  const cursors = (cursor: string): PageQuery[] => [
    { limit: 100 },
    { limit: 100, after: cursor },
    { limit: 100, before: cursor },
    { limit: 100, after: cursor, before: cursor },
  ];

  /** One indexed search, through `index`, with no temporary sort. */
  function assertIndexWalk(plan: string[], table: string, index: string, what: string): void {
    assert.equal(plan.length, 1, `${what}: ${plan.join(' ; ')}`);
    assert.match(plan[0]!, new RegExp(`^SEARCH ${table} USING INDEX ${index} \\(`), what);
    assert.doesNotMatch(plan.join(' ; '), /TEMP B-TREE|SCAN/, what);
  }

  void it('GET /v1/files?content_type= (exact and family) and ?job_id=', () => {
    const cases: [FileFilter, string][] = [
      [{ contentType: 'image/png' }, 'files_type_created'],
      [{ contentType: 'IMAGE/PNG' }, 'files_type_created'],
      [{ contentType: 'image/*' }, 'files_family_created'],
      [{ jobId: id(2, 'job') }, 'files_job_created'],
      [{ jobId: id(2, 'job'), contentType: 'image/*' }, 'files_job_created'],
    ];
    for (const [filter, index] of cases) {
      for (const q of cursors(id(1))) assertIndexWalk(files.explainList(q, filter), 'files', index, JSON.stringify({ filter, q }));
    }
  });

  void it('GET /v1/jobs?type= and ?status=', () => {
    const cases: [Record<string, string>, string][] = [
      [{ type: 'qwen-edit' }, 'jobs_type_created'],
      [{ status: 'failed' }, 'jobs_status_created'],
    ];
    for (const [filters, index] of cases) {
      for (const q of cursors(id(2, 'job'))) assertIndexWalk(jobs.explain({ ...q, filters }), 'jobs', index, JSON.stringify({ filters, q }));
    }
  });
});
