/**
 * The OpenAI Images API as kiapi serves it: request and response schemas (validation, types and
 * the root OpenAPI document from one TypeBox source). Field names and values are OpenAI's; the
 * kiapi extras (`seed`, `steps`, `negative_prompt`, `preset`) are the extra body fields the SDKs
 * pass through (`extra_body` in Python, extra keys in Node).
 */
import { Type, type Static } from 'typebox';
import { component, openObject } from '../core/schema.js';

const opt = <T extends ReturnType<typeof Type.String> | ReturnType<typeof Type.Integer> | ReturnType<typeof Type.Boolean> | ReturnType<typeof Type.Unsafe>>(
  schema: T,
  opts: Record<string, unknown>,
) => Type.Optional(Type.Union([schema, Type.Null()], opts));

const enumOf = <T extends string>(values: readonly T[]) => Type.Unsafe<T>({ type: 'string', enum: [...values] });

export const QUALITIES = ['low', 'medium', 'high', 'auto', 'standard', 'hd'] as const;
export const OUTPUT_FORMATS = ['png', 'jpeg', 'webp'] as const;

/** Fields generations and edits share (edits get them as multipart fields). */
function commonFields(maxN: number) {
  return {
    model: opt(Type.String({ minLength: 1 }), {
      title: 'Model',
      description: 'Model id from GET /v1/models (`qwen-image`, `qwen-image-edit`, `ideogram-4`) or a kiapi alias. Omitted: KIAPI_OPENAI_DEFAULT_MODEL (generations), `qwen-image-edit` (edits).',
    }),
    n: opt(Type.Integer({ minimum: 1, maximum: maxN }), {
      title: 'N',
      description: `Number of images, 1..${maxN} (KIAPI_OPENAI_MAX_N). Each is its own kiapi job; they use consecutive seeds.`,
      default: 1,
    }),
    size: opt(Type.String({ pattern: '^(auto|[0-9]{1,5}x[0-9]{1,5})$' }), {
      title: 'Size',
      description: '`WIDTHxHEIGHT` in pixels (multiples of 16, within the family limits) or `auto` (the family default size).',
      default: 'auto',
    }),
    quality: opt(enumOf(QUALITIES), {
      title: 'Quality',
      description:
        'Qwen: `low` = half the default steps, `medium`/`standard` = the default steps, `high`/`hd` = twice them; Ideogram 4: `low` = V4_TURBO_12, `medium`/`standard` = V4_DEFAULT_20, `high`/`hd` = V4_QUALITY_48; `auto` = the server defaults. `steps` / `preset` override it.',
      default: 'auto',
    }),
    response_format: opt(enumOf(['b64_json', 'url'] as const), {
      title: 'Response Format',
      description: '`b64_json` (default): the image bytes in the answer; `url`: an absolute download URL of the stored kiapi file.',
      default: 'b64_json',
    }),
    output_format: opt(enumOf(OUTPUT_FORMATS), { title: 'Output Format', description: 'Encoding of the image.', default: 'png' }),
    output_compression: opt(Type.Integer({ minimum: 0, maximum: 100 }), {
      title: 'Output Compression',
      description: 'jpeg/webp encoder quality 0..100 (0 is sent to the encoder as 1); ignored for png. Omitted: 90.',
    }),
    background: opt(enumOf(['auto', 'opaque', 'transparent'] as const), {
      title: 'Background',
      description: '`auto` and `opaque` are what kiapi makes; `transparent` is refused (400): no served model draws an alpha channel.',
    }),
    moderation: opt(enumOf(['auto', 'low'] as const), { title: 'Moderation', description: 'Accepted and ignored: kiapi runs no moderation of its own.' }),
    style: opt(enumOf(['vivid', 'natural'] as const), { title: 'Style', description: 'Accepted and ignored (a DALL·E 3 switch no served model has).' }),
    input_fidelity: opt(enumOf(['low', 'high'] as const), { title: 'Input Fidelity', description: 'Accepted and ignored (edits always encode every input image in full).' }),
    stream: opt(Type.Boolean(), {
      title: 'Stream',
      description: 'Answer as server-sent events: `partial_images` step previews, then the finished image (`image_generation.*` / `image_edit.*` events). Only with `n` = 1.',
      default: false,
    }),
    partial_images: opt(Type.Integer({ minimum: 0, maximum: 3 }), {
      title: 'Partial Images',
      description: 'With `stream`: how many step previews (JPEG, at most 512 px) to send before the image, 0..3. Fewer arrive when the run has fewer steps.',
      default: 0,
    }),
    user: opt(Type.String(), { title: 'User', description: "Recorded in each job's params as `openai_user`; otherwise ignored." }),
    seed: opt(Type.Integer({ minimum: 0, maximum: 2147483647 }), {
      title: 'Seed',
      description: 'kiapi extra: seed of the first image; image i uses seed + i. Omitted: random.',
    }),
    steps: opt(Type.Integer({ minimum: 1 }), { title: 'Steps', description: 'kiapi extra (Qwen only): denoising steps; overrides `quality`.' }),
    negative_prompt: opt(Type.String(), { title: 'Negative Prompt', description: 'kiapi extra (Qwen only): what to avoid.' }),
    preset: opt(enumOf(['V4_TURBO_12', 'V4_DEFAULT_20', 'V4_QUALITY_48'] as const), {
      title: 'Preset',
      description: 'kiapi extra (Ideogram 4 only): the speed/quality preset; overrides `quality`.',
    }),
  };
}

