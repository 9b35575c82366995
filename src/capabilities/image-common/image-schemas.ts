/** Request/response pieces the image families share, written as in the seeds. */
import { Type, type TProperties, type TSchema } from 'typebox';
import { component, openObject, refTo } from '../../core/schema.js';

export const Timings = component(
  '_Timings',
  Type.Object(
    { total_s: Type.Number({ title: 'Total S', description: 'Wall-clock generation time in seconds (engine run only).' }) },
    { title: '_Timings' },
  ),
);

export const modeField = () =>
  Type.Unsafe<'sync' | 'async'>({
    type: 'string',
    enum: ['sync', 'async'],
    title: 'Mode',
    description:
      '`sync` waits for the image (504 on timeout, the job keeps running); `async` returns 202 with a job_id immediately — poll GET /v1/jobs/{job_id}.',
    default: 'sync',
  });

export const formatField = () =>
  Type.Unsafe<'png' | 'jpeg' | 'webp'>({
    type: 'string',
    enum: ['png', 'jpeg', 'webp'],
    title: 'Format',
    description: 'Output image encoding for the produced file.',
    default: 'png',
  });

export const qualityField = () =>
  Type.Integer({
    maximum: 100,
    minimum: 1,
    title: 'Quality',
    description: 'Encoder quality 1..100 (used for jpeg/webp; ignored for png).',
    default: 90,
  });

export const nullable = <T extends TSchema>(schema: T, opts: Record<string, unknown>) =>
  Type.Union([schema, Type.Null()], opts);

/**
 * kiapi extension: the completion webhook of a job (core/webhooks). No `default` keyword on the
 * filter: validation fills defaults in, and a filled-in filter would read as asked for.
 */
export const webhookFields = () => ({
  webhook: Type.Optional(
    nullable(Type.String(), {
      title: 'Webhook',
      description:
        'kiapi extension. An http(s) URL kiapi POSTs the job to when it ends (and when it starts, see `webhook_events_filter`), signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature` headers) and retried with backoff until it answers 2xx (KIAPI_WEBHOOK_RETRY_FOR_S). The body is `{"type": "job.succeeded" | "job.failed" | "job.canceled" | "job.started", "timestamp": ..., "data": <the job as GET /v1/jobs/{job_id} shows it>}`; delivery state shows in the job\'s `webhook` field. Loopback and private addresses are refused (400) unless the server sets KIAPI_NET_ALLOW_PRIVATE_URLS=true. Omit to use the server\'s KIAPI_WEBHOOK_URL, if any; `null` for no webhook even then.',
    }),
  ),
  webhook_events_filter: Type.Optional(
    Type.Array(Type.Unsafe<'start' | 'completed'>({ type: 'string', enum: ['start', 'completed'] }), {
      minItems: 1,
      title: 'Webhook Events Filter',
      description:
        'kiapi extension. Which events POST to the webhook: `completed` (the job ended: succeeded, failed or canceled) and/or `start` (the job began running). Omit for `["completed"]`. Needs `webhook` or the server\'s KIAPI_WEBHOOK_URL.',
      examples: [['start', 'completed']],
    }),
  ),
});

export const seedField = () =>
  nullable(Type.Integer(), {
    title: 'Seed',
    description:
      'Random seed for reproducibility. Omit for a random seed in 0..2^31-1 (the seed used is recorded in the result `params`).',
  });

/** The family's ImageResponse: `result` of a succeeded job and `meta` of its file. */
export function imageResponse(description: string, prompt: TSchema, params: string, extra: TProperties = {}, extraRequired: string[] = []) {
  return component(
    'ImageResponse',
    Type.Object(
      {
        model: Type.String({ title: 'Model', description: 'Resolved model variant that produced the image.' }),
        prompt,
        file_id: Type.String({
          title: 'File Id',
          description:
            'Files-API id of the produced image. Fetch metadata at GET /v1/files/{id} or bytes at /download. This is also the artifact returned as raw bytes by a single-artifact sync call.',
        }),
        image_bytes: Type.Integer({ title: 'Image Bytes', description: 'Size of the produced image in bytes.' }),
        width: Type.Integer({ title: 'Width', description: 'Width in pixels of the produced image.' }),
        height: Type.Integer({ title: 'Height', description: 'Height in pixels of the produced image.' }),
        params: openObject({ title: 'Params', description: params }),
        ...extra,
        // kiapi extension, present only when there is something to say (the contract's clients
        // never see it on a request they spelt right).
        warnings: Type.Optional(
          Type.Array(Type.String(), {
            title: 'Warnings',
            description:
              "kiapi extension: unknown top-level request fields that were ignored, e.g. `unknown field 'widht' ignored; did you mean 'width'?` (also sent as `Warning` headers on the submission's answer). Absent when there are none.",
          }),
        ),
        timings: refTo(Timings, { description: 'kiapi extension: server-side timing.' }),
      },
      {
        required: ['model', 'prompt', 'file_id', 'image_bytes', 'width', 'height', 'params', ...extraRequired, 'timings'],
        title: 'ImageResponse',
        description,
      },
    ),
  );
}
