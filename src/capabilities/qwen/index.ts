/**
 * The qwen family: `/generate` (txt2img, img2img) and `/edit` (one or more images), pinned to the
 * `image` and `edit-2509` variants. Rules run in the original's order (docs/compatibility.md §8.6), then
 * inputs are resolved, all before the job is queued.
 */
import { defineOperation, type CapabilityDef, type CapabilityServices, type PreparedJob } from '../../core/capability.js';
import { InputError, RuleError, clip } from '../../core/errors.js';
import type { ModelSpec } from '../../core/models/model-spec.js';
import { fileInput, preparedImageJob, resolveInputs, type InputRequest, type ResolvedInputs } from '../image-common/image-job.js';
import type { LoraFileInput, TaskSpec } from '../image-common/run-spec.js';
import { resolveSeed, snapshot } from '../image-common/params.js';
import { checkCap, checkInputCount, checkMultiplesOf16, checkPromptLength, checkQuantize } from '../image-common/rules.js';
import { qwenDescription } from './description.js';
import { qwenModels } from './models.js';
import {
  QwenImageResponse,
  SCHEDULERS,
  editRequestSchema,
  generateRequestSchema,
  type EditBody,
  type GenerateBody,
} from './schemas.js';
import { QUANTIZE_CHOICES, readQwenSettings, type QwenSettings } from './settings.js';

const GENERATE_DOC = `Generate an image from a text prompt (Qwen Image, text-to-image / img2img).

Plain text-to-image by default; supply \`init_image\` (+ optional \`image_strength\`, higher keeps more of the input) to run img2img instead — use \`/v1/image/qwen/edit\` for natural-language single/multi-image editing. The same endpoint serves both \`sync\` and \`async\` via \`mode\`. This endpoint only accepts the \`image\` model variant.

Sync content negotiation: a single image is produced, so unless the client asks for JSON the raw image bytes are returned with \`X-Kiapi-File-Id\` / \`X-Kiapi-Job-Id\` headers — \`curl -o out.png\` just works. With \`Accept: application/json\` (or async) the Job JSON is returned, whose \`result\` follows ImageResponse.

Any \`loras\` or a \`quantize\` differing from the default uses a separately built model (kept resident for reuse). Async returns 202 immediately; poll GET /v1/jobs/{job_id} and fetch the artifact via GET /v1/files/{file_id}/download.`;

const EDIT_DOC = `Edit / combine one or more reference images with a prompt (Qwen Image Edit).

Takes a list of \`images\` (FileRefs, single or multi-image) plus a natural-language \`prompt\`. For plain image-to-image from a single seed image, use \`init_image\` on \`/v1/image/qwen/generate\` instead. The same endpoint serves both \`sync\` and \`async\` via \`mode\`. This endpoint only accepts the \`edit-2509\` model variant.

Sync content negotiation, LoRA / \`quantize\` behaviour, and the ImageResponse \`result\` shape match \`/v1/image/qwen/generate\`.`;

/**
 * A 16×16 steel-blue PNG as a data URL: the edit example's input, so "Try it out" works offline
 * and without an upload first.
 */
const EXAMPLE_IMAGE =
  'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAACXBIWXMAAAPoAAAD6AG1e1JrAAAAGUlEQVQokWNwa9pCEmIY1dA0GkpuwzVpAACXG3wQY/W53wAAAABJRU5ErkJggg==';

interface Common {
  spec: ModelSpec;
  width: number;
  height: number;
  steps: number;
  guidance: number;
  quantize: number | null;
}

function checkCommon(
  s: QwenSettings,
  body: GenerateBody | EditBody,
  spec: ModelSpec,
  defaults: { steps: number; guidance: number },
  maxInputs: number,
): Common {
  const width = body.width ?? s.defaultWidth;
  const height = body.height ?? s.defaultHeight;
  if (width <= 0 || height <= 0) throw new RuleError('width and height must be positive');
  checkMultiplesOf16(width, height);
  checkCap(width, height, s.maxWidth, s.maxHeight);
  const steps = body.steps ?? defaults.steps;
  if (steps < 1 || steps > s.maxSteps) throw new RuleError(`steps must be in 1..${s.maxSteps}`);
  checkQuantize(body.quantize, QUANTIZE_CHOICES);
  const loras = body.loras ?? [];
  if (loras.length > s.maxLoras) throw new RuleError(`at most ${s.maxLoras} loras may be applied`);
  checkInputCount('loras', loras.length, maxInputs);
  const scheduler = body.scheduler ?? 'linear';
  if (!(SCHEDULERS as readonly string[]).includes(scheduler)) {
    throw new RuleError(`scheduler '${clip(scheduler, 100)}' is not supported; use one of: ${SCHEDULERS.join(', ')}`);
  }
  return { spec, width, height, steps, guidance: body.guidance ?? defaults.guidance, quantize: body.quantize ?? spec.defaultQuantize };
}

