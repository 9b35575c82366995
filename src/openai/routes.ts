/**
 * The OpenAI Images API surface: `POST /v1/images/generations`, `/edits`, `/variations` and the
 * model list, as the official SDKs call them. Errors on these routes are in OpenAI's shape
 * (`errorShape: 'openai'`, answered by the server's one error handler).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { Compile } from 'typebox/compile';
import { InputError, MalformedBodyError, TooLargeError, clip, isKiapiError } from '../core/errors.js';
import type { AppContext } from '../server/context.js';
import { openAiErrorBody } from '../server/error-handler.js';
import { laxenBody } from '../server/lax-inputs.js';
import type { RouteDef } from '../server/route-def.js';
import type { SseStreams } from '../server/sse.js';
import { uploadError } from '../server/routes/files.js';
import { answerJson, plan, streamOne, submitOnce, withoutIdleTimeout, type ImageRequest } from './images.js';
import { idempotencyKeyOf } from '../server/idempotency.js';
import { replayedHeader } from '../server/openapi.js';
import { modelOrNotFound, openAiModels, specOf, withParam, type OpenAiModel } from './models.js';
import {
  OpenAIError,
  OpenAIImagesResponse,
  OpenAIModel,
  OpenAIModelList,
  editFieldsSchema,
  generationRequestSchema,
  type EditFields,
  type GenerationRequest,
} from './schemas.js';
import type { OpenAiSettings } from './settings.js';

const ERRORS = {
  '400': {
    description:
      'A field is invalid (`param` names it), or the request asks for something kiapi does not do (masks, transparency), or the Idempotency-Key is malformed or was used on this route with a different request (`code` idempotency_key_reused).',
    schema: OpenAIError,
  },
  '409': { description: 'On an Idempotency-Key replay: the job or image the key names has been deleted since (send a new key); or the job was canceled.', schema: OpenAIError },
  '413': { description: 'The body, or an edit image, is larger than its limit (the message names the setting).', schema: OpenAIError },
  '415': { description: 'A body of a type the route does not take (generations take JSON; edits take multipart/form-data, and a JSON edit is a 400).', schema: OpenAIError },
  '429': { description: 'The queue is full; `Retry-After` says when to try again.', schema: OpenAIError },
  '500': { description: 'The engine failed on this image (the message says how).', schema: OpenAIError },
  '504': { description: 'The image did not finish within KIAPI_SYNC_TIMEOUT_S; its job keeps running (GET /v1/jobs).', schema: OpenAIError },
  '507': { description: 'The disk filled up while the image or an input was stored.', schema: OpenAIError },
  '503': { description: 'The model is not activated; the message names the `kiapi activate` command.', schema: OpenAIError },
};

const STREAM_NOTE =
  'With `stream: true` the answer is `text/event-stream`: `partial_images` step previews, then the finished image, then the stream ends; a failure after the stream began is an `error` event with the OpenAI error body.';

export function openAiRoutes(ctx: AppContext, settings: OpenAiSettings, streams: SseStreams): RouteDef[] {
  const generationBody = generationRequestSchema(settings.maxN);
  const editSchema = editFieldsSchema(settings.maxN);
  const editCheck = Compile(editSchema);
  // The creation time of the models: kiapi has no release dates, so the time this server started.
  const created = Math.floor(Date.now() / 1000);
  const modelView = (m: OpenAiModel) => {
    const spec = specOf(ctx, m);
    return {
      id: m.id,
      object: 'model' as const,
      created,
      owned_by: 'kiapi',
      family: m.family,
      variant: m.variant,
      endpoints: [...(m.generate ? ['/v1/images/generations'] : []), ...(m.edit ? ['/v1/images/edits'] : [])],
      aliases: [spec.name, ...spec.aliases, spec.repo].filter((a, i, all) => a !== m.id && all.indexOf(a) === i),
      ready: ctx.runtime.readiness(spec) === null,
    };
  };

  const run = async (req: FastifyRequest, reply: FastifyReply, request: ImageRequest, edit: boolean, key: string | null) =>
    withoutIdleTimeout(ctx, req, reply, async (signal) => {
      const o = request.options;
      const planned = plan(ctx, settings, request, edit);
      const sub = await submitOnce(ctx, req, reply, planned, request, key, signal);
      if (o.stream) {
        const stream = streams.start(req, reply, {
          heartbeatMs: ctx.config.eventsHeartbeatS * 1000,
          maxBufferBytes: ctx.config.eventsMaxBufferBytes,
          private: ctx.config.authToken !== null,
        });
        await streamOne(ctx, stream, sub, edit ? 'image_edit' : 'image_generation', o.partial_images ?? 0, signal, errorBody);
        return reply;
      }
      const out = await answerJson(ctx, settings, req, sub, o.response_format === 'url', signal);
      return signal.aborted ? reply : out;
    });

  return [
    {
      method: 'post',
      path: '/v1/images/generations',
      body: generationBody,
      errorShape: 'openai',
      handler: async (req, reply) => {
        const key = idempotencyKeyOf(req);
        const { prompt, ...options } = req.body as GenerationRequest;
        return run(req, reply, { prompt, options }, false, key);
      },
      doc: {
        summary: 'Create Image (OpenAI)',
        description: `OpenAI Images API \`images.generate\`: \`qwen-image\` or \`ideogram-4\` (see GET /v1/models). Each image is a kiapi job and file; \`n\` images use consecutive seeds. ${STREAM_NOTE} Events: \`image_generation.partial_image\`, \`image_generation.completed\`.`,
        operationId: 'openai_create_image_v1_images_generations_post',
        idempotent: true,
        responses: {
          '200': { description: 'The images (JSON), or with `stream` an event stream.', schema: OpenAIImagesResponse, eventStream: true, headers: { 'Idempotent-Replayed': replayedHeader } },
          ...ERRORS,
        },
      },
    },
    {
      method: 'post',
      path: '/v1/images/edits',
      errorShape: 'openai',
      handler: async (req, reply) => {
        // Before the body is read: a key that cannot be one is refused at once.
        const key = idempotencyKeyOf(req);
        return run(req, reply, await readEdit(req, editSchema, editCheck, ctx.config.maxInputBytes), true, key);
      },
      doc: {
        summary: 'Create Image Edit (OpenAI)',
        description: `OpenAI Images API \`images.edit\`, multipart as the SDKs send it: \`image\` (or several \`image[]\`, up to 3) and the fields of a generation. Runs Qwen Image Edit (\`qwen-image-edit\`). A \`mask\` is refused (400): kiapi has no masked inpainting. ${STREAM_NOTE} Events: \`image_edit.partial_image\`, \`image_edit.completed\`.`,
        operationId: 'openai_create_image_edit_v1_images_edits_post',
        multipartBody: editMultipartSchema(editSchema),
        idempotent: true,
        responses: {
          '200': { description: 'The images (JSON), or with `stream` an event stream.', schema: OpenAIImagesResponse, eventStream: true, headers: { 'Idempotent-Replayed': replayedHeader } },
          ...ERRORS,
        },
      },
    },
    {
      method: 'post',
      path: '/v1/images/variations',
      errorShape: 'openai',
      handler: async () => {
        throw withParam(
          new InputError('image variations are not supported: no model kiapi serves makes variations of an image without a prompt; use POST /v1/images/edits with a prompt'),
          null,
          'unsupported_endpoint',
        );
      },
      doc: {
        summary: 'Create Image Variation (OpenAI; not supported)',
        description: 'Always 400: no served model makes prompt-less variations. Use `/v1/images/edits` with a prompt.',
        operationId: 'openai_create_image_variation_v1_images_variations_post',
        responses: {
          '400': { description: 'Not supported.', schema: OpenAIError },
          '415': { description: 'A body of a type no route takes.', schema: OpenAIError },
        },
      },
    },
    {
      method: 'get',
      path: '/v1/models',
      public: true,
      errorShape: 'openai',
      handler: async () => ({ object: 'list', data: openAiModels(ctx).map(modelView) }),
      doc: {
        summary: 'List Models (OpenAI)',
        description:
          'The image models in OpenAI\'s list format, for clients that read `GET /v1/models` (`client.models.list()`): their ids are what `model` takes on `/v1/images/*`. kiapi extras say which family and variant each is and whether it is activated. Never needs auth (as before: model names are no secret).',
        operationId: 'list_models_v1_models_get',
        responses: { '200': { description: 'The image models.', schema: OpenAIModelList } },
      },
    },
    {
      method: 'get',
      path: '/v1/models/{model}',
      params: Type.Object({ model: Type.String({ description: 'A model id from the list (or a kiapi alias of it).' }) }),
      public: true,
      errorShape: 'openai',
      handler: async (req) => modelView(modelOrNotFound(ctx, (req.params as { model: string }).model)),
      doc: {
        summary: 'Retrieve Model (OpenAI)',
        description: 'One model of `GET /v1/models`, by id or kiapi alias; 404 in OpenAI\'s error shape for any other name.',
        operationId: 'retrieve_model_v1_models__model__get',
        responses: { '200': { description: 'The model.', schema: OpenAIModel }, '404': { description: 'No such model.', schema: OpenAIError } },
      },
    },
  ];
}

function errorBody(err: unknown) {
  if (isKiapiError(err)) return openAiErrorBody(err.status === 422 ? 400 : err.status, err.message, err.param ?? null, err.code ?? null);
  return openAiErrorBody(500, 'internal server error (see the kiapi server log)', null, null);
}

/** The multipart body of an edit as OpenAPI describes it: the fields plus the file parts. */
function editMultipartSchema(fields: ReturnType<typeof editFieldsSchema>) {
  const binary = { type: 'string', format: 'binary' };
  return {
    type: 'object',
    properties: {
      // Several images are several parts named `image[]` (what the SDKs send for a list); a
      // property of that name would not survive client generators, so the description says it.
      image: { description: 'The image to edit (png, jpeg, webp or gif). Several images (up to 3): repeat the part, named `image[]`.', ...binary },
      mask: { description: 'Refused (400): masks are not supported.', ...binary },
      ...(fields as unknown as { properties: Record<string, unknown> }).properties,
    },
    required: ['image', 'prompt'],
  };
}

