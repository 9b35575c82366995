/** Schemas of the common API (root OpenAPI document): files, jobs, health, errors. */
import { Type } from 'typebox';
import { FILE_ID_PATTERN, JOB_ID_PATTERN } from '../core/ids.js';
import { jobSchema } from '../core/jobs/job-schema.js';
import { component, openObject } from '../core/schema.js';

export const FileIdParams = Type.Object({
  file_id: Type.String({ pattern: FILE_ID_PATTERN, maxLength: 64, description: 'A Files-API id: file_ + 32 hex digits.' }),
});
export const JobIdParams = Type.Object({
  job_id: Type.String({ pattern: JOB_ID_PATTERN, maxLength: 64, description: 'A job id: job_ + 32 hex digits.' }),
});

export const FileRecordSchema = component(
  'FileRecord',
  Type.Object(
    {
      file_id: Type.String({ description: 'Files-API id.', examples: ['file_0123456789abcdef0123456789abcdef'] }),
      filename: Type.String({ description: 'Original or generated file name (used in Content-Disposition).' }),
      content_type: Type.String({ description: 'Media type of the stored bytes.', examples: ['image/png'] }),
      size: Type.Integer({ description: 'Size in bytes.' }),
      created_at: Type.Number({ description: 'Unix timestamp of creation.' }),
      meta: openObject({ description: 'Provenance: for artifacts the generation result; for inputs `source` (url, data_url).' }),
    },
    { title: 'FileRecord' },
  ),
);

export const FileListSchema = component(
  'FileList',
  Type.Object({ object: Type.Literal('list'), data: Type.Array(FileRecordSchema) }, { title: 'FileList' }),
);

export const FileDeletedSchema = component(
  'FileDeleted',
  Type.Object({ deleted: Type.Boolean(), file_id: Type.String() }, { title: 'FileDeleted' }),
);

export const JobSchema = jobSchema('Job', null);

export const JobListSchema = component(
  'JobList',
  Type.Object({ object: Type.Literal('list'), data: Type.Array(JobSchema) }, { title: 'JobList' }),
);

export const JobDeletedSchema = component(
  'JobDeleted',
  Type.Object(
    {
      deleted: Type.Boolean(),
      job_id: Type.String(),
      was_running: Type.Boolean({ description: 'The job was running; it was asked to stop at its next step.' }),
    },
    { title: 'JobDeleted' },
  ),
);

export const ModelListSchema = component(
  'ModelList',
  Type.Object(
    { object: Type.Literal('list'), data: Type.Array(openObject({ description: 'A chat model (kiapi serves none).' })) },
    { title: 'ModelList' },
  ),
);

const ResidentModelStats = component(
  'ResidentModelStats',
  Type.Object(
    {
      name: Type.String(),
      family: Type.String(),
      domain: Type.String(),
      repo: Type.String(),
      key: Type.Optional(Type.String({ description: 'kiapi extension: the build (variant, quantization, LoRA set).' })),
      weight_gb: Type.Number(),
      priority: Type.Integer(),
      idle_s: Type.Number(),
      ttl_s: Type.Union([Type.Number(), Type.Null()]),
      expires_in_s: Type.Union([Type.Number(), Type.Null()]),
      loads: Type.Integer({ description: 'How many times this build was loaded since start (kiapi extension).' }),
      in_use: Type.Optional(Type.Boolean({ description: 'kiapi extension: a job is running on it now.' })),
    },
    { title: 'ResidentModelStats' },
  ),
);

export const HealthSchema = component(
  'HealthResponse',
  Type.Object(
    {
      status: Type.Literal('ok'),
      warm: Type.Boolean({ description: 'Start-up warmup (KIAPI_WARMUP) has finished.' }),
      queue_len: Type.Integer({ description: 'Jobs waiting in the queue (the running job is not counted).' }),
      memory: Type.Object({
        loaded: Type.Array(ResidentModelStats),
        resident_gb: Type.Number(),
        budget_gb: Type.Number(),
      }),
      // Always null in kiapi (it has no relay). Typed as a nullable object, not `{"type": "null"}`
      // alone: some client generators (openapi-generator's Python client) cannot model a field
      // whose only type is null.
      relay: Type.Union([openObject({}), Type.Null()], {
        description: "Always null: kiapi has no relay (the original's field for forwarding to another server).",
      }),
      engine: Type.Optional(
        Type.Object(
          { name: Type.String(), detail: Type.String() },
          { description: 'kiapi extension: the engine serving generations (preview or mflux).' },
        ),
      ),
    },
    { title: 'HealthResponse' },
  ),
);

const ValidationIssue = Type.Object({
  type: Type.String(),
  loc: Type.Array(Type.Union([Type.String(), Type.Integer()])),
  msg: Type.String(),
  input: Type.Optional(Type.Unknown()),
});

export const ErrorSchema = component(
  'ErrorResponse',
  Type.Object(
    { detail: Type.Union([Type.String(), Type.Array(ValidationIssue)]) },
    { title: 'ErrorResponse', description: 'A message, or for request-schema errors a list of issues (FastAPI style).' },
  ),
);