function loraRequests(body: GenerateBody | EditBody): InputRequest[] {
  return (body.loras ?? []).map((l, i) => ({ kind: `loras[${i}]`, ref: l.file, expect: 'lora' }));
}

/** The LoRAs as resolved: `from` is the index of the first in the resolved inputs (after the images). */
function resolvedLoras(body: GenerateBody | EditBody, resolved: ResolvedInputs, from: number): LoraFileInput[] {
  // The digest taken at resolution (stored with the file, never recomputed per job).
  return (body.loras ?? []).map((l, i) => ({ ...fileInput(resolved, from + i), scale: l.scale ?? 1.0 }));
}

async function prepareGenerate(s: QwenSettings, body: GenerateBody, services: CapabilityServices, signal: AbortSignal): Promise<PreparedJob> {
  const spec = services.models.resolve('qwen', body.model);
  if (spec.name !== 'image') throw new InputError("qwen generate requires model 'image'");
  const c = checkCommon(s, body, spec, { steps: s.generateSteps, guidance: s.generateGuidance }, services.config.maxInputsPerRequest);
  const strength = body.image_strength;
  if (strength !== null && strength !== undefined && (strength < 0 || strength > 1)) {
    throw new RuleError('image_strength must be in 0..1');
  }
  checkInputCount('init_image and loras', (body.init_image ? 1 : 0) + (body.loras ?? []).length, services.config.maxInputsPerRequest);
  checkPromptLength(body.prompt, services.config.maxPromptChars);
  checkPromptLength(body.negative_prompt, services.config.maxPromptChars, 'negative_prompt');
  services.runtime.assertReady(spec);

  const requests: InputRequest[] = [];
  if (body.init_image) requests.push({ kind: 'init_image', ref: body.init_image, expect: 'image' });
  requests.push(...loraRequests(body));
  const resolved = await resolveInputs(services, requests, signal);
  // Anything that fails from here on must not leave the stored inputs behind.
  return undoOnFailure(resolved, async () => {
    const init = body.init_image ? fileInput(resolved, 0) : undefined;
    const loras = resolvedLoras(body, resolved, init ? 1 : 0);

    const imageStrength = init ? (strength ?? s.defaultImageStrength) : null;
    const task: TaskSpec = {
      ...qwenTask('qwen.generate', spec, c, body, loras),
      ...(init ? { initImage: init, imageStrength } : {}),
    };
    return qwenJob(services, spec, c, body, task, resolved, {
      request: { init_image: snapshot(body.init_image ?? null), image_strength: body.image_strength ?? null },
      result: {
        kind: init ? 'img2img' : 'txt2img',
        init_image_file_id: init?.fileId ?? null,
        image_strength: imageStrength,
      },
    });
  });
}

async function prepareEdit(s: QwenSettings, body: EditBody, services: CapabilityServices, signal: AbortSignal): Promise<PreparedJob> {
  const spec = services.models.resolve('qwen', body.model ?? 'edit-2509');
  if (spec.name !== 'edit-2509') throw new InputError("qwen edit requires model 'edit-2509'");
  const c = checkCommon(s, body, spec, { steps: s.editSteps, guidance: s.editGuidance }, services.config.maxInputsPerRequest);
  if (body.images.length === 0) throw new RuleError('edit requires at least one image');
  checkInputCount('images', body.images.length, services.config.maxInputsPerRequest);
  checkInputCount('images and loras', body.images.length + (body.loras ?? []).length, services.config.maxInputsPerRequest);
  checkPromptLength(body.prompt, services.config.maxPromptChars);
  checkPromptLength(body.negative_prompt, services.config.maxPromptChars, 'negative_prompt');
  services.runtime.assertReady(spec);

  const requests: InputRequest[] = body.images.map((ref, i) => ({ kind: `images[${i}]`, ref: ref, expect: 'image' }));
  requests.push(...loraRequests(body));
  const resolved = await resolveInputs(services, requests, signal);
  return undoOnFailure(resolved, async () => {
    const images = body.images.map((_, i) => fileInput(resolved, i));
    const loras = resolvedLoras(body, resolved, body.images.length);

    const task: TaskSpec = { ...qwenTask('qwen.edit', spec, c, body, loras), images };
    return qwenJob(services, spec, c, body, task, resolved, {
      request: { images: snapshot(body.images) },
      result: { kind: 'edit', image_file_ids: images.map((i) => i.fileId) },
    });
  });
}

/** What generate and edit tasks share: the model build, prompt, size, sampling and LoRAs. */
function qwenTask(operation: string, spec: ModelSpec, c: Common, body: GenerateBody | EditBody, loras: LoraFileInput[]): TaskSpec {
  return {
    operation,
    model: { family: 'qwen', name: spec.name, quantize: c.quantize },
    prompt: body.prompt,
    negativePrompt: body.negative_prompt ?? null,
    width: c.width,
    height: c.height,
    seed: resolveSeed(body.seed),
    steps: c.steps,
    guidance: c.guidance,
    scheduler: body.scheduler ?? 'linear',
    loras,
  };
}

