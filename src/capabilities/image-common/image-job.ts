/**
 * The part of an image job every family shares: resolve inputs before queueing (and undo them on
 * rejection), describe the job as data any node can run (ImageRunSpec, run by the `image` runner),
 * run the engine, encode the requested format with sharp, store the artifact. A full
 * disk anywhere on that way (the engine's output, the encoded file, the move into the store) fails
 * the job with one clear message naming the directory to free space in; the temp files are
 * removed and nothing partial is listed.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { sep } from 'node:path';
import sharp from 'sharp';
import { runnableHandler, type CapabilityServices, type JobRunner, type PreparedJob } from '../../core/capability.js';
import { InputError, clip, isKiapiError } from '../../core/errors.js';
import { diskFullError, isDiskFull } from '../../core/files/disk-full.js';
import { assertLoraFile } from '../../core/files/safetensors.js';
import type { FileRefValue } from '../../core/files/file-ref.js';
import type { ResolvedInput } from '../../core/files/input-resolver.js';
import type { Workload } from '../../core/jobs/eta.js';
import type { JobContext, JobOutput } from '../../core/jobs/job-queue.js';
import type { ModelSpec } from '../../core/models/model-spec.js';
import type { EngineOutput, ImageTask, LocalInput } from '../../engines/engine.js';
import { buildRecord, type RecordedInput } from './record.js';
import { readRunSpec, type FileInput, type ImageRunSpec, type ResultSpec, type TaskSpec } from './run-spec.js';

export interface InputRequest {
  /** The name used in messages and meta: `init_image`, `images[1]`, `loras[0]`. */
  kind: string;
  ref: FileRefValue;
  /** What the file must be; checked before the job is queued. */
  expect: 'image' | 'lora';
}

export interface ResolvedInputs {
  inputs: ResolvedInput[];
  /** The same inputs as the reproducibility record names them (with their content digests). */
  recorded: RecordedInput[];
  /** Deletes files this request stored (url / data_url inputs) and lets go of the others. */
  discard(): Promise<void>;
  /** Lets go of the inputs once their job is done (they were held from resolution on). */
  release(): Promise<void>;
}

/**
 * Resolves every input, holding each on disk from the moment it is resolved (FileStore.hold), so
 * a file deleted while its job waits in the queue is still there when the job runs. On any
 * failure the inputs this request stored are deleted again.
 */
export async function resolveInputs(
  services: CapabilityServices,
  requests: InputRequest[],
  signal: AbortSignal,
): Promise<ResolvedInputs> {
  const inputs: ResolvedInput[] = [];
  const recorded: RecordedInput[] = [];
  const releases: (() => Promise<void>)[] = [];
  const release = async () => {
    for (const r of releases) await r();
  };
  const discard = async () => {
    await release();
    await services.files.discard(inputs.filter((i) => i.created).map((i) => i.fileId));
  };
  try {
    for (const req of requests) {
      const input = await services.inputs.resolve(req.ref, req.kind, signal);
      inputs.push(input);
      releases.push(await services.files.hold([input.fileId]));
      if (req.expect === 'image') await assertImage(input.path, input.fileId, req.kind);
      else await assertLoraFile(input.path, req.kind);
      // Taken while the file was stored (or once for a file older than that), never per job.
      const sha256 = await services.files.sha256(input.fileId);
      recorded.push({ kind: req.kind, expect: req.expect, file_id: input.fileId, filename: input.record.filename, sha256 });
    }
  } catch (err) {
    await discard();
    throw err;
  }
  return { inputs, recorded, discard, release };
}

/** The image formats inputs may have (what every engine decodes); SVG, TIFF, HEIF, PDF… are refused. */
export const INPUT_IMAGE_FORMATS = ['png', 'jpeg', 'webp', 'gif'] as const;

/**
 * Decodes the whole image before the job is queued, within sharp's pixel limit, so a truncated
 * or undecodable file is a 400 now and not an engine failure later. Only the documented formats
 * pass: an SVG passed the old header check, then cost seconds of worker time and answered 500.
 */
async function assertImage(path: string, fileId: string, kind: string): Promise<void> {
  let format: string | undefined;
  try {
    const meta = await sharp(path).metadata();
    format = meta.format;
  } catch {
    format = undefined;
  }
  if (!format || !(INPUT_IMAGE_FORMATS as readonly string[]).includes(format)) {
    throw new InputError(`${kind} is not a readable image (png, jpeg, webp or gif): ${fileId} is ${format ? `an image in ${format} format` : 'none of them'}`);
  }
  try {
    await sharp(path, { failOn: 'error', limitInputPixels: MAX_INPUT_PIXELS }).stats();
  } catch (err) {
    throw new InputError(`${kind} is not a readable image (png, jpeg, webp or gif): ${fileId} is a ${format} file that cannot be decoded (${clip(firstLine((err as Error).message), 200)})`);
  }
}

