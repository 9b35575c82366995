/**
 * Helpers for the qwen / ideogram4 flow tests: a preview engine that records its progress events,
 * "nothing was stored" checks for rejected requests, and image format checks.
 */
import assert from 'node:assert/strict';
import sharp from 'sharp';
import type { EngineOutput, EngineProgress, ImageTask, RunOptions } from '../../src/engines/engine.js';
import { PreviewEngine } from '../../src/engines/preview/preview-engine.js';
import { ids, listFiles, listJobs, request, sendJson, type JobJson, type JsonResponse } from './api.js';

/** The real preview engine, also keeping every run's task and progress events (in run order). */
export class RecordingPreviewEngine extends PreviewEngine {
  readonly runs: { task: ImageTask; events: EngineProgress[] }[] = [];

  override async run(task: ImageTask, opts: RunOptions): Promise<EngineOutput> {
    const run = { task, events: [] as EngineProgress[] };
    this.runs.push(run);
    return super.run(task, {
      ...opts,
      onProgress: (p) => {
        run.events.push(p);
        opts.onProgress(p);
      },
    });
  }

  /** The run whose task used `seed` (tests give each run a distinct seed). */
  runWithSeed(seed: number): { task: ImageTask; events: EngineProgress[] } {
    const found = this.runs.filter((r) => r.task.seed === seed);
    assert.equal(found.length, 1, `exactly one engine run with seed ${seed}`);
    return found[0]!;
  }
}

export interface Stored {
  jobs: string[];
  files: string[];
}

export async function stored(url: string): Promise<Stored> {
  return { jobs: ids(await listJobs(url)), files: ids(await listFiles(url)) };
}

export type Detail = string | RegExp | { list: string };

/**
 * POSTs `body`, expects `status` and `detail` — an exact string, a pattern, or `{list: field}` for
 * a schema error list naming that field — and that no job and no file was stored.
 */
export async function expectRejected(url: string, path: string, body: unknown, status: number, detail: Detail): Promise<JsonResponse<{ detail: unknown }>> {
  const before = await stored(url);
  const res = await sendJson<{ detail: unknown }>('POST', `${url}${path}`, body, { accept: 'application/json' });
  const what = `${path} ${JSON.stringify(body).slice(0, 300)} → ${res.status} ${res.bytes.toString('utf8').slice(0, 600)}`;
  assert.equal(res.status, status, what);
  if (typeof detail === 'string') assert.equal(res.json.detail, detail, what);
  else if (detail instanceof RegExp) assert.match(String(res.json.detail), detail, what);
  else {
    assert.ok(Array.isArray(res.json.detail) && res.json.detail.length > 0, `a schema error list: ${what}`);
    const locs = (res.json.detail as { loc: unknown[] }[]).map((i) => i.loc);
    assert.ok(
      locs.some((loc) => loc[0] === 'body' && loc[1] === detail.list),
      `an issue at body.${detail.list}: ${what}`,
    );
  }
  assert.deepEqual(await stored(url), before, `nothing stored for a rejected request: ${what}`);
  return res;
}

export async function imageInfo(bytes: Buffer): Promise<{ format: string | undefined; width: number | undefined; height: number | undefined }> {
  const m = await sharp(bytes).metadata();
  return { format: m.format, width: m.width, height: m.height };
}

export function magicOf(bytes: Buffer): 'png' | 'jpeg' | 'webp' | 'unknown' {
  if (bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  if (bytes.subarray(0, 4).toString('latin1') === 'RIFF' && bytes.subarray(8, 12).toString('latin1') === 'WEBP') return 'webp';
  return 'unknown';
}

/** The result without the two keys that describe the stored file itself (= the file's `meta`). */
export function resultMeta(result: Record<string, unknown>): Record<string, unknown> {
  const { file_id: _f, image_bytes: _b, ...rest } = result;
  return rest;
}

/** Checks the artifact's record (filename pattern, type, size, meta) and bytes; returns the bytes. */
export async function checkArtifact(
  url: string,
  job: JobJson,
  family: string,
  format: 'png' | 'jpeg' | 'webp',
): Promise<Buffer> {
  assert.equal(job.status, 'succeeded', JSON.stringify(job));
  const result = job.result!;
  assert.deepEqual(job.artifacts, [result.file_id]);
  const ext = format === 'jpeg' ? 'jpg' : format;
  const rec = await request<{ file_id: string; filename: string; content_type: string; size: number; created_at: number; meta: Record<string, unknown> }>(
    `${url}/v1/files/${String(result.file_id)}`,
  );
  assert.equal(rec.status, 200);
  assert.match(rec.json.filename, new RegExp(`^${family}_\\d{10}\\.${ext}$`));
  // The unix seconds in the name are the save time: within the job's run.
  const unix = Number(/_(\d+)\./.exec(rec.json.filename)![1]);
  assert.ok(unix >= Math.floor(job.created_at) && unix <= Math.ceil(job.finished_at ?? Date.now() / 1000), rec.json.filename);
  assert.equal(rec.json.content_type, `image/${format}`);
  assert.equal(rec.json.size, result.image_bytes);
  assert.deepEqual(rec.json.meta, resultMeta(result));
  const dl = await request(`${url}/v1/files/${String(result.file_id)}/download`);
  assert.equal(dl.status, 200);
  assert.equal(dl.headers.get('content-type'), `image/${format}`);
  assert.equal(dl.bytes.length, result.image_bytes);
  assert.equal(magicOf(dl.bytes), format);
  return dl.bytes;
}
