/**
 * The part of an image job every family shares: resolve inputs before queueing (and undo them on
 * rejection), run the engine, encode the requested format with sharp, store the artifact. A full
 * disk anywhere on that way (the engine's output, the encoded file, the move into the store) fails
 * the job with one clear message naming the directory to free space in; the temp files are
 * removed and nothing partial is listed.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { sep } from 'node:path';
import sharp from 'sharp';
import type { CapabilityServices, PreparedJob } from '../../core/capability.js';
import { InputError, clip, isKiapiError } from '../../core/errors.js';
import { diskFullError, isDiskFull } from '../../core/files/disk-full.js';
import { assertLoraFile } from '../../core/files/safetensors.js';
import type { FileRefValue } from '../../core/files/file-ref.js';
import type { ResolvedInput } from '../../core/files/input-resolver.js';
import type { Workload } from '../../core/jobs/eta.js';
import type { JobContext, JobOutput } from '../../core/jobs/job-queue.js';
import type { ModelSpec } from '../../core/models/model-spec.js';
import type { EngineOutput, ImageTask } from '../../engines/engine.js';
import { buildRecord, type RecordedInput } from './record.js';

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
export function imageWorkload(task: ImageTask): Workload {
  const m = task.model;
  const group = `${task.operation}/${m.name}/q${m.quantize ?? '-'}${task.loras.length > 0 ? '+lora' : ''}`;
  return { group, key: `${group}/${task.width}x${task.height}`, pixels: task.width * task.height, steps: task.steps };
}

export type ImageFormat = 'png' | 'jpeg' | 'webp';

export interface ImageJobSpec {
  family: string;
  spec: ModelSpec;
  task: ImageTask;
  format: ImageFormat;
  quality: number;
  /** The inputs and LoRAs as resolved (ResolvedInputs.recorded), for the reproducibility record. */
  inputs: RecordedInput[];
  /** The job a rerun repeats (its record says so). */
  rerunOf?: string;
  /** The result without file_id/image_bytes/record (stored as the file's meta too). */
  buildResult(out: EngineOutput): Record<string, unknown>;
}

const EXT: Record<ImageFormat, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };

/**
 * An image job as the queue takes it: its recorded params, its ETA workload, what its inputs hold
 * (`resolved`; null when it has none) and how it runs.
 */
export function preparedImageJob(
  services: CapabilityServices,
  params: Record<string, unknown>,
  resolved: ResolvedInputs | null,
  job: ImageJobSpec,
): PreparedJob {
  return {
    params,
    workload: imageWorkload(job.task),
    discard: async () => resolved?.discard(),
    ...(resolved ? { release: () => resolved.release() } : {}),
    run: (ctx) => runImageJob(services, job, ctx),
  };
}

export async function runImageJob(services: CapabilityServices, job: ImageJobSpec, ctx: JobContext): Promise<JobOutput> {
  const enginePng = services.files.tempPath('.png');
  const encoded = services.files.tempPath(`.${EXT[job.format]}`);
  try {
    await assertInputsPresent(job.task);
    const t0 = performance.now();
    const out = await services.runtime.run(job.spec, job.task, ctx, enginePng);
    const t1 = performance.now();
    ctx.progress(1, 'saving');
    const reproRecord = await buildRecord(services, {
      spec: job.spec,
      task: job.task,
      format: job.format,
      quality: job.quality,
      inputs: job.inputs,
      rerunOf: job.rerunOf ?? null,
    });
    const result = { ...job.buildResult(out), record: reproRecord };
    const info = {
      filename: `${job.family}_${Math.floor(Date.now() / 1000)}.${EXT[job.format]}`,
      contentType: `image/${job.format}`,
      meta: result,
      purpose: 'the image',
      jobId: ctx.job.id,
    };
    let record;
    if (out.png && job.format === 'png') {
      record = await services.files.saveBytes(out.png, info);
    } else {
      await encode(out.png ?? enginePng, encoded, job.format, job.quality);
      record = await services.files.saveFile(encoded, info);
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
    // Only what is left: on success both names have been renamed away (png: engine → encoded →
    // store), and two removals of missing files per job are two needless trips to the thread pool.
    for (const p of [enginePng, encoded]) if (fs.existsSync(p)) await fsp.rm(p, { force: true });
  }
}

/**
 * Writes the requested format from the engine's lossless PNG (its file, or its bytes when the
 * engine made them in memory). For `png` the file is kept as it is (a rename), which spares a
 * decode and an encode per job.
 */
async function encode(src: string | Buffer, dest: string, format: ImageFormat, quality: number): Promise<void> {
  switch (format) {
    case 'png':
      if (typeof src === 'string') await fsp.rename(src, dest);
      else await fsp.writeFile(dest, src);
      return;
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
