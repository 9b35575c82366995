/**
 * HTTP helpers for the integration tests: typed JSON requests, raw requests whose path is sent
 * verbatim (fetch would normalise `..` and `%2e%2e`), hand-built multipart bodies (fetch always
 * adds a part Content-Type), polling with generous deadlines, and tiny test images.
 */
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp from 'sharp';
import type { JobRecord } from '../../src/core/jobs/job-store.js';

export interface JsonResponse<T = unknown> {
  status: number;
  headers: Headers;
  json: T;
  bytes: Buffer;
}

/** One request; the body is parsed as JSON whenever the response says it is JSON. */
export async function request<T = unknown>(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Buffer | Uint8Array } = {},
): Promise<JsonResponse<T>> {
  const res = await fetch(url, { method: init.method ?? 'GET', headers: init.headers, body: init.body });
  const bytes = Buffer.from(await res.arrayBuffer());
  const isJson = (res.headers.get('content-type') ?? '').includes('json');
  return { status: res.status, headers: res.headers, json: (isJson && bytes.length > 0 ? JSON.parse(bytes.toString('utf8')) : null) as T, bytes };
}

export function getJson<T = unknown>(url: string, headers: Record<string, string> = {}): Promise<JsonResponse<T>> {
  return request<T>(url, { headers });
}

export function sendJson<T = unknown>(
  method: string,
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<JsonResponse<T>> {
  return request<T>(url, { method, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

/** A request over node:http so the path reaches the server byte for byte. */
export function rawRequest(
  baseUrl: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; json: unknown }> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        const isJson = (res.headers['content-type'] ?? '').includes('json');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, json: isJson && buf.length > 0 ? JSON.parse(buf.toString('utf8')) : null });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export interface MultipartPart {
  name: string;
  filename?: string;
  /** Exact header value; omitted → the part has no Content-Type header at all. */
  contentType?: string;
  /** Raw Content-Disposition value, replacing the one built from name/filename. */
  disposition?: string;
  data: Buffer | string;
}

export const BOUNDARY = 'kiapi-test-boundary-7d1f0c2a';

export function multipartBody(parts: MultipartPart[], boundary = BOUNDARY): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disposition =
      p.disposition ?? `form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
    let head = `--${boundary}\r\nContent-Disposition: ${disposition}\r\n`;
    if (p.contentType !== undefined) head += `Content-Type: ${p.contentType}\r\n`;
    chunks.push(Buffer.from(`${head}\r\n`, 'utf8'), Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data, 'utf8'), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

export interface FileRecordJson {
  file_id: string;
  filename: string;
  content_type: string;
  size: number;
  created_at: number;
  meta: Record<string, unknown>;
}

/** A job as the API returns it: the store's record, serialized as is. */
export type JobJson = JobRecord;

export interface ListJson<T> {
  object: 'list';
  data: T[];
}

/** Uploads one file with a hand-built multipart body (so a part can lack Content-Type). */
export async function uploadFile(
  baseUrl: string,
  part: Omit<MultipartPart, 'name'> & { name?: string },
  headers: Record<string, string> = {},
): Promise<JsonResponse<FileRecordJson>> {
  return request<FileRecordJson>(`${baseUrl}/v1/files`, {
    method: 'POST',
    headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, ...headers },
    body: multipartBody([{ name: 'file', ...part }]),
  });
}

export async function listFiles(baseUrl: string, headers: Record<string, string> = {}): Promise<FileRecordJson[]> {
  const res = await getJson<ListJson<FileRecordJson>>(`${baseUrl}/v1/files`, headers);
  if (res.status !== 200) throw new Error(`GET /v1/files → ${res.status}`);
  return res.json.data;
}

export async function listJobs(baseUrl: string, headers: Record<string, string> = {}): Promise<JobJson[]> {
  const res = await getJson<ListJson<JobJson>>(`${baseUrl}/v1/jobs`, headers);
  if (res.status !== 200) throw new Error(`GET /v1/jobs → ${res.status}`);
  return res.json.data;
}

export async function getJob(baseUrl: string, jobId: string, headers: Record<string, string> = {}): Promise<JobJson> {
  const res = await getJson<JobJson>(`${baseUrl}/v1/jobs/${jobId}`, headers);
  if (res.status !== 200) throw new Error(`GET /v1/jobs/${jobId} → ${res.status} ${res.bytes.toString()}`);
  return res.json;
}

/** Generous: the suite must pass on a loaded 2-core machine; a deadline is a hang guard, not a timing check. */
export const DEADLINE_MS = 30_000;

/** Polls `read` until `done` accepts its value; throws with the last value after `timeoutMs`. */
export async function pollUntil<T>(
  read: () => Promise<T>,
  done: (v: T) => boolean,
  what: string,
  timeoutMs = DEADLINE_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await sleep(25);
  }
}

export function waitForStatus(
  baseUrl: string,
  jobId: string,
  statuses: JobJson['status'][],
  headers: Record<string, string> = {},
): Promise<JobJson> {
  return pollUntil(() => getJob(baseUrl, jobId, headers), (j) => statuses.includes(j.status), `job ${jobId} to be ${statuses.join('|')}`);
}

export function waitFinished(baseUrl: string, jobId: string, headers: Record<string, string> = {}): Promise<JobJson> {
  return waitForStatus(baseUrl, jobId, ['succeeded', 'failed', 'canceled'], headers);
}

/** A small qwen generate body: tiny image, few steps (each step sleeps KIAPI_PREVIEW_STEP_MS). */
export function generateBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { prompt: 'a lighthouse at dusk', width: 64, height: 64, steps: 2, seed: 1, ...overrides };
}

/** Submits an async qwen generate job and returns its id. */
export async function submitAsync(baseUrl: string, overrides: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<string> {
  const res = await sendJson<{ job_id: string }>('POST', `${baseUrl}/v1/image/qwen/generate`, generateBody({ mode: 'async', ...overrides }), headers);
  if (res.status !== 202) throw new Error(`async submit → ${res.status} ${res.bytes.toString()}`);
  return res.json.job_id;
}

export async function pngBytes(width = 24, height = 16, color = { r: 200, g: 40, b: 40 }): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: color } }).png().toBuffer();
}

export function dataUrl(bytes: Buffer, mediaType = 'image/png'): string {
  return `data:${mediaType};base64,${bytes.toString('base64')}`;
}

/** Ids sorted for set comparisons of file and job lists. */
export function ids(records: { file_id?: string; id?: string }[]): string[] {
  return records.map((r) => r.file_id ?? r.id ?? '').sort();
}

/**
 * Sends `signal` to a spawned server and resolves with its exit code; a child still alive after
 * `timeoutMs` is SIGKILLed (exit code null), so a shutdown that hangs fails the test instead of
 * hanging it or leaking the process.
 */
export async function stopWithin(
  s: { child: ChildProcess; stop(signal?: NodeJS.Signals): Promise<number | null> },
  signal: NodeJS.Signals,
  timeoutMs = DEADLINE_MS,
): Promise<number | null> {
  const guard = setTimeout(() => s.child.kill('SIGKILL'), timeoutMs);
  try {
    return await s.stop(signal);
  } finally {
    clearTimeout(guard);
  }
}
