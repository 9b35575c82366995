/**
 * One single-flight FIFO queue: every generation is a job, and exactly one job runs at a time
 * (the accelerator is one device and memory accounting stays exact). Handlers get an AbortSignal
 * and a progress reporter. Beyond the original: cancel works for queued jobs (they never run) and
 * for running ones (the signal fires; the engine stops at its next step).
 */
import type { Logger } from 'pino';
import type { EnginePreview, PreviewDemand } from '../../engines/engine.js';
import { BusyError, CanceledError, ConflictError, UnavailableError } from '../errors.js';
import type { EtaModel, Workload } from './eta.js';
import { JobEvents } from './job-events.js';
import { FINISHED, type JobRecord, type JobStore } from './job-store.js';

/** Where a job stands in its engine schedule, as the engine reports it. */
export interface StepInfo {
  step: number;
  total: number;
}

export interface JobContext {
  job: Readonly<JobRecord>;
  signal: AbortSignal;
  /**
   * Reports a fraction in [0,1], optionally a new short label (queued, loading, denoising,
   * saving, …) and the engine step it stands at.
   */
  progress(fraction: number, label?: string, step?: StepInfo): void;
  /** The step previews this job's watchers want right now (none: null). */
  previews: PreviewDemand;
  /** Hands a step preview to the job's watchers. */
  preview(p: EnginePreview): void;
  log: Logger;
}

/** A job as the API shows it: the record plus where it stands in the queue and when it should end. */
export type JobView = JobRecord & {
  /** 1 = the next job to run; null unless queued. */
  queue_position: number | null;
  /** Seconds until the job should finish, from measured step times; null when unknown or finished. */
  eta_s: number | null;
};

export interface RecordOptions {
  /**
   * Runs inside the transaction that records the jobs (their idempotency key): committed with
   * them or not at all. `tx` is the store's transaction handle (TransactionWrite).
   */
  record?: (jobs: JobRecord[], tx?: unknown) => void | Promise<void>;
}

/**
 * What a job runs, as data: the name of a registered runner and its JSON spec. A cluster node
 * rebuilds the handler from it on whichever node claims the job.
 */
export interface Runnable {
  runner: string;
  spec: Record<string, unknown>;
}

export interface SubmitOptions {
  /** What the job runs as data (required by a cluster queue; a single node runs `handler`). */
  runnable?: Runnable;
  /** The model (`family/name`) the job needs: its queue on a cluster, and which nodes can take it. */
  model?: string;
  /** Runs once the job reached a final state however it got there (lets go of its inputs). */
  onSettled?: () => void;
  /** What the job is, for its ETA. */
  workload?: Workload;
  /**
   * Runs in the transaction that records the job: what must exist with the job or not at all
   * (its webhook subscription). `tx` is the store's transaction handle (TransactionWrite).
   */
  onCreate?: (job: JobRecord, tx?: unknown) => void | Promise<void>;
}

/** A running job's measured schedule: the ETA's live input and, at the end, its measurement. */
interface RunTrack {
  startedMs: number;
  loadingMs: number;
  loadingSinceMs: number | null;
  first: { step: number; atMs: number } | null;
  last: { step: number; total: number; atMs: number } | null;
}

export interface JobOutput {
  result: Record<string, unknown>;
  artifacts: string[];
  /** Where the job's time went, in ms by phase (`engine`, `store`); told to waiters, not stored. */
  timings?: Record<string, number>;
}

export type JobHandler = (ctx: JobContext) => Promise<JobOutput>;

/** One job of a submission: what is recorded, and how it runs. */
export interface SubmitItem {
  type: string;
  params: Record<string, unknown>;
  handler: JobHandler;
  opts?: SubmitOptions;
}

/**
 * The job queue as the HTTP layer uses it. One node runs JobQueue (in-process, SQLite records);
 * a cluster node runs the shared queue. Everything that may touch shared state is asynchronous.
 */
export interface JobQueueApi {
  readonly events: JobEvents;
  /** Jobs waiting to run (this node's view: /health). */
  readonly queueLength: number;
  readonly waiterCount: number;
  readonly runningJobId: string | null;
  submit(type: string, params: Record<string, unknown>, handler: JobHandler, opts?: SubmitOptions & RecordOptions): Promise<JobRecord>;
  submitMany(items: SubmitItem[], opts?: RecordOptions): Promise<JobRecord[]>;
  view(job: JobRecord): Promise<JobView>;
  wait(jobId: string, timeoutMs: number, abort?: AbortSignal): Promise<JobOutcome | null>;
  cancel(jobId: string, reason?: string): Promise<JobRecord>;
  delete(jobId: string): Promise<boolean>;
  close(graceMs: number): Promise<void>;
}

