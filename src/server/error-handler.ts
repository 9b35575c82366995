/**
 * The one error handler: named errors → their status and `{"detail": message}`; schema errors →
 * 422 with a FastAPI-style issue list; framework errors about the body → 4xx that say what to do;
 * anything else → 500 whose body hides internals (the log has the stack).
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { clip, isKiapiError } from '../core/errors.js';
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
  message?: string;
  params?: Record<string, unknown>;
}

export function installErrorHandler(app: FastifyInstance, limits: { maxBodyBytes: number; maxUploadBytes: number }): void {
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ detail: `Not Found: ${req.method} ${clip(req.url.split('?')[0] ?? '', 200)}` });
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

function handle(err: FastifyError, req: FastifyRequest, reply: FastifyReply, limits: { maxBodyBytes: number; maxUploadBytes: number }): FastifyReply {
  // Refused before its body was read (too large, disk full, a broken upload): the rest of the
  // body is not worth reading, so the connection closes after this answer, and says so, so no
  // client reuses a connection the server is about to close.
  if (!req.raw.complete) void reply.header('connection', 'close');
  if (isKiapiError(err)) {
    if (err.status >= 500) req.log.error({ err }, err.message);
    return reply.code(err.status).headers(err.headers).send({ detail: clip(err.message, MAX_DETAIL_CHARS) });
  }
  if (err.validation) {
    const where = err.validationContext === 'params' ? 'path' : err.validationContext === 'querystring' ? 'query' : (err.validationContext ?? 'body');
    return reply.code(422).send({ detail: toIssues(err.validation, where, req) });
  }
  const mapped = mapFrameworkError(err, limits);
  if (mapped) return reply.code(mapped.status).send({ detail: mapped.detail });
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
    return reply.code(err.statusCode).send({ detail: clip(err.message, MAX_DETAIL_CHARS) });
  }
  req.log.error({ err }, 'unhandled error');
  return reply.code(500).send({ detail: 'internal server error (see the kiapi server log)' });
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
  const source: unknown = where === 'path' ? req.params : where === 'body' ? req.body : undefined;
  const seen = new Set<string>();
  const issues: ValidationIssue[] = [];
  for (const e of errors) {
    const loc: (string | number)[] = [where, ...pathSegments(e.instancePath)];
    if (e.keyword === 'required' && typeof e.params?.missingProperty === 'string') loc.push(e.params.missingProperty);
    const issue: ValidationIssue = { type: e.keyword, loc, msg: describe(e, loc) };
    const input = valueAt(source, loc.slice(1));
    if (input !== undefined && e.keyword !== 'required') issue.input = truncate(input);
    const key = `${loc.join('.')}|${issue.msg}`;
    if (!seen.has(key)) {
      seen.add(key);
      issues.push(issue);
    }
  }
  return issues;
}

/** Says which field and how to fix it, in one line. */
function describe(e: AjvIssue, loc: (string | number)[]): string {
  const field = loc.slice(1).join('.') || loc[0]!.toString();
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
  if (typeof v === 'string' && v.length > 200) return `${v.slice(0, 200)}…`;
  if (typeof v === 'object' && v !== null) {
    try {
      if (JSON.stringify(v).length > 500) return '[object omitted: too large]';
    } catch {
      return '[object omitted: too large]';
    }
  }
  return v;
}
