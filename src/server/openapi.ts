/**
 * Writes OpenAPI 3.1 documents from the same TypeBox schemas that validate requests. Named
 * components (core/schema.ts `component`) become `#/components/schemas/<name>` references, so the
 * served documents have the seeds' shape. One document per family plus the root (common) one.
 */
import { capabilityPrefix, type CapabilityDef, type OperationDef, type ToolDef } from '../core/capability.js';
import { jobSchema, AsyncJobResponse } from '../core/jobs/job-schema.js';
import { componentName, refOf } from '../core/schema.js';
import { CapabilityModelSpecSchema } from './capability-schemas.js';
import { isRootDocumented, MAX_PARAM_CHARS, type RouteDef } from './route-def.js';
import type { TSchema } from 'typebox';
import { ErrorSchema as ErrorBody } from './schemas.js';
import { OpenAIError } from '../openai/schemas.js';

type Json = Record<string, unknown>;

export class ComponentCollector {
  readonly schemas: Record<string, Json> = {};

  /** Converts a schema, registering named sub-schemas as components and replacing them by refs. */
  convert(schema: unknown): unknown {
    if (Array.isArray(schema)) return schema.map((s) => this.convert(s));
    if (schema === null || typeof schema !== 'object') return schema;
    const ref = refOf(schema);
    if (ref) {
      const target = this.convert(ref.target) as Json;
      return { ...target, ...ref.extra };
    }
    const name = componentName(schema);
    if (name) {
      if (!(name in this.schemas)) {
        this.schemas[name] = {}; // reserve first: recursive schemas terminate
        this.schemas[name] = this.plain(schema);
      }
      return { $ref: `#/components/schemas/${name}` };
    }
    return this.plain(schema);
  }

  private plain(schema: object): Json {
    const out: Json = {};
    for (const [k, v] of Object.entries(schema)) out[k] = this.convert(v);
    return out;
  }

  sorted(): Record<string, Json> {
    return Object.fromEntries(Object.entries(this.schemas).sort(([a], [b]) => a.localeCompare(b)));
  }
}

const ACCEPT_DESCRIPTION =
  'Response media type preference. application/json returns the Job JSON; otherwise sync requests with one artifact return raw bytes when possible.';

const acceptParameter = {
  name: 'Accept',
  in: 'header',
  required: false,
  schema: {
    anyOf: [{ type: 'string' }, { type: 'null' }],
    description: ACCEPT_DESCRIPTION,
    examples: ['application/json', 'image/png', 'image/jpeg', 'image/webp'],
    title: 'Accept',
  },
  description: ACCEPT_DESCRIPTION,
};

const binary = { schema: { type: 'string', format: 'binary' } };

const IDEMPOTENCY_DESCRIPTION =
  'Optional. A key (1 to 255 visible ASCII characters; a UUID is a good one) that makes this request safe to retry: the same key with the same body on this route within KIAPI_IDEMPOTENCY_TTL_H (24 h by default) gets the first request\'s job — sync: its answer, waiting if it still runs; async: the 202 with its job_id — and never makes a second job, across restarts and crashes too. The same key with a different body is refused (422; on the OpenAI routes a 400 with code `idempotency_key_reused`), as is a malformed key (400). "The same body" is the body after validation: key order, whitespace and lax spellings ("256" for 256) do not matter. A replayed answer carries `Idempotent-Replayed: true`.';

/** The optional Idempotency-Key header of every route that makes jobs (core/jobs/idempotency.ts). */
export const idempotencyParameter = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  schema: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[!-~]+$', title: 'Idempotency-Key' },
  description: IDEMPOTENCY_DESCRIPTION,
};

/** On an answer that replays an earlier request's job (same Idempotency-Key and body). */
export const replayedHeader = {
  description: 'Present (`true`) when this answer replays the job of an earlier request with the same Idempotency-Key and body instead of making a new job.',
  required: false,
  schema: { type: 'string', enum: ['true'] },
};

/**
 * One event of a stream that is the alternative to a JSON answer (the OpenAI image routes with
 * `stream: true`): the generators read the JSON entry as the answer, so here `schema` can describe
 * each event, which is how schemathesis reads it.
 */
const SSE_EVENT = {
  type: 'object',
  description: 'One server-sent event: its `event:` name and its `data:` (one line of JSON).',
  properties: { id: { type: 'string' }, event: { type: 'string' }, data: { type: 'string', contentMediaType: 'application/json' }, retry: { type: 'integer' } },
};

