/** What the list routes share: reading the paging query and writing the page answer. */
import type { PageQuery } from '../core/paging.js';
import { numericQuery } from './query-numbers.js';
import { DEFAULT_PAGE_LIMIT } from './schemas.js';

/** `limit` written as digits is a number (see numericQuery). */
export const numericLimit = numericQuery('limit');

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
