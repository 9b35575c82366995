/** Request snapshots and resolved values shared by the image families. */
import { randomInt } from 'node:crypto';
import { redactUserInfo } from '../../core/files/url-safety.js';

/** The original draws seeds in 0..2^31-1 when omitted. */
export function resolveSeed(seed: number | null | undefined): number {
  return seed ?? randomInt(0, 2 ** 31);
}

/**
 * Job params keep the request, but a data URL can be megabytes: keep its head and size only
 * (the input itself is stored as a file and its id recorded in the result). A `url`'s user and
 * password are credentials: they are not kept. Bodies are at most MAX_JSON_DEPTH deep when they
 * get here; the depth bound keeps this recursion safe whatever calls it.
 */
export function snapshot(value: unknown, depth = 0): unknown {
  if (depth > MAX_SNAPSHOT_DEPTH) return '[nested too deep]';
  if (Array.isArray(value)) return value.map((v) => snapshot(v, depth + 1));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === 'data_url' && typeof v === 'string' && v.length > 80) out[k] = `${v.slice(0, 64)}…(${v.length} chars)`;
      else if (k === 'url' && typeof v === 'string') out[k] = redactUserInfo(v);
      else out[k] = snapshot(v, depth + 1);
    }
    return out;
  }
  return value;
}

const MAX_SNAPSHOT_DEPTH = 100;
