/**
 * The reproducibility record of an image job: everything that made its bytes what they are — the
 * engine and its versions, the encoder, the model's repository and the commit its weights were
 * loaded from, every input and LoRA by content digest, and every resolved parameter including the
 * seed. It is stored in the job's result and the image file's meta, and it is all a rerun
 * (POST /v1/jobs/{job_id}/rerun, rerun.ts) reads: the task is rebuilt from it alone.
 */
import sharp from 'sharp';
import { Type, type Static, type TSchema } from 'typebox';
import type { CapabilityServices } from '../../core/capability.js';
import { component } from '../../core/schema.js';
import { VERSION } from '../../core/package-info.js';
import type { ModelSpec } from '../../core/models/model-spec.js';
import type { ImageTask } from '../../engines/engine.js';
import type { ImageFormat } from './image-job.js';

/** An input file as the record names it: by id, name and the SHA-256 of its bytes. */
export interface RecordedInput {
  /** `init_image`, `images[1]`, `loras[0]`: the request's name for it. */
  kind: string;
  expect: 'image' | 'lora';
  file_id: string;
  filename: string;
  sha256: string;
}

const nullableString = (description: string) => Type.Union([Type.String(), Type.Null()], { description });

const optionalNullable = (schema: TSchema, description: string) => Type.Optional(Type.Union([schema, Type.Null()], { description }));

/** Every resolved value the engine and the encoder were given; a family's fields only where it has them. */
const ReproParamsSchema = Type.Object(
  {
    prompt: Type.Union([Type.String(), Type.Record(Type.String(), Type.Unknown())], { description: 'Plain text, or the Ideogram 4 JSON caption.' }),
    negative_prompt: optionalNullable(Type.String(), 'qwen.'),
    width: Type.Integer(),
    height: Type.Integer(),
    seed: Type.Integer({ description: 'The seed used (the one drawn when the request had none).' }),
    steps: Type.Integer({ description: 'Denoising steps (ideogram4: those of the preset).' }),
    guidance: optionalNullable(Type.Number(), 'qwen.'),
    scheduler: Type.Optional(Type.String({ description: 'qwen.' })),
    preset: Type.Optional(Type.String({ description: 'ideogram4.' })),
    strict_caption_validation: Type.Optional(Type.Boolean({ description: 'ideogram4.' })),
    warn_on_caption_issues: Type.Optional(Type.Boolean({ description: 'ideogram4.' })),
    image_strength: optionalNullable(Type.Number(), 'qwen img2img.'),
    format: Type.Union([Type.Literal('png'), Type.Literal('jpeg'), Type.Literal('webp')]),
    quality: Type.Integer(),
  },
  { description: 'Every resolved parameter the engine and encoder were given, the seed included.' },
);

export const ReproRecordSchema = component(
  'ReproRecord',
  Type.Object(
    {
      kiapi_version: Type.String({ description: 'The kiapi version that ran the job.', examples: ['0.1.0'] }),
      operation: Type.String({ description: 'What ran: `<family>.<operation>`.', examples: ['qwen.generate'] }),
      engine: Type.Object(
        {
          name: Type.String({ description: '`preview` or `mflux`.' }),
          version: Type.String({ description: "The engine's version: mflux's, or kiapi's for the preview engine (its drawing is kiapi code)." }),
          python: nullableString('Python version of the engine worker (null for the preview engine).'),
          mflux: nullableString('mflux version (null for the preview engine).'),
          mlx: nullableString('MLX version (null for the preview engine).'),
          device: nullableString("MLX's device, e.g. `gpu` or `cpu` (null for the preview engine)."),
        },
        { description: 'The engine that made the pixels.' },
      ),
      encoder: Type.Object(
        { sharp: Type.String(), libvips: Type.String() },
        { description: 'The encoder of the stored file (png/jpeg/webp are written with sharp on libvips).' },
      ),
      model: Type.Object(
        {
          family: Type.String(),
          name: Type.String({ description: 'The model variant.' }),
          repo: Type.String({ description: 'Hugging Face repository (or the local directory the model setting names).' }),
          revision: nullableString(
            'The commit of the repository the weights were loaded from; null when the engine loads no weights (preview) or they are a local directory.',
          ),
          quantize: Type.Union([Type.Integer(), Type.Null()], { description: 'Quantization bits of the build (null: checkpoint precision).' }),
        },
        { description: 'The model build.' },
      ),
      loras: Type.Array(
        Type.Object({
          file_id: Type.String(),
          filename: Type.String(),
          sha256: Type.String({ description: 'SHA-256 (hex) of the adapter file.' }),
          scale: Type.Number(),
        }),
        { description: 'LoRA adapters in the order applied.' },
      ),
      inputs: Type.Array(
        Type.Object({
          kind: Type.String({ description: '`init_image` or `images[i]`.' }),
          file_id: Type.String(),
          filename: Type.String(),
          sha256: Type.String({ description: 'SHA-256 (hex) of the input file.' }),
        }),
        { description: 'Input images (url and data_url inputs were stored as files; their ids are here).' },
      ),
      params: ReproParamsSchema,
      rerun_of: Type.Union([Type.String(), Type.Null()], { description: 'The job this one reran (POST /v1/jobs/{job_id}/rerun), else null.' }),
    },
    {
      title: 'ReproRecord',
      description:
        'kiapi extension: what makes this image reproducible. POST /v1/jobs/{job_id}/rerun makes it again from this record alone (the same bytes on the same engine and machine).',
    },
  ),
);

