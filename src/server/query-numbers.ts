/**
 * Query values arrive as text and the validator does not coerce (a JSON body must not have `"4"`
 * turned into 4 behind the client's back), so the integer query parameters of a route are turned
 * into numbers here when they are written as one; anything else stays text and the schema refuses
 * it with a 422 naming the parameter.
 */
import type { preValidationAsyncHookHandler } from 'fastify';

export function numericQuery(...names: string[]): preValidationAsyncHookHandler {
  return async (req) => {
    const q = req.query as Record<string, unknown>;
    for (const name of names) {
      const v = q[name];
      if (typeof v === 'string' && /^[0-9]{1,9}$/.test(v)) q[name] = Number(v);
    }
  };
}
