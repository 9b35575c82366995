/**
 * The Files API store: records in SQLite, blobs in `filesRoot` named by file id alone. Naming
 * blobs by id (no suffix, no sidecar) removes the original's `.json` collision (docs/compatibility.md §11.15) and means
 * a path is only ever built from an id that passed `isFileId` (docs/compatibility.md §11.16).
 *
 * Writes go to a temp file first and are renamed into place, so a crash or a full disk never
 * leaves a partial blob under a listed id. When the files root is on another filesystem than the
 * temp dir (KIAPI_FILES_ROOT on another disk) the rename cannot cross: the bytes are copied to a
 * staging name beside the blobs and renamed from there. A full disk is a StorageFullError (507)
 * that names the directory to free space in.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Db } from '../db.js';
import { InputError, NotFoundError, TooLargeError, clip } from '../errors.js';
import { diskFullError, isDiskFull } from './disk-full.js';
import { isFileId, newFileId } from '../ids.js';
import { KeysetPager, type PageQuery } from '../paging.js';
import { sanitizeFilename, sniffImageType, typeFromExtension } from './content-type.js';
import { RECENT_MAX_BYTES, RecentBytesMemory, type KeptFile, type RecentBytes } from './recent-bytes.js';

export type { KeptFile, RecentBytes } from './recent-bytes.js';

export interface FileRecord {
  file_id: string;
  filename: string;
  content_type: string;
  size: number;
  created_at: number;
  meta: Record<string, unknown>;
}

/** A `files` row (SQLite and the cluster's PostgreSQL have the same columns). */
export interface FileRow {
  id: string;
  filename: string;
  content_type: string;
  size: number;
  created_at: number;
  meta: string;
}

/** What GET /v1/files can narrow the list to; both together mean both must hold. */
export interface FileFilter {
  /** A media type (`image/png`) or a type family (`image/*`). */
  contentType?: string;
  /** The job whose artifacts to list. */
  jobId?: string;
}

export interface NewFileInfo {
  filename: string;
  /** A type the client or engine stated; null lets the store sniff it. */
  contentType?: string | null;
  meta?: Record<string, unknown>;
  /** What is being saved, for a disk-full message ("the image", "init_image"). */
  purpose?: string;
  /** The job whose artifact this is (kept internal; see `artifactOf`). */
  jobId?: string;
}

/** Staging names beside the blobs (cross-filesystem copies): never a file id, removed at start. */
const STAGING_PREFIX = '.staging-';

export interface FilePage {
  data: FileRecord[];
  hasMore: boolean;
}

/**
 * The Files API store as the rest of kiapi uses it. A single node keeps records in SQLite and
 * bytes in a directory (FileStore); a cluster node keeps them in the shared database and object
 * store. Reads of bytes go through `localPath`, which on a cluster node brings the blob into a
 * local cache first.
 */
export interface FileStoreApi {
  /** The directory of stored bytes on this machine (messages never show paths under it). */
  readonly root: string;
  /** Scratch space for engine output and encodes (same filesystem as `root` where possible). */
  readonly tmpDir: string;
  tempPath(suffix?: string): string;
  saveStream(source: Readable, info: NewFileInfo, maxBytes: number): Promise<FileRecord>;
  saveFile(tmpPath: string, info: NewFileInfo): Promise<FileRecord>;
  saveBytes(bytes: Buffer, info: NewFileInfo): Promise<FileRecord>;
  /** A file this node stored moments ago, bytes and record, handed over once (the sync answer). */
  takeRecent(fileId: string): KeptFile | undefined;
  get(fileId: string): Promise<FileRecord>;
  getForInput(fileId: string, kind: string): Promise<FileRecord>;
  artifactOf(jobId: string): Promise<FileRecord | undefined>;
  sha256(fileId: string): Promise<string>;
  list(q?: PageQuery, filter?: FileFilter): Promise<FilePage>;
  localPath(fileId: string): Promise<string>;
  prune(retentionS: number): Promise<number>;
  delete(fileId: string): Promise<void>;
  discard(fileIds: string[]): Promise<void>;
  hold(fileIds: string[]): Promise<() => Promise<void>>;
}

/** The first bytes of a file, what type sniffing looks at. */
export async function fileHead(file: string): Promise<Buffer> {
  const handle = await fsp.open(file, 'r');
  const head = Buffer.alloc(16);
  try {
    await handle.read(head, 0, 16, 0);
  } finally {
    await handle.close();
  }
  return head;
}