/** Most input images of one edit (the multipart limit is 4 files, one of which may be a refused mask). */
const MAX_EDIT_IMAGES = 3;

/**
 * Reads an edit's multipart body: file parts become data URLs for the family's input resolver,
 * text parts are converted (`"2"` → 2, `"true"` → true) and checked by the same schema that
 * documents them.
 */
async function readEdit(
  req: FastifyRequest,
  schema: ReturnType<typeof editFieldsSchema>,
  check: ReturnType<typeof Compile>,
  maxImageBytes: number,
): Promise<ImageRequest> {
  if (!req.isMultipart()) throw withParam(new MalformedBodyError('send the edit as multipart/form-data with an `image` file part and a `prompt` field (what the OpenAI SDKs send)'), 'image', 'invalid_request');
  const fields: Record<string, unknown> = {};
  const images: string[] = [];
  let mask = false;
  try {
    await readParts(req, fields, images, maxImageBytes, () => (mask = true));
  } catch (err) {
    // A body the multipart parser cannot read (no boundary, truncated) is the client's 400.
    const mapped = uploadError(err, req.raw.destroyed);
    if (mapped !== err && mapped instanceof MalformedBodyError) {
      throw withParam(new MalformedBodyError(`malformed multipart body: ${(err as Error).message}; send multipart/form-data with its boundary, an 'image' file part and a 'prompt' field`), null, 'invalid_request');
    }
    throw mapped;
  }
  if (mask) throw withParam(new InputError('masks are not supported: kiapi edits the whole image (Qwen Image Edit) from the prompt; send the request without `mask`'), 'mask', 'unsupported_parameter');
  if (images.length === 0) throw withParam(new InputError("an edit needs at least one image: send a file part named 'image' (or several named 'image[]')"), 'image', 'missing_required_parameter');
  if (images.length > MAX_EDIT_IMAGES) throw withParam(new InputError(`at most ${MAX_EDIT_IMAGES} images per edit`), 'image', 'invalid_value');
  laxenBody(schema, fields);
  if (!check.Check(fields)) {
    throw Object.assign(new Error('invalid edit fields'), { validation: check.Errors(fields), validationContext: 'body', statusCode: 400 });
  }
  const { prompt, ...options } = fields as EditFields;
  return { prompt, options, images };
}

