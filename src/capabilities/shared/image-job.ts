/**
 * The part of an image job every family shares: resolve inputs before queueing (and undo them on
 * rejection), run the engine, encode the requested format with sharp, store the artifact. A full
 * disk anywhere on that way (the engine's output, the encoded file, the move into the store) fails
 * the job with one clear message naming the directory to free space in; the temp files are
 * removed and nothing partial is listed.
 */
import fsp from 'node:fs/promises';
import sharp from 'sharp';
import type { CapabilityServices } from '../../core/capability.js';
import { InputError } from '../../core/errors.js';
import { diskFullError, isDiskFull } from '../../core/files/disk-full.js';
import { assertLoraFile } from '../../core/files/safetensors.js';
import type { FileRefValue } from '../../core/files/file-ref.js';
import type { ResolvedInput } from '../../core/files/input-resolver.js';
import type { JobContext, JobOutput } from '../../core/jobs/job-queue.js';
import type { ModelSpec } from '../../core/models/model-spec.js';
import type { EngineOutput, ImageTask } from '../../engines/engine.js';

export interface InputRequest {
  /** The name used in messages and meta: `init_image`, `images[1]`, `loras[0]`. */
  kind: string;
  ref: FileRefValue;
  /** What the file must be; checked before the job is queued. */
  expect: 'image' | 'lora';
}

export interface ResolvedInputs {
  inputs: ResolvedInput[];
  /** Deletes files this request stored (url / data_url inputs). */
  discard(): Promise<void>;
}

export async function resolveInputs(
  services: CapabilityServices,
  requests: InputRequest[],
  signal: AbortSignal,
): Promise<ResolvedInputs> {
  const inputs: ResolvedInput[] = [];
  const discard = () => services.files.discard(inputs.filter((i) => i.created).map((i) => i.fileId));
  try {
    for (const req of requests) {
      const input = await services.inputs.resolve(req.ref, req.kind, signal);
      inputs.push(input);
      if (req.expect === 'image') await assertImage(input.path, req.kind);
      else await assertLoraFile(input.path, req.kind);
    }
  } catch (err) {
    await discard();
    throw err;
  }
  return { inputs, discard };
}

async function assertImage(path: string, kind: string): Promise<void> {
  try {
    const meta = await sharp(path).metadata();
    if (!meta.width || !meta.height) throw new Error('no dimensions');
  } catch (err) {
    throw new InputError(`${kind} is not a readable image (png, jpeg, webp or gif): ${(err as Error).message}`);
  }
}

export type ImageFormat = 'png' | 'jpeg' | 'webp';

export interface ImageJobSpec {
  family: string;
  spec: ModelSpec;
  task: ImageTask;
  format: ImageFormat;
  quality: number;
  /** The result without file_id/image_bytes (stored as the file's meta too). */
  buildResult(out: EngineOutput): Record<string, unknown>;
}

const EXT: Record<ImageFormat, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };

export async function runImageJob(services: CapabilityServices, job: ImageJobSpec, ctx: JobContext): Promise<JobOutput> {
  const enginePng = services.files.tempPath('.png');
  const encoded = services.files.tempPath(`.${EXT[job.format]}`);
  try {
    const out = await services.runtime.run(job.spec, job.task, ctx, enginePng);
    ctx.progress(1, 'saving');
    const info = await encode(enginePng, encoded, job.format, job.quality);
    const result = job.buildResult(out);
    const record = await services.files.saveFile(encoded, {
      filename: `${job.family}_${Math.floor(Date.now() / 1000)}.${EXT[job.format]}`,
      contentType: `image/${job.format}`,
      meta: result,
      purpose: 'the image',
      jobId: ctx.job.id,
    });
    return {
      result: { file_id: record.file_id, image_bytes: info.size, ...result },
      artifacts: [record.file_id],
    };
  } catch (err) {
    // The engine and sharp write into the temp dir; the store names its own directory.
    if (isDiskFull(err)) throw diskFullError(err, 'the image', services.files.tmpDir);
    throw err;
  } finally {
    await fsp.rm(enginePng, { force: true });
    await fsp.rm(encoded, { force: true });
  }
}

async function encode(src: string, dest: string, format: ImageFormat, quality: number) {
  const img = sharp(src);
  switch (format) {
    case 'png':
      return img.png().toFile(dest);
    case 'jpeg':
      // JPEG has no alpha; flatten on white like the original's RGB conversion.
      return img.flatten({ background: '#ffffff' }).jpeg({ quality }).toFile(dest);
    case 'webp':
      return img.webp({ quality }).toFile(dest);
  }
}
