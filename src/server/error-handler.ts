/**
 * The one error handler: named errors → their status and `{"detail": message}`; schema errors →
 * 422 with a FastAPI-style issue list; framework errors about the body → 4xx that say what to do;
 * anything else → 500 whose body hides internals (the log has the stack).
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { clip, head, isKiapiError } from '../core/errors.js';
import { unavailable } from '../cluster/pg.js';
import { MAX_JSON_DEPTH } from './json-depth.js';

export interface ValidationIssue {
  type: string;
  loc: (string | number)[];
  msg: string;
  input?: unknown;
}

interface AjvIssue {
  keyword: string;
  instancePath: string;
  schemaPath?: string;
  message?: string;
  params?: Record<string, unknown>;
  /** The schema holding the failed keyword (Ajv's `verbose` option). */
  parentSchema?: Record<string, unknown>;
}

export function installErrorHandler(app: FastifyInstance, limits: { maxBodyBytes: number; maxUploadBytes: number }): void {
  app.setNotFoundHandler((req, reply) => {
    const detail = `Not Found: ${req.method} ${clip(req.url.split('?')[0] ?? '', 200)}`;
    // An unknown path under the OpenAI-compatible prefixes is answered as those routes answer.
    if (/^\/v1\/(images|models)(\/|\?|$)/.test(req.url)) return void reply.code(404).send(openAiErrorBody(404, detail, null, 'not_found'));
    void reply.code(404).send({ detail });
  });

  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    try {
      return handle(err, req, reply, limits);
    } catch (handlerErr) {
      // The handler must answer whatever the error carries (it once overflowed the stack on a
      // deeply nested body and Fastify answered with its own body).
      req.log.error({ err: handlerErr, cause: err }, 'error handler failed');
      return reply.code(500).send({ detail: 'internal server error (see the kiapi server log)' });
    }
  });
}

function handle(error: FastifyError, req: FastifyRequest, reply: FastifyReply, limits: { maxBodyBytes: number; maxUploadBytes: number }): FastifyReply {
  // A cluster node's shared database that cannot be reached is a 503 naming it, wherever the
  // error came from (a store, the queue engine); a single node never meets one.
  const err = unavailable(error) as FastifyError;
  // Refused before its body was read (too large, disk full, a broken upload): the rest of the
  // body is not worth reading, so the connection closes after this answer, and says so, so no
  // client reuses a connection the server is about to close.
  if (!req.raw.complete) void reply.header('connection', 'close');
  const a = answerFor(err, req, limits);
  if (a.status >= 500 && a.log !== false) req.log.error({ err }, a.status === 500 && !isKiapiError(err) ? 'unhandled error' : err.message);
  void reply.headers(a.headers ?? {});
  if (req.routeOptions.config.errorShape === 'openai') {
    // The SDKs treat 422 as a different class of error than OpenAI's own 400 for a bad field.
    const status = a.status === 422 ? 400 : a.status;
    return reply.code(status).send(openAiErrorBody(status, a.detail, a.param ?? null, a.code ?? null));
  }
  return reply.code(a.status).send({ detail: a.detail });
}

interface Answer {
  status: number;
  detail: string | ValidationIssue[];
  headers?: Record<string, string>;
  param?: string | null;
  code?: string | null;
  log?: false;
}

function answerFor(err: FastifyError, req: FastifyRequest, limits: { maxBodyBytes: number; maxUploadBytes: number }): Answer {
  if (isKiapiError(err)) {
    return { status: err.status, detail: clip(err.message, MAX_DETAIL_CHARS), headers: err.headers, param: err.param, code: err.code };
  }
  if (err.validation) {
    const where = err.validationContext === 'params' ? 'path' : err.validationContext === 'querystring' ? 'query' : (err.validationContext ?? 'body');
    const extra = err.validation.find((e) => e.keyword === 'additionalProperties');
    const name = extra?.params?.additionalProperty;
    // Named here because the issue list says only that the object has extra properties.
    if (typeof name === 'string') return { status: 422, detail: `Unknown parameter: '${clip(name, 100)}'`, param: name, code: 'unknown_parameter' };
    return { status: 422, detail: toIssues(err.validation, where, req) };
  }
  const mapped = mapFrameworkError(err, limits);
  if (mapped) return { status: mapped.status, detail: mapped.detail };
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return { status: err.statusCode, detail: clip(err.message, MAX_DETAIL_CHARS) };
  return { status: 500, detail: 'internal server error (see the kiapi server log)' };
}

const OPENAI_TYPES: Record<number, string> = {
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  429: 'rate_limit_error',
  503: 'service_unavailable',
};

