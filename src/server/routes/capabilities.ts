/**
 * Routes made from each capability registration: its POST operations (the sync/async submission
 * contract of docs/compatibility.md §1.8), its model list, OpenAPI document and docs pages.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { capabilityPrefix, type CapabilityRegistry, type JobRunner, type OperationDef, type PreparedJob, type Runnable } from '../../core/capability.js';
import { CanceledError, ConflictError, EngineError, NotFoundError, SyncTimeoutError, isKiapiError } from '../../core/errors.js';
import { requestFingerprint } from '../../core/jobs/idempotency.js';
import type { JobHandler, RecordOptions } from '../../core/jobs/job-queue.js';
import type { JobRecord } from '../../core/jobs/job-store.js';
import type { WebhookTarget } from '../../core/webhooks/outbox.js';
import type { WebhookRequest } from '../../core/webhooks/webhooks.js';
import type { AppContext } from '../context.js';
import { idempotencyKeyOf, markReplayed, replayNote, replayedJobs } from '../idempotency.js';
import { laxenBody } from '../lax-inputs.js';
import { capabilityDocument } from '../openapi.js';
import type { RouteDef } from '../route-def.js';
import { unknownFieldWarnings, warningHeader } from '../unknown-fields.js';
import { docsPage, serverUrl } from './docs.js';
import { sendBytes, sendFile } from './files.js';

export function capabilityRoutes(ctx: AppContext): RouteDef[] {
  const defs: RouteDef[] = [];
  for (const def of ctx.capabilities.list()) {
    const prefix = capabilityPrefix(def);
    // The operations and the model list are described by the family's own document (openapi.ts
    // capabilityDocument), made from the same registration.
    for (const op of def.operations) {
      defs.push({
        method: 'post',
        path: `${prefix}${op.path}`,
        body: op.body,
        doc: 'family',
        // The original's lax spellings ("256", "2.5", "yes") become the typed value before
        // validation, so validation, params and the run all see the converted value.
        preValidation: async (req) => laxenBody(op.body, req.body),
        handler: (req, reply) => untimed(ctx, req, reply, () => answer(ctx, op, `${prefix}${op.path}`, req, reply)),
      });
    }
    for (const tool of def.tools ?? []) {
      defs.push({
        method: 'post',
        path: `${prefix}${tool.path}`,
        body: tool.body,
        doc: 'family',
        preValidation: async (req) => laxenBody(tool.body, req.body),
        handler: async (req) => tool.handle(req.body, ctx.services),
      });
    }
    defs.push({ method: 'get', path: `${prefix}/models`, doc: 'family', handler: async () => ctx.models.publicInfo(def.family) });
    const page = { undocumented: 'docs page or OpenAPI document, not an API operation' };
    defs.push(
      {
        method: 'get',
        path: `${prefix}/openapi.json`,
        public: true,
        doc: page,
        // Built per call so the auth flag and registrations are always current; it is cheap.
        handler: async (req) => capabilityDocument(def, ctx.version, ctx.config.authToken !== null, serverUrl(req)),
      },
      {
        method: 'get',
        path: `${prefix}/docs`,
        public: true,
        doc: page,
        handler: async (_req, reply) => reply.type('text/html; charset=utf-8').send(docsPage(def.title, `${prefix}/openapi.json`)),
      },
      { method: 'get', path: `${prefix}/redoc`, public: true, doc: page, handler: async (_req, reply) => reply.redirect(`${prefix}/docs`) },
    );
  }
  return defs;
}

interface SubmitBody {
  mode?: 'sync' | 'async';
}

/**
 * Runs a submission with the connection's idle timer off. The body has arrived; until the answer
 * is ready no byte moves (input downloads, the sync wait), which is not a stalled client:
 * KIAPI_URL_TIMEOUT_S and KIAPI_SYNC_TIMEOUT_S bound this part, so the idle timer
 * (KIAPI_IDLE_TIMEOUT_S) is off until the answer is sent.
 */