/** sharp's own default bound (about 16383 × 16383), said here so it is a decision, not an accident. */
const MAX_INPUT_PIXELS = 0x3fff * 0x3fff;

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? '').replace(/\/[^\s:]+/g, '…');
}

/**
 * What an image task costs per step depends on the model build and the output size; the ETA
 * keeps its measurements by these.
 */
export function imageWorkload(task: TaskSpec): Workload {
  const m = task.model;
  const group = `${task.operation}/${m.name}/q${m.quantize ?? '-'}${task.loras.length > 0 ? '+lora' : ''}`;
  return { group, key: `${group}/${task.width}x${task.height}`, pixels: task.width * task.height, steps: task.steps };
}

export type ImageFormat = 'png' | 'jpeg' | 'webp';

const EXT: Record<ImageFormat, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };

/** The name image jobs' runner is registered by (src/capabilities/index.ts). */
export const IMAGE_RUNNER = 'image';

/** An input's id and digest as resolution found them (the `i`-th of `resolved`). */
export function fileInput(resolved: ResolvedInputs, i: number): FileInput {
  return { fileId: resolved.inputs[i]!.fileId, sha256: resolved.recorded[i]!.sha256 };
}

/**
 * Where an input's bytes are on the node running the job: the one place a job's inputs become
 * paths (the file store brings the blob to this node when it is not here).
 */
export async function inputPath(services: CapabilityServices, fileId: string): Promise<string> {
  return services.files.localPath(fileId);
}

/**
 * An image job as the queue takes it: its recorded params, its ETA workload, what its inputs hold
 * (`resolved`; null when it has none), its description (`runnable`) and how it runs here: through
 * the image runner from a JSON copy of that description, the very way another node would run it.
 */
export function preparedImageJob(
  services: CapabilityServices,
  params: Record<string, unknown>,
  resolved: ResolvedInputs | null,
  spec: ImageRunSpec,
): PreparedJob {
  const runnable = { runner: IMAGE_RUNNER, spec };
  return {
    params,
    runnable,
    model: `${spec.task.model.family}/${spec.task.model.name}`,
    workload: imageWorkload(spec.task),
    discard: async () => resolved?.discard(),
    ...(resolved ? { release: () => resolved.release() } : {}),
    run: runnableHandler(imageRunner, runnable, services),
  };
}

/**
 * The `image` runner: rebuilds an ImageRunSpec on the running node (the model as it serves it, the
 * inputs' local paths, its engine) and returns the job's handler.
 */
export const imageRunner: JobRunner = async (raw, services) => {
  const run = readRunSpec(raw);
  const spec = services.models.resolve(run.task.model.family, run.task.model.name);
  return (ctx) => runImageJob(services, run, spec, ctx);
};

async function localTask(services: CapabilityServices, t: TaskSpec, spec: ModelSpec): Promise<ImageTask> {
  const local = async (i: FileInput): Promise<LocalInput> => ({ fileId: i.fileId, path: await inputPath(services, i.fileId) });
  const { model, loras, initImage, images, ...rest } = t;
  const task: ImageTask = {
    ...rest,
    model: { family: model.family, name: model.name, repo: spec.repo, quantize: model.quantize },
    loras: await Promise.all(loras.map(async (l) => ({ ...(await local(l)), scale: l.scale, digest: l.sha256 }))),
  };
  if (initImage) task.initImage = await local(initImage);
  if (images) task.images = await Promise.all(images.map(local));
  return task;
}

/**
 * The result a run answers: `base` with what the engine decided — `params.seed`, `width`, `height`
 * and the running node's `engine` where base has them (in their places), the top-level `width` and
 * `height`, the engine's warnings where asked, and `timings.total_s`.
 */
function finishResult(result: ResultSpec, out: EngineOutput, engine: string): Record<string, unknown> {
  const filled: Record<string, unknown> = { ...result.base };
  const params = filled.params;
  if (params !== null && typeof params === 'object' && !Array.isArray(params)) {
    const p: Record<string, unknown> = { ...(params as Record<string, unknown>) };
    const ran: Record<string, unknown> = { seed: out.seed, width: out.width, height: out.height, engine };
    for (const [key, value] of Object.entries(ran)) if (key in p) p[key] = value;
    const merge = result.mergeWarnings;
    if (merge) p[merge.into] = mergeWarnings(Array.isArray(p[merge.into]) ? (p[merge.into] as string[]) : [], out.warnings, merge.prefix);
    filled.params = p;
  }
  for (const key of ['width', 'height'] as const) if (key in filled) filled[key] = out[key];
  filled.timings = { total_s: Math.round(out.engineSeconds * 100) / 100 };
  return filled;
}

