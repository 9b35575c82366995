/**
 * An OpenAI image request becomes ordinary kiapi jobs: the OpenAI fields are translated into the
 * family's own request body, which goes through the family's `prepare` (its rules, its inputs)
 * and the queue like any other submission. So every image is a job and a file, listed as usual,
 * and a request that breaks a rule is refused before anything is queued or stored.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { OperationDef, PreparedJob } from '../core/capability.js';
import { CanceledError, ConflictError, EngineError, InputError, NotFoundError, SyncTimeoutError, isKiapiError } from '../core/errors.js';
import { requestFingerprint } from '../core/jobs/idempotency.js';
import type { RecordOptions } from '../core/jobs/job-queue.js';
import type { JobRecord } from '../core/jobs/job-store.js';
import type { AppContext } from '../server/context.js';
import { markReplayed, replayNote, replayedJobs } from '../server/idempotency.js';
import type { SseStream } from '../server/sse.js';
import { operationFor, withParam, type OpenAiModel } from './models.js';
import type { ImageOptions } from './schemas.js';
import type { OpenAiSettings } from './settings.js';

export interface ImageRequest {
  prompt: string | Record<string, unknown>;
  options: ImageOptions;
  /** Edits: the input images as data URLs. */
  images?: string[];
}

interface Planned {
  model: OpenAiModel;
  op: OperationDef;
  bodies: Record<string, unknown>[];
  quality: string;
  format: 'png' | 'jpeg' | 'webp';
}

const SEED_LIMIT = 2 ** 31 - 1;

/** The family request bodies of one OpenAI request: one per image, seeds consecutive. */
export function plan(ctx: AppContext, settings: OpenAiSettings, req: ImageRequest, edit: boolean): Planned {
  const o = req.options;
  const n = o.n ?? 1;
  if (o.background === 'transparent') {
    throw withParam(new InputError("background 'transparent' is not supported: no model kiapi serves draws an alpha channel; use 'auto' or 'opaque'"), 'background', 'invalid_value');
  }
  if (o.stream && n > 1) throw withParam(new InputError('stream supports n = 1 only; send one request per image'), 'n', 'invalid_value');
  const { model, op } = operationFor(ctx, o.model ?? (edit ? 'qwen-image-edit' : settings.defaultModel), edit);
  const isQwen = model.family === 'qwen';
  if (!isQwen && o.steps != null) throw withParam(new InputError(`steps is a Qwen setting; '${model.id}' takes 'preset' (or 'quality')`), 'steps', 'invalid_value');
  if (!isQwen && o.negative_prompt != null) throw withParam(new InputError(`negative_prompt is a Qwen setting; '${model.id}' has none`), 'negative_prompt', 'invalid_value');
  if (isQwen && o.preset != null) throw withParam(new InputError(`preset is an Ideogram 4 setting; '${model.id}' takes 'steps' (or 'quality')`), 'preset', 'invalid_value');

  let prompt = req.prompt;
  if (model.family === 'ideogram4' && typeof prompt === 'string' && prompt.trimStart().startsWith('{')) {
    // A JSON caption sent as a string (the SDKs type `prompt` as a string).
    try {
      const parsed: unknown = JSON.parse(prompt);
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) prompt = parsed as Record<string, unknown>;
    } catch {
      // Not JSON after all: a plain prompt that starts with a brace.
    }
  }
  if (typeof prompt !== 'string' && isQwen) throw withParam(new InputError(`'${model.id}' takes a text prompt; JSON captions are for ideogram-4`), 'prompt', 'invalid_type');

  const quality = o.quality ?? 'auto';
  const tier = quality === 'standard' ? 'medium' : quality === 'hd' ? 'high' : quality;
  const format = o.output_format ?? 'png';
  const base: Record<string, unknown> = {
    ...(tier === 'auto' ? {} : (op.qualityTiers?.[tier] ?? {})),
    model: model.variant,
    mode: 'sync',
    prompt,
    format,
  };
  if (o.size && o.size !== 'auto') {
    const [w, h] = o.size.split('x').map(Number);
    base.width = w;
    base.height = h;
  }
  if (o.output_compression != null) base.quality = Math.max(1, o.output_compression);
  if (o.steps != null) base.steps = o.steps;
  if (o.preset != null) base.preset = o.preset;
  if (o.negative_prompt != null) base.negative_prompt = o.negative_prompt;
  if (req.images) base.images = req.images.map((url) => ({ type: 'data_url', data_url: url }));
  const first = o.seed ?? Math.floor(Math.random() * (SEED_LIMIT - n));
  if (first + n - 1 > SEED_LIMIT) throw withParam(new InputError(`seed + n - 1 must be at most ${SEED_LIMIT}`), 'seed', 'invalid_value');
  const bodies = Array.from({ length: n }, (_, i) => ({ ...base, seed: first + i }));
  return { model, op, bodies, quality, format };
}