/**
 * A file's bytes and modification time when it is at most RECENT_MAX_BYTES (else just its size),
 * read on this thread. Each file-system call through the thread pool costs a round trip of tens of
 * microseconds on a busy machine: an image's stat, read (open, fstat, read, close) and rename that
 * way took ~0.3 ms per job, the same calls made directly under 0.1 ms (BENCHMARKS.md, "overhead").
 * Only small files are read so: a few MiB from the page cache blocks the event loop for well under
 * a millisecond; larger ones are streamed.
 */
export function readIfSmall(file: string): RecentBytes | { size: number } {
  const fd = fs.openSync(file, 'r');
  try {
    const stat = fs.fstatSync(fd);
    if (stat.size > RECENT_MAX_BYTES) return { size: stat.size };
    const bytes = Buffer.allocUnsafe(stat.size);
    let got = 0;
    while (got < bytes.length) {
      const n = fs.readSync(fd, bytes, got, bytes.length - got, got);
      if (n === 0) break;
      got += n;
    }
    return { bytes: bytes.subarray(0, got), modified: stat.mtime };
  } finally {
    fs.closeSync(fd);
  }
}

export class FileStore implements FileStoreApi {
  private readonly insert;
  private readonly selectOne;
  private readonly exists;
  private readonly selectIds;
  private readonly deleteOne;
  private readonly selectByJob;
  private readonly selectDigest;
  private readonly updateDigest;
  /** Inputs of queued and running jobs: file id → number of holders. */
  private readonly holds = new Map<string, number>();
  /** Held files whose record was deleted: their blob goes when the last holder lets go. */
  private readonly deferred = new Set<string>();
  private readonly pager: KeysetPager<FileRow>;
  /** Bytes of files saveFile stored lately, for the sync answer (see takeRecent). */
  private readonly recent = new RecentBytesMemory();
  private readonly selectExpired;

  constructor(
    private readonly db: Db,
    readonly root: string,
    readonly tmpDir: string,
    private readonly log: Logger,
  ) {
    fs.mkdirSync(root, { recursive: true });
    fs.mkdirSync(tmpDir, { recursive: true });
    this.insert = db.prepare(
      'INSERT INTO files (id, filename, content_type, size, created_at, meta, job_id, sha256) VALUES (@id, @filename, @content_type, @size, @created_at, @meta, @job_id, @sha256)',
    );
    this.selectDigest = db.prepare<[string], { sha256: string | null }>('SELECT sha256 FROM files WHERE id = ?');
    this.updateDigest = db.prepare('UPDATE files SET sha256 = ? WHERE id = ?');
    this.selectByJob = db.prepare<[string], FileRow>('SELECT * FROM files WHERE job_id = ? ORDER BY rowid LIMIT 1');
    this.selectOne = db.prepare<[string], FileRow>('SELECT * FROM files WHERE id = ?');
    this.exists = db.prepare<[string], { one: number }>('SELECT 1 AS one FROM files WHERE id = ?');
    this.selectIds = db.prepare<[], string>('SELECT id FROM files');
    this.deleteOne = db.prepare('DELETE FROM files WHERE id = ?');
    this.pager = new KeysetPager<FileRow>(db, 'files', 'file', ['content_type', 'content_family', 'job_id']);
    this.selectExpired = db.prepare<[number, number], { id: string }>(
      'SELECT id FROM files WHERE created_at < ? ORDER BY created_at LIMIT ?',
    );
  }

  /** A fresh path in the temp dir (same data dir, so renames into the store stay atomic). */
  tempPath(suffix = ''): string {
    return path.join(this.tmpDir, `${newFileId()}${suffix}.part`);
  }

