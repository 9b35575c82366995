/**
 * Routes made from each capability registration: its POST operations (the sync/async submission
 * contract of docs/compatibility.md §1.8), its model list, OpenAPI document and docs pages.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { capabilityPrefix, type OperationDef } from '../../core/capability.js';
import { CanceledError, EngineError, SyncTimeoutError, isKiapiError } from '../../core/errors.js';
import type { AppContext } from '../context.js';
import { capabilityDocument } from '../openapi.js';
import { docsPage } from './docs.js';
import { sendBytes, sendFile } from './files.js';

export function capabilityRoutes(app: FastifyInstance, ctx: AppContext): void {
  for (const def of ctx.capabilities.list()) {
    const prefix = capabilityPrefix(def);
    for (const op of def.operations) {
      app.post(
        `${prefix}${op.path}`,
        { schema: { body: op.body } },
        (req, reply) => submit(ctx, op, req, reply),
      );
    }
    app.get(`${prefix}/models`, async () => ctx.models.publicInfo(def.family));
    // Built per call so the auth flag and registrations are always current; it is cheap.
    app.get(`${prefix}/openapi.json`, async () => capabilityDocument(def, ctx.version, ctx.config.authToken !== null));
    app.get(`${prefix}/docs`, async (_req, reply) => reply.type('text/html; charset=utf-8').send(docsPage(def.title, `${prefix}/openapi.json`)));
    app.get(`${prefix}/redoc`, async (_req, reply) => reply.redirect(`${prefix}/docs`));
  }
}

interface SubmitBody {
  mode?: 'sync' | 'async';
}

async function submit(ctx: AppContext, op: OperationDef, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  // The body has arrived; until the answer is ready no byte moves (input downloads, the sync
  // wait), which is not a stalled client: KIAPI_URL_TIMEOUT_S and KIAPI_SYNC_TIMEOUT_S bound this
  // part, so the connection's idle timer (KIAPI_IDLE_TIMEOUT_S) is off until the answer is sent.
  const socket = req.raw.socket;
  socket.setTimeout(0);
  try {
    return await answer(ctx, op, req, reply);
  } finally {
    // A response already finished has Node's keep-alive timeout on the socket: leave that alone.
    if (!socket.destroyed && !reply.raw.writableFinished) socket.setTimeout(ctx.server.idleTimeoutS * 1000);
  }
}

async function answer(ctx: AppContext, op: OperationDef, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const body = req.body as SubmitBody;
  // A client that goes away stops input fetching and its sync wait; a queued job runs on.
  const gone = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) gone.abort();
  });

  const prepared = await op.prepare(body, ctx.services, gone.signal);
  let job;
  try {
    // The inputs stay on disk until the job is done, whoever deletes their file meanwhile.
    const release = prepared.release?.bind(prepared);
    job = ctx.queue.submit(op.jobType, prepared.params, prepared.run, release ? () => void release() : undefined);
  } catch (err) {
    await prepared.discard();
    throw err;
  }
  if (body.mode === 'async') return reply.code(202).send({ job_id: job.id, type: job.type, status: job.status });

  const outcome = await ctx.queue.wait(job.id, ctx.config.syncTimeoutS * 1000, gone.signal);
  if (gone.signal.aborted) return reply; // nobody to answer; the job keeps its own record
  if (!outcome) {
    throw new SyncTimeoutError(
      `${job.type} job ${job.id} exceeded sync timeout (${pyFloat(ctx.config.syncTimeoutS)}s); it keeps running — poll /v1/jobs/${job.id}`,
    );
  }
  const final = outcome.job;
  if (final.status === 'canceled') throw new CanceledError(`${final.type} job ${final.id} was canceled: ${final.error ?? ''}`.trim());
  if (final.status === 'failed') {
    if (isKiapiError(outcome.error)) throw outcome.error;
    throw new EngineError(`${final.type} failed: ${final.error ?? 'unknown error'}`);
  }
  const wantsJson = (req.headers.accept ?? '').toLowerCase().includes('application/json');
  if (!wantsJson && final.artifacts.length === 1) {
    const fileId = final.artifacts[0]!;
    try {
      const record = ctx.files.get(fileId);
      const headers = { 'x-kiapi-file-id': fileId, 'x-kiapi-job-id': final.id };
      const bytes = ctx.files.takeRecent(fileId);
      if (bytes) return sendBytes(reply, record, bytes, headers);
      return await sendFile(reply, req.raw, ctx.files.root, record, headers);
    } catch {
      // The artifact was deleted meanwhile: fall back to the Job JSON, as the original does.
    }
  }
  return reply.code(200).send(final);
}

/** Python prints floats with a decimal point (`600.0`); clients may match the original's text. */
function pyFloat(n: number): string {
  return Number.isInteger(n) ? n.toFixed(1) : String(n);
}
