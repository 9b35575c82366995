/**
 * The Fastify app, built by a function so tests build the app and never the process. Routes do
 * HTTP only; the work lives in the context's services.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import multipart from '@fastify/multipart';
import type { AppContext } from './context.js';
import { installAuth } from './auth.js';
import { installErrorHandler } from './error-handler.js';
import { capabilityRoutes } from './routes/capabilities.js';
import { docsRoutes } from './routes/docs.js';
import { fileDocs, fileRoutes } from './routes/files.js';
import { healthDocs, healthRoutes } from './routes/health.js';
import { jobDocs, jobRoutes } from './routes/jobs.js';

export async function buildApp(ctx: AppContext): Promise<FastifyInstance> {
  // Typed as Fastify's logger so the instance type stays the default one routes are written for.
  const logger: FastifyBaseLogger = ctx.log;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: ctx.config.maxBodyBytes,
    // Slow clients must not hold a connection forever; uploads of many GB still fit.
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 5000,
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
  // The original parses JSON when Content-Type is absent; so do we.
  app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) => {
    if (req.headers['content-type']) {
      done(Object.assign(new Error('unsupported content type'), { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415 }));
      return;
    }
    try {
      done(null, body === '' ? undefined : JSON.parse(body as string));
    } catch (err) {
      done(Object.assign(err as Error, { statusCode: 422 }));
    }
  });
  app.addContentTypeParser(/^application\/[a-z0-9.+-]*\+json/i, { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));

  await app.register(multipart, {
    limits: { fileSize: ctx.config.maxUploadBytes, files: 4, parts: 20, fields: 16 },
  });

  installErrorHandler(app, ctx.config);
  installAuth(app, ctx.config.authToken);

  healthRoutes(app, ctx);
  fileRoutes(app, ctx);
  jobRoutes(app, ctx);
  capabilityRoutes(app, ctx);
  docsRoutes(app, ctx, [...healthDocs, ...fileDocs, ...jobDocs]);
  return app;
}
