/**
 * The ideogram4 family: `/generate` with a plain or JSON-caption prompt. The caption is verified
 * in TypeScript before queueing, so a strict failure is a 400 listing every problem (the original
 * answered 500 from inside the engine: docs/compatibility.md §11.5).
 */
import { defineOperation, defineTool, type CapabilityDef, type CapabilityServices, type PreparedJob } from '../../core/capability.js';
import { InputError, RuleError } from '../../core/errors.js';
import { pinnedRevision } from '../../core/models/revisions.js';
import { preparedImageJob } from '../image-common/image-job.js';
import type { TaskSpec } from '../image-common/run-spec.js';
import { resolveSeed, snapshot } from '../image-common/params.js';
import { checkCap, checkMultiplesOf16, checkPromptLength, checkQuantize } from '../image-common/rules.js';
import { CAPTION_WARNING_PREFIX, prepareCaption, strictFailureMessage } from './caption-verifier.js';
import { EXAMPLE_CAPTION, ideogram4Description } from './description.js';
import { CaptionCheckRequest, CaptionCheckResponse, Ideogram4ImageResponse, SAFETY_FILTER_NOTE, generateRequestSchema, type GenerateBody } from './schemas.js';
import { PRESET_STEPS, QUANTIZE_CHOICES, readIdeogram4Settings, type Ideogram4Settings } from './settings.js';

const GENERATE_DOC = `Generate one image from a text prompt or JSON caption (Ideogram 4, text-to-image).

Ideogram 4 is typography-focused txt2img — there is no image-to-image or training. Prefer a structured JSON \`prompt\` (high_level_description, optional style_description, compositional_deconstruction with element \`bbox\` [y_min, x_min, y_max, x_max] / \`text\`) for crisp lettering; plain text works but is usually weaker. The same endpoint serves both \`sync\` and \`async\` via \`mode\`. Pick the speed/quality tradeoff with \`preset\` (V4_TURBO_12 → V4_DEFAULT_20 → V4_QUALITY_48).

Sync content negotiation: a single image is produced, so unless the client asks for JSON the raw image bytes are returned with \`X-Kiapi-File-Id\` / \`X-Kiapi-Job-Id\` headers — \`curl -o out.png\` just works. With \`Accept: application/json\` (or async) the Job JSON is returned, whose \`result\` follows ImageResponse.

The caption is checked before the job is queued: with \`strict_caption_validation\` any problem is a 400 listing them all; otherwise they are returned as \`params.caption_warnings\`. Ideogram 4 may return an 'Image blocked by safety filter' image (including false positives); kiapi stores it as the artifact rather than raising an error. Async returns 202 immediately; poll GET /v1/jobs/{job_id} and fetch the artifact via GET /v1/files/{file_id}/download.`;

async function prepareGenerate(s: Ideogram4Settings, body: GenerateBody, services: CapabilityServices): Promise<PreparedJob> {
  const spec = services.models.resolve('ideogram4', body.model);
  const width = body.width ?? s.defaultWidth;
  const height = body.height ?? s.defaultHeight;
  if (width < s.minWidth || height < s.minHeight) {
    throw new RuleError(`width and height must be >= ${s.minWidth}x${s.minHeight}`);
  }
  checkMultiplesOf16(width, height);
  checkCap(width, height, s.maxWidth, s.maxHeight);
  checkQuantize(body.quantize, QUANTIZE_CHOICES);
  const prompt = body.prompt;
  if (typeof prompt === 'string') {
    if (prompt.trim() === '') throw new RuleError('prompt must not be empty');
    checkPromptLength(prompt, services.config.maxPromptChars);
  } else {
    if (Object.keys(prompt).length === 0) throw new RuleError('prompt JSON must not be empty');
    checkPromptLength(JSON.stringify(prompt), services.config.maxPromptChars);
  }
  const strict = body.strict_caption_validation ?? false;
  const warnOn = body.warn_on_caption_issues ?? true;
  const caption = readCaption(prompt);
  if (strict && caption.warnings.length > 0) throw new InputError(strictFailureMessage(caption.warnings));
  services.runtime.assertReady(spec);

  const preset = body.preset ?? s.defaultPreset;
  const steps = PRESET_STEPS[preset];
  const quantize = body.quantize ?? spec.defaultQuantize;
  const seed = resolveSeed(body.seed);
  const task: TaskSpec = {
    operation: 'ideogram4.generate',
    model: { family: 'ideogram4', name: spec.name, quantize },
    prompt,
    width,
    height,
    seed,
    steps,
    preset,
    strictCaptionValidation: strict,
    warnOnCaptionIssues: warnOn,
    loras: [],
  };
  const format = body.format ?? 'png';
  const quality = body.quality ?? 90;
  const params = {
    prompt: snapshot(prompt),
    preset,
    width: body.width ?? null,
    height: body.height ?? null,
    seed: body.seed ?? null,
    quantize: body.quantize ?? null,
    strict_caption_validation: strict,
    warn_on_caption_issues: warnOn,
    format,
    quality,
    model: spec.name,
    mode: body.mode ?? 'sync',
  };
  return preparedImageJob(services, params, null, {
    family: 'ideogram4',
    task,
    format,
    quality,
    inputs: [],
    rerunOf: null,
    // seed, width, height and engine are the run's, and the engine may add caption warnings (finishResult).
    result: {
      base: {
        model: spec.name,
        prompt,
        params: {
          kind: 'txt2img',
          model: spec.name,
          prompt,
          preset,
          steps,
          seed,
          width,
          height,
          quantize,
          strict_caption_validation: strict,
          warn_on_caption_issues: warnOn,
          format,
          quality,
          caption_warnings: warnOn ? caption.warnings : [],
          engine: services.runtime.engine.describe().name,
        },
        width,
        height,
        safety_filter_note: SAFETY_FILTER_NOTE,
      },
      ...(warnOn ? { mergeWarnings: { into: 'caption_warnings', prefix: CAPTION_WARNING_PREFIX } } : {}),
    },
  });
}