export interface Submitted {
  planned: Planned;
  jobs: JobRecord[];
  /** Denoising steps of each job (for spreading partial images over the run). */
  steps: number[];
  /** Added to a failure's message when the jobs are an earlier request's (an Idempotency-Key replay). */
  replayNote?: string;
}

/**
 * Submits the request's jobs, or with an Idempotency-Key once per key: a repeat gets the jobs of
 * the first request (marked by the replay header), a repeat with another request is refused. The
 * fingerprint is the request as read (the fields after validation; each input image by digest).
 */
export async function submitOnce(
  ctx: AppContext,
  req: FastifyRequest,
  reply: FastifyReply,
  planned: Planned,
  request: ImageRequest,
  key: string | null,
  signal: AbortSignal,
): Promise<Submitted> {
  const user = request.options.user;
  if (key === null) return submitAll(ctx, planned, user, signal);
  const fingerprint = requestFingerprint({
    prompt: request.prompt,
    options: request.options,
    images: request.images?.map((url) => createHash('sha256').update(url).digest('hex')) ?? null,
  });
  const route = req.routeOptions.url ?? req.url;
  const keyed = await ctx.idempotency.once(route, key, fingerprint, (record) =>
    submitAll(ctx, planned, user, signal, (jobs, tx) => record(jobs.map((j) => j.id), tx)),
  );
  if ('fresh' in keyed) return keyed.fresh;
  markReplayed(reply);
  const jobs = await replayedJobs(ctx, key, keyed.replay);
  return { planned, jobs, steps: jobs.map((j) => Number(j.params.steps) || 0), replayNote: replayNote(key) };
}

/** Prepares every image, then queues them all; a failure on the way undoes what was done. */
export async function submitAll(
  ctx: AppContext,
  planned: Planned,
  user: string | null | undefined,
  signal: AbortSignal,
  record?: RecordOptions['record'],
): Promise<Submitted> {
  const prepared: PreparedJob[] = [];
  try {
    for (const body of planned.bodies) prepared.push(await planned.op.prepare(body, ctx.services, signal));
  } catch (err) {
    await Promise.all(prepared.map((p) => p.discard()));
    throw withParam(err as Error, paramOf(err), (err as { code?: string }).code ?? null);
  }
  // The server's KIAPI_WEBHOOK_URL, if set (these routes take no `webhook` field of their own).
  const webhook = await ctx.webhooks.target({}, signal);
  let jobs: JobRecord[];
  try {
    jobs = await ctx.queue.submitMany(
      prepared.map((p) => {
        const release = p.release?.bind(p);
        return {
          type: planned.op.jobType,
          params: { ...p.params, ...(user != null ? { openai_user: user } : {}) },
          handler: p.run,
          opts: {
            runnable: p.runnable,
            model: p.model,
            onSettled: release ? () => void release() : undefined,
            workload: p.workload,
            onCreate: webhook ? (job: JobRecord, tx: unknown) => ctx.webhooks.outbox.subscribe(job.id, webhook, tx) : undefined,
          },
        };
      }),
      { record },
    );
  } catch (err) {
    await Promise.all(prepared.map((p) => p.discard()));
    throw err;
  }
  return { planned, jobs, steps: prepared.map((p) => p.workload?.steps ?? 0) };
}

/**
 * The request field a family rule's message is about: family rules speak of their own fields
 * (width/height come from `size`, steps from `quality` or `steps`).
 */
function paramOf(err: unknown): string | null {
  const given = (err as { param?: string | null }).param;
  if (given !== undefined) return given;
  // Only a refused request is about a field; a busy queue or a missing model is not.
  if (!isKiapiError(err) || (err.status !== 400 && err.status !== 422)) return null;
  const msg = err instanceof Error ? err.message : '';
  if (/\b(width|height)\b/.test(msg)) return 'size';
  if (/\bsteps\b/.test(msg)) return 'steps';
  if (/\bnegative_prompt\b/.test(msg)) return 'negative_prompt';
  if (/\bimages?\b/.test(msg)) return 'image';
  if (/\bprompt\b|caption/.test(msg)) return 'prompt';
  return null;
}

/** Waits for one job and returns its stored image, or throws what a sync kiapi request would. */
export async function finished(ctx: AppContext, job: JobRecord, signal: AbortSignal, note = ''): Promise<{ fileId: string; width: number; height: number }> {
  const outcome = await ctx.queue.wait(job.id, ctx.config.syncTimeoutS * 1000, signal);
  if (!outcome) throw new SyncTimeoutError(`${job.type} job ${job.id} exceeded the sync timeout (${ctx.config.syncTimeoutS} s, KIAPI_SYNC_TIMEOUT_S); it keeps running — poll /v1/jobs/${job.id}`);
  const final = outcome.job;
  if (final.status === 'canceled') throw new CanceledError(`${final.type} job ${final.id} was canceled: ${final.error ?? ''}`.trim() + note);
  if (final.status === 'failed') {
    if (isKiapiError(outcome.error)) throw outcome.error;
    throw new EngineError(`${final.type} failed: ${final.error ?? 'unknown error'}${note}`);
  }
  const result = (final.result ?? {}) as { width?: number; height?: number };
  return { fileId: final.artifacts[0]!, width: result.width ?? 0, height: result.height ?? 0 };
}