/**
 * OpenAI's error body. `param` is the field at fault: given by the route, else the first field of
 * a validation issue list. `code` says what kind of fault it is where that is known.
 */
export function openAiErrorBody(status: number, detail: string | ValidationIssue[], param: string | null, code: string | null) {
  const issues = typeof detail === 'string' ? null : detail;
  const message = issues ? issues.map((i) => i.msg).join('; ') : (detail as string);
  const field = param ?? (issues?.[0] ? issues[0].loc.slice(1).join('.') || null : null);
  const type = OPENAI_TYPES[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
  const fallback = status === 401 ? 'invalid_api_key' : status === 429 ? 'rate_limit_exceeded' : status === 503 ? 'model_not_activated' : issues ? 'invalid_value' : null;
  return { error: { message, type, param: field, code: code ?? fallback } };
}

/**
 * Messages quote client input clipped to a few hundred characters where they are made; this
 * bound is the backstop for a message that quotes several inputs.
 */
const MAX_DETAIL_CHARS = 2000;

function mapFrameworkError(
  err: FastifyError,
  limits: { maxBodyBytes: number; maxUploadBytes: number },
): { status: number; detail: string | ValidationIssue[] } | null {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, detail: `request body is larger than the ${limits.maxBodyBytes} byte limit (KIAPI_MAX_BODY_BYTES); upload large inputs with POST /v1/files and pass their file_id` };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, detail: 'unsupported Content-Type; send the body as application/json (uploads: multipart/form-data to /v1/files)' };
    case 'KIAPI_JSON_TOO_DEEP':
      return {
        status: 422,
        detail: [{ type: 'json_too_deep', loc: ['body'], msg: `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels; no kiapi request needs that many, send a flatter body` }],
      };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 422, detail: [{ type: 'missing', loc: ['body'], msg: 'Field required: the request body is empty; send a JSON object' }] };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 422, detail: [{ type: 'json_invalid', loc: ['body'], msg: `JSON decode error: ${err.message}` }] };
    case 'FST_REQ_FILE_TOO_LARGE':
      return { status: 413, detail: `upload is larger than the ${limits.maxUploadBytes} byte limit (KIAPI_MAX_UPLOAD_BYTES)` };
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
    case 'FST_NO_FORM_DATA':
      return { status: 422, detail: [{ type: 'missing', loc: ['body', 'file'], msg: 'Field required: send multipart/form-data with a file field named "file"' }] };
    case 'FST_PARTS_LIMIT':
    case 'FST_FILES_LIMIT':
    case 'FST_FIELDS_LIMIT':
      // The shape of the body is wrong, not its size: 400 like any other malformed multipart body.
      return { status: 400, detail: 'malformed multipart body: too many parts; send one file field named "file"' };
    default:
      if (err instanceof SyntaxError || err.name === 'SyntaxError') {
        return { status: 422, detail: [{ type: 'json_invalid', loc: ['body'], msg: `JSON decode error: ${err.message}` }] };
      }
      return null;
  }
}

function toIssues(errors: AjvIssue[], where: string, req: FastifyRequest): ValidationIssue[] {
  const source: unknown = where === 'path' ? req.params : where === 'body' ? req.body : where === 'query' ? req.query : undefined;
  const seen = new Set<string>();
  const issues: ValidationIssue[] = [];
  for (const issue of collapse(errors, source, where)) {
    const key = `${issue.loc.join('.')}|${issue.msg}`;
    if (!seen.has(key)) {
      seen.add(key);
      issues.push(issue);
    }
  }
  return issues;
}

/**
 * One issue per failed field. Ajv reports every branch of a union (`anyOf`/`oneOf`) that failed
 * and then the union itself: a nullable `steps: -1` gave "must be >= 1" *and* "must be null".
 * Per union: the branch the value was meant for (its JSON type, then for objects the `type`
 * discriminator or the required fields it has) is reported alone, as if it were the only schema;
 * when no single branch fits (or all branches are scalars) the field gets one message built from
 * the schema: `'steps' must be an integer >= 1, or null; got -1`.
 */