/** mflux itself crashes on some shapes (e.g. a list as element `type`); here that is the client's 400. */
function readCaption(prompt: string | Record<string, unknown>) {
  try {
    return prepareCaption(prompt);
  } catch (err) {
    throw new InputError(`prompt caption cannot be used: ${(err as Error).message}`);
  }
}

export function ideogram4Capability(env: Record<string, string | undefined>): CapabilityDef {
  const s = readIdeogram4Settings(env);
  return {
    family: 'ideogram4',
    domain: 'image',
    title: 'kiapi Ideogram 4 API',
    summary: 'Generate typography-focused images from text prompts or JSON captions with Ideogram 4',
    description: ideogram4Description(s),
    models: [
      {
        name: 'fp8',
        aliases: ['ideogram4', 'ideogram-4', 'ideogram-ai/ideogram-4-fp8'],
        family: 'ideogram4',
        domain: 'image',
        default: true,
        features: ['text'],
        repo: s.modelRepo,
        revision: pinnedRevision(s.modelRepo),
        weightGb: 26.0,
        peakHeadroomGb: 4.0,
        priority: 0,
        defaultQuantize: s.defaultQuantize,
        diskGb: 27.5,
        gated: true,
      },
    ],
    operations: [
      defineOperation({
        path: '/generate',
        operationId: 'generate_v1_image_ideogram4_generate_post',
        summary: 'Generate',
        description: GENERATE_DOC,
        jobType: 'ideogram4',
        body: generateRequestSchema(s),
        result: Ideogram4ImageResponse,
        example: { prompt: EXAMPLE_CAPTION, preset: 'V4_TURBO_12', width: 512, height: 512, seed: 42, strict_caption_validation: true },
        // The presets are Ideogram's own speed/quality tiers.
        qualityTiers: { low: { preset: 'V4_TURBO_12' }, medium: { preset: 'V4_DEFAULT_20' }, high: { preset: 'V4_QUALITY_48' } },
        prepare: (body, services) => prepareGenerate(s, body, services),
      }),
    ],
    tools: [
      defineTool({
        path: '/captions/validate',
        operationId: 'validate_caption_v1_image_ideogram4_captions_validate_post',
        summary: 'Validate Caption',
        description:
          'kiapi extension. Checks a caption with the verifier `/generate` runs before queueing (the same rules and message texts), without generating: ' +
          'for a caption editor that shows problems as the caption is written. Needs no model and queues nothing.',
        body: CaptionCheckRequest,
        response: CaptionCheckResponse,
        example: { prompt: EXAMPLE_CAPTION },
        handle: (body, services) => {
          const prompt = body.prompt;
          checkPromptLength(typeof prompt === 'string' ? prompt : JSON.stringify(prompt), services.config.maxPromptChars);
          const { warnings } = readCaption(prompt);
          return { valid: warnings.length === 0, problems: warnings, strict_error: warnings.length > 0 ? strictFailureMessage(warnings) : null };
        },
      }),
    ],
  };
}
