/**
 * `GET /`: the playground, where a person who opens the server's address generates, edits, builds
 * Ideogram captions and browses results without reading any docs. The page is a shell written
 * here (links to every docs page and document, so it leads somewhere even without scripts) plus
 * one script and one stylesheet built by `npm run build` from web/ into dist/web/ and served from
 * /playground/. Nothing is loaded from elsewhere: kiapi runs offline.
 *
 * The shell and its assets are public, like the docs pages: they hold no data. Every API call the
 * page makes carries the token the person entered in it (kept in the browser only).
 * A client that asks for JSON (and not HTML) gets the same links as an index.
 */
import fs from 'node:fs';
import path from 'node:path';
import { capabilityPrefix } from '../../core/capability.js';
import { PACKAGE_ROOT } from '../../core/package-info.js';
import type { AppContext } from '../context.js';
import type { RouteDef } from '../route-def.js';

interface Link {
  title: string;
  docs: string;
  openapi: string;
}

/** Where `npm run build` writes the page's bundle (web/build.mjs). */
export const WEB_BUILD_DIR = path.join(PACKAGE_ROOT, 'dist', 'web');
const ASSETS: Record<string, string> = {
  'app.js': 'application/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

export function homeRoutes(ctx: AppContext): RouteDef[] {
  return [
    {
      method: 'get',
      path: '/',
      public: true,
      doc: { undocumented: 'the playground page for a person, like the docs pages it links to' },
      handler: async (req, reply) => {
        const families: Array<Link & { summary: string }> = ctx.capabilities
          .list()
          .slice()
          .sort((a, b) => a.family.localeCompare(b.family))
          .map((c) => {
            const p = capabilityPrefix(c);
            return { title: c.title, summary: c.summary, docs: `${p}/docs`, openapi: `${p}/openapi.json` };
          });
        const index = { name: 'kiapi', version: ctx.version, docs: '/docs', openapi: '/openapi.json', health: '/health', playground: '/', families };
        // JSON for a client that asks for it and not for HTML; browsers (text/html) and curl (*/*) get the page.
        const accept = (req.headers.accept ?? '').toLowerCase();
        if (accept.includes('application/json') && !accept.includes('text/html')) return index;
        return reply
          .type('text/html; charset=utf-8')
          .header('cache-control', 'no-cache')
          .send(page(index.version, families, ctx.config.authToken !== null));
      },
    },
    {
      method: 'get',
      path: '/playground/{name}',
      public: true,
      doc: { undocumented: 'an asset of the playground page' },
      handler: async (req, reply) => {
        const name = (req.params as { name: string }).name;
        const type = ASSETS[name];
        const file = path.join(WEB_BUILD_DIR, name);
        if (!type) return reply.code(404).send({ detail: `no playground asset '${name}'` });
        if (!fs.existsSync(file)) {
          return reply.code(404).send({ detail: `playground asset '${name}' is not built: run \`npm run build\`` });
        }
        // no-cache: revalidated on every load, so a rebuilt page is never mixed with an old script.
        return reply.type(type).header('cache-control', 'no-cache').send(fs.createReadStream(file));
      },
    },
  ];
}

function page(version: string, families: Array<Link & { summary: string }>, authOn: boolean): string {
  const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const rows = families
    .map((f) => `<li><a href="${esc(f.docs)}">${esc(f.title)}</a> — ${esc(f.summary)} (<a href="${esc(f.openapi)}">OpenAPI JSON</a>)</li>`)
    .join('\n');
  const built = fs.existsSync(path.join(WEB_BUILD_DIR, 'app.js'));
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kiapi playground</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
${built ? '<link rel="stylesheet" href="/playground/app.css">\n<script type="module" src="/playground/app.js"></script>' : ''}
</head>
<body data-version="${esc(version)}" data-auth="${authOn ? 'on' : 'off'}">
<noscript><p>The playground needs JavaScript; the API docs below work without it.</p></noscript>
<div id="app">${built ? '' : '<p>The playground is not built: run <code>npm run build</code>.</p>'}</div>
<footer class="links">
<h2>kiapi <small>${esc(version)}</small> — API docs</h2>
<ul>
<li><a href="/docs">Common API</a> — health, files and jobs (<a href="/openapi.json">OpenAPI JSON</a>)</li>
${rows}
<li><a href="/health">/health</a> — server state, loaded models, memory budget</li>
</ul>
</footer>
</body>
</html>
`;
}
