/**
 * `GET /`: where a person who opens the server's address lands. A small page (no scripts, no
 * external assets: kiapi runs offline) linking the docs of the common API and of every family, the
 * OpenAPI documents and /health; a client that asks for JSON gets the same links as an index.
 * Deliberately minimal and self-contained so a fuller start page can replace this one file.
 * Public like the docs pages it points to.
 */
import { capabilityPrefix } from '../../core/capability.js';
import type { AppContext } from '../context.js';
import type { RouteDef } from '../route-def.js';

interface Link {
  title: string;
  docs: string;
  openapi: string;
}

export function homeRoutes(ctx: AppContext): RouteDef[] {
  return [
    {
      method: 'get',
      path: '/',
      public: true,
      doc: { undocumented: 'the start page for a person, like the docs pages it links to' },
      handler: async (req, reply) => {
    const families: Array<Link & { summary: string }> = ctx.capabilities
      .list()
      .slice()
      .sort((a, b) => a.family.localeCompare(b.family))
      .map((c) => {
        const p = capabilityPrefix(c);
        return { title: c.title, summary: c.summary, docs: `${p}/docs`, openapi: `${p}/openapi.json` };
      });
    const index = {
      name: 'kiapi',
      version: ctx.version,
      docs: '/docs',
      openapi: '/openapi.json',
      health: '/health',
      families,
    };
    // JSON for a client that asks for it and not for HTML; browsers (text/html) and curl (*/*) get the page.
    const accept = (req.headers.accept ?? '').toLowerCase();
    if (accept.includes('application/json') && !accept.includes('text/html')) return index;
    return reply.type('text/html; charset=utf-8').send(page(index.version, families));
      },
    },
  ];
}

function page(version: string, families: Array<Link & { summary: string }>): string {
  const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const rows = families
    .map((f) => `<li><a href="${esc(f.docs)}">${esc(f.title)}</a> — ${esc(f.summary)} (<a href="${esc(f.openapi)}">OpenAPI JSON</a>)</li>`)
    .join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kiapi</title>
<style>body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;line-height:1.5}</style>
</head>
<body>
<h1>kiapi <small>${esc(version)}</small></h1>
<p>A local image-generation API. Start with the interactive docs: every endpoint can be tried from the browser.</p>
<ul>
<li><a href="/docs">Common API</a> — health, files and jobs (<a href="/openapi.json">OpenAPI JSON</a>)</li>
${rows}
<li><a href="/health">/health</a> — server state, loaded models, memory budget</li>
</ul>
</body>
</html>
`;
}
