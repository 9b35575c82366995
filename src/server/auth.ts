/**
 * Bearer-token auth (KIAPI_AUTH_TOKEN). The original compared against the rendered secret
 * `**********` and so never accepted the real token (docs/compatibility.md §11.1); here the real token is compared in
 * constant time. Health, the start page (`/`), the docs pages, their assets and the OpenAPI documents stay open: the
 * docs pages fetch those documents from the browser before anyone can enter a token (docs/compatibility.md §11.22).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { UnauthorizedError } from '../core/errors.js';

const PUBLIC = [
  /^\/$/,
  /^\/health$/,
  /^\/openapi\.json$/,
  /^\/(docs|redoc)(\/.*)?$/,
  /^\/v1\/models$/,
  /^\/v1\/[a-z]+\/[a-z0-9-]+\/(openapi\.json|docs|redoc)$/,
];

export function isPublicPath(path: string): boolean {
  return PUBLIC.some((re) => re.test(path));
}

export function installAuth(app: FastifyInstance, token: string | null): void {
  if (!token) return;
  const expected = digest(`Bearer ${token}`);
  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0] ?? '';
    if (isPublicPath(path)) return;
    const given = req.headers.authorization;
    // Hashing first makes the comparison constant-time whatever the lengths are.
    if (typeof given !== 'string' || !timingSafeEqual(digest(given), expected)) throw new UnauthorizedError();
  });
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}