/**
 * An event stream's body. OpenAPI 3.1 has no way to give the schema of each event apart from the
 * body's (3.2's `itemSchema` does), and the client generators read `schema` as the body: so the
 * body is described as text, and the events in words.
 */
const SSE_BODY = {
  type: 'string',
  description:
    'Server-sent events, one per blank-line-separated block: `event:` (its name; the operation says which there are), `data:` ' +
    '(one line of JSON) and, on job event streams, `id:` (send it back as Last-Event-ID to resume after it) and `retry:` on the first. ' +
    'Lines starting with `:` are keep-alive comments.',
};

/**
 * Unknown top-level body fields are ignored, as the contract allows, and reported on the answer
 * (unknown-fields.ts). Documented so a client (or a generator) knows the header may come; it is
 * absent when every field was known.
 */
const warningHeader = {
  description:
    'Present only when the body had top-level fields this endpoint does not know: one `299 - "…"` warning per field (at most 10, then a count), comma-separated, naming the field and, for a likely typo, the known field meant. The fields were ignored; the job\'s result.warnings lists the same lines.',
  required: false,
  schema: { type: 'string', examples: [`299 - "unknown field 'widht' ignored; did you mean 'width'?"`] },
};

/** Documented only when a token is configured: without one the server never answers 401. */
function unauthorized(c: ComponentCollector, body: TSchema = ErrorBody): Json {
  return { description: 'Missing or wrong bearer token (KIAPI_AUTH_TOKEN is set).', content: { 'application/json': { schema: c.convert(body) } } };
}

/** Error responses every generation endpoint can give, beyond the seed's 400/422/503/504. */
function errorResponses(c: ComponentCollector, authOn: boolean): Json {
  const error = { 'application/json': { schema: c.convert(ErrorBody) } };
  const out: Json = {
    '400': { description: 'Invalid request for the selected model or file reference (unknown model, unusable input, strict caption failure).', content: error },
    '413': { description: 'Request body or an input is larger than the configured limit (KIAPI_MAX_BODY_BYTES, KIAPI_MAX_INPUT_BYTES).', content: error },
    '415': { description: 'The body is not sent as application/json.', content: error },
    '422': {
      description: 'Request schema or validation error (including KIAPI_MAX_PROMPT_CHARS and KIAPI_MAX_INPUTS), or the Idempotency-Key was used on this route with a different body.',
      content: error,
    },
    '429': { description: 'The job queue is full (KIAPI_MAX_QUEUE); retry after the Retry-After header.', content: error },
    '500': { description: 'The engine failed while running the job.', content: error },
    '503': { description: 'Model setup or memory budget error: the message names the command that fixes it.', content: error },
    '504': { description: 'Sync request exceeded the configured timeout (KIAPI_SYNC_TIMEOUT_S); the job keeps running — poll it.', content: error },
    '507': { description: 'The disk was full while an input or the image was saved; the message names the directory to free space in. The job is failed and nothing partial is stored.', content: error },
  };
  if (authOn) out['401'] = unauthorized(c);
  return out;
}

function operationDoc(c: ComponentCollector, op: OperationDef, authOn: boolean): Json {
  const jobResponse = jobSchema('JobImageResponse', op.result);
  return {
    summary: op.summary,
    description: op.description,
    operationId: op.operationId,
    parameters: [acceptParameter, idempotencyParameter],
    requestBody: {
      required: true,
      // A media-type example is what Swagger UI pre-fills for "Try it out"; without one it dumps
      // the schema (`"model": "string"`, `width: 0`), which every operation refuses.
      content: { 'application/json': { schema: c.convert(op.body), ...(op.example !== undefined ? { example: op.example } : {}) } },
    },
    responses: {
      '200': {
        description:
          'Sync result. Returns Job JSON with Accept: application/json; single-artifact jobs return raw bytes otherwise.',
        content: {
          'application/json': { schema: c.convert(jobResponse) },
          'image/png': binary,
          'image/jpeg': binary,
          'image/webp': binary,
        },
        headers: {
          'X-Kiapi-File-Id': { description: 'Produced artifact file_id when raw bytes are returned.', schema: { type: 'string' } },
          'X-Kiapi-Job-Id': { description: 'Job id when raw bytes are returned.', schema: { type: 'string' } },
          Warning: warningHeader,
          'Idempotent-Replayed': replayedHeader,
        },
      },
      '202': {
        description: 'Async job accepted. Poll GET /v1/jobs/{job_id}.',
        content: { 'application/json': { schema: c.convert(AsyncJobResponse) } },
        headers: { Warning: warningHeader, 'Idempotent-Replayed': replayedHeader },
      },
      '409': {
        description:
          'The job was canceled before it finished (sync mode); or, on an Idempotency-Key replay, the job (or its image) the key names has been deleted since.',
        content: { 'application/json': { schema: c.convert(ErrorBody) } },
      },
      ...errorResponses(c, authOn),
    },
  };
}

