/**
 * The bytes of files this process stored moments ago, kept so a sync answer sends them without
 * reading the stored blob back (from disk, or from the object store on a cluster node). A sync
 * answer takes its image within milliseconds of storing it, so a few are enough; the total bound
 * keeps large outputs (or many unanswered async jobs) from piling up.
 */

/** Files larger than this are never kept. */
export const RECENT_MAX_BYTES = 4 * 1024 * 1024;
const RECENT_MAX_FILES = 16;
const RECENT_MAX_TOTAL = 32 * 1024 * 1024;

import type { FileRecord } from './file-store.js';

/** A stored file's bytes and the modification time its blob reports (its Last-Modified). */
export interface RecentBytes {
  bytes: Buffer;
  modified: Date;
}

/**
 * A file stored moments ago as the sync answer sends it: its bytes and its record (records never
 * change once written, so the one made at storing is the one a read would give).
 */
export interface KeptFile extends RecentBytes {
  record: FileRecord;
}

export class RecentBytesMemory {
  private readonly kept = new Map<string, KeptFile>();
  private total = 0;

  /** Keeps the newest few small files' bytes (bounded in count and size; the oldest go first). */
  remember(fileId: string, entry: KeptFile): void {
    if (entry.bytes.length > RECENT_MAX_BYTES) return;
    this.forget(fileId);
    this.kept.set(fileId, entry);
    this.total += entry.bytes.length;
    for (const [id, old] of this.kept) {
      if (this.kept.size <= RECENT_MAX_FILES && this.total <= RECENT_MAX_TOTAL) break;
      this.kept.delete(id);
      this.total -= old.bytes.length;
    }
  }

  /** The kept bytes of `fileId`, once: they are forgotten as they are taken. */
  take(fileId: string): KeptFile | undefined {
    const entry = this.kept.get(fileId);
    if (entry !== undefined) this.forget(fileId);
    return entry;
  }

  forget(fileId: string): void {
    const entry = this.kept.get(fileId);
    if (entry === undefined) return;
    this.kept.delete(fileId);
    this.total -= entry.bytes.length;
  }
}
