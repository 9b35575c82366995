/**
 * Keyset (cursor) paging of the shared job and file lists, newest first, with the single-node
 * pager's semantics (core/paging.ts): cursors are record ids, `after` = older, `before` = newer, a
 * cursor naming no record is the client's 400. PostgreSQL has no rowid, so `(created_at, id)` is
 * the order; the list indexes end in `id` for it.
 */
import type pg from 'pg';
import { InputError } from '../core/errors.js';
import type { Page, PageQuery } from '../core/paging.js';
import { unavailable } from './pg.js';

export class PgPager<Row> {
  constructor(
    private readonly pool: pg.Pool,
    private readonly table: 'jobs' | 'files',
    private readonly noun: string,
    private readonly filterColumns: readonly string[],
    /** The SELECT list (default every column). */
    private readonly columns = '*',
  ) {}

  async page(q: PageQuery): Promise<Page<Row>> {
    try {
      const where: string[] = [];
      const args: unknown[] = [];
      const arg = (v: unknown) => {
        args.push(v);
        return `$${args.length}`;
      };
      for (const [column, value] of Object.entries(q.filters ?? {})) {
        if (value === undefined) continue;
        if (!this.filterColumns.includes(column)) throw new Error(`no filter on ${this.table}.${column}`);
        where.push(`${column} = ${arg(value)}`);
      }
      if (q.after !== undefined) {
        const k = await this.cursor('after', q.after);
        where.push(`(created_at, id) < (${arg(k.created_at)}, ${arg(q.after)})`);
      }
      if (q.before !== undefined) {
        const k = await this.cursor('before', q.before);
        where.push(`(created_at, id) > (${arg(k.created_at)}, ${arg(q.before)})`);
      }
      const ascending = q.before !== undefined && q.after === undefined;
      const dir = ascending ? 'ASC' : 'DESC';
      let sql = `SELECT ${this.columns} FROM ${this.table}${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at ${dir}, id ${dir}`;
      if (q.limit !== undefined) sql += ` LIMIT ${arg(q.limit + 1)}`;
      const rows = (await this.pool.query(sql, args)).rows as Row[];
      const hasMore = q.limit !== undefined && rows.length > q.limit;
      if (hasMore) rows.length = q.limit!;
      if (ascending) rows.reverse();
      return { rows, hasMore };
    } catch (err) {
      throw unavailable(err);
    }
  }

  private async cursor(param: 'after' | 'before', id: string): Promise<{ created_at: number }> {
    const res = await this.pool.query<{ created_at: number }>(`SELECT created_at FROM ${this.table} WHERE id = $1`, [id]);
    const key = res.rows[0];
    if (!key) {
      throw new InputError(`${param}: no ${this.noun} '${id}' (deleted or pruned?); start again from the first page, without ${param}`);
    }
    return key;
  }
}