/** A job-less family request (ToolDef): JSON in, JSON out at once. */
function toolDoc(c: ComponentCollector, tool: ToolDef, authOn: boolean): Json {
  const error = { 'application/json': { schema: c.convert(ErrorBody) } };
  return {
    summary: tool.summary,
    description: tool.description,
    operationId: tool.operationId,
    requestBody: {
      required: true,
      content: { 'application/json': { schema: c.convert(tool.body), ...(tool.example !== undefined ? { example: tool.example } : {}) } },
    },
    responses: {
      '200': { description: 'The answer.', content: { 'application/json': { schema: c.convert(tool.response) } } },
      '400': { description: 'The body cannot be used (the message says why).', content: error },
      '413': { description: 'Request body larger than KIAPI_MAX_BODY_BYTES.', content: error },
      '415': { description: 'The body is not sent as application/json.', content: error },
      '422': { description: 'Request schema or validation error (the message names the field).', content: error },
      ...(authOn ? { '401': unauthorized(c) } : {}),
    },
  };
}

/**
 * `servers`: the address the document was fetched from, so generated clients and Swagger UI call
 * the server that served it (the request guard has already checked the Host).
 */
function servers(serverUrl: string): Json[] {
  return [{ url: serverUrl, description: 'This kiapi server.' }];
}

export function capabilityDocument(def: CapabilityDef, version: string, authOn: boolean, serverUrl: string): Json {
  const c = new ComponentCollector();
  const prefix = capabilityPrefix(def);
  const paths: Json = {};
  for (const op of def.operations) paths[`${prefix}${op.path}`] = { post: operationDoc(c, op, authOn) };
  for (const tool of def.tools ?? []) paths[`${prefix}${tool.path}`] = { post: toolDoc(c, tool, authOn) };
  paths[`${prefix}/models`] = {
    get: {
      summary: 'List Models',
      description:
        "List the servable models for this capability.\n\nReturns the public catalog of every variant selectable via the `model` field on this capability's endpoints.",
      operationId: `list_models_v1_${def.domain}_${def.family.replaceAll('-', '_')}_models_get`,
      responses: {
        '200': {
          description: 'Successful Response',
          content: {
            'application/json': {
              schema: { items: c.convert(CapabilityModelSpecSchema), type: 'array', title: `Response List Models ${def.family}` },
            },
          },
        },
        ...(authOn ? { '401': unauthorized(c) } : {}),
      },
    },
  };
  return {
    openapi: '3.1.0',
    info: { title: def.title, description: def.description, version },
    servers: servers(serverUrl),
    paths,
    components: { schemas: c.sorted(), ...(authOn ? { securitySchemes: bearerScheme } : {}) },
    ...(authOn ? { security: [{ bearer: [] }] } : {}),
    'x-kiapi-capability': def.family,
    'x-kiapi-domain': def.domain,
    'x-kiapi-root-openapi': '/openapi.json',
  };
}

const bearerScheme = { bearer: { type: 'http', scheme: 'bearer', description: 'KIAPI_AUTH_TOKEN' } };

const DOMAIN_ORDER = ['chat', 'embedding', 'image', 'audio', 'video', 'web'];

