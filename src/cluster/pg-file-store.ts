/**
 * The Files API store of a cluster node: records in the shared database's `files` table (the
 * single-node store's columns and JSON, so a record reads the same in both modes), bytes in the
 * shared object store (a BlobStore), named by file id. Every node sees every file.
 *
 * - Writes stream into the object store (hashed and counted on the way; the upload limit aborts
 *   them), and the record is inserted only once the blob is complete, so no listed file ever
 *   lacks its bytes. A record that could not be inserted takes its blob with it; a blob left
 *   without a record (the node died in between) is removed by `sweepOrphans`.
 * - Reads of bytes go through a local cache of verified copies (InputCache, keyed by SHA-256):
 *   engines, thumbnails and downloads read a local path, fetched once per node.
 * - Inputs of queued and running jobs are held in `file_holds`, seen by every node: deleting a
 *   held file removes its record at once and marks its blob in `deleted_blobs`; the blob goes
 *   when the last hold is released (on release, or at any node's next prune).
 *
 * The database's connection failures are 503s (`unavailable`); the object store's are already
 * UnavailableErrors naming the store.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { BlobStore, StoredBlob } from '../core/files/blob-store.js';
import {
  fileListQuery,
  fileRecordFromRow,
  fileHead,
  readIfSmall,
  resolveContentType,
  type FileFilter,
  type FilePage,
  type FileRecord,
  type FileRow,
  type FileStoreApi,
  type NewFileInfo,
} from '../core/files/file-store.js';
import { RecentBytesMemory, type KeptFile } from '../core/files/recent-bytes.js';
import { sanitizeFilename } from '../core/files/content-type.js';
import { InputError, NotFoundError, clip } from '../core/errors.js';
import { isFileId, newFileId } from '../core/ids.js';
import type { PageQuery } from '../core/paging.js';
import type { InputCache } from './input-cache.js';
import { PgPager } from './pg-pager.js';
import { inTransaction, unavailable } from './pg.js';

/**
 * The tables behind holds (a migration applies it; see schema.ts):
 * - `file_holds`: one row per file a holder (a queued job's submission, on any node) keeps.
 *   `holder` starts with the holding node's id, so the holds of a node that died can be released.
 * - `deleted_blobs`: files whose record is gone and whose blob is still to be deleted (held, or
 *   the object store did not answer); any node's sweep deletes the blob once no hold remains.
 */
export const FILE_HOLDS_SCHEMA = `
  CREATE TABLE file_holds (
    file_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (file_id, holder)
  );
  CREATE INDEX file_holds_holder ON file_holds (holder);
  CREATE TABLE deleted_blobs (
    file_id TEXT PRIMARY KEY,
    deleted_at DOUBLE PRECISION NOT NULL
  );`;

export interface PgFileStoreOptions {
  pool: pg.Pool;
  /** The shared object store holding the bytes. */
  blobs: BlobStore;
  /** Local verified copies of blobs; its directory is the store's `root`. */
  cache: InputCache;
  /** Local scratch for engine output and encodes (created when missing). */
  tmpDir: string;
  /** This node's id: holds are named after it, so a dead node's holds can be released. */
  nodeId: string;
  log: Logger;
}

/** The record's columns (the generated content_family is for filters only). */
const COLUMNS = 'id, filename, content_type, size, created_at, meta';
/** Rows handled per statement by the sweeps, so a large backlog never builds one huge list. */
const BATCH = 500;
/** Blobs without a record younger than this may be an upload whose record is being inserted. */
const ORPHAN_MIN_AGE_S = 24 * 3600;

/** A condition true when no hold keeps the file whose id is `column`. */
const unheld = (column: string) => `NOT EXISTS (SELECT 1 FROM file_holds h WHERE h.file_id = ${column})`;

export class PgFileStore implements FileStoreApi {
  readonly root: string;
  readonly tmpDir: string;
  private readonly pool: pg.Pool;
  private readonly blobs: BlobStore;
  private readonly cache: InputCache;
  private readonly nodeId: string;
  private readonly log: Logger;
  private readonly pager: PgPager<FileRow>;
  /** Bytes of files this node stored lately, for the sync answer (see takeRecent). */
  private readonly recent = new RecentBytesMemory();

  constructor(opts: PgFileStoreOptions) {
    this.pool = opts.pool;
    this.blobs = opts.blobs;
    this.cache = opts.cache;
    this.nodeId = opts.nodeId;
    this.log = opts.log;
    this.root = opts.cache.dir;
    this.tmpDir = opts.tmpDir;
    fs.mkdirSync(this.tmpDir, { recursive: true });
    this.pager = new PgPager<FileRow>(opts.pool, 'files', 'file', ['content_type', 'content_family', 'job_id'], COLUMNS);
  }

