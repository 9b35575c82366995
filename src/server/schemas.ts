/** Schemas of the common API (root OpenAPI document): files, jobs, health, errors. */
import { Type } from 'typebox';
import { FILE_ID_PATTERN, JOB_ID_PATTERN } from '../core/ids.js';
import { JobStatusSchema, jobSchema } from '../core/jobs/job-schema.js';
import { webhookFields } from '../capabilities/image-common/image-schemas.js';
import { component, openObject, refTo } from '../core/schema.js';

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

/** Largest page a client may ask for: a page is built in memory and sent as one JSON body. */
export const MAX_PAGE_LIMIT = 1000;
/** The page size when a client pages (sends `after` or `before`) without a `limit`. */
export const DEFAULT_PAGE_LIMIT = 100;

const PAGING_NOTE =
  'Without limit, after and before the whole list is returned (has_more false), as clients written for the original expect; ' +
  `with any of them one page (limit, default ${DEFAULT_PAGE_LIMIT}). Page on with after=<last_id> while has_more is true.`;

/** Query parameters every list takes (OpenAI's list conventions). */
function pagingQuery(idPattern: string, noun: string) {
  return {
    limit: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_PAGE_LIMIT, description: `Page size, 1 to ${MAX_PAGE_LIMIT}. ${PAGING_NOTE}` }),
    ),
    after: Type.Optional(
      Type.String({ pattern: idPattern, maxLength: 64, description: `A ${noun} id (a page's last_id): list the ${noun}s after it in the list, i.e. older ones.` }),
    ),
    before: Type.Optional(
      Type.String({ pattern: idPattern, maxLength: 64, description: `A ${noun} id (a page's first_id): list the ${noun}s right before it in the list, i.e. newer ones (still newest first).` }),
    ),
  };
}

/**
 * RFC 9110 token characters other than `*`: a media type's two halves. The subtype may be `*`
 * alone (a family); a `*` anywhere else is refused rather than read as a glob it is not.
 */
const TYPE_CHARS = "[!#$%&'+.^_`|~0-9A-Za-z-]";

export const FileListQuery = Type.Object({
  ...pagingQuery(FILE_ID_PATTERN, 'file'),
  content_type: Type.Optional(
    Type.String({
      pattern: `^${TYPE_CHARS}+/(?:${TYPE_CHARS}+|\\*)$`,
      maxLength: 255,
      examples: ['image/png', 'image/*'],
      description:
        'Only files stored with this media type: exact (image/png), or a whole family with a * subtype (image/* = every image). Compared case-insensitively.',
    }),
  ),
  job_id: Type.Optional(
    Type.String({
      pattern: JOB_ID_PATTERN,
      maxLength: 64,
      description:
        "Only the files this job produced (its artifacts, not the inputs it was given); they keep the job's id after the job itself is deleted or pruned. No such files: an empty list.",
    }),
  ),
});
export const MAX_THUMBNAIL_SIZE = 1024;
export const ThumbnailQuery = Type.Object({
  size: Type.Optional(
    Type.Integer({
      minimum: 16,
      maximum: MAX_THUMBNAIL_SIZE,
      default: 256,
      description: `Longest side of the thumbnail in pixels, 16 to ${MAX_THUMBNAIL_SIZE} (default 256). An image smaller than that is not enlarged.`,
    }),
  ),
});

export const JobListQuery = Type.Object({
  ...pagingQuery(JOB_ID_PATTERN, 'job'),
  status: Type.Optional(refTo(JobStatusSchema, { description: 'Only jobs in this state.' })),
  type: Type.Optional(Type.String({ maxLength: 64, description: 'Only jobs of this type (qwen, qwen-edit, ideogram4).' })),
});

/** The fields kiapi adds to the `{object, data}` list shape (OpenAI's names). */
function pageFields() {
  return {
    has_more: Type.Boolean({ description: 'More records follow in the direction of paging (older for after or no cursor, newer for before).' }),
    first_id: Type.Union([Type.String(), Type.Null()], { description: 'Id of the first record of data (null when data is empty); pass it as before to page back.' }),
    last_id: Type.Union([Type.String(), Type.Null()], { description: 'Id of the last record of data (null when data is empty); pass it as after for the next page.' }),
  };
}

export const FileListSchema = component(
  'FileList',
  Type.Object({ object: Type.Literal('list'), data: Type.Array(FileRecordSchema), ...pageFields() }, { title: 'FileList' }),
);

export const FileDeletedSchema = component(
  'FileDeleted',
  Type.Object({ deleted: Type.Boolean(), file_id: Type.String() }, { title: 'FileDeleted' }),
);

export const JobSchema = jobSchema('Job', null);

export const RerunBody = component(
  'RerunRequest',
  Type.Object(
    {
      mode: Type.Optional(
        Type.Unsafe<'sync' | 'async'>({
          type: 'string',
          enum: ['sync', 'async'],
          default: 'sync',
          description: 'As on the generation routes: `sync` waits for the image; `async` answers 202 with the new job id at once.',
        }),
      ),
      allow_different: Type.Optional(
        Type.Boolean({
          default: false,
          description:
            'Run even when the engine, its versions, the encoder or the model revision installed now differ from the record (the image may then differ); each difference is reported as a warning.',
        }),
      ),
      // The new job's completion webhook, as on the generation routes (not taken from the original).
      ...webhookFields(),
    },
    { additionalProperties: false, title: 'RerunRequest' },
  ),
);

export const JobListSchema = component(
  'JobList',
  Type.Object({ object: Type.Literal('list'), data: Type.Array(JobSchema), ...pageFields() }, { title: 'JobList' }),
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
      cluster: Type.Optional(
        Type.Object(
          {
            node_id: Type.String({ description: 'This node (KIAPI_CLUSTER_NODE_ID).' }),
            queued: Type.Integer({ description: 'Jobs queued in the whole cluster.' }),
            error: Type.Optional(Type.String({ description: 'Why the cluster view could not be read (the shared database is unreachable); this node still answers.' })),
            nodes: Type.Array(
              Type.Object({
                node_id: Type.String(),
                url: Type.String({ description: 'How to reach the node (KIAPI_CLUSTER_NODE_URL).' }),
                version: Type.String(),
                live: Type.Boolean({ description: 'Renewed its lease within KIAPI_CLUSTER_LEASE_S.' }),
                busy: Type.Boolean(),
                running_job: Type.Union([Type.String(), Type.Null()]),
                capable: Type.Array(Type.String(), { description: 'Models (family/name) the node can run.' }),
                warm: Type.Array(Type.String(), { description: 'Models the node holds loaded: jobs for them go there first.' }),
                silent_s: Type.Number({ description: 'Seconds since the node last renewed its lease.' }),
              }),
            ),
          },
          { description: 'kiapi extension, cluster mode only (KIAPI_CLUSTER_*): every node the shared database knows.' },
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
