/**
 * One definition per route: its method, path, path parameters, whether it is public and how it is
 * documented are written once, in a RouteDef, and that object feeds the Fastify registration, the
 * OpenAPI document and the auth decision (auth.ts reads `public` from the matched route's config).
 * Writing them twice (a docs array beside the registrations, path regexes in the auth hook) let
 * them drift: a route served but not documented, or public in one place and protected in the other.
 */
import type { FastifyInstance, preValidationAsyncHookHandler, RouteHandlerMethod } from 'fastify';
import type { TSchema } from 'typebox';

type Json = Record<string, unknown>;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Reachable without the bearer token (KIAPI_AUTH_TOKEN). */
    public?: boolean;
    /** Why the route is in no OpenAPI document (a docs page, an asset, the documents themselves). */
    undocumented?: string;
    /**
     * `openai`: errors are answered in OpenAI's shape `{"error": {message, type, param, code}}`
     * (the OpenAI-compatible routes); otherwise kiapi's `{"detail": ...}`. Read by the one error
     * handler (error-handler.ts).
     */
    errorShape?: 'openai';
  }
}

/** How a route is described in the root document. */
export interface RouteDoc {
  summary: string;
  description: string;
  operationId: string;
  /** Set for multipart uploads. */
  multipartFile?: boolean;
  /** The route makes jobs and takes the optional Idempotency-Key header (documented as a parameter). */
  idempotent?: true;
  /** A multipart body of other parts than one `file` (its JSON schema). */
  multipartBody?: Record<string, unknown>;
  /**
   * `binary`: raw bytes; `true` is application/octet-stream, a list names the media types (the
   * stored file's type is one of them or application/octet-stream).
   */
  responses: Record<
    string,
    { description: string; schema?: TSchema; binary?: true | string[]; eventStream?: true; links?: Record<string, Json>; headers?: Record<string, Json> }
  >;
}

export interface RouteDef {
  method: 'get' | 'post' | 'delete';
  /** OpenAPI form (`/v1/jobs/{job_id}`); registered as Fastify's `/v1/jobs/:job_id`. */
  path: string;
  params?: TSchema;
  /** Query parameters (an object schema; every one optional). */
  query?: TSchema;
  body?: TSchema;
  public?: boolean;
  /** Answer errors in OpenAI's shape (see FastifyContextConfig.errorShape). */
  errorShape?: 'openai';
  /**
   * Where the route is documented: its root-document entry, `family` when a capability's own
   * document describes it, or a reason it is in no document (not an API operation).
   */
  doc: RouteDoc | 'family' | { undocumented: string };
  /** Runs before validation (the capability routes normalise the original's lax spellings there). */
  preValidation?: preValidationAsyncHookHandler;
  handler: RouteHandlerMethod;
}

/** Longest path segment the router accepts (ids are ~40 characters); longer ones answer 414. */
export const MAX_PARAM_CHARS = 200;

export function fastifyPath(openApiPath: string): string {
  return openApiPath.replace(/\{([^}]+)\}/g, ':$1');
}

export function registerRoutes(app: FastifyInstance, defs: RouteDef[]): void {
  for (const d of defs) {
    const schema = { ...(d.params ? { params: d.params } : {}), ...(d.query ? { querystring: d.query } : {}), ...(d.body ? { body: d.body } : {}) };
    app.route({
      method: d.method.toUpperCase(),
      url: fastifyPath(d.path),
      ...(d.params || d.query || d.body ? { schema } : {}),
      ...(d.preValidation ? { preValidation: d.preValidation } : {}),
      config: {
        public: d.public === true,
        ...(d.errorShape ? { errorShape: d.errorShape } : {}),
        ...(typeof d.doc === 'object' && 'undocumented' in d.doc ? { undocumented: d.doc.undocumented } : {}),
      },
      handler: d.handler,
    });
  }
}

export function isRootDocumented(d: RouteDef): d is RouteDef & { doc: RouteDoc } {
  return typeof d.doc === 'object' && !('undocumented' in d.doc);
}

/** A route as Fastify registered it, whoever registered it (RouteDefs or a plugin). */
export interface ServedRoute {
  method: string;
  url: string;
  public: boolean;
  undocumented?: string;
}

const served = new WeakMap<FastifyInstance, ServedRoute[]>();

/** Records every route registered from now on, so tests can hold the documents to what is served. */
export function recordRoutes(app: FastifyInstance): void {
  const list: ServedRoute[] = [];
  served.set(app, list);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const config = (route.config ?? {}) as { public?: boolean; undocumented?: string };
    for (const m of methods) {
      list.push({
        method: m.toUpperCase(),
        url: route.url,
        public: config.public === true,
        ...(config.undocumented ? { undocumented: config.undocumented } : {}),
      });
    }
  });
}

export function servedRoutes(app: FastifyInstance): ServedRoute[] {
  return [...(served.get(app) ?? [])];
}