  /**
   * Streams `source` to disk and records it. Over `maxBytes` the partial file is removed and a
   * TooLargeError thrown; nothing is recorded for a failed write.
   */
  async saveStream(source: Readable, info: NewFileInfo, maxBytes: number): Promise<FileRecord> {
    const tmp = this.tempPath();
    let size = 0;
    let head = Buffer.alloc(0);
    const hash = createHash('sha256');
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > maxBytes) {
          done(new TooLargeError(`upload is larger than the ${maxBytes} byte limit (KIAPI_MAX_UPLOAD_BYTES)`));
          return;
        }
        if (head.length < 16) head = Buffer.concat([head, chunk.subarray(0, 16)]);
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(source, counter, fs.createWriteStream(tmp, { flags: 'wx' }));
      const contentType = resolveContentType(info.contentType, head, info.filename);
      return await this.adopt(tmp, { ...info, contentType }, size, hash.digest('hex'));
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      if (isDiskFull(err)) throw diskFullError(err, info.purpose ?? 'the upload', this.tmpDir);
      throw err;
    }
  }

  /**
   * Moves a finished file (engine output, fetched input) into the store and records it. A small
   * file (an image, usually) is read once, whole (see readIfSmall): that one read gives its size,
   * its first bytes and its SHA-256, and its bytes are kept for `takeRecent`, so a sync answer
   * sends them without reading the blob again.
   */
  async saveFile(tmpPath: string, info: NewFileInfo): Promise<FileRecord> {
    try {
      const small = readIfSmall(tmpPath);
      if ('bytes' in small) {
        const { bytes } = small;
        const contentType = resolveContentType(info.contentType, bytes.subarray(0, 16), info.filename);
        const record = await this.adopt(tmpPath, { ...info, contentType }, bytes.length, createHash('sha256').update(bytes).digest('hex'), true);
        this.recent.remember(record.file_id, { ...small, record });
        return record;
      }
      const contentType = resolveContentType(info.contentType, await fileHead(tmpPath), info.filename);
      return await this.adopt(tmpPath, { ...info, contentType }, small.size, await sha256File(tmpPath));
    } catch (err) {
      await fsp.rm(tmpPath, { force: true });
      if (isDiskFull(err)) throw diskFullError(err, info.purpose ?? 'the file', this.root);
      throw err;
    }
  }

  /**
   * Stores bytes already in memory (an engine's output) and records them: written once to a temp
   * name, renamed into place, recorded; kept for `takeRecent` like `saveFile`'s small files.
   * Small bytes are written synchronously, for the reason readIfSmall gives.
   */
  async saveBytes(bytes: Buffer, info: NewFileInfo): Promise<FileRecord> {
    const tmp = this.tempPath();
    try {
      const small = bytes.length <= RECENT_MAX_BYTES;
      let modified: Date;
      if (small) {
        fs.writeFileSync(tmp, bytes, { flag: 'wx' });
        modified = fs.statSync(tmp).mtime;
      } else {
        const handle = await fsp.open(tmp, 'wx');
        try {
          await handle.writeFile(bytes);
          modified = (await handle.stat()).mtime;
        } finally {
          await handle.close();
        }
      }
      const contentType = resolveContentType(info.contentType, bytes.subarray(0, 16), info.filename);
      const record = await this.adopt(tmp, { ...info, contentType }, bytes.length, createHash('sha256').update(bytes).digest('hex'), small);
      this.recent.remember(record.file_id, { bytes, modified, record });
      return record;
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      if (isDiskFull(err)) throw diskFullError(err, info.purpose ?? 'the file', this.root);
      throw err;
    }
  }

  /**
   * A file `saveFile` or `saveBytes` stored a moment ago, its bytes and record, once (they are
   * forgotten as they are taken); undefined when they were not kept or the file was deleted since.
   * Blobs and records never change, so these are the blob's bytes and the stored record.
   */
  takeRecent(fileId: string): KeptFile | undefined {
    const kept = this.recent.take(fileId);
    return kept !== undefined && this.exists.get(fileId) ? kept : undefined;
  }

  private async adopt(
    tmpPath: string,
    info: NewFileInfo & { contentType: string },
    size: number,
    sha256: string,
    /** A small file: renamed on this thread (see readIfSmall). */
    small = false,
  ): Promise<FileRecord> {
    const record: FileRecord = {
      file_id: newFileId(),
      filename: sanitizeFilename(info.filename),
      content_type: info.contentType,
      size,
      created_at: Date.now() / 1000,
      meta: info.meta ?? {},
    };
    const blob = this.blobPath(record.file_id);
    await this.moveInto(tmpPath, blob, record.file_id, small);
    try {
      this.insert.run({ ...record, id: record.file_id, meta: JSON.stringify(record.meta), job_id: info.jobId ?? null, sha256 });
    } catch (err) {
      await fsp.rm(blob, { force: true });
      throw err;
    }
    return record;
  }

  /**
   * Renames into place (`sync`: on this thread, a small file's, see readIfSmall); across
   * filesystems copies to a staging name first (never a partial blob).
   */
  private async moveInto(tmpPath: string, blob: string, fileId: string, sync = false): Promise<void> {
    try {
      if (sync) fs.renameSync(tmpPath, blob);
      else await fsp.rename(tmpPath, blob);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    }
    const staging = path.join(this.root, `${STAGING_PREFIX}${fileId}`);
    try {
      await fsp.copyFile(tmpPath, staging);
      await fsp.rename(staging, blob);
    } finally {
      await fsp.rm(staging, { force: true });
    }
    await fsp.rm(tmpPath, { force: true });
  }

  async get(fileId: string): Promise<FileRecord> {
    return this.getNow(fileId);
  }

  private getNow(fileId: string): FileRecord {
    const row = isFileId(fileId) ? this.selectOne.get(fileId) : undefined;
    if (!row) throw new NotFoundError(`unknown file '${fileId}'`);
    return fileRecordFromRow(row);
  }

  /** For FileRef resolution: unknown ids are the client's mistake (400), named by input. */
  async getForInput(fileId: string, kind: string): Promise<FileRecord> {
    if (!isFileId(fileId)) {
      throw new InputError(`${kind} file_id '${clip(fileId, 100)}' is not a file id (expected file_ followed by hex digits)`);
    }
    const row = this.selectOne.get(fileId);
    if (!row) throw new InputError(`unknown ${kind} file_id '${fileId}'`);
    return fileRecordFromRow(row);
  }

  /** The artifact a job saved, if any. */
  async artifactOf(jobId: string): Promise<FileRecord | undefined> {
    const row = this.selectByJob.get(jobId);
    return row ? fileRecordFromRow(row) : undefined;
  }

  /**
   * The blob's SHA-256 (hex), taken when it was stored. Files stored by an older kiapi have none
   * recorded: it is computed once from the blob and kept.
   */
  async sha256(fileId: string): Promise<string> {
    const row = isFileId(fileId) ? this.selectDigest.get(fileId) : undefined;
    if (!row) throw new NotFoundError(`unknown file '${fileId}'`);
    if (row.sha256) return row.sha256;
    const digest = await sha256File(this.blobPath(fileId));
    this.updateDigest.run(digest, fileId);
    return digest;
  }

  /** A page of files, newest first (every file when `limit` is unset), optionally filtered. */
  async list(q: PageQuery = {}, filter: FileFilter = {}): Promise<FilePage> {
    const page = this.pager.page(fileListQuery(q, filter));
    return { data: page.rows.map(fileRecordFromRow), hasMore: page.hasMore };
  }

  /** SQLite's plan for that list query (see KeysetPager.explain). */
  explainList(q: PageQuery = {}, filter: FileFilter = {}): string[] {
    return this.pager.explain(fileListQuery(q, filter));
  }

  /**
   * Deletes files (record and bytes) created more than `retentionS` ago, oldest first, except
   * those a queued or running job holds as inputs: they are kept whole (record included, so the
   * job's inputs stay listed) and go in a later sweep once the job has finished. Returns how
   * many were deleted. Works in batches so a first sweep over a large backlog never builds one
   * huge list.
   */
  async prune(retentionS: number, now = Date.now() / 1000): Promise<number> {
    const cutoff = now - retentionS;
    const BATCH = 500;
    let deleted = 0;
    const skipped = new Set<string>();
    for (;;) {
      const ids = this.selectExpired.all(cutoff, BATCH + skipped.size).map((r) => r.id).filter((id) => !skipped.has(id));
      if (ids.length === 0) return deleted;
      for (const id of ids) {
        if (this.holds.has(id)) {
          skipped.add(id);
          continue;
        }
        this.deleteOne.run(id);
        await fsp.rm(this.blobPath(id), { force: true });
        deleted++;
      }
    }
  }

  /** Where the file's bytes are on this machine, to read them (engine inputs, downloads, thumbnails). */
  async localPath(fileId: string): Promise<string> {
    return this.blobPath(fileId);
  }

  /** Only ever called with ids that passed `isFileId`. */
  private blobPath(fileId: string): string {
    if (!isFileId(fileId)) throw new Error(`refusing to build a path from '${fileId}'`);
    return path.join(this.root, fileId);
  }

  async delete(fileId: string): Promise<void> {
    this.getNow(fileId);
    this.deleteOne.run(fileId);
    await this.removeBlob(fileId);
  }

  /** Deletes without complaint; used to undo inputs stored for a request that was then rejected. */
  async discard(fileIds: string[]): Promise<void> {
    for (const id of fileIds) {
      if (!isFileId(id)) continue;
      this.deleteOne.run(id);
      await this.removeBlob(id);
    }
  }

  /**
   * Keeps the blobs of `fileIds` on disk until the returned function is called: the inputs of a
   * queued job. Deleting a held file removes its record at once (the Files API no longer lists
   * it) but its bytes only when the job is done, so a job never loses an input it was accepted
   * with. Releasing twice is harmless.
   */
  async hold(fileIds: string[]): Promise<() => Promise<void>> {
    for (const id of fileIds) this.holds.set(id, (this.holds.get(id) ?? 0) + 1);
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      for (const id of fileIds) {
        const n = (this.holds.get(id) ?? 1) - 1;
        if (n > 0) {
          this.holds.set(id, n);
          continue;
        }
        this.holds.delete(id);
        if (this.deferred.delete(id)) await fsp.rm(this.blobPath(id), { force: true });
      }
    };
  }

  private async removeBlob(fileId: string): Promise<void> {
    if (this.holds.has(fileId)) {
      this.deferred.add(fileId);
      return;
    }
    await fsp.rm(this.blobPath(fileId), { force: true });
  }

  /**
   * Start-up reconciliation after a crash: blobs with no record were never committed and are
   * removed; records whose blob vanished are reported (kept, so the loss is visible, not silent).
   * Leftover temp files are removed.
   */
  async reconcile(): Promise<{ orphanBlobs: number; missingBlobs: string[] }> {
    // One directory listing and one id-only query, compared in memory: a stat per record made
    // start-up take seconds with 100 000 files.
    const known = new Set(this.selectIds.pluck().all());
    const onDisk = new Set<string>();
    let orphanBlobs = 0;
    for (const name of await fsp.readdir(this.root)) {
      if ((isFileId(name) && !known.has(name)) || name.startsWith(STAGING_PREFIX)) {
        await fsp.rm(path.join(this.root, name), { force: true });
        orphanBlobs++;
      } else {
        onDisk.add(name);
      }
    }
    const missingBlobs = [...known].filter((id) => !onDisk.has(id));
    for (const id of missingBlobs) this.log.warn({ file_id: id }, 'file record has no blob on disk (deleted outside kiapi?)');
    for (const name of await fsp.readdir(this.tmpDir)) {
      await fsp.rm(path.join(this.tmpDir, name), { recursive: true, force: true });
    }
    return { orphanBlobs, missingBlobs };
  }
}