  /** A fresh path in the local temp dir. */
  tempPath(suffix = ''): string {
    return path.join(this.tmpDir, `${newFileId()}${suffix}.part`);
  }

  /**
   * Streams `source` into the object store and records it. Over `maxBytes` the upload is aborted
   * and a TooLargeError thrown; nothing is stored for a failed write (no blob, no record).
   */
  async saveStream(source: Readable, info: NewFileInfo, maxBytes: number): Promise<FileRecord> {
    // The first bytes, for sniffing the type; taken on the way, the stream is never buffered.
    let head = Buffer.alloc(0);
    const tap = new Transform({
      transform(chunk: Buffer, _enc, done) {
        if (head.length < 16) head = Buffer.concat([head, chunk.subarray(0, 16)]);
        done(null, chunk);
      },
    });
    // A source error reaches the upload through the tap; a failed upload destroys the tap and so
    // the source: neither is left hanging.
    const piped = pipeline(source, tap);
    const id = newFileId();
    const [put, pipe] = await Promise.allSettled([
      this.blobs.put(id, tap, { maxBytes, tooLargeMessage: `upload is larger than the ${maxBytes} byte limit (KIAPI_MAX_UPLOAD_BYTES)` }),
      piped,
    ]);
    if (put.status === 'rejected') throw put.reason;
    if (pipe.status === 'rejected') {
      // The upload completed but the source failed after its end: not a complete upload.
      await this.blobs.delete(id).catch(() => undefined);
      throw pipe.reason;
    }
    return this.record(id, { ...info, contentType: resolveContentType(info.contentType, head, info.filename) }, put.value);
  }

  /**
   * Uploads a finished local file (engine output, fetched input) and records it; the local file
   * is removed either way. A small file (an image, usually) is read once, whole, and its bytes are
   * kept for `takeRecent`, so a sync answer on this node sends them without fetching the blob.
   */
  async saveFile(tmpPath: string, info: NewFileInfo): Promise<FileRecord> {
    try {
      const small = readIfSmall(tmpPath);
      if ('bytes' in small) return await this.saveBytes(small.bytes, info);
      const contentType = resolveContentType(info.contentType, await fileHead(tmpPath), info.filename);
      const id = newFileId();
      const stored = await this.blobs.put(id, fs.createReadStream(tmpPath, { highWaterMark: 1 << 20 }));
      return await this.record(id, { ...info, contentType }, stored);
    } finally {
      await fsp.rm(tmpPath, { force: true });
    }
  }

  /** Uploads bytes already in memory (an engine's output) and records them; kept for `takeRecent`. */
  async saveBytes(bytes: Buffer, info: NewFileInfo): Promise<FileRecord> {
    const contentType = resolveContentType(info.contentType, bytes.subarray(0, 16), info.filename);
    const id = newFileId();
    const stored = await this.blobs.put(id, Readable.from([bytes]));
    const record = await this.record(id, { ...info, contentType }, stored);
    this.recent.remember(record.file_id, { bytes, modified: modifiedAt(record), record });
    return record;
  }

  /** Inserts the record of a complete blob; a failed insert deletes the blob (nothing half-stored). */
  private async record(id: string, info: NewFileInfo & { contentType: string }, stored: StoredBlob): Promise<FileRecord> {
    const record: FileRecord = {
      file_id: id,
      filename: sanitizeFilename(info.filename),
      content_type: info.contentType,
      size: stored.size,
      created_at: Date.now() / 1000,
      meta: info.meta ?? {},
    };
    try {
      await this.pool.query(
        'INSERT INTO files (id, filename, content_type, size, created_at, meta, job_id, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
        [id, record.filename, record.content_type, record.size, record.created_at, JSON.stringify(record.meta), info.jobId ?? null, stored.sha256],
      );
    } catch (err) {
      await this.blobs.delete(id).catch((e: unknown) => {
        // The orphan sweep removes it later.
        this.log.warn({ file_id: id, err: (e as Error).message }, 'could not delete the blob of a file whose record failed');
      });
      throw unavailable(err, 'recording the file');
    }
    return record;
  }

  /**
   * A file `saveFile` or `saveBytes` stored on this node a moment ago, its bytes and record, once
   * (they are forgotten as they are taken). Files deleted through this node are forgotten at once; a delete
   * on another node within the moment between storing and answering is not seen here (this
   * answer is synchronous), and the bytes are those of the file as it was stored.
   */
  takeRecent(fileId: string): KeptFile | undefined {
    return this.recent.take(fileId);
  }