export async function untimed(ctx: AppContext, req: FastifyRequest, reply: FastifyReply, fn: () => Promise<unknown>): Promise<unknown> {
  const socket = req.raw.socket;
  socket.setTimeout(0);
  try {
    return await fn();
  } finally {
    // A response already finished has Node's keep-alive timeout on the socket: leave that alone.
    if (!socket.destroyed && !reply.raw.writableFinished) socket.setTimeout(ctx.server.idleTimeoutS * 1000);
  }
}

async function answer(ctx: AppContext, op: OperationDef, route: string, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const body = req.body as SubmitBody;
  // Read first: a key that cannot be one is refused before anything is resolved or stored.
  const key = idempotencyKeyOf(req);
  // A client that goes away stops input fetching and its sync wait; a queued job runs on.
  const gone = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) gone.abort();
  });

  // Extra fields are allowed by the contract, so a misspelt one is reported, not refused: on
  // this answer (whatever it turns out to be) and in the job's result.
  const warnings = unknownFieldWarnings(Object.keys((op.body as { properties?: object }).properties ?? {}), body);
  if (warnings.length > 0) void reply.header('warning', warningHeader(warnings));

  let job: JobRecord;
  let replayedKey: string | null = null;
  if (key === null) {
    job = await submitJob(ctx, op, body, warnings, gone.signal);
  } else {
    // The validated body (lax spellings converted, defaults filled in) is what "the same request" means.
    const keyed = await ctx.idempotency.once(route, key, requestFingerprint(body), (record) =>
      submitJob(ctx, op, body, warnings, gone.signal, (jobs, tx) => record(jobs.map((j) => j.id), tx)),
    );
    if ('fresh' in keyed) {
      job = keyed.fresh;
    } else {
      replayedKey = key;
      markReplayed(reply);
      job = (await replayedJobs(ctx, key, keyed.replay))[0]!;
    }
  }
  return answerJob(ctx, job, body.mode ?? 'sync', req, reply, gone.signal, replayedKey);
}

/**
 * The answer to a submitted job, as every generation route gives it: async, 202 with the job id;
 * sync, the image bytes (or the Job JSON when asked for JSON) once the job is done. `replayedKey`:
 * the job was not submitted now but by an earlier request with this Idempotency-Key.
 */
export async function answerJob(
  ctx: AppContext,
  job: JobRecord,
  mode: 'sync' | 'async',
  req: FastifyRequest,
  reply: FastifyReply,
  gone: AbortSignal,
  replayedKey: string | null = null,
): Promise<unknown> {
  if (mode === 'async') return reply.code(202).send({ job_id: job.id, type: job.type, status: job.status });

  const replayed = replayedKey !== null;
  const outcome = await ctx.queue.wait(job.id, ctx.config.syncTimeoutS * 1000, gone);
  if (gone.aborted) return reply; // nobody to answer; the job keeps its own record
  if (!outcome) {
    throw new SyncTimeoutError(
      `${job.type} job ${job.id} exceeded sync timeout (${pyFloat(ctx.config.syncTimeoutS)}s); it keeps running — poll /v1/jobs/${job.id}`,
    );
  }
  const final = outcome.job;
  const note = replayed ? replayNote(replayedKey) : '';
  void reply.header('server-timing', serverTiming(final, outcome.timings, reply.elapsedTime));
  if (final.status === 'canceled') throw new CanceledError(`${final.type} job ${final.id} was canceled: ${final.error ?? ''}`.trim() + note);
  if (final.status === 'failed') {
    if (isKiapiError(outcome.error)) throw outcome.error;
    throw new EngineError(`${final.type} failed: ${final.error ?? 'unknown error'}${note}`);
  }
  const wantsJson = (req.headers.accept ?? '').toLowerCase().includes('application/json');
  if (!wantsJson && final.artifacts.length === 1) {
    const fileId = final.artifacts[0]!;
    const headers = { 'x-kiapi-file-id': fileId, 'x-kiapi-job-id': final.id };
    try {
      const kept = ctx.files.takeRecent(fileId);
      if (kept) return sendBytes(reply, kept.record, kept, headers);
      const record = await ctx.files.get(fileId);
      return await sendFile(reply, req.raw, await ctx.files.localPath(fileId), record, headers);
    } catch (err) {
      // A replay promises the first answer's bytes; said plainly rather than answered differently.
      if (replayed && err instanceof NotFoundError) {
        throw new ConflictError(`the image of job ${final.id} (file ${fileId}) has been deleted since the earlier request with this Idempotency-Key; its Job JSON is at /v1/jobs/${final.id} (or ask with Accept: application/json); send a new key to generate again`);
      }
      // The artifact was deleted meanwhile: fall back to the Job JSON, as the original does.
    }
  }
  return reply.code(200).send(await ctx.queue.view(final));
}