export function rootDocument(routes: RouteDef[], caps: CapabilityDef[], version: string, authOn: boolean, serverUrl: string): Json {
  const c = new ComponentCollector();
  const paths: Record<string, Json> = {};
  for (const r of routes.filter(isRootDocumented)) {
    const doc = r.doc;
    const all = [
      ...(r.params ? pathParameters(r.params) : []),
      ...(r.query ? queryParameters(c, r.query) : []),
      ...(doc.idempotent ? [idempotencyParameter] : []),
    ];
    const parameters = all.length > 0 ? all : undefined;
    const responses: Json = {};
    for (const [code, res] of Object.entries(doc.responses)) {
      // Every error answer is `{"detail": ...}` JSON (OpenAI's shape on its routes); 304 has no body.
      const schema = res.schema ?? (Number(code) >= 400 ? (r.errorShape === 'openai' ? OpenAIError : ErrorBody) : undefined);
      responses[code] = {
        description: res.description,
        ...(res.links ? { links: res.links } : {}),
        ...(res.headers ? { headers: res.headers } : {}),
        ...(res.binary
          ? {
              content: {
                ...(res.schema ? { 'application/json': { schema: c.convert(res.schema) } } : {}),
                ...Object.fromEntries((res.binary === true ? ['application/octet-stream'] : res.binary).map((t) => [t, binary])),
              },
            }
          : res.eventStream
            ? // A route that answers JSON or, when asked to stream, events (the OpenAI image routes) documents both.
              res.schema
              ? { content: { 'application/json': { schema: c.convert(res.schema) }, 'text/event-stream': { schema: SSE_EVENT } } }
              : { content: { 'text/event-stream': { schema: SSE_BODY } } }
          : schema
            ? { content: { 'application/json': { schema: c.convert(schema) } } }
            : {}),
      };
    }
    // The OpenAI-compatible routes answer every error in OpenAI's shape, the 401 included.
    if (authOn && !r.public) responses['401'] = unauthorized(c, r.errorShape === 'openai' ? OpenAIError : ErrorBody);
    if (r.params) {
      responses['414'] = {
        description: `A path segment longer than ${MAX_PARAM_CHARS} characters (ids are about 40): check the URL.`,
        content: { 'application/json': { schema: c.convert(ErrorBody) } },
      };
    }
    paths[r.path] = {
      ...(paths[r.path] ?? {}),
      [r.method]: {
        summary: doc.summary,
        description: doc.description,
        operationId: doc.operationId,
        ...(parameters ? { parameters } : {}),
        ...(r.body ? { requestBody: { required: r.bodyOptional !== true, content: { 'application/json': { schema: c.convert(r.body) } } } } : {}),
        ...(doc.multipartBody ? { requestBody: { required: true, content: { 'multipart/form-data': { schema: doc.multipartBody } } } } : {}),
        ...(doc.multipartFile
          ? {
              requestBody: {
                required: true,
                content: {
                  'multipart/form-data': {
                    schema: { type: 'object', properties: { file: { type: 'string', format: 'binary' } }, required: ['file'] },
                  },
                },
              },
            }
          : {}),
        responses,
        ...(authOn && r.public ? { security: [] } : {}),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'kiapi Common API', description: rootDescription(caps), version },
    servers: servers(serverUrl),
    paths,
    components: { schemas: c.sorted(), ...(authOn ? { securitySchemes: bearerScheme } : {}) },
    ...(authOn ? { security: [{ bearer: [] }] } : {}),
  };
}

function pathParameters(params: object): Json[] {
  const props = (params as unknown as { properties: Record<string, Json> }).properties;
  return Object.entries(props).map(([name, schema]) => ({
    name,
    in: 'path',
    required: true,
    schema: { type: schema.type, pattern: schema.pattern, maxLength: schema.maxLength, title: name },
    description: schema.description,
  }));
}

function queryParameters(c: ComponentCollector, query: TSchema): Json[] {
  const q = query as unknown as { properties: Record<string, Json>; required?: string[] };
  return Object.entries(q.properties).map(([name, schema]) => {
    const { description, ...rest } = c.convert(schema) as Json;
    return { name, in: 'query', required: q.required?.includes(name) ?? false, schema: { ...rest, title: name }, description };
  });
}

function rootDescription(caps: CapabilityDef[]): string {
  const lines = [
    'Health, Files and Jobs: the API every kiapi capability shares. Each model family serves its own document.',
    '',
    '## Capability-specific docs',
  ];
  const domains = [...new Set(caps.map((c) => c.domain))].sort(
    (a, b) => rank(a) - rank(b) || a.localeCompare(b),
  );
  for (const domain of domains) {
    lines.push('', `### ${domain}`);
    for (const cap of caps.filter((c) => c.domain === domain).sort((a, b) => a.family.localeCompare(b.family))) {
      const p = capabilityPrefix(cap);
      lines.push(`- **${cap.title}** - ${cap.summary} [Swagger UI](${p}/docs), [ReDoc](${p}/redoc), [OpenAPI JSON](${p}/openapi.json)`);
    }
  }
  return lines.join('\n');
}

function rank(domain: string): number {
  const i = DOMAIN_ORDER.indexOf(domain);
  return i < 0 ? DOMAIN_ORDER.length : i;
}