export function generationRequestSchema(maxN: number) {
  return component(
    'OpenAIImageGenerationRequest',
    Type.Object(
      {
        prompt: Type.Union([Type.String({ minLength: 1 }), openObject({ description: 'an Ideogram 4 JSON caption' })], {
          title: 'Prompt',
          description:
            'The text prompt. For `ideogram-4` it may be a JSON caption, as an object or as a string holding one (what the SDKs can send); see the Ideogram 4 API document.',
        }),
        ...commonFields(maxN),
      },
      { additionalProperties: false, title: 'OpenAIImageGenerationRequest' },
    ),
  );
}

/** The text fields of an edit's multipart body (the images come as file parts). */
export function editFieldsSchema(maxN: number) {
  return component(
    'OpenAIImageEditRequest',
    Type.Object(
      {
        prompt: Type.String({ minLength: 1, title: 'Prompt', description: 'What to do with the image(s).' }),
        ...commonFields(maxN),
      },
      { additionalProperties: false, title: 'OpenAIImageEditRequest' },
    ),
  );
}

export type GenerationRequest = Static<ReturnType<typeof generationRequestSchema>>;
export type EditFields = Static<ReturnType<typeof editFieldsSchema>>;
export type ImageOptions = Omit<GenerationRequest, 'prompt'>;

export const OpenAIImage = component(
  'OpenAIImage',
  Type.Object(
    {
      b64_json: Type.Optional(Type.String({ description: 'The image, base64 (response_format b64_json).' })),
      url: Type.Optional(Type.String({ description: 'Absolute download URL of the stored kiapi file (response_format url).' })),
    },
    { title: 'OpenAIImage' },
  ),
);

export const OpenAIImagesResponse = component(
  'OpenAIImagesResponse',
  Type.Object(
    {
      created: Type.Integer({ description: 'Unix time of the answer.' }),
      data: Type.Array(OpenAIImage),
      output_format: enumOf(OUTPUT_FORMATS),
      size: Type.String({ description: 'WIDTHxHEIGHT of the images.' }),
      quality: enumOf(QUALITIES),
    },
    {
      title: 'OpenAIImagesResponse',
      description: 'No `usage`: kiapi counts no tokens. No `revised_prompt`: prompts are used as sent. Each image is also a kiapi job and file (GET /v1/jobs, GET /v1/files).',
    },
  ),
);

export const OpenAIError = component(
  'OpenAIError',
  Type.Object(
    {
      error: Type.Object({
        message: Type.String(),
        type: Type.String({ description: '`invalid_request_error`, `authentication_error`, `not_found_error`, `rate_limit_error`, `server_error`, `service_unavailable`.' }),
        param: Type.Union([Type.String(), Type.Null()], { description: 'The request field at fault, when one is.' }),
        code: Type.Union([Type.String(), Type.Null()]),
      }),
    },
    { title: 'OpenAIError', description: "OpenAI's error shape, used on /v1/images/* and /v1/models*." },
  ),
);

export const OpenAIModel = component(
  'OpenAIModel',
  Type.Object(
    {
      id: Type.String(),
      object: Type.Literal('model'),
      created: Type.Integer({ description: 'Unix time the server started (kiapi has no model release dates).' }),
      owned_by: Type.String(),
      family: Type.String({ description: 'kiapi extra: the model family (`qwen`, `ideogram4`).' }),
      variant: Type.String({ description: 'kiapi extra: the family variant (`image`, `edit-2509`, `fp8`).' }),
      endpoints: Type.Array(Type.String(), { description: 'kiapi extra: the OpenAI image routes that take this model.' }),
      aliases: Type.Array(Type.String(), { description: 'kiapi extra: other names the model answers to.' }),
      ready: Type.Boolean({ description: 'kiapi extra: its weights are activated (false: requests answer 503 naming the `kiapi activate` command).' }),
    },
    { title: 'OpenAIModel' },
  ),
);

export const OpenAIModelList = component(
  'OpenAIModelList',
  Type.Object({ object: Type.Literal('list'), data: Type.Array(OpenAIModel) }, { title: 'OpenAIModelList' }),
);