  private async row(fileId: string): Promise<FileRow | undefined> {
    if (!isFileId(fileId)) return undefined;
    try {
      return (await this.pool.query<FileRow>(`SELECT ${COLUMNS} FROM files WHERE id = $1`, [fileId])).rows[0];
    } catch (err) {
      throw unavailable(err, 'reading the file record');
    }
  }

  async get(fileId: string): Promise<FileRecord> {
    const row = await this.row(fileId);
    if (!row) throw new NotFoundError(`unknown file '${fileId}'`);
    return fileRecordFromRow(row);
  }

  /** For FileRef resolution: unknown ids are the client's mistake (400), named by input. */
  async getForInput(fileId: string, kind: string): Promise<FileRecord> {
    if (!isFileId(fileId)) {
      throw new InputError(`${kind} file_id '${clip(fileId, 100)}' is not a file id (expected file_ followed by hex digits)`);
    }
    const row = await this.row(fileId);
    if (!row) throw new InputError(`unknown ${kind} file_id '${fileId}'`);
    return fileRecordFromRow(row);
  }

  /** The artifact a job saved, if any (the first one stored). */
  async artifactOf(jobId: string): Promise<FileRecord | undefined> {
    try {
      const res = await this.pool.query<FileRow>(`SELECT ${COLUMNS} FROM files WHERE job_id = $1 ORDER BY created_at, id LIMIT 1`, [jobId]);
      return res.rows[0] ? fileRecordFromRow(res.rows[0]) : undefined;
    } catch (err) {
      throw unavailable(err, 'reading the file record');
    }
  }

  /**
   * The blob's SHA-256 (hex), taken while it was stored. A record without one (written by other
   * means) has it computed once from the blob and kept.
   */
  async sha256(fileId: string): Promise<string> {
    return (await this.digestAndDate(fileId)).sha256;
  }

  private async digestAndDate(fileId: string): Promise<{ sha256: string; created_at: number }> {
    let row: { sha256: string | null; created_at: number } | undefined;
    if (isFileId(fileId)) {
      try {
        row = (await this.pool.query<{ sha256: string | null; created_at: number }>('SELECT sha256, created_at FROM files WHERE id = $1', [fileId])).rows[0];
      } catch (err) {
        throw unavailable(err, 'reading the file record');
      }
    }
    if (!row) throw new NotFoundError(`unknown file '${fileId}'`);
    if (row.sha256) return { sha256: row.sha256, created_at: row.created_at };
    const hash = createHash('sha256');
    for await (const chunk of await this.blobs.get(fileId)) hash.update(chunk as Buffer);
    const digest = hash.digest('hex');
    try {
      await this.pool.query('UPDATE files SET sha256 = $1 WHERE id = $2', [digest, fileId]);
    } catch (err) {
      throw unavailable(err, 'recording the file digest');
    }
    return { sha256: digest, created_at: row.created_at };
  }

  /** A page of files, newest first (every file when `limit` is unset), optionally filtered. */
  async list(q: PageQuery = {}, filter: FileFilter = {}): Promise<FilePage> {
    const page = await this.pager.page(fileListQuery(q, filter));
    return { data: page.rows.map(fileRecordFromRow), hasMore: page.hasMore };
  }

  /**
   * A local file holding the file's bytes (engine inputs, downloads, thumbnails): the node's
   * verified copy, fetched from the object store the first time. Its modification time is the
   * file's created_at, which downloads send as Last-Modified (the same on every node).
   */
  async localPath(fileId: string): Promise<string> {
    const { sha256, created_at } = await this.digestAndDate(fileId);
    const when = new Date(created_at * 1000);
    for (let attempt = 1; ; attempt++) {
      const local = await this.cache.materialize(fileId, sha256, this.blobs);
      try {
        // Copies are named by content: two files with the same bytes share one, and the later
        // call sets the time. Blobs never change, so only Last-Modified can differ between them.
        await fsp.utimes(local, when, when);
        return local;
      } catch (err) {
        // Evicted between the two steps (another download needed the room): fetch it again.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw err;
      }
    }
  }

