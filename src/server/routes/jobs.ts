/** Jobs API: list, get, delete (cancels unfinished jobs), cancel, rerun. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Static } from 'typebox';
import { prepareRerun } from '../../capabilities/image-common/rerun.js';
import { requestFingerprint } from '../../core/jobs/idempotency.js';
import type { RecordOptions } from '../../core/jobs/job-queue.js';
import { AsyncJobResponse } from '../../core/jobs/job-schema.js';
import type { JobRecord } from '../../core/jobs/job-store.js';
import type { AppContext } from '../context.js';
import { idempotencyKeyOf, markReplayed, replayedJobs } from '../idempotency.js';
import { listAnswer, numericLimit, pageQuery } from '../list-paging.js';
import { replayedHeader } from '../openapi.js';
import type { RouteDef } from '../route-def.js';
import { JobDeletedSchema, JobIdParams, JobListQuery, JobListSchema, JobSchema, RerunBody } from '../schemas.js';
import { warningHeader } from '../unknown-fields.js';
import { answerJob, queuePrepared, untimed } from './capabilities.js';

type JobRequest = FastifyRequest<{ Params: Static<typeof JobIdParams> }>;
type JobListRequest = FastifyRequest<{ Querystring: Static<typeof JobListQuery> }>;
type RerunRequest = FastifyRequest<{ Params: Static<typeof JobIdParams>; Body: Static<typeof RerunBody> }>;

const RERUN_DOC = `kiapi extension. Makes the image of a succeeded image job again from its reproducibility record (\`result.record\`): the same engine, model revision, inputs and LoRAs (by content digest), every resolved parameter and the seed. On the same engine and machine the new image has the same bytes.

The body is optional: \`mode\` works as on the generation routes (\`sync\` by default: the image bytes, or the Job JSON with \`Accept: application/json\`; \`async\`: 202 with the job id). The new job has the original's type and result shape; its \`record.rerun_of\` names the original.

Refused with 409, naming the reason, when the job did not succeed or has no record (it ran on a kiapi from before records were kept), when an input or LoRA was deleted or its content differs from the recorded digest, and when what is installed now differs from the record — the engine, its version (mflux, MLX, Python, device; kiapi's own for the preview engine), the encoder (sharp, libvips) or the model's repository or revision — because the image would likely differ. \`{"allow_different": true}\` runs it anyway on what is installed now; each difference is then reported in \`Warning\` headers and the new job's \`result.warnings\`.

\`webhook\` and \`webhook_events_filter\` work as on the generation routes, for the new job (the original's webhook is not reused). An \`Idempotency-Key\` header works as on the generation routes: a retry with the same key and body answers the same new job (\`Idempotent-Replayed: true\`) instead of making another.`;

/** OpenAPI links: where a job id in a response can be used next. */
function jobLinks(jobId: string): Record<string, Record<string, unknown>> {
  const link = (operationId: string, description: string) => ({ operationId, parameters: { job_id: jobId }, description });
  return {
    GetJob: link('get_job_v1_jobs__job_id__get', 'Poll this job.'),
    CancelJob: link('cancel_job_v1_jobs__job_id__cancel_post', 'Cancel this job.'),
    DeleteJob: link('delete_job_v1_jobs__job_id__delete', 'Delete this job.'),
    RerunJob: link('rerun_job_v1_jobs__job_id__rerun_post', "Make this job's image again from its reproducibility record."),
  };
}

const DIFFERENCES_HEADER = {
  description: 'Present only with allow_different when something differs from the record: one `299 - "…"` warning per difference, comma-separated.',
  required: false,
  schema: { type: 'string' },
};