function collapse(errors: AjvIssue[], source: unknown, where: string): ValidationIssue[] {
  const out: ValidationIssue[] = [];
  const unions = errors.filter((e) => (e.keyword === 'anyOf' || e.keyword === 'oneOf') && e.schemaPath && e.parentSchema);
  const outer = unions.filter((u) => !unions.some((o) => o !== u && isUnder(u, o)));
  for (const e of errors) {
    if (outer.some((u) => u === e || isUnder(e, u))) continue;
    out.push(plainIssue(e, source, where));
  }
  for (const u of outer) {
    const inside = errors.filter((e) => e !== u && isUnder(e, u));
    const path = pathSegments(u.instancePath);
    const value = valueAt(source, path);
    const branches = (u.parentSchema![u.keyword] as Record<string, unknown>[] | undefined) ?? [];
    const pick = pickBranch(branches, value);
    const scalarUnion = branches.every(isScalarSchema);
    if (pick !== null && !scalarUnion) {
      const prefix = `${u.schemaPath}/${pick}/`;
      const chosen = inside.filter((e) => e.schemaPath?.startsWith(prefix));
      if (chosen.length > 0) {
        out.push(...collapse(chosen, source, where));
        continue;
      }
    }
    const loc: (string | number)[] = [where, ...path];
    const firstOfPick = pick === null ? undefined : inside.find((e) => e.schemaPath?.startsWith(`${u.schemaPath}/${pick}/`));
    const issue: ValidationIssue = {
      type: firstOfPick?.keyword ?? 'type',
      loc,
      msg: `'${fieldName(loc)}' must be ${describeSchema(u.parentSchema!)}${gotText(value)}`,
    };
    if (value !== undefined) issue.input = truncate(value);
    out.push(issue);
  }
  return out;
}

/** `e` failed inside union `u`: at or below its value, within one of its branches. */
function isUnder(e: AjvIssue, u: AjvIssue): boolean {
  if (!e.schemaPath?.startsWith(`${u.schemaPath}/`)) return false;
  return e.instancePath === u.instancePath || e.instancePath.startsWith(`${u.instancePath}/`);
}

/** The index of the one branch `value` was meant for, or null when none or several fit. */
function pickBranch(branches: Record<string, unknown>[], value: unknown): number | null {
  let fits = branches.map((b, i) => ({ b, i })).filter(({ b }) => jsonTypes(b).has(jsonType(value)) || jsonTypes(b).has('any'));
  if (fits.length > 1 && value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const obj = value as Record<string, unknown>;
    const tag = obj.type;
    if (typeof tag === 'string') {
      fits = fits.filter(({ b }) => discriminator(b) === tag);
    } else {
      fits = fits.filter(({ b }) => ((b.required as string[] | undefined) ?? []).every((r) => Object.hasOwn(obj, r)));
    }
  }
  return fits.length === 1 ? fits[0]!.i : null;
}

