/**
 * The served OpenAPI documents against the served routes: every route is documented (or says why
 * it is not), every protected route refuses a request without the token, the documents carry what
 * client generators need (servers, bearer scheme, binary downloads, no null-only types) and the
 * optional Warning header of the generation answers, and every operation's example — what
 * Swagger UI pre-fills for "Try it out" — succeeds as it stands.
 */
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-argument --
   the served documents are walked as plain JSON; their shape is what these tests check. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { servedRoutes, type ServedRoute } from '../../src/server/route-def.js';
import { startServer, type TestServer } from '../support/server.js';
import { getJson, rawRequest, request, sendJson } from '../support/api.js';

type Json = Record<string, any>;

const TOKEN = 'docs-token';
const FAMILIES = ['/v1/image/qwen', '/v1/image/ideogram4'];
const METHODS = ['get', 'post', 'delete', 'put', 'patch'];

async function documents(url: string, headers: Record<string, string> = {}): Promise<Record<string, Json>> {
  const out: Record<string, Json> = {};
  for (const at of ['', ...FAMILIES]) {
    const res = await getJson<Json>(`${url}${at}/openapi.json`, headers);
    assert.equal(res.status, 200, `${at}/openapi.json`);
    out[at || '/'] = res.json;
  }
  return out;
}

/** `METHOD /path/{param}` of every operation in the documents. */
function documentedOperations(docs: Record<string, Json>): Map<string, Json> {
  const ops = new Map<string, Json>();
  for (const doc of Object.values(docs)) {
    for (const [path, item] of Object.entries(doc.paths as Json)) {
      for (const m of METHODS) if ((item as Json)[m]) ops.set(`${m.toUpperCase()} ${path}`, (item as Json)[m]);
    }
  }
  return ops;
}

const asOpenApi = (r: ServedRoute) => `${r.method} ${r.url.replace(/:([a-z_]+)/g, '{$1}')}`;

/** A concrete path for a route pattern: ids of the right shape, which need not exist. */
function concrete(url: string): string {
  return url
    .replace(':file_id', 'file_0123456789abcdef0123456789abcdef')
    .replace(':job_id', 'job_0123456789abcdef0123456789abcdef')
    .replace(':name', 'swagger-ui.css');
}

void describe('served OpenAPI documents, with KIAPI_AUTH_TOKEN set', () => {
  let server: TestServer;
  let docs: Record<string, Json>;

  before(async () => {
    server = await startServer({ KIAPI_AUTH_TOKEN: TOKEN });
    docs = await documents(server.url);
  });
  after(async () => server.close());

  void it('documents every served route, and serves every documented operation', () => {
    const routes = servedRoutes(server.app).filter((r) => r.method !== 'HEAD');
    assert.ok(routes.length > 10);
    const ops = documentedOperations(docs);
    const undocumented = routes.filter((r) => !r.undocumented && !ops.has(asOpenApi(r))).map(asOpenApi);
    assert.deepEqual(undocumented, [], 'served but in no document');
    const served = new Set(routes.map(asOpenApi));
    assert.deepEqual([...ops.keys()].filter((k) => !served.has(k)), [], 'documented but not served');
    // Only pages and documents may stay out of the documents.
    for (const r of routes.filter((x) => x.undocumented)) assert.ok(r.public && r.method === 'GET', asOpenApi(r));
  });

  void it('every protected route refuses a request without the token (401), every public one answers', async () => {
    const routes = servedRoutes(server.app).filter((r) => r.method !== 'HEAD');
    for (const r of routes) {
      const body = r.method === 'POST' ? Buffer.from('{}') : undefined;
      const res = await rawRequest(server.url, r.method, concrete(r.url), { 'content-type': 'application/json' }, body);
      if (r.public) assert.notEqual(res.status, 401, `${asOpenApi(r)} is public`);
      else assert.equal(res.status, 401, `${asOpenApi(r)} without a token → ${res.status}`);
    }
    // The HEAD routes Fastify adds for each GET keep that GET's decision.
    assert.equal((await rawRequest(server.url, 'HEAD', '/health')).status, 200);
    assert.equal((await rawRequest(server.url, 'HEAD', '/v1/files')).status, 401);
    // A path that matches no route is no way around the token.
    assert.equal((await rawRequest(server.url, 'GET', '/v1/nothing-here')).status, 401);
  });

  void it('documents 401 and the bearer scheme on exactly the protected operations', () => {
    const routes = servedRoutes(server.app).filter((r) => r.method !== 'HEAD' && !r.undocumented);
    const ops = documentedOperations(docs);
    for (const doc of Object.values(docs)) {
      assert.deepEqual(doc.components.securitySchemes, { bearer: { type: 'http', scheme: 'bearer', description: 'KIAPI_AUTH_TOKEN' } });
      assert.deepEqual(doc.security, [{ bearer: [] }]);
    }
    for (const r of routes) {
      const op = ops.get(asOpenApi(r))!;
      if (r.public) {
        assert.deepEqual(op.security, [], `${asOpenApi(r)} is public`);
        assert.equal(op.responses['401'], undefined, asOpenApi(r));
      } else {
        assert.ok(op.responses['401'], `${asOpenApi(r)} documents 401`);
        assert.equal(op.security, undefined, `${asOpenApi(r)} keeps the document's security`);
      }
    }
  });

  void it('names the server it was fetched from', () => {
    for (const doc of Object.values(docs)) assert.deepEqual(doc.servers, [{ url: server.url, description: 'This kiapi server.' }]);
  });
});

