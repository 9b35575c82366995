/**
 * The job queue of a cluster node: the same API as the single-node queue (JobQueueApi), with the
 * jobs of every node in the shared database and pg-boss as the queue engine.
 *
 * - Submission: the records, what goes with them (idempotency key, webhook subscriptions), one
 *   pg-boss job each (one queue per model) and the `queued` events commit in one transaction.
 * - Claims: a node takes one job at a time (single flight per node, as on one machine), from the
 *   queues of the models it can run, those it holds warm first. pg-boss's fetch (SKIP LOCKED) and
 *   the record's `running, owner, attempt + 1` commit together, so exactly one node holds an
 *   attempt. Idle nodes are woken by a NOTIFY sent with every submission; a slow poll covers a
 *   lost notification.
 * - Completion is fenced by (owner, attempt): a node that lost its job to the lease sweep cannot
 *   overwrite the newer attempt.
 * - A node that stops renewing its lease has its running job handed back (another attempt) or
 *   failed with the reason when no attempt is left; the node itself stops the job when it cannot
 *   renew for half the lease, before anyone may hand it out.
 * - Cancel and delete work from any node: a queued job is canceled in the database; a running
 *   one is asked to stop by NOTIFY to the node running it.
 */
import type pg from 'pg';
import type PgBoss from 'pg-boss';
import type { Logger } from 'pino';
import { BusyError, CanceledError, ConflictError, NotFoundError, UnavailableError, isKiapiError } from '../core/errors.js';
import type { Workload } from '../core/jobs/eta.js';
import type {
  JobHandler,
  JobOutcome,
  JobQueueApi,
  JobView,
  RecordOptions,
  Runnable,
  SubmitItem,
  SubmitOptions,
} from '../core/jobs/job-queue.js';
import { FINISHED, fromRow, newJobRecord, type JobRecord } from '../core/jobs/job-store.js';
import type { ClusterJobEvents } from './cluster-events.js';
import type { NodeRegistry } from './nodes.js';
import { insertEvent } from './pg-events.js';
import type { JobRow, PgJobStore } from './pg-job-store.js';
import { inTransaction, onClient, unavailable } from './pg.js';

const WAKE_CHANNEL = 'kiapi_jobs';
const CANCEL_CHANNEL = 'kiapi_cancel';
/** The fallback poll of an idle node (NOTIFY does the real wake-up). */
const POLL_MS = 1000;
/** How often every node looks for jobs of silent nodes. */
const SWEEP_MS = 500;
/** Progress is written to the record and published at most this often per job. */
const PROGRESS_EVERY_MS = 250;
/** A job waits this long for a node that holds its model warm before a cold node takes it. */
const WARM_GRACE_S = 1;
/** A job that has waited this long is taken first whatever is warm: warm work never starves a cold model. */
const FAIRNESS_S = 30;

type Queryable = Pick<pg.ClientBase, 'query'>;

export interface ClusterQueueOptions {
  pool: pg.Pool;
  boss: PgBoss;
  store: PgJobStore;
  events: ClusterJobEvents;
  nodes: NodeRegistry;
  nodeId: string;
  log: Logger;
  maxQueue: number;
  /** Attempts of a job whose node died (KIAPI_CLUSTER_MAX_ATTEMPTS). */
  maxAttempts: number;
  /** pg-boss expiration: the longest one attempt may stay active (a backstop behind the lease). */
  expireInSeconds: number;
  /** Rebuilds a job's handler from what it runs (the capability runners). */
  build: (runnable: Runnable) => Promise<JobHandler>;
  /** Fields other owners add to every view of a job (its webhook deliveries). */
  extraFields?: (job: JobRecord) => Promise<Record<string, unknown>>;
  /** Runs in the transaction of every transition (the webhook outbox). */
  onTransition?: (job: JobRecord, view: Record<string, unknown>, tx: pg.PoolClient) => Promise<void>;
  /** Lets go of the input holds a silent node's submissions kept (their jobs are the cluster's now). */
  releaseHolds?: (nodeId: string) => Promise<unknown>;
  /** The models this node can run now (queue names are made from them). */
  capable: () => string[];
  /** The models this node holds loaded. */
  warm: () => string[];
}

interface Running {
  job: JobRecord;
  attempt: number;
  queue: string;
  controller: AbortController;
  workload: Workload | null;
  startedMs: number;
  lastProgressMs: number;
  runnable: Runnable;
}

