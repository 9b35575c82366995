/**
 * Job records in SQLite (docs/compatibility.md §2.1 fields, in that JSON order). Every state
 * transition is written at once; progress is written at most every PROGRESS_WRITE_MS, counted from
 * the job's start, so a 1000-step preview run does not turn into 1000 disk writes and a job shorter
 * than that writes none (its final state carries its progress), while readers see live progress
 * from memory. A persisted progress only matters after a crash, when the job is failed anyway.
 */
import type { Db } from '../db.js';
import { NotFoundError } from '../errors.js';
import { isJobId, newJobId } from '../ids.js';
import { KeysetPager, type PageQuery } from '../paging.js';

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';
export const JOB_STATUSES: readonly JobStatus[] = ['queued', 'running', 'succeeded', 'failed', 'canceled'];
export const FINISHED: ReadonlySet<JobStatus> = new Set(['succeeded', 'failed', 'canceled']);

export interface JobRecord {
  type: string;
  params: Record<string, unknown>;
  id: string;
  status: JobStatus;
  result: Record<string, unknown> | null;
  artifacts: string[];
  error: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  progress: number | null;
  progress_label: string;
}

/** A job as stored: the record's fields, JSON as text. */
export interface JobRow {
  id: string;
  type: string;
  params: string;
  status: JobStatus;
  result: string | null;
  artifacts: string;
  error: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  progress: number | null;
  progress_label: string;
}

const PROGRESS_WRITE_MS = 250;

/**
 * Runs inside the transaction that writes a job's transition (start, final state, the final
 * state start-up gives an interrupted job), so whatever it records commits or is lost together
 * with the transition: the webhook outbox queues the job's event this way.
 */
export type TransitionHook = (job: JobRecord) => void;

/**
 * What another owner writes within a store's transaction (a job's webhook subscription, the
 * request's idempotency key). `tx` is the transaction's handle: a shared database's client,
 * which the callback awaits its writes with; undefined for SQLite, where the transaction is
 * synchronous and so must be the callback (a returned promise is refused, see syncOnly).
 */
export type TransactionWrite<A> = (arg: A, tx: unknown) => void | Promise<void>;

/**
 * For callers that hold a synchronous (SQLite) transaction: a callback that returned a promise
 * would run its writes after the commit, outside the transaction; that is a programming error,
 * thrown so the transaction rolls back instead.
 */
export function syncOnly(result: void | Promise<void>, what: string): void {
  if (result instanceof Promise) {
    // Its outcome no longer matters; the transaction is rolled back by the throw below.
    result.catch(() => undefined);
    throw new Error(`${what} returned a promise inside a synchronous SQLite transaction`);
  }
}

/** What a finished job recorded (the queue's JobOutput, restated here to keep the store a leaf). */
export interface JobOutputLike {
  result: Record<string, unknown>;
  artifacts: string[];
}

export type JobListQuery = PageQuery & { filters?: { status?: string; type?: string } };
export interface JobPage {
  data: JobRecord[];
  hasMore: boolean;
}

/**
 * What the HTTP layer reads of job records. Asynchronous because a cluster node reads them from
 * the shared database; the single-node store answers from SQLite at once.
 */
export interface JobReader {
  /** The job, or NotFoundError. */
  get(id: string): Promise<JobRecord>;
  /** A page of jobs, newest first. */
  list(q?: JobListQuery): Promise<JobPage>;
}

export class JobStore implements JobReader {
  private readonly stmts;
  /** Live copies of unfinished jobs: the source of truth for progress between writes. */
  private readonly live = new Map<string, JobRecord>();
  private readonly lastProgressWrite = new Map<string, number>();
  private readonly pager: KeysetPager<JobRow>;
  private readonly hooks: TransitionHook[] = [];

  constructor(private readonly db: Db) {
    this.pager = new KeysetPager<JobRow>(db, 'jobs', 'job', ['status', 'type']);
    this.stmts = {
      insert: db.prepare(
        `INSERT INTO jobs (id, type, params, status, result, artifacts, error, created_at, started_at, finished_at, progress, progress_label)
         VALUES (@id, @type, @params, @status, @result, @artifacts, @error, @created_at, @started_at, @finished_at, @progress, @progress_label)`,
      ),
      update: db.prepare(
        `UPDATE jobs SET status=@status, result=@result, artifacts=@artifacts, error=@error, started_at=@started_at,
           finished_at=@finished_at, progress=@progress, progress_label=@progress_label WHERE id=@id`,
      ),
      progress: db.prepare('UPDATE jobs SET progress=?, progress_label=? WHERE id=?'),
      one: db.prepare<[string], JobRow>('SELECT * FROM jobs WHERE id = ?'),
      delete: db.prepare('DELETE FROM jobs WHERE id = ?'),
      unfinished: db.prepare<[], JobRow>("SELECT * FROM jobs WHERE status IN ('queued', 'running')"),
      prune: db.prepare(
        "DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled') AND COALESCE(finished_at, created_at) < ?",
      ),
    };
  }

  /** Adds a hook run with every transition written from now on (see TransitionHook). */
  onTransition(hook: TransitionHook): void {
    this.hooks.push(hook);
  }

  /** Writes a transition and runs the hooks, all in one transaction. */
  private writeTransition(job: JobRecord): void {
    if (this.hooks.length === 0) {
      this.stmts.update.run(toRow(job));
      return;
    }
    this.db.transaction(() => {
      this.stmts.update.run(toRow(job));
      for (const hook of this.hooks) hook(job);
    })();
  }

  /**
   * Records a new queued job. `within` runs in the same transaction, for what must be recorded
   * with the job or not at all (its webhook subscription).
   */
  create(type: string, params: Record<string, unknown>, within?: TransactionWrite<JobRecord>): JobRecord {
    return this.createAll([{ type, params, within }])[0]!;
  }

