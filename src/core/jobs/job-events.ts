/**
 * Live job events: the one owner of what watchers of `GET /v1/jobs/{id}/events` and
 * `GET /v1/events` are told, of the short history a reconnecting watcher replays from
 * (`Last-Event-ID`), and of what step previews watchers ask for.
 *
 * Event ids are opaque strings. A lifecycle event gets `<boot>-<n>` (`boot` changes with every
 * process start, so an id from an earlier run never matches a later event); a terminal event gets
 * `<job id>.end`, which is the same whether the event is sent live or rebuilt from the stored job
 * after a restart: a watcher that reconnects with it is told there is nothing more (the routes
 * answer 204, which tells EventSource to stop reconnecting).
 *
 * Previews are never kept: they go to the watchers connected at that moment, and only to those
 * that asked for them.
 */
import { randomBytes } from 'node:crypto';
import type { EnginePreview, PreviewDemand, PreviewRequest } from '../../engines/engine.js';

export type JobEventName = 'queued' | 'position' | 'started' | 'progress' | 'preview' | 'succeeded' | 'failed' | 'canceled';
export const TERMINAL_EVENTS: ReadonlySet<JobEventName> = new Set(['succeeded', 'failed', 'canceled']);

export interface JobEvent {
  id: string;
  event: JobEventName;
  jobId: string;
  /** The job's type (qwen, qwen-edit, ideogram4): what the all-jobs stream filters on. */
  jobType: string;
  /** The job's status once this event happened: what the all-jobs stream's `status` filter matches. */
  status: string;
  data: Record<string, unknown>;
}

export type EventSink = (e: JobEvent) => void;

/** Lifecycle events kept per unfinished job for replay (progress of a long job is the bulk). */
const JOB_HISTORY = 256;
/** Events kept for the all-jobs stream's replay. */
const GLOBAL_HISTORY = 1024;
/** The largest preview a watcher may ask for (long side, px), and the default. */
export const MAX_PREVIEW_SIZE = 512;
export const DEFAULT_PREVIEW_SIZE = 256;

interface PreviewWatch {
  every: number;
  maxSize: number;
}

export function terminalEventId(jobId: string): string {
  return `${jobId}.end`;
}

/** A preview event's data: the step and a small JPEG as a data URL. */
export function previewData(jobId: string, jobType: string, p: EnginePreview): Record<string, unknown> {
  return {
    job_id: jobId,
    type: jobType,
    step: p.step,
    total: p.total,
    width: p.width,
    height: p.height,
    image: `data:image/jpeg;base64,${p.jpeg.toString('base64')}`,
    at: Date.now() / 1000,
  };
}

export class JobEvents {
  private readonly boot = randomBytes(3).toString('hex');
  private seq = 0;
  /** Recent lifecycle events of each unfinished job, oldest first. */
  private readonly history = new Map<string, JobEvent[]>();
  private readonly recent: JobEvent[] = [];
  private readonly jobSinks = new Map<string, Set<EventSink>>();
  private readonly allSinks = new Set<EventSink>();
  /** Per job, the preview requests of its watchers; and who wants to hear when they change. */
  private readonly watches = new Map<string, Set<PreviewWatch>>();
  private readonly demandListeners = new Map<string, Set<() => void>>();

  /** Records and delivers a lifecycle event (anything but a preview). */
  emit(jobId: string, jobType: string, status: string, event: Exclude<JobEventName, 'preview'>, data: Record<string, unknown>): JobEvent {
    const terminal = TERMINAL_EVENTS.has(event);
    const e: JobEvent = { id: terminal ? terminalEventId(jobId) : `${this.boot}-${++this.seq}`, event, jobId, jobType, status, data };
    if (terminal) {
      this.history.delete(jobId);
    } else {
      const list = this.history.get(jobId) ?? [];
      list.push(e);
      if (list.length > JOB_HISTORY) list.splice(0, list.length - JOB_HISTORY);
      this.history.set(jobId, list);
    }
    this.recent.push(e);
    if (this.recent.length > GLOBAL_HISTORY) this.recent.splice(0, this.recent.length - GLOBAL_HISTORY);
    this.deliverEvent(e);
    return e;
  }

