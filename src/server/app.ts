/**
 * The Fastify app, built by a function so tests build the app and never the process. Routes do
 * HTTP only; the work lives in the context's services.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import multipart from '@fastify/multipart';
import type { AppContext } from './context.js';
import { installAuth } from './auth.js';
import { installErrorHandler } from './error-handler.js';
import { MAX_JSON_DEPTH, jsonDepthExceeds } from './json-depth.js';
import { installRequestGuard } from './request-guard.js';
import { installEarlyUploadLimit } from './upload-limit.js';
import { installMethodNotAllowed } from './method-not-allowed.js';
import { capabilityRoutes } from './routes/capabilities.js';
import { docsRoutes } from './routes/docs.js';
import { fileRoutes } from './routes/files.js';
import { healthRoutes } from './routes/health.js';
import { homeRoutes } from './routes/home.js';
import { eventRoutes } from './routes/events.js';
import { jobRoutes } from './routes/jobs.js';
import { SseStreams } from './sse.js';
import { openAiRoutes } from '../openai/routes.js';
import { MAX_PARAM_CHARS, recordRoutes, registerRoutes, type RouteDef } from './route-def.js';


export async function buildApp(ctx: AppContext): Promise<FastifyInstance> {
  // Typed as Fastify's logger so the instance type stays the default one routes are written for.
  const logger: FastifyBaseLogger = ctx.log;
  const requestTimeoutMs = Math.round(ctx.server.requestTimeoutS * 1000);
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: ctx.config.maxBodyBytes,
    // Slow clients must not hold a connection forever. A whole request (an upload of many GB on a
    // slow link included) must arrive within KIAPI_REQUEST_TIMEOUT_S (408 otherwise); a
    // connection on which no byte moves for KIAPI_IDLE_TIMEOUT_S is closed (a stalled upload, a
    // client that stopped reading a download). Sync generation waits suspend the idle timer
    // (routes/capabilities.ts): KIAPI_SYNC_TIMEOUT_S bounds them.
    requestTimeout: requestTimeoutMs,
    connectionTimeout: Math.round(ctx.server.idleTimeoutS * 1000),
    keepAliveTimeout: 5000,
    // Node checks the request timeout on this interval (30 s by default): a short timeout must be
    // checked often enough to mean what it says.
    // Headers get at most a minute (Node's default), and never longer than the whole request.
    http:
      requestTimeoutMs > 0
        ? { connectionsCheckingInterval: Math.max(100, Math.min(30_000, Math.floor(requestTimeoutMs / 4))), headersTimeout: Math.min(60_000, requestTimeoutMs) }
        : {},
    clientErrorHandler: (err, socket) => clientError(err, socket, ctx.server.requestTimeoutS),
    // Ids are ~40 characters; a longer path segment is answered by the router before any route
    // runs, which Fastify did with its own body. These keep every error body `{"detail": ...}`.
    routerOptions: { maxParamLength: MAX_PARAM_CHARS },
    frameworkErrors: (err, _req, res) => {
      const reply = res as unknown as FastifyReply;
      if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
        void reply.code(414).send({ detail: `a path segment is longer than ${MAX_PARAM_CHARS} characters; ids are much shorter, check the URL` });
        return;
      }
      void reply.code(400).send({ detail: 'malformed URL: a path segment is not valid percent-encoding' });
    },
    ajv: {
      customOptions: {
        // No Ajv type coercion: it would turn null into 0 inside nullable unions ({"seed": null} →
        // seed 0) and numbers into prompt strings. The original's lax spellings ("1024" for an
        // integer, "yes" for a boolean) are converted before validation instead, only where the
        // schema asks for an integer, number or boolean (lax-inputs.ts).
        coerceTypes: false,
        // Errors carry their schema, so a 422 can say what a field must be in one message
        // (error-handler.ts) instead of one line per branch of a nullable union.
        verbose: true,
        useDefaults: true,
        removeAdditional: false,
        allErrors: true,
        // The seed's schemas carry OpenAPI-only keywords (discriminator) and defaults inside
        // unions (FileRef's `type`); Ajv's strict schema mode would refuse both.
        strictSchema: false,
      },
    },
  });

  // Fastify parses text/plain bodies into a string by default, which then failed schema
  // validation (422) while every other non-JSON type got 415; no route takes text.
  app.removeContentTypeParser('text/plain');
  // Every JSON body is checked for depth first (json-depth.ts), then parsed by Fastify's parser
  // (which refuses __proto__ / constructor poisoning). An empty body is no body, whatever its
  // Content-Type: clients send `Content-Type: application/json` with nothing after it on cancel
  // and DELETE, which take no body; routes that need one still answer 422 from their schema.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  const boundedJson: typeof jsonParser = (req, body, done) => {
    if (body === '') {
      done(null, undefined);
      return;
    }
    if (typeof body === 'string' && jsonDepthExceeds(body)) {
      done(Object.assign(new Error(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`), { code: 'KIAPI_JSON_TOO_DEEP', statusCode: 422 }), undefined);
      return;
    }
    void jsonParser(req, body, done);
  };
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, boundedJson);
  // The original parses JSON when Content-Type is absent; so do we.
  app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) => {
    if (req.headers['content-type'] && body !== '') {
      done(Object.assign(new Error('unsupported content type'), { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415 }));
      return;
    }
    if (body === '') {
      done(null, undefined);
      return;
    }
    void boundedJson(req, body as string, done);
  });
  app.addContentTypeParser(/^application\/[a-z0-9.+-]*\+json/i, { parseAs: 'string' }, boundedJson);

  await app.register(multipart, {
    limits: { fileSize: ctx.config.maxUploadBytes, files: 4, parts: 20, fields: 16 },
  });

  installErrorHandler(app, ctx.config);
  // Before auth: a rebinding or cross-site request is refused whatever token it carries.
  installRequestGuard(app, ctx.server);
  installAuth(app, ctx.config.authToken);
  installResponseHeaders(app, ctx.config.authToken !== null);
  installEarlyUploadLimit(app, ctx.config.maxUploadBytes);
  installMethodNotAllowed(app);

  recordRoutes(app);
  const streams = new SseStreams();
  // Event streams never end by themselves: a server shutting down ends them before it waits for
  // its connections to close.
  app.addHook('preClose', async () => streams.closeAll());
  const api: RouteDef[] = [...healthRoutes(ctx), ...fileRoutes(ctx), ...jobRoutes(ctx), ...eventRoutes(ctx, streams), ...capabilityRoutes(ctx), ...openAiRoutes(ctx, ctx.server.openai, streams)];
  registerRoutes(app, [...api, ...docsRoutes(ctx, () => api), ...homeRoutes(ctx)]);
  return app;
}

/**
 * Headers on every answer. `nosniff`: a stored file is served with the type it was stored with
 * and a browser must not guess another (an "image" that sniffs as HTML). With a token configured,
 * answers are private to whoever presented it: `no-store` keeps them out of shared and browser
 * caches (a download's default `public, max-age=0` included).
 */
function installResponseHeaders(app: FastifyInstance, tokenConfigured: boolean): void {
  app.addHook('onSend', async (_req, reply, payload) => {
    void reply.header('x-content-type-options', 'nosniff');
    if (tokenConfigured) void reply.header('cache-control', 'no-store');
    return payload;
  });
}

/**
 * Errors Node raises on a connection before (or while) a request reaches a route: a request that
 * did not arrive within KIAPI_REQUEST_TIMEOUT_S, oversized headers, unparsable HTTP. Answered
 * in kiapi's `{"detail": ...}` shape when nothing of a response was written yet, then closed.
 */
function clientError(err: NodeJS.ErrnoException, socket: Socket, requestTimeoutS: number): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let status: number;
  let detail: string;
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      status = 408;
      detail = `the request did not arrive within ${requestTimeoutS} s (KIAPI_REQUEST_TIMEOUT_S); send it again, faster`;
      break;
    case 'HPE_HEADER_OVERFLOW':
      status = 431;
      detail = 'the request headers are too large';
      break;
    default:
      status = 400;
      detail = 'malformed HTTP request';
  }
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && !inFlight?.headersSent) {
    const body = JSON.stringify({ detail });
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
