/** Qwen request and response schemas, field for field as in the seed (qwen.openapi.json). */
import { Type, type Static } from 'typebox';
import { FileRef } from '../../core/files/file-ref.js';
import { component, refTo } from '../../core/schema.js';
import { formatField, imageResponse, modeField, nullable, qualityField, seedField, webhookFields } from '../image-common/image-schemas.js';
import type { QwenSettings } from './settings.js';

export const SCHEDULERS = ['linear', 'LinearScheduler', 'flow_match_euler_discrete', 'FlowMatchEulerDiscreteScheduler'] as const;

export const LoraRef = component(
  'LoraRef',
  Type.Object(
    {
      file: refTo(FileRef, {
        description: 'The LoRA adapter (`.safetensors`) to apply, as a Files-API file id, http(s) URL, or data URL.',
      }),
      // Optional with a default, as in the seed (`required: ["file"]`).
      scale: Type.Optional(
        Type.Number({
          title: 'Scale',
          description:
            'Blend strength for this adapter. 1.0 applies it at full weight; lower values weaken its effect, higher values exaggerate it.',
          default: 1.0,
        }),
      ),
    },
    {
      title: 'LoraRef',
      description:
        "One LoRA adapter to apply, by FileRef (file id, URL or data URL) and blend scale.\n\nA LoRA request uses a model built with that adapter; kiapi keeps such builds resident like any model, so repeating the same LoRA request does not rebuild. Up to 4 may be passed in a request's `loras` list.",
    },
  ),
);

function commonFields(s: QwenSettings, guidanceDefault: number, stepsDefault: number) {
  return {
    negative_prompt: nullable(Type.String(), {
      title: 'Negative Prompt',
      description: 'Optional text describing what to avoid in the image. At most KIAPI_MAX_PROMPT_CHARS characters, like `prompt`.',
    }),
    width: nullable(Type.Integer(), {
      title: 'Width',
      description: `Output width in pixels. Omit for the server default (${s.defaultWidth}). Must be a multiple of 16 and at most ${s.maxWidth}.`,
    }),
    height: nullable(Type.Integer(), {
      title: 'Height',
      description: `Output height in pixels. Omit for the server default (${s.defaultHeight}). Must be a multiple of 16 and at most ${s.maxHeight}.`,
    }),
    steps: nullable(Type.Integer({ minimum: 1 }), {
      title: 'Steps',
      description: `Number of denoising steps (1..${s.maxSteps}). Omit for the server default (${stepsDefault}). More steps = slower, sometimes higher quality.`,
    }),
    guidance: nullable(Type.Number(), {
      title: 'Guidance',
      description: `Classifier-free guidance scale. Omit for the server default (${guidanceDefault}); higher follows the prompt more strictly.`,
    }),
    seed: seedField(),
    quantize: nullable(Type.Integer(), {
      title: 'Quantize',
      description: `Quantization bits, one of {3, 4, 5, 6, 8}. Omit to use the resident model's quantization (${s.defaultQuantize === null ? 'full precision' : `q${s.defaultQuantize}`}). A differing value uses a separately built model, kept resident under the memory budget like any other.`,
    }),
    scheduler: Type.String({
      title: 'Scheduler',
      description: `Noise scheduler: one of ${SCHEDULERS.map((x) => `\`${x}\``).join(', ')}. \`linear\` is the default and tested value; other names are rejected (422).`,
      default: 'linear',
    }),
    format: formatField(),
    quality: qualityField(),
    loras: Type.Array(LoraRef, {
      title: 'Loras',
      description: `Up to ${s.maxLoras} LoRA adapters [{file, scale}] as FileRefs (file id, URL or data URL). A LoRA set is a separate model build, kept resident like any model.`,
    }),
  };
}

const modelField = (description: string) => nullable(Type.String(), { title: 'Model', description });

