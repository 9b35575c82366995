/** Request snapshots and resolved values shared by the image families. */
import { randomInt } from 'node:crypto';

/** The original draws seeds in 0..2^31-1 when omitted. */
export function resolveSeed(seed: number | null | undefined): number {
  return seed ?? randomInt(0, 2 ** 31);
}

/**
 * Job params keep the request, but a data URL can be megabytes: keep its head and size only
 * (the input itself is stored as a file and its id recorded in the result).
 */
export function snapshot(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snapshot);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = k === 'data_url' && typeof v === 'string' && v.length > 80 ? `${v.slice(0, 64)}…(${v.length} chars)` : snapshot(v);
    }
    return out;
  }
  return value;
}