async function readParts(req: FastifyRequest, fields: Record<string, unknown>, images: string[], maxImageBytes: number, onMask: () => void): Promise<void> {
  // Each image is held in memory (it becomes a data URL input), so it gets the input cap, not the upload cap.
  for await (const part of req.parts({ limits: { fileSize: maxImageBytes } })) {
    if (part.type === 'file') {
      const file = part;
      let bytes: Buffer;
      try {
        bytes = await file.toBuffer();
      } catch (err) {
        if ((err as { code?: string }).code !== 'FST_REQ_FILE_TOO_LARGE') throw err;
        throw withParam(new TooLargeError(`'${clip(file.fieldname, 100)}' is larger than the ${maxImageBytes} byte limit of an input image (KIAPI_MAX_INPUT_BYTES)`), 'image', 'file_too_large');
      }
      if (file.fieldname === 'mask') onMask();
      else if (file.fieldname === 'image' || file.fieldname === 'image[]') images.push(dataUrl(file.fieldname, file.mimetype, bytes));
      else throw withParam(new InputError(`Unknown file parameter: '${clip(file.fieldname, 100)}' (files go in 'image' or 'image[]')`), file.fieldname, 'unknown_parameter');
    } else {
      fields[part.fieldname] = part.value;
    }
  }
}

/** A data URL of an uploaded image; the SDKs label bytes without a type as octet-stream, so the type is read from the bytes then. */
function dataUrl(field: string, declared: string, bytes: Buffer): string {
  const type = declared.startsWith('image/') ? declared : sniff(bytes);
  if (!type) throw withParam(new InputError(`'${field}' is not a png, jpeg, webp or gif image`), 'image', 'invalid_image_format');
  return `data:${type};base64,${bytes.toString('base64')}`;
}

function sniff(b: Buffer): string | null {
  if (b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  if (b.subarray(0, 4).toString('latin1') === 'RIFF' && b.subarray(8, 12).toString('latin1') === 'WEBP') return 'image/webp';
  if (b.subarray(0, 4).toString('latin1') === 'GIF8') return 'image/gif';
  return null;
}