void describe('served OpenAPI documents, without a token', () => {
  let server: TestServer;
  let docs: Record<string, Json>;

  before(async () => {
    server = await startServer({ KIAPI_AUTH_TOKEN: '' });
    docs = await documents(server.url);
  });
  after(async () => server.close());

  void it('has no security scheme and no 401 when no token is configured', () => {
    for (const doc of Object.values(docs)) {
      assert.equal(doc.security, undefined);
      assert.equal(doc.components.securitySchemes, undefined);
    }
    for (const [key, op] of documentedOperations(docs)) assert.equal(op.responses['401'], undefined, key);
  });

  void it('types no schema as null alone (openapi-generator cannot model it)', () => {
    const found: string[] = [];
    const walk = (v: unknown, path: string, inUnion: boolean) => {
      if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${path}[${i}]`, inUnion));
      if (v === null || typeof v !== 'object') return;
      const o = v as Json;
      if (o.type === 'null' && !inUnion) found.push(path);
      for (const [k, x] of Object.entries(o)) walk(x, `${path}.${k}`, k === 'anyOf' || k === 'oneOf');
    };
    for (const [at, doc] of Object.entries(docs)) walk(doc, at, false);
    assert.deepEqual(found, []);
    assert.ok(docs['/']!.components.schemas.HealthResponse.properties.relay.anyOf);
  });

  void it('documents the download as binary of named media types first, the */* wildcard last', () => {
    const download = docs['/']!.paths['/v1/files/{file_id}/download'].get;
    for (const code of ['200', '206']) {
      const content = download.responses[code].content as Json;
      assert.equal(Object.keys(content)[0], 'application/octet-stream');
      assert.equal(Object.keys(content).at(-1), '*/*');
      assert.deepEqual(content['application/octet-stream'], { schema: { type: 'string', format: 'binary' } });
      for (const t of ['image/png', 'image/jpeg', 'image/webp']) assert.ok(content[t], `${code} ${t}`);
    }
  });

  void it('documents 415 on the upload and the /v1/models list', async () => {
    const upload = docs['/']!.paths['/v1/files'].post;
    assert.ok(upload.responses['415']);
    const wrongType = await request(`${server.url}/v1/files`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' });
    assert.equal(wrongType.status, 415);
    const models = docs['/']!.paths['/v1/models'].get;
    assert.equal(models.operationId, 'list_models_v1_models_get');
    assert.equal(models.responses['200'].content['application/json'].schema.$ref, '#/components/schemas/OpenAIModelList');
    const list = (await getJson<{ object: string; data: { id: string }[] }>(`${server.url}/v1/models`)).json;
    assert.equal(list.object, 'list');
    assert.deepEqual(list.data.map((m) => m.id), ['qwen-image', 'qwen-image-edit', 'ideogram-4']);
  });

  void it('declares the optional Warning header on the sync (200) and async (202) answers of every generation operation', async () => {
    let checked = 0;
    for (const at of FAMILIES) {
      for (const [path, item] of Object.entries(docs[at]!.paths as Json)) {
        const op = (item as Json).post;
        // Generation operations answer 202 with a job; a family's job-less checks (caption validation) do not.
        if (!op?.responses['202']) continue;
        for (const code of ['200', '202']) {
          const header = op.responses[code].headers?.Warning;
          assert.ok(header, `${path} ${code} declares Warning`);
          assert.equal(header.required, false, `${path} ${code}: the header is optional`);
          assert.equal(header.schema.type, 'string');
          assert.match(header.description, /unknown|does not know/);
        }
        // The declared header is what an answer carries when the body has an unknown field.
        const example = op.requestBody.content['application/json'].example;
        const res = await sendJson('POST', `${server.url}${path}`, { ...example, mode: 'async', colour: 'red' });
        assert.equal(res.status, 202, path);
        assert.equal(res.headers.get('warning'), `299 - "unknown field 'colour' ignored"`, path);
        const clean = await sendJson('POST', `${server.url}${path}`, { ...example, mode: 'async' });
        assert.equal(clean.headers.get('warning'), null, `${path}: no header when every field is known`);
        checked++;
      }
    }
    assert.equal(checked, 3);
  });

  void it('gives every generation operation an example that succeeds as it stands (Swagger "Try it out")', async () => {
    let checked = 0;
    for (const at of FAMILIES) {
      for (const [path, item] of Object.entries(docs[at]!.paths as Json)) {
        const op = (item as Json).post;
        // Generation operations answer 202 with a job; a family's job-less checks (caption validation) do not.
        if (!op?.responses['202']) continue;
        const example = op.requestBody.content['application/json'].example;
        assert.ok(example, `${path} has an example`);
        // What Swagger UI sends: the example, with no Accept preference → the raw image.
        const raw = await sendJson(`POST`, `${server.url}${path}`, example);
        assert.equal(raw.status, 200, `${path}: ${raw.bytes.toString().slice(0, 500)}`);
        assert.match(raw.headers.get('content-type') ?? '', /^image\//);
        const json = await sendJson<{ status: string; result: { width: number } }>('POST', `${server.url}${path}`, example, { accept: 'application/json' });
        assert.equal(json.status, 200, path);
        assert.equal(json.json.status, 'succeeded', path);
        assert.equal(json.json.result.width, example.width, path);
        checked++;
      }
    }
    assert.equal(checked, 3);
  });
});