export async function fileBytes(ctx: AppContext, fileId: string): Promise<Buffer> {
  const recent = ctx.files.takeRecent(fileId)?.bytes;
  if (recent) return recent;
  try {
    return await fs.readFile(await ctx.files.localPath(fileId));
  } catch (err) {
    if (!(err instanceof NotFoundError) && (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    // Deleted between its job's end and this answer (DELETE /v1/files, KIAPI_FILE_RETENTION_S, or
    // long before an Idempotency-Key replay): the client's state, not a server fault.
    throw new ConflictError(`image ${fileId} has been deleted since its job finished; send the request again (with a new Idempotency-Key if it had one)`);
  }
}

export function downloadUrl(settings: OpenAiSettings, req: FastifyRequest, fileId: string): string {
  return `${settings.publicBaseUrl ?? `${req.protocol}://${req.host}`}/v1/files/${fileId}/download`;
}

/** The JSON answer: every image, as bytes or a URL. */
export async function answerJson(ctx: AppContext, settings: OpenAiSettings, req: FastifyRequest, sub: Submitted, asUrl: boolean, signal: AbortSignal) {
  const done = await Promise.all(sub.jobs.map((j) => finished(ctx, j, signal, sub.replayNote)));
  const data = await Promise.all(
    done.map(async (d) => (asUrl ? { url: downloadUrl(settings, req, d.fileId) } : { b64_json: (await fileBytes(ctx, d.fileId)).toString('base64') })),
  );
  return {
    created: Math.floor(Date.now() / 1000),
    data,
    output_format: sub.planned.format,
    size: done[0] ? `${done[0].width}x${done[0].height}` : 'auto',
    quality: sub.planned.quality,
  };
}

/**
 * The streamed answer of one image: up to `partials` step previews as `<prefix>.partial_image`,
 * then `<prefix>.completed`. The previews are the job's own step previews, asked for at a cadence
 * that spreads them over the run; a failure after the stream began is an `error` event in the
 * OpenAI error shape (the SDKs raise it).
 */
export async function streamOne(
  ctx: AppContext,
  stream: SseStream,
  sub: Submitted,
  prefix: 'image_generation' | 'image_edit',
  partials: number,
  signal: AbortSignal,
  errorBody: (err: unknown) => unknown,
): Promise<void> {
  const job = sub.jobs[0]!;
  const { format, quality } = sub.planned;
  const common = { background: 'opaque', quality, output_format: format };
  let sent = 0;
  if (partials > 0) {
    const total = sub.steps[0] ?? 0;
    const every = total > 1 ? Math.max(1, Math.floor(total / (partials + 1))) : 1;
    stream.onEnd(
      ctx.queue.events.subscribeJob(job.id, (e) => {
        if (e.event !== 'preview' || sent >= partials) return;
        const d = e.data as { step: number; total: number; width: number; height: number; image: string };
        if (d.step % every !== 0 || d.step >= d.total) return;
        stream.sendData(
          `${prefix}.partial_image`,
          {
            type: `${prefix}.partial_image`,
            b64_json: d.image.slice(d.image.indexOf(',') + 1),
            created_at: Math.floor(Date.now() / 1000),
            size: `${d.width}x${d.height}`,
            ...common,
            // Previews are JPEG whatever the final format.
            output_format: 'jpeg',
            partial_image_index: sent++,
          },
          { preview: true },
        );
      }),
    );
    stream.onEnd(ctx.queue.events.watchPreviews(job.id, { every, maxSize: 512 }));
  }
  try {
    const d = await finished(ctx, job, signal, sub.replayNote);
    const bytes = await fileBytes(ctx, d.fileId);
    stream.sendData(`${prefix}.completed`, {
      type: `${prefix}.completed`,
      b64_json: bytes.toString('base64'),
      created_at: Math.floor(Date.now() / 1000),
      size: `${d.width}x${d.height}`,
      ...common,
    });
  } catch (err) {
    if (!signal.aborted) stream.sendData('error', errorBody(err));
  } finally {
    stream.end();
  }
}

/** Turns off the idle timer while the answer is prepared (the sync wait is bounded by KIAPI_SYNC_TIMEOUT_S). */
export async function withoutIdleTimeout<T>(ctx: AppContext, req: FastifyRequest, reply: FastifyReply, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const socket = req.raw.socket;
  socket.setTimeout(0);
  const gone = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) gone.abort();
  });
  try {
    return await fn(gone.signal);
  } finally {
    if (!socket.destroyed && !reply.raw.writableFinished && !reply.sent) socket.setTimeout(ctx.server.idleTimeoutS * 1000);
  }
}