/** What a waiter learns: the final record and, while this process holds it, the error object. */
export interface JobOutcome {
  job: JobRecord;
  error?: unknown;
  /** The handler's phase timings (JobOutput.timings), when this process ran the job. */
  timings?: Record<string, number>;
}

interface Entry {
  job: JobRecord;
  handler: JobHandler;
  controller: AbortController;
  workload?: Workload;
  track?: RunTrack;
}

export class JobQueue implements JobQueueApi {
  private readonly pending: Entry[] = [];
  private running: Entry | null = null;
  private runningDone: Promise<void> = Promise.resolve();
  private readonly waiters = new Map<string, Set<(o: JobOutcome) => void>>();
  private readonly settled = new Map<string, () => void>();
  private closed = false;
  /** Recent job durations, for the Retry-After estimate of a full queue. */
  private readonly recentSeconds: number[] = [];

  readonly events: JobEvents;
  private readonly eta: EtaModel | null;
  private readonly extraFields: (job: JobRecord) => Record<string, unknown>;

  constructor(
    private readonly store: JobStore,
    private readonly log: Logger,
    private readonly maxQueue: number,
    opts: {
      events?: JobEvents;
      eta?: EtaModel;
      /** Fields other owners add after the job's own in every view of it (its webhook deliveries). */
      extraFields?: (job: JobRecord) => Record<string, unknown>;
    } = {},
  ) {
    this.events = opts.events ?? new JobEvents();
    this.eta = opts.eta ?? null;
    this.extraFields = opts.extraFields ?? (() => ({}));
  }

  get queueLength(): number {
    return this.pending.length;
  }

  /** Callers waiting in `wait()` right now, over all jobs (diagnostics; a leak shows here). */
  get waiterCount(): number {
    let n = 0;
    for (const set of this.waiters.values()) n += set.size;
    return n;
  }

  get runningJobId(): string | null {
    return this.activeEntry()?.job.id ?? null;
  }

  /**
   * The running entry, unless its job already finished: waiters are told in `finish()`, a few
   * microtasks before `pump()` clears `running`, and a cancel arriving in that window must see
   * a finished job (409), not abort it and relabel it `canceling`.
   */
  private activeEntry(): Entry | null {
    return this.running && !FINISHED.has(this.running.job.status) ? this.running : null;
  }

  /**
   * Records a queued job and schedules it. Throws BusyError when the queue is full.
   * `opts.onSettled` runs once the job reaches a final state however it gets there (run, canceled
   * while queued, failed at shutdown): it lets go of what the job holds, such as its input files.
   * `opts.record` writes alongside the job, in its transaction (RecordOptions).
   */
  async submit(type: string, params: Record<string, unknown>, handler: JobHandler, opts: SubmitOptions & RecordOptions = {}): Promise<JobRecord> {
    return (await this.submitMany([{ type, params, handler, opts }], opts))[0]!;
  }

  /**
   * Several jobs of one request (the OpenAI routes' `n` images), all or none: when the queue has
   * no room for all of them the request is refused as a whole and nothing is recorded.
   */
  async submitMany(items: SubmitItem[], { record }: RecordOptions = {}): Promise<JobRecord[]> {
    if (this.closed) throw new UnavailableError('the server is shutting down; submit the request again once it is back');
    const free = this.maxQueue - this.pending.length;
    if (items.length > free) {
      throw new BusyError(
        items.length > 1
          ? `the job queue has room for ${Math.max(0, free)} more jobs and this request needs ${items.length} (KIAPI_MAX_QUEUE=${this.maxQueue}); retry later or ask for fewer images`
          : `the job queue is full (${this.pending.length} queued, KIAPI_MAX_QUEUE=${this.maxQueue}); retry later`,
        this.estimateWaitS(),
      );
    }
    // SQLite transactions are synchronous: the hooks of a single node's submissions are too.
    const jobs = this.store.createAll(
      items.map((i) => {
        const onCreate = i.opts?.onCreate;
        return { type: i.type, params: i.params, within: onCreate ? (job: JobRecord) => void onCreate(job) : undefined };
      }),
      record ? (created) => void record(created) : undefined,
    );
    items.forEach((item, i) => {
      const job = jobs[i]!;
      if (item.opts?.onSettled) this.settled.set(job.id, item.opts.onSettled);
      this.pending.push({ job, handler: item.handler, controller: new AbortController(), workload: item.opts?.workload });
      this.emitState(job, 'queued');
    });
    queueMicrotask(() => this.pump());
    // Copies: the queue starts a job a microtask later, and the answer tells the state it was submitted in.
    return jobs.map((job) => ({ ...job }));
  }