  /**
   * Records queued jobs in one transaction. Each item's `within` and then `alsoWrite` run inside
   * it, so what they write (a job's webhook subscription, the request's idempotency key) is
   * committed together with the jobs or not at all. They get `undefined` as the transaction handle
   * and must be synchronous: better-sqlite3 transactions cannot span an await.
   */
  createAll(
    items: { type: string; params: Record<string, unknown>; within?: TransactionWrite<JobRecord> }[],
    alsoWrite?: TransactionWrite<JobRecord[]>,
  ): JobRecord[] {
    const jobs = items.map(({ type, params }) => newJobRecord(type, params));
    this.db.transaction(() => {
      jobs.forEach((job, i) => {
        this.stmts.insert.run(toRow(job));
        syncOnly(items[i]!.within?.(job, undefined), 'a job creation hook');
      });
      syncOnly(alsoWrite?.(jobs, undefined), 'a job creation hook');
    })();
    for (const job of jobs) this.live.set(job.id, job);
    return jobs;
  }

  /** Writes a transition (anything but progress) and keeps the live copy in step. */
  save(job: JobRecord): void {
    this.writeTransition(job);
    if (FINISHED.has(job.status)) {
      this.live.delete(job.id);
      this.lastProgressWrite.delete(job.id);
    } else {
      if (job.status === 'running' && !this.lastProgressWrite.has(job.id)) this.lastProgressWrite.set(job.id, Date.now());
      this.live.set(job.id, job);
    }
  }

  setProgress(job: JobRecord, fraction: number, label: string | undefined): void {
    job.progress = Math.min(1, Math.max(0, fraction));
    if (label !== undefined) job.progress_label = label;
    const now = Date.now();
    const last = this.lastProgressWrite.get(job.id) ?? 0;
    if (now - last >= PROGRESS_WRITE_MS) {
      this.stmts.progress.run(job.progress, job.progress_label, job.id);
      this.lastProgressWrite.set(job.id, now);
    }
  }

  /** A job by id, live copy first (JobReader). */
  async get(id: string): Promise<JobRecord> {
    return this.getNow(id);
  }

  /** `get` for the queue that owns the live copies and needs them within one synchronous step. */
  getNow(id: string): JobRecord {
    const live = this.live.get(id);
    if (live) return live;
    const row = isJobId(id) ? this.stmts.one.get(id) : undefined;
    if (!row) throw new NotFoundError(`unknown job '${id}'`);
    return fromRow(row);
  }

  /**
   * A page of jobs, newest first (every job when `limit` is unset). Unfinished jobs are shown as
   * their live copy, so a list shows the same progress as GET by id.
   */
  async list(q: JobListQuery = {}): Promise<JobPage> {
    const page = this.pager.page(q);
    return { data: page.rows.map((row) => this.live.get(row.id) ?? fromRow(row)), hasMore: page.hasMore };
  }

  delete(id: string): void {
    this.stmts.delete.run(id);
    this.live.delete(id);
    this.lastProgressWrite.delete(id);
  }

  /**
   * Jobs the previous process left queued or running can never finish: mark them failed with
   * an error that says why, so nothing disappears silently. A running job whose output was
   * already stored (the process died between saving it and recording success) is completed
   * from it instead: `recover` returns that result. Returns how many were failed and recovered.
   */
  async failInterrupted(
    recover: (job: JobRecord) => Promise<JobOutputLike | null> = async () => null,
    now = Date.now() / 1000,
  ): Promise<{ failed: number; recovered: number }> {
    let failed = 0;
    let recovered = 0;
    for (const row of this.stmts.unfinished.all()) {
      const job = fromRow(row);
      const output = job.status === 'running' ? await recover(job) : null;
      if (output) {
        job.status = 'succeeded';
        job.result = output.result;
        job.artifacts = output.artifacts;
        job.progress = 1;
        job.progress_label = 'done';
        recovered++;
      } else {
        job.error =
          `the kiapi server stopped while this job was ${job.status} (crash or shutdown); ` +
          'its work was lost — submit the request again';
        job.status = 'failed';
        failed++;
      }
      job.finished_at = now;
      this.writeTransition(job);
    }
    return { failed, recovered };
  }

  /** Removes finished jobs older than `retentionS`; returns how many. */
  prune(retentionS: number, now = Date.now() / 1000): number {
    return this.stmts.prune.run(now - retentionS).changes;
  }
}

/** A new job as it is queued: a fresh id, now, no progress yet. */
export function newJobRecord(type: string, params: Record<string, unknown>, now = Date.now() / 1000): JobRecord {
  return {
    type,
    params,
    id: newJobId(),
    status: 'queued',
    result: null,
    artifacts: [],
    error: null,
    created_at: now,
    started_at: null,
    finished_at: null,
    progress: null,
    progress_label: 'queued',
  };
}

/** A job's row: the record with its JSON fields as text (both stores keep them so). */
export function toRow(job: JobRecord): JobRow {
  return {
    ...job,
    params: JSON.stringify(job.params),
    result: job.result === null ? null : JSON.stringify(job.result),
    artifacts: JSON.stringify(job.artifacts),
  };
}

/** The record of a row (columns beyond the record's are left out). */
export function fromRow(row: JobRow): JobRecord {
  return {
    type: row.type,
    params: JSON.parse(row.params) as Record<string, unknown>,
    id: row.id,
    status: row.status,
    result: row.result === null ? null : (JSON.parse(row.result) as Record<string, unknown>),
    artifacts: JSON.parse(row.artifacts) as string[],
    error: row.error,
    created_at: row.created_at,
    started_at: row.started_at,
    finished_at: row.finished_at,
    progress: row.progress,
    progress_label: row.progress_label,
  };
}