  /**
   * The local copy of a job's input by the digest recorded when the job was accepted, kept from
   * eviction until `release` (the job reads it meanwhile). Needs no record, so a held input whose
   * file was deleted since (its blob is kept) is still read by the node that runs the job. The
   * digest is checked against the bytes fetched.
   */
  async acquireInput(fileId: string, sha256: string): Promise<{ path: string; release: () => void }> {
    if (!isFileId(fileId)) throw new NotFoundError(`unknown file '${fileId}'`);
    return this.cache.acquire(fileId, sha256, this.blobs);
  }

  /**
   * Deletes files (record and bytes) created more than `retentionS` ago, oldest first, except
   * those a queued or running job (on any node) holds: they are kept whole and go in a later
   * sweep. Also deletes the blobs of files deleted earlier whose holds are gone. Returns how many
   * files were deleted. Any number of nodes may prune at once: each file is deleted by one.
   */
  async prune(retentionS: number, now = Date.now() / 1000): Promise<number> {
    const cutoff = now - retentionS;
    let deleted = 0;
    for (;;) {
      // Locking the batch keeps holds off it (a hold locks its files FOR SHARE); files another
      // node's prune (or a hold being taken) has locked are skipped. The DELETE runs on a fresh
      // snapshot, so it sees every hold committed before the lock was taken.
      const batch = await inTransaction(this.pool, async (db) => {
        const picked = await db.query<{ id: string }>(
          `SELECT id FROM files f WHERE created_at < $1 AND ${unheld('f.id')} ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [cutoff, BATCH],
        );
        if (picked.rows.length === 0) return null;
        const gone = await db.query<{ id: string }>(`DELETE FROM files f WHERE f.id = ANY($1) AND ${unheld('f.id')} RETURNING id`, [
          picked.rows.map((r) => r.id),
        ]);
        const ids = gone.rows.map((r) => r.id);
        await this.markDeleted(db, ids, now);
        return ids;
      }).catch((err: unknown) => {
        throw unavailable(err, 'pruning files');
      });
      if (batch === null) break;
      for (const id of batch) this.recent.forget(id);
      deleted += batch.length;
    }
    await this.sweepDeletedQuietly();
    return deleted;
  }

  async delete(fileId: string): Promise<void> {
    if (!isFileId(fileId)) throw new NotFoundError(`unknown file '${fileId}'`);
    await inTransaction(this.pool, async (db) => {
      const gone = await db.query('DELETE FROM files WHERE id = $1', [fileId]);
      if (gone.rowCount === 0) throw new NotFoundError(`unknown file '${fileId}'`);
      await this.markDeleted(db, [fileId]);
    }).catch((err: unknown) => {
      throw unavailable(err, 'deleting the file');
    });
    this.recent.forget(fileId);
    await this.sweepDeletedQuietly([fileId]);
  }

  /** Deletes without complaint; used to undo inputs stored for a request that was then rejected. */
  async discard(fileIds: string[]): Promise<void> {
    const ids = fileIds.filter(isFileId);
    if (ids.length === 0) return;
    const gone = await inTransaction(this.pool, async (db) => {
      const res = await db.query<{ id: string }>('DELETE FROM files WHERE id = ANY($1) RETURNING id', [ids]);
      const deleted = res.rows.map((r) => r.id);
      await this.markDeleted(db, deleted);
      return deleted;
    }).catch((err: unknown) => {
      throw unavailable(err, 'deleting files');
    });
    for (const id of gone) this.recent.forget(id);
    await this.sweepDeletedQuietly(gone);
  }

  private async markDeleted(db: pg.ClientBase, ids: string[], now = Date.now() / 1000): Promise<void> {
    if (ids.length === 0) return;
    await db.query('INSERT INTO deleted_blobs (file_id, deleted_at) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING', [ids, now]);
  }

  /**
   * Keeps the blobs of `fileIds` until the returned function is called: the inputs of a queued
   * job, on whichever node it runs. Deleting a held file removes its record at once (no node
   * lists it) but its bytes only when every hold is released. `holder` names the hold (default:
   * this node's id and a random suffix); the same holder holding a file twice holds it once.
   * Files with no record are not held (there is nothing left to keep). Releasing twice is
   * harmless; a release the database refuses leaves the hold for `releaseHolder`/`releaseNode`.
   */
  async hold(fileIds: string[], holder = `${this.nodeId}:${randomUUID()}`): Promise<() => Promise<void>> {
    const ids = [...new Set(fileIds.filter(isFileId))];
    if (ids.length > 0) {
      try {
        // FOR SHARE: a delete or prune of these files waits for this hold, then sees it.
        await this.pool.query(
          `WITH present AS (SELECT id FROM files WHERE id = ANY($1) FOR SHARE)
           INSERT INTO file_holds (file_id, holder, created_at) SELECT id, $2, $3 FROM present ON CONFLICT DO NOTHING`,
          [ids, holder, Date.now() / 1000],
        );
      } catch (err) {
        throw unavailable(err, 'holding the input files');
      }
    }
    let released = false;
    return async () => {
      if (released || ids.length === 0) return;
      released = true;
      try {
        await this.releaseHolder(holder);
      } catch (err) {
        // Only space is at stake: the blobs stay until the hold is released by other means.
        this.log.warn({ holder, file_ids: ids, err: (err as Error).message }, 'could not release file holds; their deleted blobs stay until released');
      }
    };
  }

  /** Releases every hold named `holder` (on any node) and deletes the blobs nothing holds now. */
  async releaseHolder(holder: string): Promise<void> {
    await this.release('holder = $1', holder);
  }

  /** Releases the holds a node took (it died, or restarted without its queued jobs). */
  async releaseNode(nodeId: string): Promise<void> {
    await this.release('starts_with(holder, $1)', `${nodeId}:`);
  }

  private async release(where: string, arg: string): Promise<void> {
    let ids: string[];
    try {
      ids = (await this.pool.query<{ file_id: string }>(`DELETE FROM file_holds WHERE ${where} RETURNING file_id`, [arg])).rows.map((r) => r.file_id);
    } catch (err) {
      throw unavailable(err, 'releasing file holds');
    }
    await this.sweepDeletedQuietly([...new Set(ids)]);
  }

  /**
   * Deletes the blobs of deleted files that nothing holds (`ids`: only those), each before its
   * marker, so a blob whose deletion failed is tried again by the next sweep. A file with no
   * record can gain no hold, so a blob found unheld here stays unheld.
   */
  async sweepDeleted(ids?: string[]): Promise<number> {
    if (ids?.length === 0) return 0;
    let swept = 0;
    for (;;) {
      let batch: string[];
      try {
        const res = await this.pool.query<{ file_id: string }>(
          `SELECT file_id FROM deleted_blobs d WHERE ($1::text[] IS NULL OR d.file_id = ANY($1)) AND ${unheld('d.file_id')} LIMIT $2`,
          [ids ?? null, BATCH],
        );
        batch = res.rows.map((r) => r.file_id);
      } catch (err) {
        throw unavailable(err, 'deleting file contents');
      }
      if (batch.length === 0) return swept;
      for (const id of batch) {
        await this.blobs.delete(id);
        try {
          await this.pool.query('DELETE FROM deleted_blobs WHERE file_id = $1', [id]);
        } catch (err) {
          throw unavailable(err, 'deleting file contents');
        }
        swept++;
      }
    }
  }

  /** `sweepDeleted` after a delete already committed: a failure only delays the blob's removal. */
  private async sweepDeletedQuietly(ids?: string[]): Promise<void> {
    try {
      await this.sweepDeleted(ids);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not delete the contents of deleted files now; the next prune tries again');
    }
  }

  /**
   * The periodic reconciliation of a cluster: deletes blobs older than `olderThanS` (default a
   * day) that no record names and no deletion is pending for — the node that uploaded them died
   * before recording them. Uploads under way are younger than that. Returns how many went.
   */
  async sweepOrphans(olderThanS = ORPHAN_MIN_AGE_S): Promise<number> {
    const before = new Date(Date.now() - olderThanS * 1000);
    let removed = 0;
    let candidates: string[] = [];
    const check = async () => {
      const ids = candidates.filter(isFileId);
      candidates = [];
      if (ids.length === 0) return;
      let orphans: string[];
      try {
        const res = await this.pool.query<{ id: string }>(
          `SELECT c.id FROM unnest($1::text[]) AS c(id)
           WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.id = c.id) AND NOT EXISTS (SELECT 1 FROM deleted_blobs d WHERE d.file_id = c.id)`,
          [ids],
        );
        orphans = res.rows.map((r) => r.id);
      } catch (err) {
        throw unavailable(err, 'sweeping orphan blobs');
      }
      for (const id of orphans) {
        await this.blobs.delete(id);
        removed++;
      }
    };
    for await (const id of this.blobs.listBefore(before)) {
      candidates.push(id);
      if (candidates.length >= BATCH) await check();
    }
    await check();
    if (removed > 0) this.log.info({ removed }, 'removed file contents that no record names (an upload cut off before it was recorded)');
    return removed;
  }
}

/** What a file's Last-Modified is on every node: its created_at. */
function modifiedAt(record: FileRecord): Date {
  return new Date(record.created_at * 1000);
}
