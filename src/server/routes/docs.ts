/**
 * Docs pages: Swagger UI for the root and every family document. Its assets are served from the
 * installed swagger-ui-dist package, never a CDN, because kiapi runs on machines without internet.
 * `/redoc` pages redirect to the Swagger UI page (ReDoc's bundle would add a large dependency tree).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import { rootDocument, type CommonRoute } from '../openapi.js';

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

export function docsRoutes(app: FastifyInstance, ctx: AppContext, commonRoutes: CommonRoute[]): void {
  app.get('/openapi.json', async () =>
    rootDocument(commonRoutes, ctx.capabilities.list(), ctx.version, ctx.config.authToken !== null),
  );
  app.get('/docs', async (_req, reply) => reply.type('text/html; charset=utf-8').send(docsPage('kiapi Common API', '/openapi.json')));
  app.get('/redoc', async (_req, reply) => reply.redirect('/docs'));
  app.get<{ Params: { name: string } }>('/docs/assets/:name', async (req, reply) => {
    const type = ASSETS[req.params.name];
    if (!type) return reply.code(404).send({ detail: `no docs asset '${req.params.name}'` });
    return reply
      .type(type)
      .header('cache-control', 'public, max-age=86400')
      .send(fs.createReadStream(path.join(ASSET_DIR, req.params.name)));
  });
}
