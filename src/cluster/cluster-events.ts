/**
 * Job events of a cluster node: the same watchers' API as a single node's (core/jobs/job-events.ts),
 * fed from the shared event bus. Every event, this node's own included, reaches the local
 * watchers through the database, so all nodes see one order and one id per event; a watcher
 * that reconnects with Last-Event-ID to any node is replayed from the `job_events` table.
 *
 * Terminal events keep the id `<job id>.end` (the same live and rebuilt from the record), so the
 * 204 that stops EventSource works on any node; a replay from such an id starts after that job's
 * terminal row.
 *
 * Preview demand crosses nodes by NOTIFY: a watcher on one node asks, the node running the job
 * hears it and makes previews, which come back through the bus like any event (they are large,
 * so the bus sends their id and the listener reads the row; they are never replayed).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { EnginePreview, PreviewRequest } from '../engines/engine.js';
import { JobEvents, TERMINAL_EVENTS, previewData, terminalEventId, type JobEvent, type JobEventName } from '../core/jobs/job-events.js';
import type { ClusterEvent, PgEventBus } from './pg-events.js';


const WATCH_CHANNEL = 'kiapi_preview_watch';

interface WatchMessage {
  op: 'add' | 'remove';
  id: string;
  node: string;
  jobId?: string;
  every?: number;
  maxSize?: number;
}

export class ClusterJobEvents extends JobEvents {
  private readonly remoteWatches = new Map<string, () => void>();
  private readonly stops: (() => unknown)[] = [];

  constructor(
    private readonly bus: PgEventBus,
    private readonly nodeId: string,
    private readonly log: Logger,
  ) {
    super();
  }

  async start(): Promise<void> {
    this.stops.push(this.bus.subscribe((e) => this.fromBus(e)));
    this.stops.push(await this.bus.listen(WATCH_CHANNEL, (payload) => this.onWatch(payload)));
  }

  /** NOTIFY payloads of another channel, on the bus's LISTEN connection (wake-ups, cancels). */
  listenRaw(channel: string, cb: (payload: string) => void): Promise<() => Promise<void>> {
    return this.bus.listen(channel, cb);
  }

  async close(): Promise<void> {
    for (const stop of this.stops.splice(0)) await stop();
  }

  /** Published, and delivered here once it comes back from the bus with its global id. */
  override emit(jobId: string, jobType: string, status: string, event: Exclude<JobEventName, 'preview'>, data: Record<string, unknown>): JobEvent {
    this.bus.publish({ jobId, jobType, status, event, data }).catch((err: unknown) => this.log.warn({ err, job_id: jobId, event }, 'could not publish a job event'));
    return { id: '', event, jobId, jobType, status, data };
  }

  override preview(jobId: string, jobType: string, p: EnginePreview): void {
    this.bus.publish({ jobId, jobType, status: 'running', event: 'preview', data: previewData(jobId, jobType, p) }).catch((err: unknown) => this.log.debug({ err, job_id: jobId }, 'could not publish a preview'));
  }

  private fromBus(e: ClusterEvent): void {
    this.deliverEvent(toJobEvent(e));
  }

  override async replayJob(jobId: string, lastId: string): Promise<JobEvent[] | null> {
    const after = await this.rowIdOf(lastId);
    if (after === null) return null;
    const rows = await this.bus.replay(after, jobId);
    return rows === null ? null : rows.filter((e) => e.event !== 'preview').map(toJobEvent);
  }

  /** Every lifecycle event of the job so far (the route shows the latest of them). */
  override async historyOf(jobId: string): Promise<JobEvent[]> {
    return (await this.bus.replayFrom(jobId)).map(toJobEvent);
  }

  override async replayAll(lastId: string): Promise<JobEvent[] | null> {
    const after = await this.rowIdOf(lastId);
    if (after === null) return null;
    const rows = await this.bus.replay(after);
    return rows === null ? null : rows.filter((e) => e.event !== 'preview').map(toJobEvent);
  }

  /** The table id behind an event id (`<job>.end` names the job's terminal row). */
  private async rowIdOf(eventId: string): Promise<string | null> {
    const job = /^(.+)\.end$/.exec(eventId);
    return job ? this.bus.terminalIdOf(job[1]!) : eventId;
  }

  /** Registered here and announced to every node; the one running the job makes the previews. */
  override watchPreviews(jobId: string, request: PreviewRequest): () => void {
    const stopLocal = super.watchPreviews(jobId, request);
    const id = randomUUID();
    const announce = (m: WatchMessage) =>
      this.bus.notify(WATCH_CHANNEL, JSON.stringify(m)).catch((err: unknown) => this.log.warn({ err, job_id: jobId }, 'could not announce a preview request'));
    void announce({ op: 'add', id, node: this.nodeId, jobId, every: request.every, maxSize: request.maxSize });
    return () => {
      stopLocal();
      void announce({ op: 'remove', id, node: this.nodeId });
    };
  }

  private onWatch(payload: string): void {
    let m: WatchMessage;
    try {
      m = JSON.parse(payload) as WatchMessage;
    } catch {
      return;
    }
    if (m.node === this.nodeId) return;
    if (m.op === 'add' && m.jobId) {
      this.remoteWatches.set(m.id, super.watchPreviews(m.jobId, { every: m.every ?? 1, maxSize: m.maxSize ?? 256 }));
    } else if (m.op === 'remove') {
      this.remoteWatches.get(m.id)?.();
      this.remoteWatches.delete(m.id);
    }
  }
}

function toJobEvent(e: ClusterEvent): JobEvent {
  const event = e.event as JobEventName;
  return {
    id: TERMINAL_EVENTS.has(event) ? terminalEventId(e.jobId) : e.id,
    event,
    jobId: e.jobId,
    jobType: e.jobType,
    status: e.status,
    data: e.data,
  };
}
