/** Job schemas as the seeds name them; the families' `JobImageResponse` is built from these. */
import { Type, type TSchema } from 'typebox';
import { component, openObject, refTo } from '../schema.js';
import { JobWebhookSchema } from '../webhooks/webhook-schema.js';
import { JOB_STATUSES } from './job-store.js';

export const JobStatusSchema = component('JobStatus', Type.Unsafe<string>({ type: 'string', enum: [...JOB_STATUSES], title: 'JobStatus' }));
export const JobTypeSchema = component('JobType', Type.String());
export const JobIDSchema = component('JobID', Type.String());
export const FileIDSchema = component('FileID', Type.String());

export const AsyncJobResponse = component(
  'AsyncJobResponse',
  Type.Object(
    {
      job_id: Type.String({
        title: 'Job Id',
        description: 'Job id. Poll GET /v1/jobs/{job_id} to inspect status, progress, result, and artifacts.',
        examples: ['job_0123456789abcdef0123456789abcdef'],
      }),
      type: Type.String({ title: 'Type', description: 'Job type (qwen, qwen-edit, ideogram4).', examples: ['qwen'] }),
      status: refTo(JobStatusSchema, {
        description: 'Initial job status: queued (the job may already be running by the time you poll).',
        examples: ['queued'],
      }),
    },
    { title: 'AsyncJobResponse' },
  ),
);

/** The Job record (docs/compatibility.md §2.1 order) with `result` typed as `result` or null. */
export function jobSchema(name: string, result: TSchema | null): TSchema {
  return component(
    name,
    Type.Object(
      {
        type: refTo(JobTypeSchema, {
          description: 'Job type. Use this to interpret the capability-specific result payload.',
          examples: ['qwen'],
        }),
        params: Type.Optional(
          openObject({
            title: 'Params',
            description:
              'Request parameters captured for inspection and reproducibility (data URLs are shortened).',
          }),
        ),
        id: Type.Optional(
          refTo(JobIDSchema, {
            description: 'Job id. Jobs are stored in SQLite and survive restarts until pruned (KIAPI_JOB_RETENTION_S).',
            examples: ['job_0123456789abcdef0123456789abcdef'],
          }),
        ),
        status: Type.Optional(
          refTo(JobStatusSchema, {
            description: 'Job lifecycle state: queued, running, succeeded, failed, or canceled.',
            default: 'queued',
            examples: ['succeeded'],
          }),
        ),
        result: Type.Optional(result ? Type.Union([result, Type.Null()]) : Type.Union([openObject({}), Type.Null()])),
        artifacts: Type.Optional(
          Type.Array(FileIDSchema, {
            title: 'Artifacts',
            description: 'File ids produced by the job. Use GET /v1/files/{file_id} for metadata or /download for bytes.',
            examples: [['file_0123456789abcdef0123456789abcdef']],
          }),
        ),
        error: Type.Optional(
          Type.Union([Type.String(), Type.Null()], {
            title: 'Error',
            description: 'Error message when status is failed or canceled; otherwise null.',
            examples: ["model 'image' (qwen) is not activated"],
          }),
        ),
        created_at: Type.Optional(Type.Number({ title: 'Created At', description: 'Unix timestamp when the job was created.', examples: [1766200000.0] })),
        started_at: Type.Optional(
          Type.Union([Type.Number(), Type.Null()], {
            title: 'Started At',
            description: 'Unix timestamp when the worker started the job, or null while queued.',
            examples: [1766200001.0],
          }),
        ),
        finished_at: Type.Optional(
          Type.Union([Type.Number(), Type.Null()], {
            title: 'Finished At',
            description: 'Unix timestamp when the job reached a terminal state, or null while queued/running.',
            examples: [1766200030.0],
          }),
        ),
        progress: Type.Optional(
          Type.Union([Type.Number({ minimum: 0, maximum: 1 }), Type.Null()], {
            title: 'Progress',
            description: 'Best-effort completion fraction in [0.0, 1.0]. Null means the job has not reported progress.',
            examples: [0.42],
          }),
        ),
        progress_label: Type.Optional(
          Type.String({
            title: 'Progress Label',
            description: 'Short phase label: queued, running, loading, denoising, saving, canceling, canceled or done.',
            default: 'queued',
            examples: ['denoising'],
          }),
        ),
        queue_position: Type.Optional(
          Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], {
            title: 'Queue Position',
            description: 'kiapi extension. While queued: 1 = the next job to run. Null once the job started.',
            examples: [2],
          }),
        ),
        eta_s: Type.Optional(
          Type.Union([Type.Number({ minimum: 0 }), Type.Null()], {
            title: 'ETA (s)',
            description:
              'kiapi extension. While queued or running: seconds until the job should finish, from step times measured on earlier jobs of the same model and size (and, once running, its own step rate). Null when there is no measurement to go by yet, and once finished. Model loads are not included.',
            examples: [12.5],
          }),
        ),
        webhook: Type.Optional(
          refTo(JobWebhookSchema, {
            description:
              'kiapi extension, only on jobs that asked for a webhook (request `webhook` or the server KIAPI_WEBHOOK_URL): where it goes and how each delivery stands.',
          }),
        ),
      },
      { title: name },
    ),
  );
}
