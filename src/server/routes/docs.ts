/**
 * Docs pages: Swagger UI for the root and every family document. Its assets are served from the
 * installed swagger-ui-dist package, never a CDN, because kiapi runs on machines without internet.
 * `/redoc` pages redirect to the Swagger UI page (ReDoc's bundle would add a large dependency tree).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import { rootDocument } from '../openapi.js';
import type { RouteDef } from '../route-def.js';

const require = createRequire(import.meta.url);
const ASSET_DIR = path.dirname(require.resolve('swagger-ui-dist/package.json'));
const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
  'swagger-ui-standalone-preset.js': 'application/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
};

export function docsPage(title: string, specUrl: string): string {
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(title)} - Swagger UI</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: ${JSON.stringify(specUrl)}, dom_id: '#swagger-ui', deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: 'StandaloneLayout' });
</script>
</body>
</html>
`;
}

/** Public, and in no document: they are the documents and the pages that render them. */
const NOT_AN_OPERATION = { undocumented: 'docs page, asset or OpenAPI document, not an API operation' };

/** The address a document was fetched from, for its `servers` entry. */
export function serverUrl(req: FastifyRequest): string {
  return `${req.protocol}://${req.host}`;
}

export function docsRoutes(ctx: AppContext, apiRoutes: () => RouteDef[]): RouteDef[] {
  return [
    {
      method: 'get',
      path: '/openapi.json',
      public: true,
      doc: NOT_AN_OPERATION,
      handler: async (req) => rootDocument(apiRoutes(), ctx.capabilities.list(), ctx.version, ctx.config.authToken !== null, serverUrl(req)),
    },
    {
      method: 'get',
      path: '/docs',
      public: true,
      doc: NOT_AN_OPERATION,
      handler: async (_req, reply) => reply.type('text/html; charset=utf-8').send(docsPage('kiapi Common API', '/openapi.json')),
    },
    { method: 'get', path: '/redoc', public: true, doc: NOT_AN_OPERATION, handler: async (_req, reply) => reply.redirect('/docs') },
    {
      method: 'get',
      path: '/docs/assets/{name}',
      public: true,
      doc: NOT_AN_OPERATION,
      handler: async (req, reply) => {
        const name = (req.params as { name: string }).name;
        const type = ASSETS[name];
        if (!type) return reply.code(404).send({ detail: `no docs asset '${name}'` });
        return reply
          .type(type)
          .header('cache-control', 'public, max-age=86400')
          .send(fs.createReadStream(path.join(ASSET_DIR, name)));
      },
    },
  ];
}
