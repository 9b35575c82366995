/**
 * Calls every operation of kiapi's served documents through openapi-fetch, typed by the `paths`
 * openapi-typescript generated from those same documents (test/clients/run-clients.sh copies this
 * file next to the generated types, type-checks it with tsc, then runs it against a live server).
 * That it compiles is half the check: a document a generator turns into unusable types fails here.
 * argv: base URL, bearer token. Each client's base URL is the document's own `servers` entry.
 */
import createClient from 'openapi-fetch';
import type { paths as RootPaths } from './generated/root.js';
import type { paths as QwenPaths } from './generated/qwen.js';
import type { paths as IdeogramPaths } from './generated/ideogram4.js';

const [base, token] = process.argv.slice(2) as [string, string];
const auth = { Authorization: `Bearer ${token}` };
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAACXBIWXMAAAPoAAAD6AG1e1JrAAAAGUlEQVQokWNwa9pCEmIY1dA0GkpuwzVpAACXG3wQY/W53wAAAABJRU5ErkJggg==',
  'base64',
);

interface Doc {
  servers: { url: string }[];
  paths: Record<string, Record<string, { operationId: string; requestBody?: { content: Record<string, { example?: unknown }> } }>>;
}

const failures: string[] = [];
const called = new Set<string>();

function check(what: string, response: Response, expect: number, data: unknown): void {
  called.add(what);
  if (response.status !== expect || data === undefined) failures.push(`${what}: expected ${expect} with a body, got ${response.status}`);
}

async function document(path: string): Promise<Doc> {
  const res = await fetch(`${base}${path}`);
  return (await res.json()) as Doc;
}

const rootDoc = await document('/openapi.json');
const qwenDoc = await document('/v1/image/qwen/openapi.json');
const ideogramDoc = await document('/v1/image/ideogram4/openapi.json');
const root = createClient<RootPaths>({ baseUrl: rootDoc.servers[0]!.url, headers: auth });
const anonymous = createClient<RootPaths>({ baseUrl: rootDoc.servers[0]!.url });
const qwen = createClient<QwenPaths>({ baseUrl: qwenDoc.servers[0]!.url, headers: auth });
const ideogram = createClient<IdeogramPaths>({ baseUrl: ideogramDoc.servers[0]!.url, headers: auth });

/** A sync answer parsed as the Job JSON (not raw image bytes) that carries its id. */
function isJob(data: unknown): data is { id: string; status: string } {
  return typeof data === 'object' && data !== null && typeof (data as { id?: unknown }).id === 'string';
}

function example(doc: Doc, path: string): Record<string, unknown> {
  const ex = doc.paths[path]?.post?.requestBody?.content['application/json']?.example;
  if (!ex || typeof ex !== 'object') throw new Error(`${path} has no example`);
  return ex as Record<string, unknown>;
}

{
  const { data, response } = await anonymous.GET('/health');
  check('GET /health', response, 200, data);
  if (data && data.relay !== null) failures.push('health: relay is not null');
  const models = await anonymous.GET('/v1/models');
  check('GET /v1/models', models.response, 200, models.data);
  const denied = await anonymous.GET('/v1/files');
  if (denied.response.status !== 401 || !denied.error) failures.push(`GET /v1/files without a token: ${denied.response.status}`);
}

const upload = await root.POST('/v1/files', {
  // The generated type says a binary string; the request is multipart with the bytes as a Blob.
  body: { file: '' },
  bodySerializer: () => {
    const form = new FormData();
    form.append('file', new Blob([PNG], { type: 'image/png' }), 'in.png');
    return form;
  },
});
check('POST /v1/files', upload.response, 200, upload.data);
const fileId = upload.data!.file_id;
{
  const got = await root.GET('/v1/files/{file_id}', { params: { path: { file_id: fileId } } });
  check('GET /v1/files/{file_id}', got.response, 200, got.data);
  const list = await root.GET('/v1/files');
  check('GET /v1/files', list.response, 200, list.data);
  const bytes = await root.GET('/v1/files/{file_id}/download', { params: { path: { file_id: fileId } }, parseAs: 'arrayBuffer' });
  check('GET /v1/files/{file_id}/download', bytes.response, 200, bytes.data);
  if (bytes.data && !Buffer.from(bytes.data).equals(PNG)) failures.push('download: the bytes differ from the upload');
  const thumb = await root.GET('/v1/files/{file_id}/thumbnail', { params: { path: { file_id: fileId }, query: { size: 64 } }, parseAs: 'arrayBuffer' });
  check('GET /v1/files/{file_id}/thumbnail', thumb.response, 200, thumb.data);
  if (thumb.data && Buffer.from(thumb.data).subarray(8, 12).toString('latin1') !== 'WEBP') failures.push('thumbnail: not a WebP');
}

