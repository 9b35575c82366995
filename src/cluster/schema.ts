/**
 * The shared database's tables, as migrations `migrate()` applies once per database (append new
 * ones; never edit one that has shipped).
 *
 * The tables kiapi also keeps in SQLite have the same columns, so the stores read and write
 * rows of the same shape in both modes. Types:
 *
 * - `*_at` and other seconds are DOUBLE PRECISION epoch seconds, as the SQLite REAL columns the
 *   stores already compute with (node-postgres returns float8 as a JS number).
 * - JSON columns (params, result, artifacts, meta, payload, job_ids, event data) are TEXT, not
 *   JSONB: the stores already JSON.stringify on write and JSON.parse on read, and TEXT keeps those
 *   bytes exactly; JSONB would hand back parsed objects (a second code path) with its own
 *   normalisation (keys reordered and deduplicated, number forms changed), so a record read back
 *   would differ from the one SQLite keeps. Nothing queries inside them.
 * - Sizes and counts that may pass 2^31 (file sizes up to the upload cap) are BIGINT; the pool
 *   (pg.ts) reads BIGINT back as a JS number.
 * - List pages walk (created_at, id): PostgreSQL has no rowid, so the id breaks ties and is the
 *   last column of each list index.
 *
 * Cluster-only tables: `cluster_nodes` (the node lease and what each node can run),
 * `job_events` (live events and step previews, UNLOGGED: they are worth nothing after a database
 * crash, and not writing them to the WAL keeps the busiest writes cheap), `file_holds` and
 * `deleted_blobs` (inputs jobs on any node keep, and blobs of deleted files still to remove).
 *
 * What each node measures of its own hardware (model build sizes, step times for ETAs) stays in
 * its own data dir's SQLite: nodes of different machines would only blur each other's figures.
 */
import { FILE_HOLDS_SCHEMA } from './pg-file-store.js';
import type { Migration } from './pg.js';

/** SELECT list of a job_events row as the event bus hands it out (the id as text: opaque, 64-bit). */
export const JOB_EVENT_COLUMNS = 'id::text AS id, job_id, job_type, status, event, data';