/** pg-boss ids are UUIDs: a job id's 32 hex digits are one. */
function bossId(jobId: string): string {
  const h = jobId.replace(/^job_/, '');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** The pg-boss queue of a model (`family/name`): letters, digits, `.`, `-`, `_` only. */
export function queueName(model: string): string {
  return `kiapi.${model.replace(/[^A-Za-z0-9_-]/g, '.')}`;
}

export class ClusterJobQueue implements JobQueueApi {
  readonly events: ClusterJobEvents;
  private running: Running | null = null;
  private runningDone: Promise<void> = Promise.resolve();
  private claiming = false;
  private claimAgain = false;
  private closed = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly stops: (() => unknown)[] = [];
  /** Jobs submitted here: what to do once they end (let go of their inputs). */
  private readonly settled = new Map<string, () => void>();
  /** Outcomes of jobs this node ran, for a waiter here (the error object, the timings). */
  private readonly outcomes = new Map<string, JobOutcome>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly createdQueues = new Set<string>();
  /** Jobs queued in the whole cluster, as the last poll counted them (/health). */
  private queued = 0;

  constructor(private readonly o: ClusterQueueOptions) {
    this.events = o.events;
  }

  /** Listens for wake-ups and cancels, recovers this node's own interrupted jobs, starts claiming. */
  async start(): Promise<void> {
    const { events } = this.o;
    this.stops.push(events.subscribeAll((e) => this.onEvent(e.jobId, e.event)));
    this.stops.push(await this.o.events.listenRaw(WAKE_CHANNEL, () => this.pump()));
    this.stops.push(await this.o.events.listenRaw(CANCEL_CHANNEL, (payload) => this.onCancel(payload)));
    this.stops.push(this.o.nodes.onLeaseLost(() => this.abortRunning('this node lost its lease (the shared database was unreachable); another node may run the job')));
    await this.ensureQueues(this.o.capable().map(queueName));
    await this.recoverOwn();
    const poll = setInterval(() => {
      this.pump();
      void this.countQueued();
      this.advertise();
    }, POLL_MS);
    const sweep = setInterval(() => void this.sweep(), SWEEP_MS);
    poll.unref();
    sweep.unref();
    this.timers.push(poll, sweep);
    this.pump();
  }

  get queueLength(): number {
    return this.queued;
  }

  get waiterCount(): number {
    let n = 0;
    for (const set of this.waiters.values()) n += set.size;
    return n;
  }

  get runningJobId(): string | null {
    return this.running && !FINISHED.has(this.running.job.status) ? this.running.job.id : null;
  }

  async submit(type: string, params: Record<string, unknown>, handler: JobHandler, opts: SubmitOptions & RecordOptions = {}): Promise<JobRecord> {
    return (await this.submitMany([{ type, params, handler, opts }], opts))[0]!;
  }

  async submitMany(items: SubmitItem[], { record }: RecordOptions = {}): Promise<JobRecord[]> {
    if (this.closed) throw new UnavailableError('the server is shutting down; submit the request again once it is back');
    for (const item of items) {
      if (!item.opts?.runnable || !item.opts.model) throw new Error(`job type ${item.type} cannot run on another node (no runnable)`);
    }
    const models = [...new Set(items.map((i) => i.opts!.model!))];
    await this.assertRunnable(models);
    await this.ensureQueues(models.map(queueName));
    const now = Date.now() / 1000;
    const jobs = items.map(({ type, params }) => newJobRecord(type, params, now));

    try {
      await inTransaction(this.o.pool, async (tx) => {
        const queued = await tx.query<{ n: string }>("SELECT count(*) AS n FROM jobs WHERE status = 'queued'");
        const n = Number(queued.rows[0]!.n);
        const free = this.o.maxQueue - n;
        if (items.length > free) {
          throw new BusyError(
            items.length > 1
              ? `the cluster's job queue has room for ${Math.max(0, free)} more jobs and this request needs ${items.length} (KIAPI_MAX_QUEUE=${this.o.maxQueue}); retry later or ask for fewer images`
              : `the cluster's job queue is full (${n} queued, KIAPI_MAX_QUEUE=${this.o.maxQueue}); retry later`,
            5,
          );
        }
        for (const [i, job] of jobs.entries()) {
          const item = items[i]!;
          const queue = queueName(item.opts!.model!);
          await this.o.store.insert(tx, job, {
            queue,
            owner: null,
            attempt: 0,
            max_attempts: this.o.maxAttempts,
            runnable: JSON.stringify(item.opts!.runnable),
            workload: item.opts?.workload ? JSON.stringify(item.opts.workload) : null,
            cancel_requested_at: null,
          });
          await item.opts?.onCreate?.(job, tx);
          await this.o.boss.send(queue, { jobId: job.id }, {
            id: bossId(job.id),
            retryLimit: this.o.maxAttempts - 1,
            retryDelay: 0,
            expireInSeconds: this.o.expireInSeconds,
            ...onClient(tx),
          });
        }
        await record?.(jobs, tx);
        await tx.query('SELECT pg_notify($1, $2)', [WAKE_CHANNEL, '']);
        // Last: the event insert holds the cluster-wide event-order lock until COMMIT.
        for (const job of jobs) await this.insertState(tx, job, 'queued');
      });
    } catch (err) {
      throw unavailable(err);
    }
    items.forEach((item, i) => {
      if (item.opts?.onSettled) this.settled.set(jobs[i]!.id, item.opts.onSettled);
    });
    this.queued += jobs.length;
    return jobs.map((j) => ({ ...j }));
  }

  /** 503 at submission when no live node can run a model (as one node's readiness check does). */
  private async assertRunnable(models: string[]): Promise<void> {
    const live = await this.o.nodes.live().catch((err: unknown) => {
      throw unavailable(err);
    });
    for (const model of models) {
      if (live.some((n) => n.capable.includes(model))) continue;
      const offered = [...new Set(live.flatMap((n) => n.capable))].sort();
      throw new UnavailableError(
        `no node of the cluster can run ${model} now (${live.length} node${live.length === 1 ? '' : 's'} live; they can run ${offered.length > 0 ? offered.join(', ') : 'nothing'}); activate it on a node (kiapi activate) or start a node that has it`,
      );
    }
  }

  private async ensureQueues(names: string[]): Promise<void> {
    const missing = names.filter((n) => !this.createdQueues.has(n));
    if (missing.length === 0) return;
    // pg-boss 10's createQueue is idempotent, but nodes creating queues at once deadlock (each
    // queue attaches a partition to one table): they take turns under an advisory lock.
    await inTransaction(this.o.pool, async (tx) => {
      await tx.query("SELECT pg_advisory_xact_lock(hashtext('kiapi:create-queues'))");
      const existing = await tx.query<{ name: string }>('SELECT name FROM pgboss.queue WHERE name = ANY($1)', [missing]);
      const have = new Set(existing.rows.map((r) => r.name));
      for (const name of missing) if (!have.has(name)) await this.o.boss.createQueue(name);
    });
    for (const n of missing) this.createdQueues.add(n);
  }

  async view(job: JobRecord): Promise<JobView> {
    const extra = this.o.extraFields ? await this.o.extraFields(job) : {};
    return { ...(await this.placement(job)), ...extra };
  }

  private async placement(job: JobRecord): Promise<JobRecord & { queue_position: number | null; eta_s: number | null }> {
    if (job.status !== 'queued') return { ...job, queue_position: null, eta_s: this.runningEta(job) };
    try {
      const res = await this.o.pool.query<{ n: string }>(
        `SELECT count(*) AS n FROM jobs j, jobs me
          WHERE me.id = $1 AND j.status = 'queued' AND j.queue = me.queue AND (j.created_at, j.id) <= (me.created_at, me.id)`,
        [job.id],
      );
      const n = Number(res.rows[0]?.n ?? 0);
      return { ...job, queue_position: n > 0 ? n : null, eta_s: null };
    } catch (err) {
      throw unavailable(err);
    }
  }

  /** What remains of the job this node runs, from its own step rate (other nodes: unknown). */
  private runningEta(job: JobRecord): number | null {
    const r = this.running;
    if (!r || r.job.id !== job.id || FINISHED.has(job.status) || !r.job.progress || r.job.progress <= 0) return null;
    const elapsed = (Date.now() - r.startedMs) / 1000;
    return Math.round((elapsed / r.job.progress - elapsed) * 10) / 10;
  }

  async wait(jobId: string, timeoutMs: number, abort?: AbortSignal): Promise<JobOutcome | null> {
    // Subscribed before the record is read: an end between the two is not missed. Each event of
    // the job wakes the waiter once; it then reads the record and waits for the next.
    let woken!: Promise<void>;
    let resolveWoken!: () => void;
    const rearm = () => {
      woken = new Promise<void>((r) => (resolveWoken = r));
    };
    rearm();
    const wake = () => resolveWoken();
    const set = this.waiters.get(jobId) ?? new Set();
    set.add(wake);
    this.waiters.set(jobId, set);
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => wake();
    abort?.addEventListener('abort', onAbort, { once: true });
    try {
      const first = await this.o.store.get(jobId);
      if (FINISHED.has(first.status)) return this.outcomeOf(first);
      const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
      let last = first;
      for (;;) {
        if ((await Promise.race([woken.then(() => 'woken' as const), timedOut])) === 'timeout' || abort?.aborted) return null;
        rearm();
        let job: JobRecord;
        try {
          job = await this.o.store.get(jobId);
        } catch (err) {
          if (!(err instanceof NotFoundError)) throw err;
          // Deleted while it was waited for (DELETE cancels it first): told as a single node tells it.
          return { job: { ...last, status: 'canceled', error: 'deleted by request', progress_label: 'canceled', finished_at: Date.now() / 1000 } };
        }
        if (FINISHED.has(job.status)) return this.outcomeOf(job);
        last = job;
      }
    } finally {
      clearTimeout(timer);
      abort?.removeEventListener('abort', onAbort);
      set.delete(wake);
      if (set.size === 0) this.waiters.delete(jobId);
    }
  }

  private outcomeOf(job: JobRecord): JobOutcome {
    const here = this.outcomes.get(job.id);
    return here ? { ...here, job } : { job };
  }

  async cancel(jobId: string, reason = 'canceled by request'): Promise<JobRecord> {
    try {
      const canceled = await inTransaction(this.o.pool, async (tx) => {
        const row = (await tx.query<JobRow>("SELECT * FROM jobs WHERE id = $1 AND status = 'queued' FOR UPDATE", [jobId])).rows[0];
        if (!row) return null;
        const job = fromRow(row);
        job.status = 'canceled';
        job.finished_at = Date.now() / 1000;
        job.error = `${reason} before it started`;
        job.progress_label = 'canceled';
        await tx.query("UPDATE jobs SET status = 'canceled', finished_at = $2, error = $3, progress_label = 'canceled' WHERE id = $1", [jobId, job.finished_at, job.error]);
        await this.o.boss.cancel(row.queue, bossId(jobId), onClient(tx));
        await this.terminalInTx(tx, job);
        return job;
      });
      if (canceled) return canceled;
      const job = await this.o.store.get(jobId);
      if (job.status !== 'running') {
        throw new ConflictError(`job '${jobId}' is already ${job.status}; only queued or running jobs can be canceled`);
      }
      await this.o.pool.query(
        "UPDATE jobs SET cancel_requested_at = $2, progress_label = 'canceling' WHERE id = $1 AND status = 'running' AND cancel_requested_at IS NULL",
        [jobId, Date.now() / 1000],
      );
      await this.o.pool.query('SELECT pg_notify($1, $2)', [CANCEL_CHANNEL, JSON.stringify({ jobId, reason })]);
      return { ...job, progress_label: 'canceling' };
    } catch (err) {
      throw unavailable(err);
    }
  }

  async delete(jobId: string): Promise<boolean> {
    const job = await this.o.store.get(jobId);
    const wasRunning = job.status === 'running';
    if (!FINISHED.has(job.status)) {
      try {
        await this.cancel(jobId, 'deleted by request');
      } catch (err) {
        if (!(err instanceof ConflictError)) throw err;
      }
    }
    try {
      await inTransaction(this.o.pool, async (tx) => {
        const gone = await tx.query<JobRow>('DELETE FROM jobs WHERE id = $1 RETURNING *', [jobId]);
        const row = gone.rows[0];
        // A running job's own end will never be recorded now (its record is gone): its terminal
        // event is sent here, so waiters and watchers on every node stop waiting for it.
        if (row?.status === 'running') {
          const ended = { ...fromRow(row), status: 'canceled' as const, error: 'deleted by request', progress_label: 'canceled', finished_at: Date.now() / 1000 };
          await insertEvent(tx, { jobId, jobType: ended.type, status: 'canceled', event: 'canceled', data: this.viewOfFinal(ended) });
        }
      });
    } catch (err) {
      throw unavailable(err);
    }
    return wasRunning;
  }

  /**
   * Stops claiming; the running job gets `graceMs` to finish, then it is handed back to the
   * cluster (another node runs it) or failed when it has no attempt left. Queued jobs stay
   * queued for the other nodes.
   */
  async close(graceMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const stop of this.stops.splice(0)) await stop();
    const running = this.running;
    if (!running) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), graceMs)));
    try {
      if ((await Promise.race([this.runningDone.then(() => 'done' as const), timeout])) === 'timeout') {
        this.o.log.warn({ job_id: running.job.id }, 'shutdown grace period over; handing the running job back to the cluster');
        running.controller.abort(new HandBack(`node ${this.o.nodeId} shut down while it ran attempt ${running.attempt} of this job`));
        await this.runningDone;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Claims and runs the next job when this node is idle; coalesces concurrent wake-ups. */
  private pump(): void {
    if (this.closed || this.running || this.o.nodes.lost) return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    this.claiming = true;
    void this.claim()
      .then((claimed) => {
        if (claimed) this.run(claimed);
      })
      .catch((err: unknown) => this.o.log.warn({ err }, 'could not claim a job'))
      .finally(() => {
        this.claiming = false;
        if (this.claimAgain) {
          this.claimAgain = false;
          this.pump();
        }
      });
  }

  /**
   * Queues in order of preference: models held warm here first; then the other models this node
   * can run, but a queue whose model another idle node holds warm only once its oldest job has
   * waited WARM_GRACE_S (that node takes it within milliseconds; a busy cluster never leaves a
   * job waiting for a warm node that is not coming).
   */
  private async preference(): Promise<string[]> {
    const capable = new Set(this.o.capable().map(queueName));
    const warm = this.o.warm().map(queueName).filter((q) => capable.has(q));
    const waiting = await this.o.pool.query<{ queue: string; oldest: number }>(
      "SELECT queue, min(created_at) AS oldest FROM jobs WHERE status = 'queued' AND queue = ANY($1) GROUP BY queue ORDER BY oldest",
      [[...capable]],
    );
    if (waiting.rows.length === 0) return [];
    const others = (await this.o.nodes.live()).filter((n) => n.nodeId !== this.o.nodeId && !n.busy);
    const warmElsewhere = new Set(others.flatMap((n) => n.warm.map(queueName)));
    const now = Date.now() / 1000;
    const starving = waiting.rows.filter((r) => now - r.oldest >= FAIRNESS_S).map((r) => r.queue);
    const first = [...starving, ...waiting.rows.filter((r) => warm.includes(r.queue) && !starving.includes(r.queue)).map((r) => r.queue)];
    const rest = waiting.rows
      .filter((r) => !first.includes(r.queue) && (!warmElsewhere.has(r.queue) || now - r.oldest >= WARM_GRACE_S))
      .map((r) => r.queue);
    if (waiting.rows.some((r) => !first.includes(r.queue) && !rest.includes(r.queue))) {
      // Skipped for a warm node: look again once the grace is over, in case it does not come.
      setTimeout(() => this.pump(), WARM_GRACE_S * 1000).unref();
    }
    return [...first, ...rest];
  }

  private async claim(): Promise<Running | null> {
    const order = await this.preference();
    if (order.length === 0) return null;
    await this.ensureQueues(order);
    return inTransaction(this.o.pool, async (tx) => {
      for (const queue of order) {
        const [bj] = await this.o.boss.fetch(queue, { batchSize: 1, ...onClient(tx) });
        if (!bj) continue;
        const jobId = (bj.data as { jobId: string }).jobId;
        const now = Date.now() / 1000;
        const row = (
          await tx.query<JobRow>(
            `UPDATE jobs SET status = 'running', owner = $2, attempt = attempt + 1, started_at = $3, progress = 0, progress_label = 'running', error = NULL
              WHERE id = $1 AND status = 'queued' RETURNING *`,
            [jobId, this.o.nodeId, now],
          )
        ).rows[0];
        if (!row) {
          // Canceled or deleted while pg-boss still held it: nothing to run.
          await this.o.boss.complete(queue, bj.id, {}, onClient(tx));
          continue;
        }
        const job = fromRow(row);
        await this.o.onTransition?.(job, this.viewOfFinal(job), tx);
        await this.insertState(tx, job, 'started');
        return {
          job,
          attempt: row.attempt,
          queue,
          controller: new AbortController(),
          workload: row.workload ? (JSON.parse(row.workload) as Workload) : null,
          startedMs: Date.now(),
          lastProgressMs: 0,
          runnable: JSON.parse(row.runnable) as Runnable,
        };
      }
      return null;
    });
  }

  private run(claimed: Running): void {
    this.running = claimed;
    void this.o.nodes.update({ busy: true, runningJob: claimed.job.id });
    this.runningDone = this.execute(claimed)
      .catch((err: unknown) => this.o.log.error({ err, job_id: claimed.job.id }, 'recording the end of a job failed'))
      .finally(() => {
        this.running = null;
        void this.o.nodes.update({ busy: false, runningJob: null, warm: this.o.warm() });
        this.pump();
      });
    void this.announcePositions(claimed.queue);
  }

  /** After a job left a queue, every job behind it moved up: a `position` event each (bounded). */
  private async announcePositions(queue: string): Promise<void> {
    try {
      const res = await this.o.pool.query<{ id: string; type: string }>(
        "SELECT id, type FROM jobs WHERE status = 'queued' AND queue = $1 ORDER BY created_at, id LIMIT 100",
        [queue],
      );
      res.rows.forEach((r, i) => {
        this.events.emit(r.id, r.type, 'queued', 'position', { job_id: r.id, type: r.type, status: 'queued', queue_position: i + 1, eta_s: null, at: Date.now() / 1000 });
      });
    } catch (err) {
      this.o.log.debug({ err }, 'could not announce queue positions');
    }
  }

  private async execute(r: Running): Promise<void> {
    const { job, controller } = r;
    const log = this.o.log.child({ job_id: job.id, job_type: job.type, attempt: r.attempt });
    const t0 = Date.now();
    let out: Awaited<ReturnType<JobHandler>> | null = null;
    let failure: unknown = null;
    try {
      const handler = await this.o.build(r.runnable);
      out = await handler({
        job,
        signal: controller.signal,
        progress: (fraction, label) => {
          if (FINISHED.has(job.status)) return;
          job.progress = Math.min(1, Math.max(0, fraction));
          if (label !== undefined) job.progress_label = label;
          const now = Date.now();
          if (now - r.lastProgressMs < PROGRESS_EVERY_MS) return;
          r.lastProgressMs = now;
          this.o.store.writeProgress(job, this.o.nodeId, r.attempt).catch((err: unknown) => log.debug({ err }, 'could not write progress'));
          this.events.emit(job.id, job.type, job.status, 'progress', {
            job_id: job.id,
            type: job.type,
            status: job.status,
            progress: job.progress,
            label: job.progress_label,
            step: null,
            total: null,
            eta_s: this.runningEta(job),
            at: now / 1000,
          });
        },
        previews: this.events.demand(job.id),
        preview: (p) => {
          if (!FINISHED.has(job.status)) this.events.preview(job.id, job.type, p);
        },
        log,
      });
    } catch (err) {
      failure = err;
    }
    const reason = controller.signal.reason as unknown;
    if (failure !== null && reason instanceof HandBack) {
      await this.whileUnreachable(`handing job ${job.id} back`, () => this.handBack(job.id, r.attempt, reason.message));
      return;
    }
    const final: JobRecord = { ...job, finished_at: Date.now() / 1000 };
    let cause: unknown;
    if (out) {
      Object.assign(final, { status: 'succeeded', result: out.result, artifacts: out.artifacts, progress: 1, progress_label: 'done' });
    } else {
      const canceled = failure instanceof CanceledError || controller.signal.aborted;
      const message = canceled
        ? reason instanceof Error
          ? reason.message
          : failure instanceof Error
            ? failure.message
            : 'canceled'
        : failure instanceof Error
          ? failure.message
          : String(failure);
      if (!canceled) log.error({ err: failure }, 'job failed');
      Object.assign(final, { status: canceled ? 'canceled' : 'failed', error: message, progress_label: canceled ? 'canceled' : job.progress_label });
      cause = failure;
    }
    // Kept before the record is written: a waiter here wakes on the terminal event and reads it.
    this.outcomes.set(job.id, { job: final, error: isKiapiError(cause) ? cause : undefined, timings: out?.timings });
    setTimeout(() => this.outcomes.delete(job.id), 60_000).unref();
    const written = await this.finishFenced(final, r.attempt, r.queue);
    job.status = final.status;
    if (!written) log.warn({ elapsed_ms: Date.now() - t0 }, 'the job record no longer names this attempt (the job was deleted, or handed to another node); its result is dropped');
  }

  /** Records a final state, fenced by this node's attempt (false: the attempt was taken away). */
  private async finishFenced(job: JobRecord, attempt: number, queue: string): Promise<boolean> {
    return this.whileUnreachable(`recording the end of job ${job.id}`, () =>
      inTransaction(this.o.pool, async (tx) => {
        if (!(await this.o.store.writeFenced(tx, job, this.o.nodeId, attempt))) return false;
        await this.o.boss.complete(queue, bossId(job.id), {}, onClient(tx));
        await this.terminalInTx(tx, job);
        return true;
      }),
    );
  }

  /**
   * Runs `work`, again and again while the database is unreachable: the end of an attempt must
   * be recorded once it is back, or the job would stay `running` under this node for good. Both
   * writes are fenced by owner and attempt, so a late one never overwrites a newer attempt.
   */
  private async whileUnreachable<T>(what: string, work: () => Promise<T>): Promise<T> {
    for (let delay = 200; ; delay = Math.min(5000, delay * 2)) {
      try {
        return await work();
      } catch (err) {
        if (!(unavailable(err) instanceof UnavailableError)) throw err;
        this.o.log.warn({ err }, `the shared database is unreachable while ${what}; retrying`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** The terminal event (with the job as the API shows it) and the transition hooks, in `tx`. */
  private async terminalInTx(tx: pg.PoolClient, job: JobRecord): Promise<void> {
    const view = this.viewOfFinal(job);
    await this.o.onTransition?.(job, view, tx);
    await insertEvent(tx, { jobId: job.id, jobType: job.type, status: job.status, event: job.status, data: view });
  }

  private viewOfFinal(job: JobRecord): Record<string, unknown> {
    return { ...job, queue_position: null, eta_s: null };
  }

  private async insertState(tx: Queryable, job: JobRecord, event: 'queued' | 'started'): Promise<void> {
    const data =
      event === 'started'
        ? { job_id: job.id, type: job.type, status: job.status, started_at: job.started_at, eta_s: null, at: Date.now() / 1000 }
        : { job_id: job.id, type: job.type, status: job.status, queue_position: null, eta_s: null, at: Date.now() / 1000 };
    await insertEvent(tx, { jobId: job.id, jobType: job.type, status: job.status, event, data });
  }

  /**
   * The attempt is given up without the job's fault (node shutdown, silent node): pg-boss's retry
   * policy queues it again, or the record says why it failed when no attempt is left.
   */
  private async handBack(jobId: string, attempt: number, reason: string, owner = this.o.nodeId, db?: pg.PoolClient): Promise<boolean> {
    const work = async (tx: pg.PoolClient) => {
      const row = (
        await tx.query<JobRow>("SELECT * FROM jobs WHERE id = $1 AND owner = $2 AND attempt = $3 AND status = 'running' FOR UPDATE SKIP LOCKED", [
          jobId,
          owner,
          attempt,
        ])
      ).rows[0];
      if (!row) return false;
      await this.o.boss.fail(row.queue, bossId(jobId), { message: reason }, onClient(tx));
      const job = fromRow(row);
      if (row.attempt < row.max_attempts && row.cancel_requested_at === null) {
        await tx.query(
          "UPDATE jobs SET status = 'queued', owner = NULL, started_at = NULL, progress = NULL, progress_label = 'queued', error = $2 WHERE id = $1",
          [jobId, `attempt ${row.attempt}: ${reason}; queued again`],
        );
        await tx.query('SELECT pg_notify($1, $2)', [WAKE_CHANNEL, '']);
        job.status = 'queued';
        job.progress_label = 'queued';
        await this.insertState(tx, job, 'queued');
      } else {
        Object.assign(job, {
          status: row.cancel_requested_at !== null ? 'canceled' : 'failed',
          finished_at: Date.now() / 1000,
          error: row.cancel_requested_at !== null ? `canceled by request; ${reason}` : `${reason}; no attempts left (KIAPI_CLUSTER_MAX_ATTEMPTS=${row.max_attempts})`,
        });
        await tx.query('UPDATE jobs SET status = $2, finished_at = $3, error = $4, owner = NULL WHERE id = $1', [jobId, job.status, job.finished_at, job.error]);
        await this.terminalInTx(tx, job);
      }
      return true;
    };
    return db ? work(db) : inTransaction(this.o.pool, work);
  }

  /** Jobs of nodes silent for longer than the lease: handed back (any node may sweep; SKIP LOCKED). */
  private async sweep(): Promise<void> {
    if (this.closed) return;
    try {
      const stale = await this.o.nodes.stale();
      if (stale.length === 0) return;
      const rows = await this.o.pool.query<{ id: string; owner: string; attempt: number }>(
        "SELECT id, owner, attempt FROM jobs WHERE status = 'running' AND owner = ANY($1)",
        [stale],
      );
      for (const r of rows.rows) {
        const handed = await this.handBack(r.id, r.attempt, `node ${r.owner} stopped answering while it ran attempt ${r.attempt} of this job`, r.owner);
        if (handed) this.o.log.warn({ job_id: r.id, node: r.owner }, 'took a job from a silent node');
      }
      for (const node of stale) await this.o.releaseHolds?.(node);
    } catch (err) {
      this.o.log.debug({ err }, 'lease sweep failed');
    }
  }

  /** At start-up: jobs this node id held when it stopped (a restart under the same id) are handed back. */
  private async recoverOwn(): Promise<void> {
    const rows = await this.o.pool.query<{ id: string; attempt: number }>("SELECT id, attempt FROM jobs WHERE status = 'running' AND owner = $1", [this.o.nodeId]);
    for (const r of rows.rows) {
      await this.handBack(r.id, r.attempt, `node ${this.o.nodeId} restarted while it ran attempt ${r.attempt} of this job`);
    }
  }

  private onCancel(payload: string): void {
    let m: { jobId?: string; reason?: string };
    try {
      m = JSON.parse(payload) as typeof m;
    } catch {
      return;
    }
    const r = this.running;
    if (r && r.job.id === m.jobId && !r.controller.signal.aborted) {
      r.job.progress_label = 'canceling';
      r.controller.abort(new CanceledError(m.reason ?? 'canceled by request'));
    }
  }

  private abortRunning(reason: string): void {
    const r = this.running;
    if (r && !r.controller.signal.aborted) {
      this.o.log.error({ job_id: r.job.id }, reason);
      r.controller.abort(new HandBack(reason));
    }
  }

  /** Every event of the cluster passes here: waiters wake; jobs submitted here let go of their inputs. */
  private onEvent(jobId: string, event: string): void {
    for (const wake of [...(this.waiters.get(jobId) ?? [])]) wake();
    if (event === 'succeeded' || event === 'failed' || event === 'canceled') {
      const settled = this.settled.get(jobId);
      this.settled.delete(jobId);
      try {
        settled?.();
      } catch (err) {
        this.o.log.warn({ err, job_id: jobId }, 'releasing what the job held failed');
      }
    }
  }

  /** Models activated or loaded since the last look are advertised (placement and 503s go by them). */
  private advertise(): void {
    const capable = this.o.capable();
    const warm = this.o.warm();
    const now = this.o.nodes.advertised;
    if (capable.join() !== now.capable.join() || warm.join() !== now.warm.join()) {
      void this.o.nodes.update({ capable, warm });
      void this.ensureQueues(capable.map(queueName)).catch((err: unknown) => this.o.log.debug({ err }, 'could not create queues'));
    }
  }

  private async countQueued(): Promise<void> {
    try {
      const res = await this.o.pool.query<{ n: string }>("SELECT count(*) AS n FROM jobs WHERE status = 'queued'");
      this.queued = Number(res.rows[0]!.n);
    } catch {
      // /health says what it last knew; the database's state shows in its own check.
    }
  }
}

/** An abort that gives the attempt back to the cluster instead of ending the job. */
class HandBack extends Error {}
