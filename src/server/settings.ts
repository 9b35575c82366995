/**
 * HTTP connection settings: how long a client may take to send a request, and how long a
 * connection may sit with no byte moving. Read with the same EnvReader as every other setting, so
 * a bad value stops start-up with a message naming the variable.
 */
import ipaddr from 'ipaddr.js';
import { EnvReader } from '../core/config.js';
import { readWebhookSettings, type WebhookSettings } from '../core/webhooks/settings.js';
import { readOpenAiSettings, type OpenAiSettings } from '../openai/settings.js';

export interface ServerSettings {
  /**
   * KIAPI_REQUEST_TIMEOUT_S: the longest a client may take to send one whole request, headers
   * and body (Node's `requestTimeout`; answered 408). Generous, because an upload of many GB on a
   * slow link must fit; it bounds clients that trickle a byte now and then. 0 = no limit.
   */
  requestTimeoutS: number;
  /**
   * KIAPI_IDLE_TIMEOUT_S: a connection on which no byte moves for this long is closed — a stalled
   * upload, a client that stops reading a download. Not applied while a sync generation waits for
   * its job (KIAPI_SYNC_TIMEOUT_S bounds that wait). 0 = no limit.
   */
  idleTimeoutS: number;
  /**
   * KIAPI_ALLOWED_HOSTS: host names (lower case, no port) requests may be addressed to besides
   * loopback names and addresses; `*` allows any. Guards against DNS rebinding (request-guard.ts).
   */
  allowedHosts: string[];
  /** Whether kiapi listens on loopback only (then only loopback Hosts and allowedHosts are served). */
  loopbackOnly: boolean;
  /**
   * KIAPI_ALLOWED_ORIGINS: web origins (scheme://host[:port], normalised) whose pages may send
   * state-changing requests and read answers (CORS). Every other cross-site request that would
   * change state is refused.
   */
  allowedOrigins: string[];
  /** The OpenAI-compatible routes (KIAPI_OPENAI_*, KIAPI_PUBLIC_BASE_URL). */
  openai: OpenAiSettings;
  /** Completion webhooks (KIAPI_WEBHOOK_*). */
  webhooks: WebhookSettings;
}

export const DEFAULT_REQUEST_TIMEOUT_S = 3600;
export const DEFAULT_IDLE_TIMEOUT_S = 120;

export function readServerSettings(env: Record<string, string | undefined>, listenHost = '127.0.0.1'): ServerSettings {
  const r = new EnvReader(env);
  const hosts = r.list('KIAPI_ALLOWED_HOSTS', 'host names besides localhost / loopback addresses that requests may be addressed to (Host header; * = any)');
  const origins = r.list('KIAPI_ALLOWED_ORIGINS', 'web origins (e.g. http://localhost:3000) whose pages may POST/DELETE here and read answers (CORS)');
  const allowedHosts: string[] = [];
  for (const h of hosts) {
    const name = h.toLowerCase().replace(/\.$/, '');
    if (name === '*' || /^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$/.test(name) || ipaddr.isValid(name.replace(/^\[|\]$/g, ''))) {
      allowedHosts.push(name.replace(/^\[|\]$/g, ''));
    } else {
      r.problems.push(`KIAPI_ALLOWED_HOSTS: ${JSON.stringify(h)} is not a host name (write names without scheme or port, e.g. kiapi.lan)`);
    }
  }
  const allowedOrigins: string[] = [];
  for (const o of origins) {
    const origin = normalizeOrigin(o);
    if (origin) allowedOrigins.push(origin);
    else r.problems.push(`KIAPI_ALLOWED_ORIGINS: ${JSON.stringify(o)} is not an origin (write scheme://host[:port], e.g. http://localhost:3000)`);
  }
  const settings: ServerSettings = {
    allowedHosts,
    allowedOrigins,
    loopbackOnly: isLoopbackName(listenHost),
    requestTimeoutS: r.number('KIAPI_REQUEST_TIMEOUT_S', DEFAULT_REQUEST_TIMEOUT_S, { min: 0, max: 7 * 24 * 3600 }, 'longest a client may take to send one request, in seconds (0: no limit)'),
    openai: readOpenAiSettings(env),
    idleTimeoutS: r.number('KIAPI_IDLE_TIMEOUT_S', DEFAULT_IDLE_TIMEOUT_S, { min: 0, max: 7 * 24 * 3600 }, 'close a connection on which no byte moves this long, in seconds (0: no limit)'),
    webhooks: readWebhookSettings(env),
  };
  r.check();
  return settings;
}

/** `scheme://host[:port]` as browsers send it in Origin (default port dropped), or null. */
export function normalizeOrigin(value: string): string | null {
  try {
    const u = new URL(value);
    if (!['http:', 'https:'].includes(u.protocol) || u.username || u.password || (u.pathname !== '/' && u.pathname !== '') || u.search || u.hash) return null;
    return u.origin;
  } catch {
    return null;
  }
}

/** `localhost`, `*.localhost` (RFC 6761) or a loopback address (127.0.0.0/8, ::1, mapped forms). */
export function isLoopbackName(host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '').replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (!ipaddr.isValid(h)) return false;
  return ipaddr.process(h).range() === 'loopback';
}
