/**
 * Webhook signatures as the Standard Webhooks convention defines them: the signed content is
 * `<webhook-id>.<webhook-timestamp>.<body>`, the key is the secret's bytes (base64 after the
 * `whsec_` prefix), the MAC is HMAC-SHA256, and the header is `webhook-signature: v1,<base64>`.
 * Receivers verify with any Standard Webhooks library (the tests use the reference one).
 */
import { createHmac, randomBytes } from 'node:crypto';

const PREFIX = 'whsec_';
/** The convention asks for 24 to 64 random bytes. */
const MIN_BYTES = 24;
const MAX_BYTES = 64;

/** The key bytes of a `whsec_<base64>` secret, or what is wrong with it. */
export function parseSecret(secret: string): { key: Buffer; problem?: undefined } | { key?: undefined; problem: string } {
  const how = `expected ${PREFIX} followed by the base64 of ${MIN_BYTES} to ${MAX_BYTES} random bytes, e.g. ${PREFIX}$(openssl rand -base64 32)`;
  if (!secret.startsWith(PREFIX)) return { problem: how };
  const text = secret.slice(PREFIX.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || text.length % 4 !== 0) return { problem: `not base64 after ${PREFIX}; ${how}` };
  const key = Buffer.from(text, 'base64');
  if (key.length < MIN_BYTES || key.length > MAX_BYTES) return { problem: `${key.length} bytes after ${PREFIX}; ${how}` };
  return { key };
}

export function generateSecret(): string {
  return `${PREFIX}${randomBytes(32).toString('base64')}`;
}

/** The `webhook-signature` header value for one attempt. */
export function signature(key: Buffer, id: string, timestampS: number, body: string): string {
  const mac = createHmac('sha256', key).update(`${id}.${timestampS}.${body}`).digest('base64');
  return `v1,${mac}`;
}
