/**
 * One single-flight FIFO queue: every generation is a job, and exactly one job runs at a time
 * (the accelerator is one device and memory accounting stays exact). Handlers get an AbortSignal
 * and a progress reporter. Beyond the original: cancel works for queued jobs (they never run) and
 * for running ones (the signal fires; the engine stops at its next step).
 */
import type { Logger } from 'pino';
import { BusyError, CanceledError, ConflictError, UnavailableError } from '../errors.js';
import { FINISHED, type JobRecord, type JobStore } from './job-store.js';

export interface JobContext {
  job: Readonly<JobRecord>;
  signal: AbortSignal;
  /** Reports a fraction in [0,1] and optionally a new short label (queued, loading, denoising, saving, …). */
  progress(fraction: number, label?: string): void;
  log: Logger;
}

export interface JobOutput {
  result: Record<string, unknown>;
  artifacts: string[];
  /** Where the job's time went, in ms by phase (`engine`, `store`); told to waiters, not stored. */
  timings?: Record<string, number>;
}

export type JobHandler = (ctx: JobContext) => Promise<JobOutput>;

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
}

export class JobQueue {
  private readonly pending: Entry[] = [];
  private running: Entry | null = null;
  private runningDone: Promise<void> = Promise.resolve();
  private readonly waiters = new Map<string, Set<(o: JobOutcome) => void>>();
  private readonly settled = new Map<string, () => void>();
  private closed = false;
  /** Recent job durations, for the Retry-After estimate of a full queue. */
  private readonly recentSeconds: number[] = [];

  constructor(
    private readonly store: JobStore,
    private readonly log: Logger,
    private readonly maxQueue: number,
  ) {}

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
   * Records a queued job and schedules it. Throws BusyError when the queue is full. `onSettled`
   * runs once the job reaches a final state however it gets there (run, canceled while queued,
   * failed at shutdown): it lets go of what the job holds, such as its input files.
   */
  submit(type: string, params: Record<string, unknown>, handler: JobHandler, onSettled?: () => void): JobRecord {
    if (this.closed) throw new UnavailableError('the server is shutting down; submit the request again once it is back');
    if (this.pending.length >= this.maxQueue) {
      throw new BusyError(
        `the job queue is full (${this.pending.length} queued, KIAPI_MAX_QUEUE=${this.maxQueue}); retry later`,
        this.estimateWaitS(),
      );
    }
    const job = this.store.create(type, params);
    if (onSettled) this.settled.set(job.id, onSettled);
    this.pending.push({ job, handler, controller: new AbortController() });
    queueMicrotask(() => this.pump());
    return job;
  }

  /**
   * Resolves when the job reaches a final state, or with null after `timeoutMs`. `abort` lets a
   * caller that went away (client disconnect) stop waiting without touching the job.
   */
  wait(jobId: string, timeoutMs: number, abort?: AbortSignal): Promise<JobOutcome | null> {
    const current = this.store.get(jobId);
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
  cancel(jobId: string, reason = 'canceled by request'): JobRecord {
    const job = this.store.get(jobId);
    const index = this.pending.findIndex((e) => e.job.id === jobId);
    if (index >= 0) {
      const [entry] = this.pending.splice(index, 1);
      this.finish(entry!.job, 'canceled', { error: `${reason} before it started` });
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
  delete(jobId: string): boolean {
    const job = this.store.get(jobId);
    const wasRunning = job.status === 'running';
    if (!FINISHED.has(job.status)) this.cancel(jobId, 'deleted by request');
    this.store.delete(jobId);
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
  }

  private async execute(entry: Entry): Promise<void> {
    const { job, handler, controller } = entry;
    const started = Date.now();
    job.status = 'running';
    job.started_at = started / 1000;
    job.progress = 0;
    job.progress_label = 'running';
    this.store.save(job);
    const log = this.log.child({ job_id: job.id, job_type: job.type });
    try {
      const out = await handler({
        job,
        signal: controller.signal,
        progress: (fraction, label) => {
          if (!FINISHED.has(job.status)) this.store.setProgress(job, fraction, label);
        },
        log,
      });
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
    const outcome: JobOutcome = { job, error: extra.cause, timings: extra.timings };
    for (const waiter of [...(this.waiters.get(job.id) ?? [])]) waiter(outcome);
  }

  private estimateWaitS(): number {
    const avg = this.recentSeconds.length
      ? this.recentSeconds.reduce((a, b) => a + b, 0) / this.recentSeconds.length
      : 5;
    return Math.min(3600, avg * (this.pending.length + 1));
  }
}