export function jobRoutes(ctx: AppContext): RouteDef[] {
  return [
    {
      method: 'get',
      path: '/v1/jobs',
      query: JobListQuery,
      preValidation: numericLimit,
      handler: async (req) => {
        const { query } = req as JobListRequest;
        const page = await ctx.jobs.list({ ...pageQuery(query), filters: { status: query.status, type: query.type } });
        return listAnswer(await Promise.all(page.data.map((j) => ctx.queue.view(j))), page.hasMore, (j) => j.id);
      },
      doc: {
        summary: 'List Jobs',
        description:
          "Jobs still retained (KIAPI_JOB_RETENTION_S), newest first, optionally only one status or type. Cursor paging as in OpenAI's list endpoints: limit, after, before; the answer says has_more, first_id and last_id.",
        operationId: 'list_jobs_v1_jobs_get',
        responses: {
          '200': { description: 'Job list.', schema: JobListSchema, links: jobLinks('$response.body#/data/0/id') },
          '400': { description: 'after or before names no job (deleted or pruned): start again without it.' },
          '422': { description: 'A malformed query parameter (limit out of range, a cursor that is not a job id, an unknown status).' },
        },
      },
    },
    {
      method: 'get',
      path: '/v1/jobs/{job_id}',
      params: JobIdParams,
      handler: async (req) => ctx.queue.view(await ctx.jobs.get((req as JobRequest).params.job_id)),
      doc: {
        summary: 'Get Job',
        description:
          'Status, progress (fraction + label), queue position and ETA, result and artifacts of one job. To follow a job without polling, stream GET /v1/jobs/{job_id}/events.',
        operationId: 'get_job_v1_jobs__job_id__get',
        responses: {
          '200': { description: 'The job.', schema: JobSchema },
          '404': { description: 'Unknown job id.' },
          '422': { description: 'Malformed job id.' },
        },
      },
    },
    {
      method: 'delete',
      path: '/v1/jobs/{job_id}',
      params: JobIdParams,
      handler: async (req) => {
        const jobId = (req as JobRequest).params.job_id;
        const wasRunning = await ctx.queue.delete(jobId);
        return { deleted: true, job_id: jobId, was_running: wasRunning };
      },
      doc: {
        summary: 'Delete Job',
        description:
          'Removes the job record. A queued job is canceled and never runs; a running job is asked to stop at its next step. Artifacts already stored stay in the Files API.',
        operationId: 'delete_job_v1_jobs__job_id__delete',
        responses: {
          '200': { description: 'Deleted.', schema: JobDeletedSchema },
          '404': { description: 'Unknown job id.' },
          '422': { description: 'Malformed job id.' },
        },
      },
    },
    {
      method: 'post',
      path: '/v1/jobs/{job_id}/cancel',
      params: JobIdParams,
      handler: async (req) => ctx.queue.view(await ctx.queue.cancel((req as JobRequest).params.job_id)),
      doc: {
        summary: 'Cancel Job',
        description:
          'kiapi extension. A queued job becomes `canceled` at once. A running job gets progress_label `canceling` and stops at its next engine step, then becomes `canceled`: poll it. A finished job answers 409.',
        operationId: 'cancel_job_v1_jobs__job_id__cancel_post',
        responses: {
          '200': { description: 'The job after the cancel request.', schema: JobSchema, links: jobLinks('$response.body#/id') },
          '404': { description: 'Unknown job id.' },
          '409': { description: 'The job already finished.' },
          '422': { description: 'Malformed job id.' },
        },
      },
    },
    {
      method: 'post',
      path: '/v1/jobs/{job_id}/rerun',
      params: JobIdParams,
      body: RerunBody,
      bodyOptional: true,
      // No body (`curl -X POST …/rerun`) is the defaults.
      preValidation: async (req) => {
        req.body ??= {};
      },
      handler: (req, reply) => untimed(ctx, req, reply, () => rerun(ctx, req as RerunRequest, reply)),
      doc: {
        summary: 'Rerun Job',
        description: RERUN_DOC,
        operationId: 'rerun_job_v1_jobs__job_id__rerun_post',
        idempotent: true,
        responses: {
          '200': {
            description: 'Sync: the image bytes (headers X-Kiapi-File-Id, X-Kiapi-Job-Id), or the new Job JSON with Accept: application/json.',
            schema: JobSchema,
            binary: ['image/png', 'image/jpeg', 'image/webp'],
            headers: {
              'X-Kiapi-File-Id': { description: 'The new image file_id when raw bytes are returned.', schema: { type: 'string' } },
              'X-Kiapi-Job-Id': { description: 'The new job id when raw bytes are returned.', schema: { type: 'string' } },
              Warning: DIFFERENCES_HEADER,
              'Idempotent-Replayed': replayedHeader,
            },
          },
          '202': {
            description: 'Async: the new job was queued; poll GET /v1/jobs/{job_id}.',
            schema: AsyncJobResponse,
            headers: { Warning: DIFFERENCES_HEADER, 'Idempotent-Replayed': replayedHeader },
            links: jobLinks('$response.body#/job_id'),
          },
          '400': { description: 'A recorded input can no longer be used (it is not a readable image or LoRA), the webhook URL is refused, or the Idempotency-Key is malformed.' },
          '404': { description: 'Unknown job id.' },
          '409': {
            description:
              'Not rerun: the job did not succeed or has no record, an input or LoRA was deleted or changed, what is installed differs from the record (send allow_different), or a sync rerun was canceled; or, on an Idempotency-Key replay, the job (or its image) the key names has been deleted since.',
          },
          '415': { description: 'A body was sent but not as application/json.' },
          '422': {
            description:
              'Malformed job id or body (unknown field, mode not sync/async, allow_different not a boolean), or the Idempotency-Key was used on this rerun with a different body.',
          },
          '429': { description: 'The job queue is full (KIAPI_MAX_QUEUE); retry after the Retry-After header.' },
          '500': { description: 'The engine failed while running the job.' },
          '503': { description: 'The model is not activated or cannot fit the memory budget: the message names the command that fixes it.' },
          '504': { description: 'Sync rerun exceeded KIAPI_SYNC_TIMEOUT_S; the job keeps running — poll it.' },
          '507': { description: 'The disk was full while the image was saved.' },
        },
      },
    },
  ];
}