/** The engine may report problems the family found already: each listed once, without `prefix`. */
function mergeWarnings(ours: string[], engine: string[], prefix: string): string[] {
  const strip = (w: string) => (w.startsWith(prefix) ? w.slice(prefix.length) : w);
  return [...new Set([...ours, ...engine.map(strip)])];
}

async function runImageJob(services: CapabilityServices, job: ImageRunSpec, spec: ModelSpec, ctx: JobContext): Promise<JobOutput> {
  const enginePng = services.files.tempPath('.png');
  const encoded = services.files.tempPath(`.${EXT[job.format]}`);
  try {
    // Inside: getting an input here may fill the disk or fail naming a path, like the run itself.
    const task = await localTask(services, job.task, spec);
    await assertInputsPresent(task);
    const t0 = performance.now();
    const out = await services.runtime.run(spec, task, ctx, enginePng);
    const t1 = performance.now();
    ctx.progress(1, 'saving');
    const reproRecord = await buildRecord(services, {
      spec,
      task,
      format: job.format,
      quality: job.quality,
      inputs: job.inputs,
      rerunOf: job.rerunOf,
      revision: out.revision,
    });
    const result = { ...finishResult(job.result, out, services.runtime.engine.describe().name), record: reproRecord };
    const info = {
      filename: `${job.family}_${Math.floor(Date.now() / 1000)}.${EXT[job.format]}`,
      contentType: `image/${job.format}`,
      meta: result,
      purpose: 'the image',
      jobId: ctx.job.id,
    };
    let record;
    if (job.format !== 'png') {
      await encode(out.png ?? enginePng, encoded, job.format, job.quality);
      record = await services.files.saveFile(encoded, info);
    } else if (out.png) {
      record = await services.files.saveBytes(out.png, info);
    } else {
      // The engine's lossless PNG is the file asked for: stored as it is, no decode or encode.
      record = await services.files.saveFile(enginePng, info);
    }
    return {
      result: { file_id: record.file_id, image_bytes: record.size, ...result },
      artifacts: [record.file_id],
      timings: { engine: t1 - t0, store: performance.now() - t1 },
    };
  } catch (err) {
    // The engine and sharp write into the temp dir; the store names its own directory.
    if (isDiskFull(err)) throw diskFullError(err, 'the image', services.files.tmpDir);
    // Job errors are answered and stored: they name files by id, never by their path on disk.
    if (err instanceof Error && !isKiapiError(err)) err.message = withoutPaths(err.message, services);
    throw err;
  } finally {
    // Only what is left (a png job's engine file was renamed into the store; a jpeg or webp job
    // leaves it behind): removing missing files would be needless trips to the thread pool.
    for (const p of [enginePng, encoded]) if (fs.existsSync(p)) await fsp.rm(p, { force: true });
  }
}

/** Writes JPEG or WebP from the engine's lossless PNG (its file, or its bytes when the engine made them in memory). */
async function encode(src: string | Buffer, dest: string, format: Exclude<ImageFormat, 'png'>, quality: number): Promise<void> {
  switch (format) {
    case 'jpeg':
      // JPEG has no alpha; flatten on white like the original's RGB conversion.
      await sharp(src).flatten({ background: '#ffffff' }).jpeg({ quality }).toFile(dest);
      return;
    case 'webp':
      await sharp(src).webp({ quality }).toFile(dest);
      return;
  }
}

/**
 * Inputs are held while their job is queued, but a file removed from disk by hand would reach
 * the engine as a missing path (which answered 500 with the absolute path). Said here, by id.
 */
async function assertInputsPresent(task: ImageTask): Promise<void> {
  const inputs = [
    ...(task.initImage ? [{ kind: 'init_image', ...task.initImage }] : []),
    ...(task.images ?? []).map((i, n) => ({ kind: `images[${n}]`, ...i })),
    ...task.loras.map((l, n) => ({ kind: `loras[${n}]`, fileId: l.fileId, path: l.path })),
  ];
  for (const input of inputs) {
    try {
      await fsp.access(input.path);
    } catch {
      throw new InputError(`${input.kind} (${input.fileId}) is no longer on disk; upload it again and resubmit the request`);
    }
  }
}

/** Blob paths become their file id, other paths under the data dir `<data dir>/…`. */
function withoutPaths(message: string, services: CapabilityServices): string {
  let out = message.replaceAll(`${services.files.root}${sep}`, '');
  for (const dir of [services.files.tmpDir, services.config.dataDir]) out = out.replaceAll(dir, '<data dir>');
  return out;
}