export function generateRequestSchema(s: QwenSettings) {
  const c = commonFields(s, s.generateGuidance, s.generateSteps);
  return component(
    'GenerateRequest',
    Type.Object(
      {
        model: Type.Optional(modelField('Model variant (see GET /v1/image/qwen/models). Omit for the default `image`; `/generate` only accepts `image` (use `/edit` for `edit-2509`).')),
        mode: Type.Optional(modeField()),
        prompt: Type.String({ minLength: 1, title: 'Prompt', description: 'Text prompt describing the image to generate (required).' }),
        negative_prompt: Type.Optional(c.negative_prompt),
        init_image: Type.Optional(
          Type.Union([FileRef, Type.Null()], {
            description:
              'Optional input image (Files-API file id, http(s) URL, or data URL). When set, `/generate` runs img2img seeded from this image; omit for plain txt2img. Must be a png, jpeg, webp or gif image (SVG and other formats are refused with 400); it is decoded in full before the job is queued.',
          }),
        ),
        image_strength: Type.Optional(
          nullable(Type.Number(), {
            title: 'Image Strength',
            description: `img2img only, in 0..1: how much of the \`init_image\` is kept. **Higher keeps more of the input** (the engine skips that fraction of the denoising schedule: start step = max(1, floor(steps × strength))); lower follows the prompt more freely; 0 ignores the input. Omitted with an \`init_image\`: ${s.defaultImageStrength}. Ignored when \`init_image\` is absent.`,
          }),
        ),
        width: Type.Optional(c.width),
        height: Type.Optional(c.height),
        steps: Type.Optional(c.steps),
        guidance: Type.Optional(c.guidance),
        seed: Type.Optional(c.seed),
        quantize: Type.Optional(c.quantize),
        scheduler: Type.Optional(c.scheduler),
        format: Type.Optional(c.format),
        quality: Type.Optional(c.quality),
        loras: Type.Optional(c.loras),
        ...webhookFields(),
      },
      { additionalProperties: true, title: 'GenerateRequest' },
    ),
  );
}

export function editRequestSchema(s: QwenSettings) {
  const c = commonFields(s, s.editGuidance, s.editSteps);
  return component(
    'EditRequest',
    Type.Object(
      {
        model: Type.Optional(modelField('Model variant (see GET /v1/image/qwen/models). Omit for the default `edit-2509`; `/edit` only accepts `edit-2509` (use `/generate` for `image`).')),
        mode: Type.Optional(modeField()),
        prompt: Type.String({ minLength: 1, title: 'Prompt', description: 'Natural-language instruction describing the edit (required).' }),
        negative_prompt: Type.Optional(c.negative_prompt),
        images: Type.Array(FileRef, {
          minItems: 1,
          title: 'Images',
          description:
            'One or more reference images (Files-API file ids, http(s) URLs, or data URLs) to edit / compose under the prompt. At least one is required. Every image is resized to the output size and encoded into the latents the model starts from; the vision-language encoder reads only the first image, scaled to about 384×384 with its aspect ratio kept. Each must be a png, jpeg, webp or gif image (SVG and other formats are refused with 400); each is decoded in full before the job is queued.',
        }),
        width: Type.Optional(c.width),
        height: Type.Optional(c.height),
        steps: Type.Optional(c.steps),
        guidance: Type.Optional(c.guidance),
        seed: Type.Optional(c.seed),
        quantize: Type.Optional(c.quantize),
        scheduler: Type.Optional(c.scheduler),
        format: Type.Optional(c.format),
        quality: Type.Optional(c.quality),
        loras: Type.Optional(c.loras),
        ...webhookFields(),
      },
      { additionalProperties: true, title: 'EditRequest' },
    ),
  );
}

export const QwenImageResponse = imageResponse(
  'Capability-specific `result` for a succeeded qwen generate/edit job.',
  Type.String({ title: 'Prompt', description: 'The prompt used for the run.' }),
  'Resolved parameters actually used for the run (kind, model, prompt, seed, width, height, steps, guidance, quantize, scheduler, format, quality, loras, input file ids, engine), so the result is reproducible.',
);

export type GenerateBody = Static<ReturnType<typeof generateRequestSchema>>;
export type EditBody = Static<ReturnType<typeof editRequestSchema>>;