function discriminator(b: Record<string, unknown>): unknown {
  const tag = (b.properties as Record<string, Record<string, unknown>> | undefined)?.type;
  return tag?.const;
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** The JSON types a schema admits (`integer` values are numbers too); `any` when it does not say. */
function jsonTypes(s: Record<string, unknown>): Set<string> {
  const out = new Set<string>();
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
  for (const t of types) {
    out.add(t);
    if (t === 'number') out.add('integer');
  }
  for (const k of ['anyOf', 'oneOf']) {
    const list = s[k];
    if (Array.isArray(list)) for (const b of list as Record<string, unknown>[]) for (const t of jsonTypes(b)) out.add(t);
  }
  if (s.type === undefined && !Array.isArray(s.anyOf) && !Array.isArray(s.oneOf)) out.add('any');
  return out;
}

function isScalarSchema(s: Record<string, unknown>): boolean {
  return ['integer', 'number', 'boolean', 'string', 'null'].includes(s.type as string);
}

/** What a value of this schema looks like, in words: `an integer from 1 to 100, or null`. */
function describeSchema(s: Record<string, unknown>, depth = 0): string {
  const list = (s.anyOf ?? s.oneOf) as Record<string, unknown>[] | undefined;
  if (Array.isArray(list) && depth < 4) {
    const parts = list.filter((b) => b.type !== 'null').map((b) => describeSchema(b, depth + 1));
    const main = parts.length <= 1 ? (parts[0] ?? '') : `${parts.slice(0, -1).join(', ')} or ${parts.at(-1)!}`;
    const nullable = list.some((b) => b.type === 'null');
    return nullable ? (main ? `${main}, or null` : 'null') : main;
  }
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return `one of ${(s.enum as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  switch (s.type) {
    case 'integer':
      return `an integer${bounds(s)}`;
    case 'number':
      return `a number${bounds(s)}`;
    case 'boolean':
      return 'true or false';
    case 'string':
      return s.minLength === 1 ? 'a non-empty string' : 'a string';
    case 'null':
      return 'null';
    case 'array':
      return 'a list';
    case 'object': {
      const tag = discriminator(s);
      const req = ((s.required as string[] | undefined) ?? []).filter((r) => r !== 'type');
      const fields = req.length > 0 ? ` with ${req.map((r) => `'${r}'`).join(' and ')}` : '';
      return `an object${fields}${typeof tag === 'string' ? ` (type '${tag}')` : ''}`;
    }
    default:
      return 'a value of the documented form (see the OpenAPI schema of this endpoint)';
  }
}

function bounds(s: Record<string, unknown>): string {
  const min = typeof s.minimum === 'number' ? s.minimum : undefined;
  const max = typeof s.maximum === 'number' ? s.maximum : undefined;
  const parts: string[] = [];
  if (min !== undefined && max !== undefined) parts.push(`from ${min} to ${max}`);
  else if (min !== undefined) parts.push(`>= ${min}`);
  else if (max !== undefined) parts.push(`<= ${max}`);
  if (typeof s.exclusiveMinimum === 'number') parts.push(`> ${s.exclusiveMinimum}`);
  if (typeof s.exclusiveMaximum === 'number') parts.push(`< ${s.exclusiveMaximum}`);
  return parts.length > 0 ? ` ${parts.join(' and ')}` : '';
}

function gotText(value: unknown): string {
  if (value === undefined) return '';
  let text: string;
  try {
    text = JSON.stringify(value) ?? typeof value;
  } catch {
    text = '[unprintable]';
  }
  return `; got ${text.length > 100 ? `${head(text, 100)}…` : text}`;
}

function fieldName(loc: (string | number)[]): string {
  return loc.slice(1).join('.') || loc[0]!.toString();
}

/**
 * Keywords whose failure is best said as "what the value must be" from a scalar schema. A value
 * failing several of them (`"mode": 5` is neither a string nor in the enum) gets the same
 * message for each, which toIssues keeps once.
 */
const SCALAR_KEYWORDS = new Set(['type', 'enum', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minLength']);

function plainIssue(e: AjvIssue, source: unknown, where: string): ValidationIssue {
  const loc: (string | number)[] = [where, ...pathSegments(e.instancePath)];
  if (e.keyword === 'required' && typeof e.params?.missingProperty === 'string') loc.push(e.params.missingProperty);
  const input = e.keyword === 'required' ? undefined : valueAt(source, loc.slice(1));
  const msg =
    SCALAR_KEYWORDS.has(e.keyword) && e.parentSchema && isScalarSchema(e.parentSchema) && !(e.keyword === 'type' && e.parentSchema.type === 'null')
      ? `'${fieldName(loc)}' must be ${describeSchema(e.parentSchema)}${gotText(input)}`
      : e.keyword === 'pattern'
        ? `${describe(e, loc)}${forExample(e.parentSchema)}${gotText(input)}`
        : describe(e, loc);
  const issue: ValidationIssue = { type: e.keyword, loc, msg };
  if (input !== undefined) issue.input = truncate(input);
  return issue;
}

/** Says which field and how to fix it, in one line. */
function describe(e: AjvIssue, loc: (string | number)[]): string {
  const field = fieldName(loc);
  const p = e.params ?? {};
  switch (e.keyword) {
    case 'required':
      return `Field required: '${field}' is missing`;
    case 'type':
      return `'${field}' must be ${String(p.type).replaceAll(',', ' or ')}`;
    case 'enum':
      return `'${field}' must be one of: ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'const':
      return `'${field}' must be ${JSON.stringify(p.allowedValue)}`;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
    case 'minLength':
    case 'maxLength':
    case 'minItems':
    case 'maxItems':
    case 'pattern':
      return `'${field}' ${e.message ?? 'is invalid'}`;
    case 'anyOf':
    case 'oneOf':
      return `'${field}' does not match any allowed form (see the OpenAPI schema of this endpoint)`;
    default:
      return `'${field}' ${e.message ?? 'is invalid'}`;
  }
}

/**
 * A pattern alone is hard to read as a fix (`^[!#$%&'+.^_…]+/…$`); the schema's own examples,
 * where it has them, show what passes.
 */
function forExample(schema: Record<string, unknown> | undefined): string {
  const examples = schema?.examples;
  if (!Array.isArray(examples) || examples.length === 0) return '';
  return ` (for example ${examples.map((x) => JSON.stringify(x)).join(' or ')})`;
}

function pathSegments(instancePath: string): (string | number)[] {
  if (!instancePath) return [];
  return instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function valueAt(root: unknown, path: (string | number)[]): unknown {
  let cur: unknown = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[seg];
  }
  return cur;
}

function truncate(v: unknown): unknown {
  if (typeof v === 'string' && v.length > 200) return `${head(v, 200)}…`;
  if (typeof v === 'object' && v !== null) {
    try {
      if (JSON.stringify(v).length > 500) return '[object omitted: too large]';
    } catch {
      return '[object omitted: too large]';
    }
  }
  return v;
}