/**
 * Prepares the request (rules, inputs) and queues its job; returns the job as it was queued.
 * `record` runs in the transaction that records the job (the request's idempotency key).
 */
async function submitJob(
  ctx: AppContext,
  op: OperationDef,
  body: SubmitBody,
  warnings: string[],
  signal: AbortSignal,
  record?: RecordOptions['record'],
): Promise<JobRecord> {
  // Checked before preparation stores any input: a refused webhook leaves nothing behind.
  const webhook = await ctx.webhooks.target(body as WebhookRequest, signal);
  const prepared = await op.prepare(body, ctx.services, signal);
  if (warnings.length === 0) return queuePrepared(ctx, op.jobType, prepared, prepared.run, webhook, record);
  // The request's warnings join the result on whichever node runs the job: they travel as data.
  const runnable: Runnable = { runner: WARNED_RUNNER, spec: { warnings, runnable: prepared.runnable } };
  return queuePrepared(ctx, op.jobType, { ...prepared, runnable }, ctx.capabilities.handler(runnable, ctx.services), webhook, record);
}

/** The runner of a job whose request drew warnings (lax inputs): its own runnable, then the warnings in its result. */
export const WARNED_RUNNER = 'with-warnings';

export function warnedRunner(registry: CapabilityRegistry): JobRunner {
  return (spec, services) => {
    const inner = registry.handler(spec.runnable as Runnable, services);
    const warnings = spec.warnings as string[];
    return async (jobCtx) => {
      const out = await inner(jobCtx);
      return { ...out, result: { ...out.result, warnings } };
    };
  };
}

/**
 * Queues a prepared job with what goes with it: its webhook subscription and the request's
 * idempotency key (`record`), both written in the job's own transaction. The inputs stay on disk
 * until the job is done, whoever deletes their file meanwhile; when the job is not queued after
 * all (queue full, shutting down), what preparation stored is removed again.
 */
export async function queuePrepared(
  ctx: AppContext,
  type: string,
  prepared: PreparedJob,
  run: JobHandler,
  webhook: WebhookTarget | null,
  record?: RecordOptions['record'],
): Promise<JobRecord> {
  try {
    const release = prepared.release?.bind(prepared);
    return await ctx.queue.submit(type, prepared.params, run, {
      runnable: prepared.runnable,
      model: prepared.model,
      onSettled: release ? () => void release() : undefined,
      workload: prepared.workload,
      onCreate: webhook ? (created, tx) => ctx.webhooks.outbox.subscribe(created.id, webhook, tx) : undefined,
      record,
    });
  } catch (err) {
    await prepared.discard();
    throw err;
  }
}

/**
 * The standard Server-Timing header (browsers' developer tools show it): how long the job waited
 * in the queue, ran in the engine (model load and denoising) and took to be encoded and stored,
 * and the whole request as the server saw it. The client's time minus `engine` is what kiapi
 * itself costs per job (`npm run bench -- overhead` reports it).
 */
function serverTiming(job: JobRecord, timings: Record<string, number> | undefined, totalMs: number): string {
  const parts: [string, number][] = [];
  if (job.started_at !== null) parts.push(['wait', (job.started_at - job.created_at) * 1000]);
  for (const [name, ms] of Object.entries(timings ?? {})) parts.push([name, ms]);
  parts.push(['total', totalMs]);
  return parts.map(([name, ms]) => `${name};dur=${Math.max(0, ms).toFixed(2)}`).join(', ');
}

/** Python prints floats with a decimal point (`600.0`); clients may match the original's text. */
function pyFloat(n: number): string {
  return Number.isInteger(n) ? n.toFixed(1) : String(n);
}
