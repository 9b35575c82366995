/**
 * An image job as it travels between nodes: the spec of the `image` runner (Runnable.spec). JSON
 * through and through, naming nothing of the node that prepared it — inputs by file id and content
 * digest, the model by family and name — and checked against its schema by the node that runs it,
 * so a description it cannot read (from a kiapi of another version) fails the job saying so.
 */
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { VERSION } from '../../core/package-info.js';

/** An input file: where its bytes lie is the running node's business (inputPath), never a path here. */
const FileInputSchema = Type.Object({ fileId: Type.String(), sha256: Type.String() });

const LoraFileInputSchema = Type.Object({ fileId: Type.String(), sha256: Type.String(), scale: Type.Number() });

/**
 * An ImageTask (src/engines/engine.ts) as it travels: the model without its repository (the one
 * the running node serves), the inputs by file. Fields a family does not use are absent.
 */
const TaskSpecSchema = Type.Object({
  operation: Type.String(),
  model: Type.Object({ family: Type.String(), name: Type.String(), quantize: Type.Union([Type.Integer(), Type.Null()]) }),
  prompt: Type.Union([Type.String(), Type.Record(Type.String(), Type.Unknown())]),
  negativePrompt: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  width: Type.Integer(),
  height: Type.Integer(),
  seed: Type.Integer(),
  steps: Type.Integer(),
  guidance: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
  scheduler: Type.Optional(Type.String()),
  preset: Type.Optional(Type.String()),
  strictCaptionValidation: Type.Optional(Type.Boolean()),
  warnOnCaptionIssues: Type.Optional(Type.Boolean()),
  loras: Type.Array(LoraFileInputSchema),
  initImage: Type.Optional(FileInputSchema),
  imageStrength: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
  images: Type.Optional(Type.Array(FileInputSchema)),
});

/**
 * The job's result as data: `base` is every field as prepared, in the order answered (the order
 * of a result's keys is part of the contract); finishResult fills in what the run decides.
 */
const ResultSpecSchema = Type.Object({
  base: Type.Record(Type.String(), Type.Unknown()),
  /** A `params` list the engine's own warnings join, each once and without the engine's `prefix`. */
  mergeWarnings: Type.Optional(Type.Object({ into: Type.String(), prefix: Type.String() })),
});

const ImageRunSpecSchema = Type.Object({
  /** The family the stored file is named after (`<family>_<unix>.<ext>`). */
  family: Type.String(),
  task: TaskSpecSchema,
  format: Type.Union([Type.Literal('png'), Type.Literal('jpeg'), Type.Literal('webp')]),
  quality: Type.Integer(),
  /** The inputs and LoRAs as resolved (ResolvedInputs.recorded), for the reproducibility record. */
  inputs: Type.Array(
    Type.Object({
      kind: Type.String(),
      expect: Type.Union([Type.Literal('image'), Type.Literal('lora')]),
      file_id: Type.String(),
      filename: Type.String(),
      sha256: Type.String(),
    }),
  ),
  /** The job a rerun repeats (its record says so), else null. */
  rerunOf: Type.Union([Type.String(), Type.Null()]),
  result: ResultSpecSchema,
});

export type FileInput = Static<typeof FileInputSchema>;
export type LoraFileInput = Static<typeof LoraFileInputSchema>;
export type TaskSpec = Static<typeof TaskSpecSchema>;
export type ResultSpec = Static<typeof ResultSpecSchema>;
export type ImageRunSpec = Static<typeof ImageRunSpecSchema>;

const check = Compile(ImageRunSpecSchema);

/** The spec a runner received, checked; what this kiapi cannot read fails the job naming the first problem. */
export function readRunSpec(spec: Record<string, unknown>): ImageRunSpec {
  if (check.Check(spec)) return spec;
  const first = check.Errors(spec)[0];
  const where = first ? `${first.instancePath || '/'}: ${first.message}` : 'unreadable';
  throw new Error(
    `this node (kiapi ${VERSION}) cannot run the image job as it was described (${where}); the node that accepted it likely runs another kiapi version`,
  );
}
