/**
 * Job records in the shared database: the same fields and JSON as the single-node store
 * (docs/compatibility.md §2.1), plus what the shared queue needs (the queue a job waits in, the
 * node running its current attempt and that attempt's number, what the job runs). Reads answer
 * any node; writes of a running job are made by the queue (cluster-queue.ts), fenced by owner and
 * attempt.
 */
import type pg from 'pg';
import { NotFoundError } from '../core/errors.js';
import { isJobId } from '../core/ids.js';
import { fromRow, toRow, type JobListQuery, type JobPage, type JobReader, type JobRecord, type JobRow as StoredJob } from '../core/jobs/job-store.js';
import { PgPager } from './pg-pager.js';
import { unavailable } from './pg.js';

/** The columns of a job row beyond the record. */
export interface JobPlacement {
  queue: string;
  owner: string | null;
  attempt: number;
  max_attempts: number;
  /** What the job runs (a Runnable as JSON): rebuilt on whichever node claims it. */
  runnable: string;
  /** The ETA workload as JSON, or null. */
  workload: string | null;
  cancel_requested_at: number | null;
}

/** A job row of the shared database: the record's columns and the placement's. */
export interface JobRow extends StoredJob, JobPlacement {}

type Queryable = Pick<pg.ClientBase, 'query'>;

const COLUMNS =
  'id, type, params, status, result, artifacts, error, created_at, started_at, finished_at, progress, progress_label, queue, owner, attempt, max_attempts, runnable, workload, cancel_requested_at';

export class PgJobStore implements JobReader {
  private readonly pager: PgPager<JobRow>;

  constructor(private readonly pool: pg.Pool) {
    this.pager = new PgPager<JobRow>(pool, 'jobs', 'job', ['status', 'type']);
  }

  async get(id: string): Promise<JobRecord> {
    return fromRow(await this.row(id));
  }

  /** The whole row (record and placement), or NotFoundError. */
  async row(id: string, db: Queryable = this.pool): Promise<JobRow> {
    if (!isJobId(id)) throw new NotFoundError(`unknown job '${id}'`);
    const res = await db.query<JobRow>(`SELECT ${COLUMNS} FROM jobs WHERE id = $1`, [id]).catch((err: unknown) => {
      throw unavailable(err);
    });
    const row = res.rows[0];
    if (!row) throw new NotFoundError(`unknown job '${id}'`);
    return row;
  }

  async list(q: JobListQuery = {}): Promise<JobPage> {
    const page = await this.pager.page(q);
    return { data: page.rows.map(fromRow), hasMore: page.hasMore };
  }

  async insert(db: Queryable, job: JobRecord, placement: JobPlacement): Promise<void> {
    const row = { ...toRow(job), ...placement };
    const names = COLUMNS.split(', ');
    await db.query(
      `INSERT INTO jobs (${COLUMNS}) VALUES (${names.map((_, i) => `$${i + 1}`).join(', ')})`,
      names.map((n) => row[n as keyof typeof row]),
    );
  }

  /**
   * Writes a transition of the attempt `owner`/`attempt` holds; false when that attempt no longer
   * holds the job (a sweep gave it to another node, or it was deleted): then nothing is written.
   */
  async writeFenced(db: Queryable, job: JobRecord, owner: string, attempt: number): Promise<boolean> {
    const r = toRow(job);
    const res = await db.query(
      `UPDATE jobs SET status = $2, result = $3, artifacts = $4, error = $5, started_at = $6, finished_at = $7, progress = $8, progress_label = $9
        WHERE id = $1 AND owner = $10 AND attempt = $11 AND status = 'running'`,
      [r.id, r.status, r.result, r.artifacts, r.error, r.started_at, r.finished_at, r.progress, r.progress_label, owner, attempt],
    );
    return res.rowCount === 1;
  }

  /** Progress of a running attempt (a few writes a second at most; readers on other nodes see it). */
  async writeProgress(job: JobRecord, owner: string, attempt: number): Promise<void> {
    await this.pool.query("UPDATE jobs SET progress = $2, progress_label = $3 WHERE id = $1 AND owner = $4 AND attempt = $5 AND status = 'running'", [
      job.id,
      job.progress,
      job.progress_label,
      owner,
      attempt,
    ]);
  }

  /** Removes finished jobs older than `retentionS`; returns how many. */
  async prune(retentionS: number, now = Date.now() / 1000): Promise<number> {
    const res = await this.pool.query(
      "DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled') AND COALESCE(finished_at, created_at) < $1",
      [now - retentionS],
    );
    return res.rowCount ?? 0;
  }
}
