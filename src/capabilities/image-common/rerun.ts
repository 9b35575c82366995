/**
 * A rerun: the job a finished image job's reproducibility record describes, made again. The task
 * is rebuilt from the record alone (today's defaults and settings play no part), its inputs are
 * the very files it used (checked by digest), and what is installed now is compared with what
 * made the original: another engine, engine version, encoder or model revision would likely give
 * other bytes, so that is refused naming each difference unless the client allows it.
 */
import { Compile } from 'typebox/compile';
import type { CapabilityServices, PreparedJob } from '../../core/capability.js';
import { ConflictError, NotFoundError, clip, isKiapiError } from '../../core/errors.js';
import type { JobRecord } from '../../core/jobs/job-store.js';
import type { ModelSpec } from '../../core/models/model-spec.js';
import { fileInput, preparedImageJob, resolveInputs, type InputRequest } from './image-job.js';
import { ReproRecordSchema, encoderVersions, taskParams, type RecordedInput, type ReproRecord } from './record.js';
import type { FileInput, LoraFileInput, TaskSpec } from './run-spec.js';

const recordCheck = Compile(ReproRecordSchema);

export interface RerunOptions {
  /** Run even when the engine, encoder or model revision installed now differs from the record. */
  allowDifferent: boolean;
  mode: 'sync' | 'async';
}

export interface PreparedRerun {
  prepared: PreparedJob;
  /** One line per difference from the record (only when allowed; otherwise the rerun was refused). */
  warnings: string[];
}

export async function prepareRerun(services: CapabilityServices, job: JobRecord, opts: RerunOptions, signal: AbortSignal): Promise<PreparedRerun> {
  const record = readRecord(job);
  const spec = servedModel(services, record, job.id);
  const recorded = await checkInputs(services, record, job.id);

  const { format, quality } = record.params;
  const task: TaskSpec = {
    operation: record.operation,
    model: { family: record.model.family, name: record.model.name, quantize: record.model.quantize },
    ...taskParams(record.params),
    loras: [],
  };
  // Engine capacity (the memory budget) and weights are checked before anything is compared or held.
  services.runtime.assertReady(spec, { model: { ...task.model, repo: spec.repo }, loras: [] });

  const differences = await compareInstalled(services, record, spec);
  if (differences.length > 0 && !opts.allowDifferent) {
    throw new ConflictError(
      `job ${job.id} cannot be rerun as recorded: ${differences.join('; ')}. The image would likely differ; ` +
        'to run it anyway on what is installed now, send {"allow_different": true}',
    );
  }

  const requests: InputRequest[] = recorded.map((r) => ({ kind: r.kind, ref: { type: 'file_id', file_id: r.file_id }, expect: r.expect }));
  const resolved = await resolveInputs(services, requests, signal);
  const images: FileInput[] = [];
  const loras: LoraFileInput[] = [];
  recorded.forEach((r, i) => {
    if (r.kind === 'init_image') task.initImage = fileInput(resolved, i);
    else if (r.expect === 'image') images.push(fileInput(resolved, i));
    else loras.push({ ...fileInput(resolved, i), scale: record.loras[loras.length]!.scale });
  });
  task.loras = loras;
  if (images.length > 0) task.images = images;

  const warnings = differences.map((d) => `rerun on a different installation: ${d}`);
  const prepared = preparedImageJob(services, { ...job.params, mode: opts.mode, rerun_of: job.id }, resolved, {
    family: record.model.family,
    task,
    format,
    quality,
    inputs: resolved.recorded,
    rerunOf: job.id,
    // The original's fields; the engine that runs the rerun names itself in them (finishResult).
    result: { base: { ...originalResult(job), ...(warnings.length > 0 ? { warnings } : {}) } },
  });
  return { prepared, warnings };
}

function readRecord(job: JobRecord): ReproRecord {
  if (job.status !== 'succeeded') {
    throw new ConflictError(`job ${job.id} is ${job.status}: only a succeeded image job can be rerun`);
  }
  const record = job.result?.record;
  if (record === undefined) {
    throw new ConflictError(
      `job ${job.id} has no reproducibility record (it ran on a kiapi from before records were kept); submit its request again with the seed its result names`,
    );
  }
  if (!recordCheck.Check(record)) throw new ConflictError(`job ${job.id} has a reproducibility record this kiapi cannot read; submit its request again`);
  return record;
}

/** The recorded variant, as this server serves it now. */
function servedModel(services: CapabilityServices, record: ReproRecord, jobId: string): ModelSpec {
  try {
    return services.models.resolve(record.model.family, record.model.name);
  } catch (err) {
    if (!isKiapiError(err)) throw err;
    throw new ConflictError(`job ${jobId} ran on ${record.model.family} model '${record.model.name}', which this server no longer serves`);
  }
}

/**
 * Every recorded input must still be stored with the recorded content: by id (a rerun uses the
 * very file) and by its SHA-256 (taken when the file was stored).
 */
async function checkInputs(services: CapabilityServices, record: ReproRecord, jobId: string): Promise<RecordedInput[]> {
  const wanted: RecordedInput[] = [
    ...record.inputs.map((i) => ({ ...i, expect: 'image' as const })),
    ...record.loras.map((l, n) => ({ kind: `loras[${n}]`, expect: 'lora' as const, file_id: l.file_id, filename: l.filename, sha256: l.sha256 })),
  ];
  for (const w of wanted) {
    const name = `${w.kind} (${w.file_id}, '${clip(w.filename, 100)}')`;
    let digest: string;
    try {
      await services.files.get(w.file_id);
      digest = await services.files.sha256(w.file_id);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      throw new ConflictError(
        `job ${jobId} cannot be rerun: its input ${name} was deleted; a rerun needs the very file the job used — upload it again and submit a new generation`,
      );
    }
    if (digest !== w.sha256) {
      throw new ConflictError(
        `job ${jobId} cannot be rerun: its input ${name} no longer has the recorded content (sha256 ${w.sha256.slice(0, 16)}… recorded, ${digest.slice(0, 16)}… stored)`,
      );
    }
  }
  return wanted;
}

/** What is installed now against the record, one line per difference. */
async function compareInstalled(services: CapabilityServices, record: ReproRecord, spec: ModelSpec): Promise<string[]> {
  const out: string[] = [];
  const differ = (what: string, was: string | null, now: string | null) => {
    if (was !== now) out.push(`${what} was ${was ?? 'none'} when the job ran, ${now ?? 'none'} now`);
  };
  const engine = await services.runtime.engine.identify();
  differ('the engine', record.engine.name, engine.name);
  if (record.engine.name === engine.name) {
    // `version` is mflux's own for the worker engine: its `mflux` field says the same.
    differ(`the ${engine.name} engine version`, record.engine.version, engine.version);
    for (const k of ['python', 'mlx', 'device'] as const) differ(`the engine's ${k}`, record.engine[k], engine[k]);
  }
  const encoder = encoderVersions();
  differ('the encoder sharp', record.encoder.sharp, encoder.sharp);
  differ('the encoder libvips', record.encoder.libvips, encoder.libvips);
  differ(`the ${record.model.family} model '${record.model.name}' repository`, record.model.repo, spec.repo);
  if (record.model.repo === spec.repo) differ(`the revision of ${spec.repo}`, record.model.revision, services.runtime.revisionOf(spec));
  return out;
}

/** The original's result as the rerun's: the same fields, less what belongs to one run. */
function originalResult(job: JobRecord): Record<string, unknown> {
  const { file_id: _f, image_bytes: _b, record: _r, timings: _t, warnings: _w, ...rest } = job.result ?? {};
  return rest;
}
