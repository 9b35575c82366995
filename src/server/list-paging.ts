/** What the list routes share: reading the paging query and writing the page answer. */
import type { preValidationAsyncHookHandler } from 'fastify';
import type { PageQuery } from '../core/paging.js';
import { DEFAULT_PAGE_LIMIT } from './schemas.js';

/**
 * Query values arrive as text and the validator does not coerce (a JSON body must not have `"4"`
 * turned into 4 behind the client's back), so `limit` is turned into a number here when it is
 * written as one; anything else stays text and the schema refuses it with a 422 naming `limit`.
 */
export const numericLimit: preValidationAsyncHookHandler = async (req) => {
  const q = req.query as Record<string, unknown>;
  if (typeof q.limit === 'string' && /^[0-9]{1,9}$/.test(q.limit)) q.limit = Number(q.limit);
};

/** A client that sends none of limit/after/before gets the whole list; one that pages gets pages. */
export function pageQuery(q: { limit?: number; after?: string; before?: string }): PageQuery {
  const paging = q.limit !== undefined || q.after !== undefined || q.before !== undefined;
  return { limit: paging ? (q.limit ?? DEFAULT_PAGE_LIMIT) : undefined, after: q.after, before: q.before };
}

export function listAnswer<T>(data: T[], hasMore: boolean, idOf: (record: T) => string) {
  return {
    object: 'list' as const,
    data,
    has_more: hasMore,
    first_id: data.length > 0 ? idOf(data[0]!) : null,
    last_id: data.length > 0 ? idOf(data[data.length - 1]!) : null,
  };
}