/**
 * The stated type wins; `application/octet-stream` counts as "not stated" because multipart
 * parsers and curl use it as their default when nothing was given.
 */
export function resolveContentType(stated: string | null | undefined, head: Buffer, filename: string): string {
  const clean = stated?.split(';')[0]?.trim().toLowerCase();
  // Only a well-formed type/subtype is kept: it is sent back as the download's Content-Type, and
  // a stated "é\x01weird" made every download of that file a 500 (invalid header character).
  if (clean && clean !== 'application/octet-stream' && MEDIA_TYPE.test(clean)) return clean;
  return sniffImageType(head) ?? typeFromExtension(filename) ?? 'application/octet-stream';
}

/** Whether `value` is a plain `type/subtype` (safe to send as a Content-Type header). */
export function isMediaType(value: string): boolean {
  return MEDIA_TYPE.test(value);
}

/** RFC 9110 `type "/" subtype`, both tokens. */
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9a-z-]+\/[!#$%&'*+.^_`|~0-9a-z-]+$/;

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A file filter as the columns it compares (content_family: see the migration that added it). */
export function fileListQuery(q: PageQuery, filter: FileFilter): PageQuery {
  // Stored types are lower case (resolveContentType); media types compare case-insensitively.
  const type = filter.contentType?.toLowerCase();
  const family = type?.endsWith('/*') ? type.slice(0, -2) : undefined;
  return {
    ...q,
    filters: { content_type: family === undefined ? type : undefined, content_family: family, job_id: filter.jobId },
  };
}

export function fileRecordFromRow(row: FileRow): FileRecord {
  return {
    file_id: row.id,
    filename: row.filename,
    content_type: row.content_type,
    size: row.size,
    created_at: row.created_at,
    meta: JSON.parse(row.meta) as Record<string, unknown>,
  };
}