  /** Delivers a preview to the job's watchers that asked for this step; nothing is kept. */
  preview(jobId: string, jobType: string, p: EnginePreview): void {
    this.deliverEvent({ id: `${this.boot}-${++this.seq}`, event: 'preview', jobId, jobType, status: 'running', data: previewData(jobId, jobType, p) });
  }

  /** Hands an event to the watchers connected now (a cluster node: the events of every node). */
  protected deliverEvent(e: JobEvent): void {
    for (const sink of [...(this.jobSinks.get(e.jobId) ?? [])]) sink(e);
    for (const sink of [...this.allSinks]) sink(e);
  }

  /** Events of one job after `lastId` still in memory, or null when `lastId` is not among them. */
  async replayJob(jobId: string, lastId: string): Promise<JobEvent[] | null> {
    const list = this.history.get(jobId) ?? [];
    const at = list.findIndex((e) => e.id === lastId);
    return at < 0 ? null : list.slice(at + 1);
  }

  /** The job's lifecycle events still in memory (for a watcher that just arrived). */
  async historyOf(jobId: string): Promise<JobEvent[]> {
    return [...(this.history.get(jobId) ?? [])];
  }

  /** All-jobs events after `lastId`, or null when it is no longer (or never was) in memory. */
  async replayAll(lastId: string): Promise<JobEvent[] | null> {
    const at = this.recent.findIndex((e) => e.id === lastId);
    return at < 0 ? null : this.recent.slice(at + 1);
  }

  subscribeJob(jobId: string, sink: EventSink): () => void {
    const set = this.jobSinks.get(jobId) ?? new Set();
    set.add(sink);
    this.jobSinks.set(jobId, set);
    return () => {
      set.delete(sink);
      if (set.size === 0) this.jobSinks.delete(jobId);
    };
  }

  subscribeAll(sink: EventSink): () => void {
    this.allSinks.add(sink);
    return () => this.allSinks.delete(sink);
  }

  /** Watchers connected now (diagnostics; a leak shows here). */
  get watcherCount(): number {
    let n = this.allSinks.size;
    for (const set of this.jobSinks.values()) n += set.size;
    return n;
  }

  /** A watcher's preview request for a job, until the returned function is called. */
  watchPreviews(jobId: string, request: PreviewRequest): () => void {
    const watch: PreviewWatch = { every: Math.max(1, Math.floor(request.every)), maxSize: Math.min(MAX_PREVIEW_SIZE, Math.max(16, Math.floor(request.maxSize))) };
    const set = this.watches.get(jobId) ?? new Set();
    set.add(watch);
    this.watches.set(jobId, set);
    this.demandChanged(jobId);
    return () => {
      if (!set.delete(watch)) return;
      if (set.size === 0) this.watches.delete(jobId);
      this.demandChanged(jobId);
    };
  }

  /**
   * What the job's watchers ask of previews: the most frequent cadence and the largest size any
   * of them wants (each watcher then gets the previews whose step matches its own cadence).
   */
  demand(jobId: string): PreviewDemand {
    return {
      current: () => {
        const set = this.watches.get(jobId);
        if (!set || set.size === 0) return null;
        let every = Infinity;
        let maxSize = 0;
        for (const w of set) {
          every = Math.min(every, w.every);
          maxSize = Math.max(maxSize, w.maxSize);
        }
        return { every, maxSize };
      },
      subscribe: (listener) => {
        const set = this.demandListeners.get(jobId) ?? new Set();
        set.add(listener);
        this.demandListeners.set(jobId, set);
        return () => {
          set.delete(listener);
          if (set.size === 0) this.demandListeners.delete(jobId);
        };
      },
    };
  }

  private demandChanged(jobId: string): void {
    for (const listener of [...(this.demandListeners.get(jobId) ?? [])]) listener();
  }

  /** Forgets a deleted job's history (its record is gone; there is nothing left to replay). */
  forget(jobId: string): void {
    this.history.delete(jobId);
  }
}