const jobIds: string[] = [];
{
  type QwenGenerate = QwenPaths['/v1/image/qwen/generate']['post']['requestBody']['content']['application/json'];
  type QwenEdit = QwenPaths['/v1/image/qwen/edit']['post']['requestBody']['content']['application/json'];
  type IdeogramGenerate = IdeogramPaths['/v1/image/ideogram4/generate']['post']['requestBody']['content']['application/json'];
  const json = { header: { Accept: 'application/json' } };

  const gen = await qwen.POST('/v1/image/qwen/generate', { body: example(qwenDoc, '/v1/image/qwen/generate') as QwenGenerate, params: json });
  check('POST /v1/image/qwen/generate', gen.response, 200, gen.data);
  if (isJob(gen.data)) jobIds.push(gen.data.id);
  const edit = await qwen.POST('/v1/image/qwen/edit', { body: example(qwenDoc, '/v1/image/qwen/edit') as QwenEdit, params: json });
  check('POST /v1/image/qwen/edit', edit.response, 200, edit.data);
  const ideo = await ideogram.POST('/v1/image/ideogram4/generate', {
    body: example(ideogramDoc, '/v1/image/ideogram4/generate') as IdeogramGenerate,
    params: json,
  });
  check('POST /v1/image/ideogram4/generate', ideo.response, 200, ideo.data);
  // The caption check answers at once, without a job; the document's example caption passes it.
  type CaptionCheck = IdeogramPaths['/v1/image/ideogram4/captions/validate']['post']['requestBody']['content']['application/json'];
  const verdict = await ideogram.POST('/v1/image/ideogram4/captions/validate', {
    body: example(ideogramDoc, '/v1/image/ideogram4/captions/validate') as CaptionCheck,
  });
  check('POST /v1/image/ideogram4/captions/validate', verdict.response, 200, verdict.data);
  if (verdict.data && !verdict.data.valid) failures.push(`caption check: the example is not valid: ${JSON.stringify(verdict.data.problems)}`);
  for (const [what, res] of [['qwen', await qwen.GET('/v1/image/qwen/models')], ['ideogram4', await ideogram.GET('/v1/image/ideogram4/models')]] as const) {
    check(`GET /v1/image/${what}/models`, res.response, 200, res.data);
  }
}

{
  // The OpenAI-compatible routes as a generated client sees them (the SDKs have their own checks).
  type Generation = RootPaths['/v1/images/generations']['post']['requestBody']['content']['application/json'];
  const gen = await root.POST('/v1/images/generations', { body: { prompt: 'a kite', size: '64x64', steps: 2 } as Generation });
  check('POST /v1/images/generations', gen.response, 200, gen.data);
  const edit = await root.POST('/v1/images/edits', {
    body: { image: '', prompt: '' },
    bodySerializer: () => {
      const form = new FormData();
      form.append('image', new Blob([PNG], { type: 'image/png' }), 'in.png');
      form.append('prompt', 'make it blue');
      form.append('size', '64x64');
      form.append('steps', '2');
      return form;
    },
  });
  check('POST /v1/images/edits', edit.response, 200, edit.data);
  const variation = await root.POST('/v1/images/variations');
  check('POST /v1/images/variations', variation.response, 400, variation.error);
  const model = await anonymous.GET('/v1/models/{model}', { params: { path: { model: 'qwen-image' } } });
  check('GET /v1/models/{model}', model.response, 200, model.data);
}

{
  const list = await root.GET('/v1/jobs');
  check('GET /v1/jobs', list.response, 200, list.data);
  const job = await root.GET('/v1/jobs/{job_id}', { params: { path: { job_id: jobIds[0]! } } });
  check('GET /v1/jobs/{job_id}', job.response, 200, job.data);
  if (job.data?.status !== 'succeeded') failures.push(`job ${jobIds[0]}: ${job.data?.status}`);
  // The event streams (text/event-stream): a finished job's is its terminal event, then the end;
  // the all-jobs stream never ends, so only its opening is read before it is canceled.
  const events = await root.GET('/v1/jobs/{job_id}/events', { params: { path: { job_id: jobIds[0]! } }, parseAs: 'text' });
  check('GET /v1/jobs/{job_id}/events', events.response, 200, events.data);
  if (typeof events.data !== 'string' || !events.data.includes('event: succeeded')) failures.push(`job events: no succeeded event in ${String(events.data)}`);
  const all = await root.GET('/v1/events', { params: { query: { status: 'succeeded' } }, parseAs: 'stream' });
  check('GET /v1/events', all.response, 200, all.data);
  if (!all.response.headers.get('content-type')?.startsWith('text/event-stream')) failures.push(`all events: ${all.response.headers.get('content-type')}`);
  await all.response.body?.cancel();
  // A rerun of the finished job from its reproducibility record, async (the sync answer is the image).
  const rerun = await root.POST('/v1/jobs/{job_id}/rerun', { params: { path: { job_id: jobIds[0]! } }, body: { mode: 'async', allow_different: false } });
  check('POST /v1/jobs/{job_id}/rerun', rerun.response, 202, rerun.data);
  // Still running when canceled: many steps on a preview engine that sleeps per step.
  // openapi-typescript (default options) types every field with a default as required, in request
  // bodies too, so a hand-written body spells those out.
  const slow = await qwen.POST('/v1/image/qwen/generate', {
    body: { prompt: 'a slow one', width: 64, height: 64, steps: 100, mode: 'async', scheduler: 'linear', format: 'png', quality: 95 },
  });
  const accepted = slow.data as { job_id?: unknown } | undefined;
  if (slow.response.status !== 202 || typeof accepted?.job_id !== 'string') throw new Error(`async submit: ${slow.response.status}`);
  const jobId = accepted.job_id;
  const cancel = await root.POST('/v1/jobs/{job_id}/cancel', { params: { path: { job_id: jobId } } });
  check('POST /v1/jobs/{job_id}/cancel', cancel.response, 200, cancel.data);
  const del = await root.DELETE('/v1/jobs/{job_id}', { params: { path: { job_id: jobId } } });
  check('DELETE /v1/jobs/{job_id}', del.response, 200, del.data);
  const delFile = await root.DELETE('/v1/files/{file_id}', { params: { path: { file_id: fileId } } });
  check('DELETE /v1/files/{file_id}', delFile.response, 200, delFile.data);
}

for (const doc of [rootDoc, qwenDoc, ideogramDoc]) {
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item)) {
      const what = `${method.toUpperCase()} ${path}`;
      if (!called.has(what)) failures.push(`${what} was never called`);
    }
  }
}
for (const f of failures) console.log(`ts-client: FAIL ${f}`);
console.log(`ts-client: ${called.size} operations called, ${failures.length} failures`);
process.exit(failures.length ? 1 : 0);
