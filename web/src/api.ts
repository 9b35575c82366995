/**
 * Talking to the kiapi server the page came from: every call carries the bearer token the person
 * entered (kept in this browser's localStorage only, never sent anywhere but this server), error
 * bodies become plain sentences with the field they are about, images are fetched with the token
 * and shown as blob URLs, and a job's events are read from its SSE stream with fetch (EventSource
 * cannot send an Authorization header).
 */
import { EventSourceParserStream } from 'eventsource-parser/stream';

const TOKEN_KEY = 'kiapi.token';

export function getToken(): string {
  return localStorage.getItem(TOKEN_KEY) ?? '';
}

export function setToken(token: string): void {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** The server needs a token (it says so on the page) and none is entered yet: calls would only answer 401. */
export function needsToken(): boolean {
  return document.body.dataset.auth === 'on' && !getToken();
}

/** A file's bytes saved to the person's disk (fetched with the token, so no plain link can do it). */
export async function downloadFile(fileId: string, filename: string): Promise<void> {
  const a = document.createElement('a');
  a.href = await fileUrl(fileId);
  a.download = filename;
  a.click();
}

/** An answer that was not 2xx, as something to show a person. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The request field the server named (from a validation error's `loc`), if any. */
    readonly field: string | null,
    /** Every field-level message, for forms that show each beside its field. */
    readonly fields: Array<{ field: string; message: string }> = [],
  ) {
    super(message);
  }
}

/** Listeners told when the server answers 401, so the page can ask for the token. */
const unauthorizedListeners: Array<() => void> = [];
export function onUnauthorized(fn: () => void): void {
  unauthorizedListeners.push(fn);
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const token = getToken();
  return { ...(token ? { authorization: `Bearer ${token}` } : {}), ...extra };
}

interface Issue {
  loc?: Array<string | number>;
  msg?: string;
}

/** Turns an error answer into a sentence, and its field when the body names one. */
async function toError(res: Response): Promise<ApiError> {
  let detail: unknown = null;
  try {
    const body = (await res.json()) as { detail?: unknown; error?: { message?: string } };
    detail = body.detail ?? body.error?.message ?? null;
  } catch {
    // A body that is not JSON: the status text says enough.
  }
  if (res.status === 401) {
    for (const fn of unauthorizedListeners) fn();
    return new ApiError(401, getToken() ? 'The server refused the access token: check it (the Token button, top right).' : 'This server needs an access token: enter it with the Token button (top right).', null);
  }
  if (Array.isArray(detail)) {
    const fields = (detail as Issue[]).map((i) => {
      const loc = (i.loc ?? []).filter((p) => p !== 'body' && p !== 'query' && p !== 'path');
      return { field: loc.map(String).join('.'), message: i.msg ?? 'is not valid' };
    });
    const first = fields[0];
    const message = fields.map((f) => (f.field ? `${f.field}: ${f.message}` : f.message)).join('; ');
    return new ApiError(res.status, message || `Request refused (${res.status})`, first?.field.split('.')[0] || null, fields);
  }
  const message = typeof detail === 'string' && detail ? detail : `The server answered ${res.status} ${res.statusText}`;
  return new ApiError(res.status, message, null);
}

export async function request(path: string, init: RequestInit & { json?: unknown } = {}): Promise<Response> {
  const { json, ...rest } = init;
  const extra: Record<string, string> = {};
  if (json !== undefined) extra['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, {
      ...rest,
      headers: { ...headers(extra), ...(rest.headers as Record<string, string> | undefined) },
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
    });
  } catch {
    throw new ApiError(0, 'The server cannot be reached: is kiapi still running?', null);
  }
  if (!res.ok) throw await toError(res);
  return res;
}

export async function getJson<T>(path: string): Promise<T> {
  const res = await request(path, { headers: { accept: 'application/json' } });
  return (await res.json()) as T;
}

export async function postJson<T>(path: string, body: unknown): Promise<T> {
  const res = await request(path, { method: 'POST', json: body, headers: { accept: 'application/json' } });
  return (await res.json()) as T;
}

export async function del(path: string): Promise<void> {
  await request(path, { method: 'DELETE' });
}

export interface FileRecord {
  file_id: string;
  filename: string;
  content_type: string;
  size: number;
  created_at: number;
  meta: Record<string, unknown>;
}

export interface Job {
  id: string;
  type: string;
  status: 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';
  params: Record<string, unknown>;
  result: Record<string, unknown> | null;
  artifacts: string[];
  error: string | null;
  progress: number | null;
  progress_label?: string;
  queue_position?: number | null;
  eta_s?: number | null;
  created_at: number;
}

export interface Page<T> {
  data: T[];
  has_more: boolean;
  first_id: string | null;
  last_id: string | null;
}

export async function uploadFile(file: Blob, name: string): Promise<FileRecord> {
  const form = new FormData();
  form.append('file', file, name);
  const res = await request('/v1/files', { method: 'POST', body: form });
  return (await res.json()) as FileRecord;
}

const blobUrls = new Map<string, Promise<string>>();

/** A blob: URL for a file's bytes (or its thumbnail), fetched once with the token. */
export function fileUrl(fileId: string, thumbnail?: number): Promise<string> {
  const path = thumbnail ? `/v1/files/${fileId}/thumbnail?size=${thumbnail}` : `/v1/files/${fileId}/download`;
  let url = blobUrls.get(path);
  if (!url) {
    url = request(path).then(async (res) => URL.createObjectURL(await res.blob()));
    url.catch(() => blobUrls.delete(path));
    blobUrls.set(path, url);
  }
  return url;
}

export function forgetFile(fileId: string): void {
  for (const [key, url] of blobUrls) {
    if (key.includes(fileId)) {
      blobUrls.delete(key);
      void url.then((u) => URL.revokeObjectURL(u)).catch(() => undefined);
    }
  }
}

export interface JobEvent {
  event: string;
  data: Record<string, unknown>;
}

/**
 * Follows a job's event stream until its terminal event (or `signal`), calling `onEvent` for each.
 * A dropped connection is picked up again with the last event id, as EventSource would.
 */
export async function watchJob(jobId: string, onEvent: (e: JobEvent) => void, signal: AbortSignal, previewEvery = 1): Promise<void> {
  let lastId: string | undefined;
  for (let attempt = 0; attempt < 5 && !signal.aborted; attempt++) {
    const res = await request(`/v1/jobs/${jobId}/events?previews=${previewEvery}&preview_size=256`, {
      signal,
      headers: { accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) },
    });
    if (res.status === 204 || !res.body) return;
    const reader = res.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream()).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (value.id) lastId = value.id;
        const data = JSON.parse(value.data) as Record<string, unknown>;
        onEvent({ event: value.event ?? 'message', data });
        if (value.event === 'succeeded' || value.event === 'failed' || value.event === 'canceled') return;
      }
    } catch (err) {
      if (signal.aborted) return;
      void err; // connection dropped: reconnect below
    } finally {
      reader.releaseLock();
    }
  }
}

/** A curl command that repeats a request, for the person to paste into a terminal. */
export function curlFor(path: string, body: unknown, output: string): string {
  const quoted = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const token = getToken() ? ` -H "authorization: Bearer $KIAPI_AUTH_TOKEN"` : '';
  return `curl -sS --fail -o ${output} ${location.origin}${path}${token} -H 'content-type: application/json' -d ${quoted(JSON.stringify(body))}`;
}