export type ReproRecord = Static<typeof ReproRecordSchema>;

export type ReproParams = ReproRecord['params'];

/** ImageTask field ↔ record `params` key: the one mapping, read both ways (record and rerun). */
const TASK_PARAMS = [
  ['prompt', 'prompt'],
  ['negativePrompt', 'negative_prompt'],
  ['width', 'width'],
  ['height', 'height'],
  ['seed', 'seed'],
  ['steps', 'steps'],
  ['guidance', 'guidance'],
  ['scheduler', 'scheduler'],
  ['preset', 'preset'],
  ['strictCaptionValidation', 'strict_caption_validation'],
  ['warnOnCaptionIssues', 'warn_on_caption_issues'],
  ['imageStrength', 'image_strength'],
] as const satisfies readonly (readonly [keyof ImageTask, keyof ReproParams])[];

type TaskParams = Pick<ImageTask, (typeof TASK_PARAMS)[number][0]>;

function recordParams(task: ImageTask, format: ImageFormat, quality: number): ReproParams {
  const out: Record<string, unknown> = {};
  for (const [taskKey, key] of TASK_PARAMS) if (task[taskKey] !== undefined) out[key] = task[taskKey];
  return { ...(out as Omit<ReproParams, 'format' | 'quality'>), format, quality };
}

/** The task's parameters as the record has them (the record passed its schema check). */
export function taskParams(params: ReproParams): TaskParams {
  const out: Record<string, unknown> = {};
  for (const [taskKey, key] of TASK_PARAMS) if (params[key] !== undefined) out[taskKey] = params[key];
  return out as TaskParams;
}

export function encoderVersions(): ReproRecord['encoder'] {
  return { sharp: sharp.versions.sharp ?? 'unknown', libvips: sharp.versions.vips };
}

export interface RecordSource {
  spec: ModelSpec;
  task: ImageTask;
  format: ImageFormat;
  quality: number;
  inputs: RecordedInput[];
  rerunOf: string | null;
  /** The Hub commit the run loaded the weights from (ModelRuntime.run's `revision`). */
  revision: string | null;
}

/**
 * The record of a job that just ran. Taken after the run: the engine's identity is then the one
 * that ran it (the worker is up); the revision is the one the run found.
 */
export async function buildRecord(services: CapabilityServices, src: RecordSource): Promise<ReproRecord> {
  const { task, spec } = src;
  const loraFiles = src.inputs.filter((i) => i.expect === 'lora');
  return {
    kiapi_version: VERSION,
    operation: task.operation,
    engine: await services.runtime.engine.identify(),
    encoder: encoderVersions(),
    model: { family: task.model.family, name: task.model.name, repo: spec.repo, revision: src.revision, quantize: task.model.quantize },
    loras: task.loras.map((l, i) => ({ file_id: l.fileId, filename: loraFiles[i]?.filename ?? '', sha256: l.digest, scale: l.scale })),
    inputs: src.inputs.filter((i) => i.expect === 'image').map(({ kind, file_id, filename, sha256 }) => ({ kind, file_id, filename, sha256 })),
    params: recordParams(task, src.format, src.quality),
    rerun_of: src.rerunOf,
  };
}
