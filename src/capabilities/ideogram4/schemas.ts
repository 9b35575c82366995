/** Ideogram 4 request and response schemas, field for field as in the seed (ideogram4.openapi.json). */
import { Type, type Static } from 'typebox';
import { component, openObject } from '../../core/schema.js';
import { formatField, imageResponse, modeField, nullable, qualityField, seedField, webhookFields } from '../image-common/image-schemas.js';
import { PRESET_STEPS, type Ideogram4Settings, type Preset } from './settings.js';

export const SAFETY_FILTER_NOTE =
  "Ideogram 4 can return a picture that reads 'Image blocked by safety filter' (sometimes for harmless prompts); kiapi stores whatever image the model returns as the artifact and does not treat it as an error.";

const promptSchema = (description: string) =>
  Type.Union([Type.String(), openObject({})], { title: 'Prompt', description });

export function generateRequestSchema(s: Ideogram4Settings) {
  return component(
    'GenerateRequest',
    Type.Object(
      {
        model: Type.Optional(
          nullable(Type.String(), {
            title: 'Model',
            description:
              'Model variant (see GET /v1/image/ideogram4/models). Only `fp8` exists; omit to use it. Aliases `ideogram4` / `ideogram-4` are accepted.',
          }),
        ),
        mode: Type.Optional(modeField()),
        prompt: promptSchema(
          'What to generate. Prefer a structured JSON caption with `high_level_description`, optional `style_description`, and `compositional_deconstruction` (`background` + `elements`, each with `type` text|obj, optional `bbox` **[y_min, x_min, y_max, x_max]** in 0-1000 layout coordinates, `text` for text elements, and `desc`). Key order matters. Plain text is accepted but usually weaker for typography (and always fails `strict_caption_validation`). Must not be empty.',
        ),
        preset: Type.Optional(
          Type.Unsafe<Preset>({
            type: 'string',
            enum: Object.keys(PRESET_STEPS),
            title: 'Preset',
            description:
              'Sampler preset bundling steps, guidance schedule, and noise schedule. `V4_TURBO_12` is fastest (12 steps), `V4_DEFAULT_20` is balanced, `V4_QUALITY_48` is highest quality and slowest (48 steps).',
            default: 'V4_DEFAULT_20',
          }),
        ),
        width: Type.Optional(
          nullable(Type.Integer(), {
            title: 'Width',
            description: `Output width in pixels. Omit for the server default (${s.defaultWidth}). Must be a multiple of 16 and within ${s.minWidth}..${s.maxWidth}.`,
          }),
        ),
        height: Type.Optional(
          nullable(Type.Integer(), {
            title: 'Height',
            description: `Output height in pixels. Omit for the server default (${s.defaultHeight}). Must be a multiple of 16 and within ${s.minHeight}..${s.maxHeight}.`,
          }),
        ),
        seed: Type.Optional(seedField()),
        quantize: Type.Optional(
          nullable(Type.Integer(), {
            title: 'Quantize',
            description:
              'Quantization bits, one of {3, 4, 5, 6, 8}. Omit to use the resident model. Quantizes the whole model: both transformers and the text encoder (their FP8 weights are re-quantized to this many bits) and the attention layers of the VAE, which lowers memory but changes the image and can be slower than FP8 on some backends. A differing value uses a separately built model (kept resident for reuse).',
          }),
        ),
        strict_caption_validation: Type.Optional(
          Type.Boolean({
            title: 'Strict Caption Validation',
            description:
              'If true, reject the request (400, before it is queued) when the caption has any schema problem, listing every problem. Plain-text prompts always fail strict validation.',
            default: false,
          }),
        ),
        warn_on_caption_issues: Type.Optional(
          Type.Boolean({
            title: 'Warn On Caption Issues',
            description: 'Report caption schema problems in the result as `params.caption_warnings` (and to the engine log).',
            default: true,
          }),
        ),
        format: Type.Optional(formatField()),
        quality: Type.Optional(qualityField()),
        ...webhookFields(),
      },
      { additionalProperties: true, title: 'GenerateRequest' },
    ),
  );
}

export const CaptionCheckRequest = component(
  'CaptionCheckRequest',
  Type.Object(
    {
      prompt: promptSchema(
        'The caption to check, exactly as it would be sent to `/generate` as `prompt`: a JSON caption object, or text (which is read as a caption when it starts with `{`).',
      ),
    },
    { additionalProperties: false, title: 'CaptionCheckRequest' },
  ),
);

export const CaptionCheckResponse = component(
  'CaptionCheckResponse',
  Type.Object(
    {
      valid: Type.Boolean({ description: 'No problems: `/generate` with `strict_caption_validation: true` accepts this caption.' }),
      problems: Type.Array(Type.String(), {
        description: 'Every problem the verifier finds, in the order the engine reports them (the same texts as `params.caption_warnings`).',
      }),
      strict_error: Type.Union([Type.String(), Type.Null()], {
        description: 'The 400 message `/generate` answers for this caption under `strict_caption_validation: true`; null when valid.',
      }),
    },
    { title: 'CaptionCheckResponse' },
  ),
);

export const Ideogram4ImageResponse = imageResponse(
  'Capability-specific `result` for a succeeded ideogram4 generate job.',
  promptSchema('The prompt used for the run (plain text or JSON caption).'),
  'Resolved parameters actually used for the run (model, prompt, preset, steps, seed, width, height, quantize, format, quality, caption_warnings, engine), so the result is reproducible.',
  {
    safety_filter_note: Type.String({
      title: 'Safety Filter Note',
      description:
        "Reminder that Ideogram 4 may return an 'Image blocked by safety filter' image, which kiapi stores as the artifact rather than raising an error.",
    }),
  },
  ['safety_filter_note'],
);

export type GenerateBody = Static<ReturnType<typeof generateRequestSchema>>;
