/**
 * Live events as server-sent events: one job's (`GET /v1/jobs/{job_id}/events`, step previews on
 * request) and every job's (`GET /v1/events`, for dashboards). What is sent, and the ids that let
 * a watcher reconnect without missing the end, are core/jobs/job-events.ts's; this file turns a
 * request into a stream.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from 'typebox';
import { DEFAULT_PREVIEW_SIZE, MAX_PREVIEW_SIZE, TERMINAL_EVENTS, terminalEventId, type JobEvent } from '../../core/jobs/job-events.js';
import { FINISHED, JOB_STATUSES } from '../../core/jobs/job-store.js';
import { InputError } from '../../core/errors.js';
import type { AppContext } from '../context.js';
import { numericQuery } from '../query-numbers.js';
import type { RouteDef } from '../route-def.js';
import { JobIdParams } from '../schemas.js';
import type { SseStream, SseStreams } from '../sse.js';

const LastEventIdQuery = Type.String({
  maxLength: 200,
  description: 'The id of the last event received, for clients that cannot send the Last-Event-ID header (the header wins when both are sent).',
});

const JobEventsQuery = Type.Object({
  previews: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 1000,
      description: 'Send a `preview` event (a small JPEG of the image as it stands) every N-th step. Absent: no previews, and the engine makes none.',
    }),
  ),
  preview_size: Type.Optional(
    Type.Integer({ minimum: 16, maximum: MAX_PREVIEW_SIZE, description: `Longest side of a preview in pixels (default ${DEFAULT_PREVIEW_SIZE}).` }),
  ),
  last_event_id: Type.Optional(LastEventIdQuery),
});

const AllEventsQuery = Type.Object({
  type: Type.Optional(Type.String({ maxLength: 200, description: 'Only jobs of these types, comma-separated (qwen, qwen-edit, ideogram4).' })),
  status: Type.Optional(
    Type.String({
      maxLength: 200,
      description: `Only events that leave a job in one of these states, comma-separated (${JOB_STATUSES.join(', ')}); e.g. \`succeeded,failed\` for finished jobs only.`,
    }),
  ),
  last_event_id: Type.Optional(LastEventIdQuery),
});

type JobEventsRequest = FastifyRequest<{ Params: Static<typeof JobIdParams>; Querystring: Static<typeof JobEventsQuery> }>;
type AllEventsRequest = FastifyRequest<{ Querystring: Static<typeof AllEventsQuery> }>;

const EVENT_LIST =
  '`queued` (queue_position, eta_s), `position` (when the position changes), `started`, `progress` (progress, label, step, total, eta_s), ' +
  '`preview` (step, total, width, height, image: a data:image/jpeg URL; only when asked for), each with job_id, type, status and `at` (Unix seconds), and one terminal event ' +
  '`succeeded` / `failed` / `canceled` whose data is the job JSON. Every event has an `id`; comment lines (`: keep-alive`) keep idle connections open.';

function lastEventId(req: FastifyRequest, query: { last_event_id?: string }): string | undefined {
  const header = req.headers['last-event-id'];
  const value = (Array.isArray(header) ? header[0] : header) ?? query.last_event_id;
  return value === undefined || value === '' ? undefined : value;
}

export function eventRoutes(ctx: AppContext, streams: SseStreams): RouteDef[] {
  const events = ctx.queue.events;
  const open = (req: FastifyRequest, reply: FastifyReply): SseStream =>
    streams.start(req, reply, {
      heartbeatMs: ctx.config.eventsHeartbeatS * 1000,
      maxBufferBytes: ctx.config.eventsMaxBufferBytes,
      private: ctx.config.authToken !== null,
    });

  return [
    {
      method: 'get',
      path: '/v1/jobs/{job_id}/events',
      params: JobIdParams,
      query: JobEventsQuery,
      preValidation: numericQuery('previews', 'preview_size'),
      handler: async (request, reply) => {
        const req = request as JobEventsRequest;
        const job = await ctx.jobs.get(req.params.job_id);
        const last = lastEventId(req, req.query);
        if (FINISHED.has(job.status)) {
          // The watcher already has the end: 204 tells EventSource to stop reconnecting.
          if (last === terminalEventId(job.id)) return reply.code(204).send();
          const stream = open(req, reply);
          stream.send({ id: terminalEventId(job.id), event: job.status as JobEvent['event'], jobId: job.id, jobType: job.type, status: job.status, data: { ...(await ctx.queue.view(job)) } });
          stream.end();
          return reply;
        }
        const stream = open(req, reply);
        const every = req.query.previews;
        const deliver = (e: JobEvent) => {
          if (e.event === 'preview' && (every === undefined || Number(e.data.step) % every !== 0)) return;
          stream.send(e);
          if (TERMINAL_EVENTS.has(e.event)) stream.end();
        };
        // Subscribed before the backlog is read, so no event can fall in between; what arrives
        // meanwhile waits and is sent after the backlog, less what the backlog already held.
        const early = holdUntilBacklog(deliver);
        stream.onEnd(events.subscribeJob(job.id, early.sink));
        const backlog = (last !== undefined ? await events.replayJob(job.id, last) : null) ?? snapshot(await events.historyOf(job.id));
        for (const e of backlog) stream.send(e);
        early.release(backlog);
        if (every !== undefined) stream.onEnd(events.watchPreviews(job.id, { every, maxSize: req.query.preview_size ?? DEFAULT_PREVIEW_SIZE }));
        return reply;
      },
      doc: {
        summary: 'Job Events',
        description:
          `kiapi extension. Server-sent events (text/event-stream) of one job until it ends: ${EVENT_LIST} ` +
          'A job that already finished answers its terminal event at once. On connect the stream starts with the job\'s current state; ' +
          'a watcher that reconnects with `Last-Event-ID` (EventSource does this by itself) gets what it missed, and the terminal event is never missed. ' +
          'Reconnecting with the terminal event\'s id answers 204. Previews are made only while someone asks for them and are never stored.',
        operationId: 'job_events_v1_jobs__job_id__events_get',
        responses: {
          '200': { description: 'The event stream; it ends after the terminal event.', eventStream: true },
          '204': { description: 'The job finished and Last-Event-ID is its terminal event: nothing more will come.' },
          '404': { description: 'Unknown job id.' },
          '422': { description: 'Malformed job id or query parameter.' },
        },
      },
    },
    {
      method: 'get',
      path: '/v1/events',
      query: AllEventsQuery,
      handler: async (request, reply) => {
        const req = request as AllEventsRequest;
        const types = list(req.query.type);
        const statuses = list(req.query.status);
        for (const s of statuses ?? []) {
          if (!(JOB_STATUSES as readonly string[]).includes(s)) {
            throw new InputError(`status: '${s}' is not a job status; use one or more of ${JOB_STATUSES.join(', ')}, comma-separated`);
          }
        }
        const wanted = (e: JobEvent) => e.event !== 'preview' && (!types || types.includes(e.jobType)) && (!statuses || statuses.includes(e.status));
        const stream = open(req, reply);
        const last = lastEventId(req, req.query);
        const early = holdUntilBacklog((e) => wanted(e) && stream.send(e));
        stream.onEnd(events.subscribeAll(early.sink));
        const backlog = (last !== undefined ? await events.replayAll(last) : null) ?? [];
        for (const e of backlog) if (wanted(e)) stream.send(e);
        early.release(backlog);
        return reply;
      },
      doc: {
        summary: 'All Job Events',
        description:
          `kiapi extension. Server-sent events of every job, for dashboards, until the client disconnects: the same events as GET /v1/jobs/{job_id}/events (previews excepted), ` +
          'each carrying `job_id` and `type`, optionally only some job types or statuses. A watcher that reconnects with `Last-Event-ID` gets the events it missed while they are still kept: on a single node the last 1024, in memory; on a cluster node (any node) those of unfinished jobs and of jobs for at least a minute after they ended, from the shared database.',
        operationId: 'all_events_v1_events_get',
        responses: {
          '200': { description: 'The event stream.', eventStream: true },
          '400': { description: 'An unknown status in `status`.' },
          '422': { description: 'A malformed query parameter.' },
        },
      },
    },
  ];
}

/**
 * What a watcher arriving now is told first: where the job stands. Queued: its latest position.
 * Running: that it started and its latest progress.
 */
function snapshot(history: JobEvent[]): JobEvent[] {
  const started = history.find((e) => e.event === 'started');
  if (!started) {
    const latest = history.at(-1);
    return latest ? [latest] : [];
  }
  const progress = history.filter((e) => e.event === 'progress').at(-1);
  return progress ? [started, progress] : [started];
}

/**
 * A sink that holds events until the backlog was sent (`release`), then delivers the held ones
 * the backlog did not contain, then every later one directly.
 */
function holdUntilBacklog(deliver: (e: JobEvent) => void): { sink: (e: JobEvent) => void; release(backlog: JobEvent[]): void } {
  let held: JobEvent[] | null = [];
  return {
    sink: (e) => (held ? held.push(e) : deliver(e)),
    release(backlog) {
      const sent = new Set(backlog.map((e) => e.id));
      const waiting = held ?? [];
      held = null;
      for (const e of waiting) if (!sent.has(e.id)) deliver(e);
    },
  };
}

function list(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return items.length > 0 ? items : undefined;
}
