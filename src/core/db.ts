/**
 * The SQLite database under the data dir: job and file records. WAL so readers (GET /v1/jobs)
 * never wait for the writer; synchronous=NORMAL is durable across process crashes (only an OS
 * crash can lose the last transactions), which is the failure we design for.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';

export type Db = Database.Database;

const MIGRATIONS: string[] = [
  `CREATE TABLE files (
     id TEXT PRIMARY KEY,
     filename TEXT NOT NULL,
     content_type TEXT NOT NULL,
     size INTEGER NOT NULL,
     created_at REAL NOT NULL,
     meta TEXT NOT NULL
   );
   CREATE INDEX files_created ON files(created_at);
   CREATE TABLE jobs (
     id TEXT PRIMARY KEY,
     type TEXT NOT NULL,
     params TEXT NOT NULL,
     status TEXT NOT NULL,
     result TEXT,
     artifacts TEXT NOT NULL,
     error TEXT,
     created_at REAL NOT NULL,
     started_at REAL,
     finished_at REAL,
     progress REAL,
     progress_label TEXT NOT NULL
   );
   CREATE INDEX jobs_created ON jobs(created_at);
   CREATE INDEX jobs_status ON jobs(status);`,
  // The job that produced an artifact: lets start-up recover a job whose image was saved just
  // before a crash, instead of failing it and leaving its file unexplained.
  `ALTER TABLE files ADD COLUMN job_id TEXT;
   CREATE INDEX files_job ON files(job_id);`,
  // The SHA-256 of the blob, taken while it is written: a LoRA is identified by its content (the
  // same adapter uploaded twice shares one resident build) without reading it again per job.
  // NULL for files stored before this column existed; filled in on first use.
  `ALTER TABLE files ADD COLUMN sha256 TEXT;`,
  // Memory each model build measured when it was loaded (see core/models/build-sizes.ts).
  `CREATE TABLE build_sizes (
     key TEXT PRIMARY KEY,
     weight_gb REAL NOT NULL,
     measured_at REAL NOT NULL
   );`,
  // Filtered list pages (GET /v1/jobs?status=…, ?type=…) walk these in (created_at, rowid) order
  // from the cursor, so a page of a rare status does not scan the whole table.
  // (status, created_at) also serves the start-up query for unfinished jobs, as jobs_status did.
  `CREATE INDEX jobs_status_created ON jobs(status, created_at);
   CREATE INDEX jobs_type_created ON jobs(type, created_at);
   DROP INDEX jobs_status;`,
  // Measured phase times per workload, for the ETA of queued and running jobs (core/jobs/eta.ts).
  `CREATE TABLE eta_history (
     key TEXT PRIMARY KEY,
     grp TEXT NOT NULL,
     pixels INTEGER NOT NULL,
     step_s REAL NOT NULL,
     pre_s REAL NOT NULL,
     post_s REAL NOT NULL,
     samples INTEGER NOT NULL,
     updated_at REAL NOT NULL
   );`,
  // File list filters (GET /v1/files?content_type=…, ?job_id=…), each walked in (created_at,
  // rowid) order from the cursor like the unfiltered list. A family filter (`image/*`) reads the
  // part before the slash: a range on content_type would match several types, whose rows the
  // index does not hold in one created_at order, so every match would be read and sorted.
  // content_family is VIRTUAL (computed on read, only its index is stored), which ALTER TABLE can
  // add to an existing table. (job_id, created_at) replaces the job_id index it extends.
  `ALTER TABLE files ADD COLUMN content_family TEXT GENERATED ALWAYS AS (substr(content_type, 1, instr(content_type, '/') - 1)) VIRTUAL;
   CREATE INDEX files_type_created ON files(content_type, created_at);
   CREATE INDEX files_family_created ON files(content_family, created_at);
   CREATE INDEX files_job_created ON files(job_id, created_at);
   DROP INDEX files_job;`,
  // The webhook outbox (core/webhooks/outbox.ts): one row per job and event it asked for,
  // written with the job (`waiting`), made `pending` in the same transaction as the job's
  // transition, and kept until delivered or given up, so a delivery survives a crash or restart.
  `CREATE TABLE webhook_deliveries (
     id TEXT PRIMARY KEY,
     job_id TEXT NOT NULL,
     event TEXT NOT NULL,
     url TEXT NOT NULL,
     vet INTEGER NOT NULL,
     state TEXT NOT NULL,
     type TEXT,
     payload TEXT,
     event_at REAL,
     attempts INTEGER NOT NULL DEFAULT 0,
     last_status INTEGER,
     last_error TEXT,
     last_attempt_at REAL,
     next_attempt_at REAL,
     delivered_at REAL,
     created_at REAL NOT NULL,
     UNIQUE (job_id, event)
   );
   CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);`,
  // Idempotency-Key of a generation request (core/jobs/idempotency.ts): the key, per route, names
  // the job(s) that request made; it is written in the same transaction as those jobs, so after a
  // crash at any moment either both are recorded or neither. `expires_at` orders the pruning.
  `CREATE TABLE idempotency_keys (
     scope TEXT NOT NULL,
     key TEXT NOT NULL,
     request_hash TEXT NOT NULL,
     job_ids TEXT NOT NULL,
     created_at REAL NOT NULL,
     expires_at REAL NOT NULL,
     PRIMARY KEY (scope, key)
   );
   CREATE INDEX idempotency_keys_expires ON idempotency_keys(expires_at);`,
];

export function openDb(dataDir: string): Db {
  fs.mkdirSync(dataDir, { recursive: true });
  const db = new Database(path.join(dataDir, 'kiapi.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');
  migrate(db);
  return db;
}

/** The schema version `openDb` brings a database to. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Applies the migrations a database has not had yet, each in its own transaction, up to `target`
 * (tests stop earlier to make a database as an older kiapi left it).
 */
export function migrate(db: Db, target = SCHEMA_VERSION): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  for (let v = version; v < target; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
