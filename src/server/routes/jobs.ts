/** Jobs API: list, get, delete (cancels unfinished jobs), cancel. */
import type { FastifyRequest } from 'fastify';
import type { Static } from 'typebox';
import type { AppContext } from '../context.js';
import { listAnswer, numericLimit, pageQuery } from '../list-paging.js';
import type { RouteDef } from '../route-def.js';
import { JobDeletedSchema, JobIdParams, JobListQuery, JobListSchema, JobSchema } from '../schemas.js';

type JobRequest = FastifyRequest<{ Params: Static<typeof JobIdParams> }>;
type JobListRequest = FastifyRequest<{ Querystring: Static<typeof JobListQuery> }>;

/** OpenAPI links: where a job id in a response can be used next. */
function jobLinks(jobId: string): Record<string, Record<string, unknown>> {
  const link = (operationId: string, description: string) => ({ operationId, parameters: { job_id: jobId }, description });
  return {
    GetJob: link('get_job_v1_jobs__job_id__get', 'Poll this job.'),
    CancelJob: link('cancel_job_v1_jobs__job_id__cancel_post', 'Cancel this job.'),
    DeleteJob: link('delete_job_v1_jobs__job_id__delete', 'Delete this job.'),
  };
}

export function jobRoutes(ctx: AppContext): RouteDef[] {
  return [
    {
      method: 'get',
      path: '/v1/jobs',
      query: JobListQuery,
      preValidation: numericLimit,
      handler: async (req) => {
        const { query } = req as JobListRequest;
        const page = ctx.jobs.list({ ...pageQuery(query), filters: { status: query.status, type: query.type } });
        return listAnswer(page.data.map((j) => ctx.queue.view(j)), page.hasMore, (j) => j.id);
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
      handler: async (req) => ctx.queue.view(ctx.jobs.get((req as JobRequest).params.job_id)),
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
        const wasRunning = ctx.queue.delete(jobId);
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
      handler: async (req) => ctx.queue.view(ctx.queue.cancel((req as JobRequest).params.job_id)),
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
  ];
}
