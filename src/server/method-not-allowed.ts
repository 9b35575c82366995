/**
 * A known path asked with a method it does not serve answers 405 with an `Allow` header (as the
 * original's FastAPI did), not 404: the path exists, the method is wrong. Runs before body
 * parsing, so a body-less QUERY or a PUT with any Content-Type gets the same clear answer.
 */
import type { FastifyInstance } from 'fastify';

interface KnownPath {
  pattern: string;
  re: RegExp;
  methods: Set<string>;
}

export function installMethodNotAllowed(app: FastifyInstance): void {
  const known = new Map<string, KnownPath>();
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    let entry = known.get(route.url);
    if (!entry) {
      entry = { pattern: route.url, re: patternRegExp(route.url), methods: new Set() };
      known.set(route.url, entry);
    }
    for (const m of methods) entry.methods.add(m.toUpperCase());
  });

  app.addHook('onRequest', async (req, reply) => {
    if (!req.is404) return;
    const path = req.url.split('?')[0] ?? '';
    const allowed = new Set<string>();
    for (const entry of known.values()) if (entry.re.test(path)) for (const m of entry.methods) allowed.add(m);
    if (allowed.size === 0 || allowed.has(req.method)) return;
    const allow = [...allowed].sort().join(', ');
    return reply.code(405).header('allow', allow).send({ detail: `Method Not Allowed: ${req.method} ${path} (allowed: ${allow})` });
  });
}

/** `/v1/files/:file_id` → `^/v1/files/[^/]+$`; `*` matches the rest of the path. */
function patternRegExp(pattern: string): RegExp {
  const body = pattern
    .split('/')
    .map((seg) => (seg === '*' ? '.*' : seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${body}$`);
}