  /** The job with its queue position and ETA (and the extra fields), as every API answer shows it. */
  async view(job: JobRecord): Promise<JobView> {
    return this.viewNow(job);
  }

  /** `view` within one synchronous step (the terminal event and the webhook outbox's transaction carry it). */
  viewNow(job: JobRecord): JobView {
    return { ...this.placement(job), ...this.extraFields(job) };
  }

  /** The job with its queue position and ETA. */
  private placement(job: JobRecord): JobView {
    if (FINISHED.has(job.status)) return { ...job, queue_position: null, eta_s: null };
    const index = this.pending.findIndex((e) => e.job.id === job.id);
    return { ...job, queue_position: index >= 0 ? index + 1 : null, eta_s: this.etaOf(job.id) };
  }

  /**
   * Seconds until `jobId` should finish: what remains of the running job, every job ahead of it
   * and its own whole run. Null when any of them has no measurement to go by.
   */
  etaOf(jobId: string): number | null {
    let total = 0;
    const running = this.activeEntry();
    if (running) {
      const rest = this.remainingS(running);
      if (running.job.id === jobId) return round1(rest);
      if (rest === null) return null;
      total += rest;
    }
    for (const entry of this.pending) {
      const whole = entry.workload && this.eta ? this.eta.wholeJobS(entry.workload) : null;
      if (whole === null) return null;
      total += whole;
      if (entry.job.id === jobId) return round1(total);
    }
    return null;
  }

  /** What remains of a running job, from its own step rate once it has one, else from history. */
  private remainingS(entry: Entry): number | null {
    const t = entry.track;
    const profile = entry.workload && this.eta ? this.eta.profile(entry.workload) : null;
    if (!t) return null;
    const now = Date.now();
    if (t.last) {
      const ownRate = t.first && t.last.step > t.first.step ? (t.last.atMs - t.first.atMs) / 1000 / (t.last.step - t.first.step) : null;
      const rate = ownRate ?? profile?.stepS ?? null;
      if (rate === null) return null;
      const sinceLast = (now - t.last.atMs) / 1000;
      return Math.max(0, (t.last.total - t.last.step) * rate - sinceLast) + (profile?.postS ?? 0);
    }
    if (!profile || !entry.workload) return null;
    const loading = t.loadingMs + (t.loadingSinceMs !== null ? now - t.loadingSinceMs : 0);
    const elapsed = (now - t.startedMs - loading) / 1000;
    return Math.max(0, profile.preS + entry.workload.steps * profile.stepS - elapsed) + profile.postS;
  }

  /** A lifecycle event with the job's state as the API shows it. */
  private emitState(job: JobRecord, event: 'queued' | 'position' | 'started', extra: Record<string, unknown> = {}): void {
    const v = this.placement(job);
    this.events.emit(job.id, job.type, job.status, event, {
      job_id: job.id,
      type: job.type,
      status: job.status,
      ...(event === 'started' ? { started_at: job.started_at } : { queue_position: v.queue_position }),
      eta_s: v.eta_s,
      at: Date.now() / 1000,
      ...extra,
    });
  }

  /** After a job left the queue, everyone behind it moved up. */
  private announcePositions(from: number): void {
    for (const entry of this.pending.slice(from)) this.emitState(entry.job, 'position');
  }

