/**
 * Keyset (cursor) paging for the job and file lists, newest first. A page is found through the
 * `(created_at, rowid)` order of an index, never with OFFSET, so reading a page costs the same
 * with a thousand records as with a hundred thousand: the cursor's own key is one primary-key
 * lookup, then the index is entered at that key and `limit + 1` rows are read (the extra row only
 * says whether there is more).
 *
 * Cursors are record ids, as in OpenAI's list endpoints: `after` = the records that come after
 * this one in the list (older), `before` = the records that come before it (newer). A cursor that
 * names no record (deleted, pruned, or never there) is the client's mistake and is reported with
 * the parameter's name.
 */
import type { Statement } from 'better-sqlite3';
import type { Db } from './db.js';
import { InputError } from './errors.js';

export interface PageQuery {
  /** Page size; undefined = no limit (the whole list, for clients that do not page). */
  limit?: number;
  after?: string;
  before?: string;
  /** Column = value filters; only columns the caller allows reach the SQL. */
  filters?: Record<string, string | undefined>;
}

export interface Page<Row> {
  rows: Row[];
  /** More records lie beyond this page in the direction of travel (older for `after`, newer for `before`). */
  hasMore: boolean;
}

interface Key {
  created_at: number;
  rowid: number;
}

/** Pages of one table; `noun` names its records in messages ("job", "file"). */
export class KeysetPager<Row> {
  private readonly keyOf;
  private readonly cache = new Map<string, Statement<unknown[], Row>>();

  constructor(
    private readonly db: Db,
    private readonly table: 'jobs' | 'files',
    private readonly noun: string,
    private readonly filterColumns: readonly string[],
  ) {
    this.keyOf = db.prepare<[string], Key>(`SELECT created_at, rowid FROM ${table} WHERE id = ?`);
  }

  page(q: PageQuery): Page<Row> {
    const { sql, args, ascending } = this.query(q);
    const rows = this.statement(sql).all(...args);
    const hasMore = q.limit !== undefined && rows.length > q.limit;
    if (hasMore) rows.length = q.limit!;
    if (ascending) rows.reverse();
    return { rows, hasMore };
  }

  /**
   * SQLite's plan for the page `q` would read, one line per step: lets tests hold every filter to
   * an index walk (no full scan, no sort of all matches). kiapi never runs ANALYZE, so the plan
   * does not depend on how many rows the table has.
   */
  explain(q: PageQuery): string[] {
    const { sql, args } = this.query(q);
    return this.db
      .prepare<unknown[], { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`)
      .all(...args)
      .map((r) => r.detail);
  }

  private query(q: PageQuery): { sql: string; args: (string | number)[]; ascending: boolean } {
    const where: string[] = [];
    const args: (string | number)[] = [];
    for (const [column, value] of Object.entries(q.filters ?? {})) {
      if (value === undefined) continue;
      if (!this.filterColumns.includes(column)) throw new Error(`no filter on ${this.table}.${column}`);
      where.push(`${column} = ?`);
      args.push(value);
    }
    if (q.after !== undefined) {
      const k = this.cursor('after', q.after);
      where.push('(created_at, rowid) < (?, ?)');
      args.push(k.created_at, k.rowid);
    }
    if (q.before !== undefined) {
      const k = this.cursor('before', q.before);
      where.push('(created_at, rowid) > (?, ?)');
      args.push(k.created_at, k.rowid);
    }
    // Paging backwards alone walks the index upwards from the cursor (the newer records right
    // before it), then the page is turned back to newest-first.
    const ascending = q.before !== undefined && q.after === undefined;
    const dir = ascending ? 'ASC' : 'DESC';
    let sql = `SELECT * FROM ${this.table}${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at ${dir}, rowid ${dir}`;
    if (q.limit !== undefined) {
      sql += ' LIMIT ?';
      args.push(q.limit + 1);
    }
    return { sql, args, ascending };
  }

  private cursor(param: 'after' | 'before', id: string): Key {
    const key = this.keyOf.get(id);
    if (!key) {
      throw new InputError(`${param}: no ${this.noun} '${id}' (deleted or pruned?); start again from the first page, without ${param}`);
    }
    return key;
  }

  /** The few SQL shapes (filters × cursors × limit) are prepared once each. */
  private statement(sql: string): Statement<unknown[], Row> {
    let stmt = this.cache.get(sql);
    if (!stmt) {
      stmt = this.db.prepare<unknown[], Row>(sql);
      this.cache.set(sql, stmt);
    }
    return stmt;
  }
}
