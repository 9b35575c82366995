/**
 * kiapi runs on desktops with no token by default, next to a web browser. Two browser attacks are
 * refused here, before auth, routing or body parsing:
 *
 * - DNS rebinding: a page on evil.example re-resolves its own name to 127.0.0.1 and then talks to
 *   kiapi as "same origin". Its requests still carry `Host: evil.example`, so only Hosts kiapi is
 *   known by are served: loopback names and addresses, IP literals when listening beyond loopback
 *   (rebinding needs a DNS name), and the names in KIAPI_ALLOWED_HOSTS (`*`: any).
 * - Cross-site requests: any page may POST to http://127.0.0.1:8000 (a form, or fetch in no-cors
 *   mode with a text/plain body, which kiapi parses as JSON like the original). A request that
 *   changes state and comes from another origin (Origin header, or Sec-Fetch-Site when a browser
 *   sends no Origin) is refused unless that origin is in KIAPI_ALLOWED_ORIGINS; those origins also
 *   get CORS headers, preflight included. Clients that send no Origin (curl, SDKs) are unaffected.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import ipaddr from 'ipaddr.js';
import { ForbiddenError, clip } from '../core/errors.js';
import { isLoopbackName, normalizeOrigin, type ServerSettings } from './settings.js';

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Headers a kiapi client reads from answers; exposed to allowed origins. */
const EXPOSED = 'X-Kiapi-File-Id, X-Kiapi-Job-Id, Content-Disposition, Content-Length, ETag, Retry-After, Warning, Server-Timing';
const ALLOWED_METHODS = 'GET, HEAD, POST, DELETE, OPTIONS';
const ALLOWED_HEADERS = 'Authorization, Content-Type, Accept, Range, If-Match, If-None-Match, If-Range, If-Modified-Since, If-Unmodified-Since';

export function installRequestGuard(app: FastifyInstance, settings: ServerSettings): void {
  const origins = new Set(settings.allowedOrigins);
  // A client sends the same Host on every request: once accepted, a value is not parsed again.
  // Bounded, since Host values are the client's to choose.
  const acceptedHosts = new Set<string>();
  app.addHook('onRequest', async (req, reply) => {
    const rawHost = one(req.headers.host);
    if (rawHost === undefined || !acceptedHosts.has(rawHost)) {
      checkHost(req, settings);
      if (rawHost !== undefined && acceptedHosts.size < 64) acceptedHosts.add(rawHost);
    }
    const origin = one(req.headers.origin);
    const allowed = origin !== undefined && origins.has(normalizeOrigin(origin) ?? '');
    if (allowed) {
      void reply.header('access-control-allow-origin', normalizeOrigin(origin)!).header('vary', 'Origin');
      void reply.header('access-control-expose-headers', EXPOSED);
    }
    if (req.method === 'OPTIONS' && origin !== undefined && req.headers['access-control-request-method'] !== undefined) {
      return preflight(reply, origin, allowed);
    }
    if (!STATE_CHANGING.has(req.method) || allowed) return;
    if (origin !== undefined) {
      if (!sameOrigin(origin, req)) {
        throw new ForbiddenError(
          `cross-site request refused: a page from ${clip(origin, 100)} may not ${req.method} here; ` +
            'add that origin to KIAPI_ALLOWED_ORIGINS to allow it (clients that are not web pages send no Origin and are not affected)',
        );
      }
      return;
    }
    const site = one(req.headers['sec-fetch-site']);
    if (site === 'cross-site' || site === 'same-site') {
      throw new ForbiddenError(
        `cross-site request refused (Sec-Fetch-Site: ${site}): a web page from another site may not ${req.method} here; ` +
          'serve it from an origin listed in KIAPI_ALLOWED_ORIGINS',
      );
    }
  });
}

function checkHost(req: FastifyRequest, settings: ServerSettings): void {
  const raw = one(req.headers.host);
  // HTTP/1.1 without Host is refused by Node itself; HTTP/1.0 may omit it (no browser does).
  if (raw === undefined || raw === '') return;
  const host = hostName(raw);
  if (host !== null && hostAllowed(host, settings)) return;
  const where = settings.loopbackOnly ? 'localhost or a loopback address' : 'an IP address, localhost';
  throw new ForbiddenError(
    `Host ${JSON.stringify(clip(raw, 100))} is not served here: kiapi answers only requests addressed to ${where} or a name in KIAPI_ALLOWED_HOSTS ` +
      '(a guard against DNS rebinding); add the name to KIAPI_ALLOWED_HOSTS to use it',
  );
}

export function hostAllowed(host: string, settings: ServerSettings): boolean {
  if (isLoopbackName(host)) return true;
  if (settings.allowedHosts.includes('*') || settings.allowedHosts.includes(host)) return true;
  // Beyond loopback an address literal cannot be a rebinding (that needs a name to re-resolve).
  return !settings.loopbackOnly && ipaddr.isValid(host);
}

/** The name of a Host header value, lower case, without port, brackets or a trailing dot. */
function hostName(value: string): string | null {
  const v = value.trim().toLowerCase();
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    if (end < 0) return null;
    const rest = v.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null;
    return v.slice(1, end);
  }
  const m = /^([^:]+)(?::\d{1,5})?$/.exec(v);
  return m ? m[1]!.replace(/\.$/, '') : null;
}

/** The page's origin is this server as the browser addressed it (the docs pages' "Try it out"). */
function sameOrigin(origin: string, req: FastifyRequest): boolean {
  const o = normalizeOrigin(origin);
  const host = one(req.headers.host);
  if (o === null || host === undefined) return false;
  return o === normalizeOrigin(`http://${host}`) || o === normalizeOrigin(`https://${host}`);
}

function preflight(reply: FastifyReply, origin: string, allowed: boolean): FastifyReply {
  if (!allowed) {
    throw new ForbiddenError(`cross-origin requests from ${clip(origin, 100)} are not allowed; add that origin to KIAPI_ALLOWED_ORIGINS to allow them`);
  }
  return reply
    .code(204)
    .header('access-control-allow-methods', ALLOWED_METHODS)
    .header('access-control-allow-headers', ALLOWED_HEADERS)
    .header('access-control-max-age', '600')
    .send();
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