  /**
   * Resolves when the job reaches a final state, or with null after `timeoutMs`. `abort` lets a
   * caller that went away (client disconnect) stop waiting without touching the job.
   */
  wait(jobId: string, timeoutMs: number, abort?: AbortSignal): Promise<JobOutcome | null> {
    const current = this.store.getNow(jobId);
    if (FINISHED.has(current.status)) return Promise.resolve({ job: current });
    return new Promise((resolve) => {
      const set = this.waiters.get(jobId) ?? new Set();
      this.waiters.set(jobId, set);
      const finish = (o: JobOutcome | null) => {
        clearTimeout(timer);
        set.delete(onDone);
        if (set.size === 0) this.waiters.delete(jobId);
        abort?.removeEventListener('abort', onAbort);
        resolve(o);
      };
      const onDone = (o: JobOutcome) => finish(o);
      const onAbort = () => finish(null);
      const timer = setTimeout(() => finish(null), timeoutMs);
      set.add(onDone);
      abort?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Queued → canceled at once (it never runs). Running → its signal fires and it ends `canceled`
   * at the engine's next step. Finished → ConflictError.
   */
  async cancel(jobId: string, reason = 'canceled by request'): Promise<JobRecord> {
    return this.cancelNow(jobId, reason);
  }

  private cancelNow(jobId: string, reason: string): JobRecord {
    const job = this.store.getNow(jobId);
    const index = this.pending.findIndex((e) => e.job.id === jobId);
    if (index >= 0) {
      const [entry] = this.pending.splice(index, 1);
      this.finish(entry!.job, 'canceled', { error: `${reason} before it started` });
      this.announcePositions(index);
      return entry!.job;
    }
    const running = this.activeEntry();
    if (running?.job.id === jobId) {
      if (!running.controller.signal.aborted) {
        running.controller.abort(new CanceledError(reason));
        this.store.setProgress(running.job, running.job.progress ?? 0, 'canceling');
      }
      return running.job;
    }
    throw new ConflictError(`job '${jobId}' is already ${job.status}; only queued or running jobs can be canceled`);
  }

  /** Removes a job record; an unfinished job is canceled first. Returns whether it was running. */
  async delete(jobId: string): Promise<boolean> {
    const job = this.store.getNow(jobId);
    const wasRunning = job.status === 'running';
    if (!FINISHED.has(job.status)) this.cancelNow(jobId, 'deleted by request');
    this.store.delete(jobId);
    this.events.forget(jobId);
    return wasRunning;
  }

  /**
   * Graceful stop: refuse new jobs, fail the queued ones (they would be lost), give the running
   * one `graceMs` to finish, then cancel it.
   */
  async close(graceMs: number): Promise<void> {
    this.closed = true;
    for (const entry of this.pending.splice(0)) {
      this.finish(entry.job, 'failed', { error: 'the server shut down before this job started; submit it again' });
    }
    if (!this.running) return;
    const running = this.running;
    // Not unref'd: a job waiting on something that holds no handle would otherwise let the event
    // loop drain mid-grace and the process end with the job still `running`. Cleared once decided.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), graceMs);
    });
    try {
      if ((await Promise.race([this.runningDone.then(() => 'done' as const), timeout])) === 'timeout') {
        this.log.warn({ job_id: running.job.id }, 'shutdown grace period over; canceling the running job');
        running.controller.abort(new CanceledError('the server shut down while this job was running'));
        await this.runningDone;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  private pump(): void {
    if (this.running || this.pending.length === 0) return;
    const entry = this.pending.shift()!;
    this.running = entry;
    this.runningDone = this.execute(entry).finally(() => {
      this.running = null;
      this.pump();
    });
    // After execute's first synchronous part: the running job's schedule now counts in their ETAs.
    this.announcePositions(0);
  }

  private async execute(entry: Entry): Promise<void> {
    const { job, handler, controller } = entry;
    const started = Date.now();
    job.status = 'running';
    job.started_at = started / 1000;
    job.progress = 0;
    job.progress_label = 'running';
    this.store.save(job);
    const track: RunTrack = { startedMs: started, loadingMs: 0, loadingSinceMs: null, first: null, last: null };
    entry.track = track;
    this.emitState(job, 'started');
    const log = this.log.child({ job_id: job.id, job_type: job.type });
    try {
      const out = await handler({
        job,
        signal: controller.signal,
        progress: (fraction, label, step) => {
          if (FINISHED.has(job.status)) return;
          this.store.setProgress(job, fraction, label);
          this.trackProgress(track, job.progress_label, step);
          this.events.emit(job.id, job.type, job.status, 'progress', {
            job_id: job.id,
            type: job.type,
            status: job.status,
            progress: job.progress,
            label: job.progress_label,
            step: step?.step ?? null,
            total: step?.total ?? null,
            eta_s: round1(this.remainingS(entry)),
            at: Date.now() / 1000,
          });
        },
        previews: this.events.demand(job.id),
        preview: (p) => {
          if (!FINISHED.has(job.status)) this.events.preview(job.id, job.type, p);
        },
        log,
      });
      this.learn(entry, track);
      this.finish(job, 'succeeded', { result: out.result, artifacts: out.artifacts, timings: out.timings });
    } catch (err) {
      const canceled = err instanceof CanceledError || controller.signal.aborted;
      if (canceled) {
        const reason = err instanceof CanceledError ? err : (controller.signal.reason as unknown);
        const message = reason instanceof Error ? reason.message : 'canceled';
        // A shutdown cancel is a failure from the client's point of view: the job was not asked to stop.
        const status = message.startsWith('the server shut down') ? 'failed' : 'canceled';
        this.finish(job, status, { error: message, cause: err });
      } else {
        log.error({ err }, 'job failed');
        this.finish(job, 'failed', { error: err instanceof Error ? err.message : String(err), cause: err });
      }
    } finally {
      this.recentSeconds.push((Date.now() - started) / 1000);
      if (this.recentSeconds.length > 20) this.recentSeconds.shift();
    }
  }

  private trackProgress(t: RunTrack, label: string, step: StepInfo | undefined): void {
    const now = Date.now();
    if (label === 'loading') {
      t.loadingSinceMs ??= now;
    } else if (t.loadingSinceMs !== null) {
      t.loadingMs += now - t.loadingSinceMs;
      t.loadingSinceMs = null;
    }
    if (step && step.total > 0 && step.step > 0) {
      t.first ??= { step: step.step, atMs: now };
      t.last = { step: step.step, total: step.total, atMs: now };
    }
  }

  /** A succeeded job's measured phases become history for the next estimate. */
  private learn(entry: Entry, t: RunTrack): void {
    if (!this.eta || !entry.workload || !t.first || !t.last || t.last.step <= t.first.step) return;
    const stepS = (t.last.atMs - t.first.atMs) / 1000 / (t.last.step - t.first.step);
    const preS = Math.max(0, (t.first.atMs - t.startedMs - t.loadingMs) / 1000 - t.first.step * stepS);
    const postS = (Date.now() - t.last.atMs) / 1000;
    try {
      this.eta.observe(entry.workload, { stepS, preS, postS });
    } catch (err) {
      this.log.warn({ err }, 'could not record the job’s step times for ETAs');
    }
  }

  private finish(
    job: JobRecord,
    status: 'succeeded' | 'failed' | 'canceled',
    extra: { result?: Record<string, unknown>; artifacts?: string[]; error?: string; cause?: unknown; timings?: Record<string, number> },
  ): void {
    job.status = status;
    job.finished_at = Date.now() / 1000;
    if (status === 'succeeded') {
      job.result = extra.result ?? null;
      job.artifacts = extra.artifacts ?? [];
      job.progress = 1;
      job.progress_label = 'done';
    } else {
      job.error = extra.error ?? status;
      if (status === 'canceled') job.progress_label = 'canceled';
    }
    try {
      this.store.save(job);
    } catch (err) {
      // A deleted record cannot be updated; the waiters below still learn the outcome.
      this.log.warn({ err, job_id: job.id }, 'could not persist the final job state');
    }
    const onSettled = this.settled.get(job.id);
    this.settled.delete(job.id);
    try {
      onSettled?.();
    } catch (err) {
      this.log.warn({ err, job_id: job.id }, 'releasing what the job held failed');
    }
    this.events.emit(job.id, job.type, job.status, status, { ...this.viewNow(job) });
    const outcome: JobOutcome = { job, error: extra.cause, timings: extra.timings };
    for (const waiter of [...(this.waiters.get(job.id) ?? [])]) waiter(outcome);
  }

  private estimateWaitS(): number {
    const last = this.pending.at(-1);
    const measured = last ? this.etaOf(last.job.id) : null;
    if (measured !== null) return Math.min(3600, measured);
    const avg = this.recentSeconds.length
      ? this.recentSeconds.reduce((a, b) => a + b, 0) / this.recentSeconds.length
      : 5;
    return Math.min(3600, avg * (this.pending.length + 1));
  }
}

function round1(n: number | null): number | null {
  return n === null ? null : Math.round(n * 10) / 10;
}