/** Runs the rest of a preparation; on any failure the resolved inputs are undone. */
async function undoOnFailure(resolved: ResolvedInputs, rest: () => Promise<PreparedJob>): Promise<PreparedJob> {
  try {
    return await rest();
  } catch (err) {
    await resolved.discard();
    throw err;
  }
}

/**
 * The job both operations become. `params` keeps the request as sent (nulls kept, the original's
 * snapshot); the result's `params` records every value actually used, inputs by file id.
 */
function qwenJob(
  services: CapabilityServices,
  spec: ModelSpec,
  c: Common,
  body: GenerateBody | EditBody,
  task: TaskSpec,
  resolved: ResolvedInputs,
  inputs: { request: Record<string, unknown>; result: Record<string, unknown> & { kind: string } },
): PreparedJob {
  const format = body.format ?? 'png';
  const quality = body.quality ?? 90;
  const params = {
    prompt: body.prompt,
    negative_prompt: body.negative_prompt ?? null,
    ...inputs.request,
    width: body.width ?? null,
    height: body.height ?? null,
    steps: body.steps ?? null,
    guidance: body.guidance ?? null,
    seed: body.seed ?? null,
    quantize: body.quantize ?? null,
    scheduler: body.scheduler ?? 'linear',
    format,
    quality,
    loras: snapshot(body.loras ?? []),
    model: spec.name,
    mode: body.mode ?? 'sync',
  };
  const { kind, ...inputIds } = inputs.result;
  return preparedImageJob(services, params, resolved, {
    family: 'qwen',
    task,
    format,
    quality,
    inputs: resolved.recorded,
    rerunOf: null,
    // seed, width, height and engine are the run's (finishResult).
    result: {
      base: {
        model: spec.name,
        prompt: body.prompt,
        params: {
          kind,
          model: spec.name,
          prompt: body.prompt,
          negative_prompt: task.negativePrompt,
          ...inputIds,
          seed: task.seed,
          width: task.width,
          height: task.height,
          steps: c.steps,
          guidance: c.guidance,
          quantize: c.quantize,
          scheduler: task.scheduler,
          format,
          quality,
          loras: task.loras.map((l) => ({ file_id: l.fileId, scale: l.scale })),
          engine: services.runtime.engine.describe().name,
        },
        width: task.width,
        height: task.height,
      },
    },
  });
}

/**
 * Qwen has no quality switch but its step count: `medium` is the configured default, `low` half
 * of it, `high` twice it (within KIAPI_QWEN_MAX_STEPS).
 */
function qwenTiers(s: QwenSettings, steps: number) {
  return { low: { steps: Math.max(1, Math.round(steps / 2)) }, medium: { steps }, high: { steps: Math.min(s.maxSteps, steps * 2) } };
}

export function qwenCapability(env: Record<string, string | undefined>): CapabilityDef {
  const s = readQwenSettings(env);
  const generateBody = generateRequestSchema(s);
  const editBody = editRequestSchema(s);
  return {
    family: 'qwen',
    domain: 'image',
    title: 'kiapi Qwen Image API',
    summary: 'Generate (txt2img, img2img) and edit (one or more images) with Qwen-Image',
    description: qwenDescription(s),
    models: qwenModels(s),
    operations: [
      defineOperation({
        path: '/generate',
        operationId: 'generate_qwen_endpoint_v1_image_qwen_generate_post',
        summary: 'Generate Qwen Endpoint',
        description: GENERATE_DOC,
        jobType: 'qwen',
        body: generateBody,
        result: QwenImageResponse,
        example: { prompt: 'A lighthouse on a rocky cliff at dusk, warm light in its windows', width: 512, height: 512, steps: 4, seed: 42 },
        qualityTiers: qwenTiers(s, s.generateSteps),
        prepare: (body, services, signal) => prepareGenerate(s, body, services, signal),
      }),
      defineOperation({
        path: '/edit',
        operationId: 'edit_qwen_endpoint_v1_image_qwen_edit_post',
        summary: 'Edit Qwen Endpoint',
        description: EDIT_DOC,
        jobType: 'qwen-edit',
        body: editBody,
        result: QwenImageResponse,
        example: {
          prompt: 'Turn the square into a stained-glass window',
          images: [{ type: 'data_url', data_url: EXAMPLE_IMAGE }],
          width: 512,
          height: 512,
          steps: 4,
          seed: 42,
        },
        qualityTiers: qwenTiers(s, s.editSteps),
        prepare: (body, services, signal) => prepareEdit(s, body, services, signal),
      }),
    ],
  };
}
