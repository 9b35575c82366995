/**
 * Bearer-token auth (KIAPI_AUTH_TOKEN). The original compared against the rendered secret
 * `**********` and so never accepted the real token (docs/compatibility.md §11.1); here the real token is compared in
 * constant time. Health, the model list, the playground page (`/`) and its assets, the docs pages, their assets and
 * the OpenAPI documents stay open (their route definitions say `public`): the docs pages fetch
 * those documents from the browser before anyone can enter a token (docs/compatibility.md §11.22).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { UnauthorizedError } from '../core/errors.js';

export function installAuth(app: FastifyInstance, token: string | null): void {
  if (!token) return;
  const expected = digest(`Bearer ${token}`);
  app.addHook('onRequest', async (req) => {
    // Whether a route is public is part of its one definition (route-def.ts); a request that
    // matches no route (a 404, or a 405 for a known path) is answered only to a token holder.
    if (req.routeOptions.config.public === true) return;
    const given = req.headers.authorization;
    // Hashing first makes the comparison constant-time whatever the lengths are.
    if (typeof given !== 'string' || !timingSafeEqual(digest(given), expected)) throw new UnauthorizedError();
  });
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}
