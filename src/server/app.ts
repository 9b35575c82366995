/**
 * The Fastify app, built by a function so tests build the app and never the process. Routes do
 * HTTP only; the work lives in the context's services.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import multipart from '@fastify/multipart';
import type { AppContext } from './context.js';
import { installAuth } from './auth.js';
import { installErrorHandler } from './error-handler.js';
import { installMethodNotAllowed } from './method-not-allowed.js';
import { capabilityRoutes } from './routes/capabilities.js';
import { docsRoutes } from './routes/docs.js';
import { fileDocs, fileRoutes } from './routes/files.js';
import { healthDocs, healthRoutes } from './routes/health.js';
import { jobDocs, jobRoutes } from './routes/jobs.js';

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
    ajv: {
      customOptions: {
        // No type coercion: Ajv's would turn null into 0 inside nullable unions ({"seed": null} →
        // seed 0) and numbers into prompt strings. A JSON number must be sent as a number; the
        // original's pydantic also accepted "1024" for an integer, which we answer with a 422.
        coerceTypes: false,
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
  // An empty body is no body, whatever its Content-Type: clients send `Content-Type:
  // application/json` with nothing after it on cancel and DELETE, which take no body. Routes
  // that need one still answer 422 "the request body is empty" from their schema.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  const emptyOrJson: typeof parseJson = (req, body, done) => {
    if (body === '') {
      done(null, undefined);
      return;
    }
    void parseJson(req, body, done);
  };
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, emptyOrJson);
  // The original parses JSON when Content-Type is absent; so do we.
  app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) => {
    if (req.headers['content-type'] && body !== '') {
      done(Object.assign(new Error('unsupported content type'), { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415 }));
      return;
    }
    try {
      done(null, body === '' ? undefined : JSON.parse(body as string));
    } catch (err) {
      done(Object.assign(err as Error, { statusCode: 422 }));
    }
  });
  app.addContentTypeParser(/^application\/[a-z0-9.+-]*\+json/i, { parseAs: 'string' }, emptyOrJson);

  await app.register(multipart, {
    limits: { fileSize: ctx.config.maxUploadBytes, files: 4, parts: 20, fields: 16 },
  });

  installErrorHandler(app, ctx.config);
  installAuth(app, ctx.config.authToken);
  installMethodNotAllowed(app);

  healthRoutes(app, ctx);
  fileRoutes(app, ctx);
  jobRoutes(app, ctx);
  capabilityRoutes(app, ctx);
  docsRoutes(app, ctx, [...healthDocs, ...fileDocs, ...jobDocs]);
  return app;
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