/**
 * POST /v1/jobs/{job_id}/rerun: prepared from the record, then submitted and answered like a
 * generation, Idempotency-Key included (keyed per job: the same key on another job's rerun is
 * another request).
 */
async function rerun(ctx: AppContext, req: RerunRequest, reply: FastifyReply): Promise<unknown> {
  const key = idempotencyKeyOf(req);
  const original = await ctx.jobs.get(req.params.job_id);
  const mode = req.body.mode ?? 'sync';
  const gone = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) gone.abort();
  });
  const submit = async (record?: RecordOptions['record']): Promise<JobRecord> => {
    // Checked before preparation holds any input: a refused webhook leaves nothing behind.
    const webhook = await ctx.webhooks.target(req.body, gone.signal);
    const { prepared, warnings } = await prepareRerun(ctx.services, original, { allowDifferent: req.body.allow_different ?? false, mode }, gone.signal);
    if (warnings.length > 0) void reply.header('warning', warningHeader(warnings));
    return queuePrepared(ctx, original.type, prepared, prepared.run, webhook, record);
  };
  if (key === null) return answerJob(ctx, await submit(), mode, req, reply, gone.signal);
  const keyed = await ctx.idempotency.once(`/v1/jobs/${original.id}/rerun`, key, requestFingerprint(req.body), (record) =>
    submit((jobs, tx) => record(jobs.map((j) => j.id), tx)),
  );
  if ('fresh' in keyed) return answerJob(ctx, keyed.fresh, mode, req, reply, gone.signal);
  markReplayed(reply);
  return answerJob(ctx, (await replayedJobs(ctx, key, keyed.replay))[0]!, mode, req, reply, gone.signal, key);
}