export const CLUSTER_MIGRATIONS: readonly Migration[] = [
  {
    name: '0001 jobs',
    // The SQLite jobs columns, plus what a shared queue needs: the pg-boss queue the job waits in
    // (one per model), the node running the current attempt and its number (completion is fenced
    // by both), the attempts allowed when nodes die, a cancel asked for on another node, and what
    // the job runs (a Runnable as JSON, rebuilt by the node that claims it) with its ETA workload.
    sql: `
      CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        params TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT,
        artifacts TEXT NOT NULL,
        error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        progress DOUBLE PRECISION,
        progress_label TEXT NOT NULL,
        queue TEXT NOT NULL,
        owner TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 1,
        cancel_requested_at DOUBLE PRECISION,
        runnable TEXT NOT NULL,
        workload TEXT
      );
      CREATE INDEX jobs_created ON jobs (created_at, id);
      CREATE INDEX jobs_status_created ON jobs (status, created_at, id);
      CREATE INDEX jobs_type_created ON jobs (type, created_at, id);
      -- The lease sweep: running jobs by owner. Partial: only a handful of rows are running.
      CREATE INDEX jobs_running_owner ON jobs (owner) WHERE status = 'running';
      -- Queue positions and the cluster-wide queued count (429): queued jobs per queue in order.
      CREATE INDEX jobs_queued ON jobs (queue, created_at, id) WHERE status = 'queued';`,
  },
  {
    name: '0002 files',
    // content_family is what a `image/*` filter compares: the part before the slash, '' when
    // there is none (as SQLite's substr/instr gives). PostgreSQL 15 has only STORED generated
    // columns; a few bytes per row.
    sql: `
      CREATE TABLE files (
        id TEXT PRIMARY KEY,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        meta TEXT NOT NULL,
        job_id TEXT,
        sha256 TEXT,
        content_family TEXT GENERATED ALWAYS AS (
          CASE WHEN strpos(content_type, '/') > 0 THEN substr(content_type, 1, strpos(content_type, '/') - 1) ELSE '' END
        ) STORED
      );
      CREATE INDEX files_created ON files (created_at, id);
      CREATE INDEX files_type_created ON files (content_type, created_at, id);
      CREATE INDEX files_family_created ON files (content_family, created_at, id);
      CREATE INDEX files_job_created ON files (job_id, created_at, id);`,
  },

  {
    name: '0003 webhook deliveries',
    // The SQLite outbox, plus a per-attempt lease: every node runs a dispatcher, and the one that
    // claims an attempt (locked_by, locked_until) is the only one that POSTs it.
    sql: `
      CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL,
        event TEXT NOT NULL,
        url TEXT NOT NULL,
        vet INTEGER NOT NULL,
        state TEXT NOT NULL,
        type TEXT,
        payload TEXT,
        event_at DOUBLE PRECISION,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER,
        last_error TEXT,
        last_attempt_at DOUBLE PRECISION,
        next_attempt_at DOUBLE PRECISION,
        delivered_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        locked_by TEXT,
        locked_until DOUBLE PRECISION,
        UNIQUE (job_id, event)
      );
      CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);`,
  },
  {
    name: '0004 idempotency keys',
    // The SQLite table, plus a claim: the first request with a key inserts it 'pending' (who and
    // when) before resolving its inputs, so a second request on any node waits for it instead of
    // submitting twice; the jobs' transaction makes it 'done' with their ids. A pending claim
    // older than the node lease was left by a dead node and may be taken over.
    sql: `
      CREATE TABLE idempotency_keys (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        job_ids TEXT NOT NULL DEFAULT '[]',
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL DEFAULT 'done',
        claimed_by TEXT,
        claimed_at DOUBLE PRECISION,
        PRIMARY KEY (scope, key)
      );
      CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);`,
  },
  {
    name: '0005 cluster nodes',
    // One row per node, renewed every second (heartbeat_at is the database's clock, the only one
    // compared). capable: models this node can run; warm: models it holds loaded.
    sql: `
      CREATE TABLE cluster_nodes (
        node_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        version TEXT NOT NULL,
        capable TEXT[] NOT NULL DEFAULT '{}',
        warm TEXT[] NOT NULL DEFAULT '{}',
        busy BOOLEAN NOT NULL DEFAULT false,
        running_job TEXT,
        heartbeat_at TIMESTAMPTZ NOT NULL,
        started_at TIMESTAMPTZ NOT NULL
      );`,
  },
  {
    name: '0006 job events',
    // Ids are the global event ids (Last-Event-ID on any node): a watcher replays id > last. For
    // that, ids must become visible in id order — with plain bigserial, a transaction that took
    // id 5 can commit after one that took id 6, and a watcher that saw 6 would skip 5 forever.
    // So the insert trigger takes a transaction-scoped advisory lock before drawing the id: event
    // writes commit one at a time, in id order, and NOTIFY (sent at commit) arrives in id order.
    // Consequence: a transaction that inserts an event must do so as its last statement (then
    // the lock holder never waits for anything else, and no deadlock can form).
    // The sequence stays logged while the table is not: after a database crash the table is
    // empty but ids go on rising, so an old Last-Event-ID never hides a new event.
    // The trigger also NOTIFYs kiapi_events with the row as JSON, or only its id when the
    // payload would reach PostgreSQL's 8000-byte limit (the listener then reads the row).
    sql: `
      CREATE SEQUENCE job_events_id_seq;
      CREATE UNLOGGED TABLE job_events (
        id BIGINT PRIMARY KEY,
        job_id TEXT NOT NULL,
        job_type TEXT NOT NULL,
        status TEXT NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM now())
      );
      ALTER SEQUENCE job_events_id_seq OWNED BY job_events.id;
      CREATE INDEX job_events_job ON job_events (job_id, id);
      CREATE FUNCTION kiapi_job_events_order() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_advisory_xact_lock(7740149414397089640);
        NEW.id := nextval('job_events_id_seq');
        RETURN NEW;
      END $$;
      CREATE FUNCTION kiapi_job_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE
        payload TEXT;
      BEGIN
        payload := json_build_object('id', NEW.id::text, 'jobId', NEW.job_id, 'jobType', NEW.job_type,
                                     'status', NEW.status, 'event', NEW.event, 'data', NEW.data::json)::text;
        IF octet_length(payload) >= 8000 THEN
          payload := json_build_object('id', NEW.id::text)::text;
        END IF;
        PERFORM pg_notify('kiapi_events', payload);
        RETURN NULL;
      END $$;
      CREATE TRIGGER job_events_order BEFORE INSERT ON job_events FOR EACH ROW EXECUTE FUNCTION kiapi_job_events_order();
      CREATE TRIGGER job_events_notify AFTER INSERT ON job_events FOR EACH ROW EXECUTE FUNCTION kiapi_job_events_notify();`,
  },

  {
    name: '0007 file holds',
    // Inputs of queued and running jobs (kept whatever node deletes them) and the blobs of
    // deleted files still to be removed: see PgFileStore.
    sql: FILE_HOLDS_SCHEMA,
  },
];
