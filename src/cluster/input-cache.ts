/**
 * Local copies of shared blobs for engines, which read inputs (init images, LoRA files) from a
 * path. A copy is named by its content's SHA-256, so it can never go stale (blobs are immutable)
 * and two file ids with the same bytes share one copy; a LoRA used again is not fetched again,
 * and an engine's build keyed by that path stays valid.
 *
 * - A copy is downloaded to a temp name, its digest checked on the way, and renamed into place
 *   only when it matches: a path this cache hands out always holds the expected bytes, whole.
 * - Concurrent requests for the same digest share one download.
 * - The directory is bounded by bytes: the least recently used copies go first, but never one a
 *   running job holds (`hold`). When held copies alone exceed the bound, the bound is exceeded
 *   until they are released; a job's inputs matter more than the cap.
 * - Copies left by an earlier run are kept (they were verified before their rename) and counted;
 *   temp files an interrupted download left are removed.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobStore } from '../core/files/blob-store.js';
import { diskFullError, isDiskFull } from '../core/files/disk-full.js';

export interface InputCacheOptions {
  dir: string;
  /** Bound on the bytes of copies kept; held copies may exceed it until released. */
  maxBytes: number;
}

const DIGEST = /^[0-9a-f]{64}$/;
/** Temp names start with a dot: never a digest, so a restart can tell them from copies. */
const TEMP_PREFIX = '.part-';

export class InputCache {
  readonly dir: string;
  private readonly maxBytes: number;
  /** Copies by digest, least recently used first (a Map keeps insertion order; a use re-inserts). */
  private readonly entries = new Map<string, { path: string; size: number }>();
  private totalBytes = 0;
  /** Downloads under way, by digest: a second request for the same bytes waits on the first. */
  private readonly downloads = new Map<string, Promise<string>>();
  /** Copies in use: path → holders. */
  private readonly holds = new Map<string, number>();
  /** Evicted copies being removed: a new download of the digest waits, or the removal could delete it. */
  private readonly removals = new Map<string, Promise<void>>();
  private tempSeq = 0;

  constructor(opts: InputCacheOptions) {
    this.dir = path.resolve(opts.dir);
    this.maxBytes = opts.maxBytes;
    fs.mkdirSync(this.dir, { recursive: true });
    // Start-up only, so synchronous: what an earlier run left, oldest first.
    const kept: { digest: string; size: number; used: number }[] = [];
    for (const name of fs.readdirSync(this.dir)) {
      const full = path.join(this.dir, name);
      if (name.startsWith(TEMP_PREFIX)) {
        fs.rmSync(full, { force: true });
        continue;
      }
      if (!DIGEST.test(name)) continue;
      const stat = fs.statSync(full, { throwIfNoEntry: false });
      if (stat?.isFile()) kept.push({ digest: name, size: stat.size, used: stat.mtimeMs });
    }
    for (const k of kept.sort((a, b) => a.used - b.used)) this.add(k.digest, k.size);
    this.evict();
  }

  /** Bytes of the copies kept now. */
  get bytes(): number {
    return this.totalBytes;
  }

  /**
   * A local path holding blob `id`'s bytes, whose SHA-256 is `sha256` (from the file's record):
   * the cached copy, or a fresh download verified against that digest (a mismatch throws and
   * keeps nothing). Hold the path (`hold`, or use `acquire`) while a job reads it.
   */
  async materialize(id: string, sha256: string, blobs: BlobStore): Promise<string> {
    const digest = sha256.toLowerCase();
    if (!DIGEST.test(digest)) throw new Error(`file ${id}: ${JSON.stringify(sha256)} is not a SHA-256 digest`);
    for (;;) {
      const cached = this.entries.get(digest);
      if (cached) {
        // Someone may have removed the file behind the cache's back: then fetch it again.
        const present = await exists(cached.path);
        // Evicted while the check ran: look again (a download may be needed after all).
        if (this.entries.get(digest) !== cached) continue;
        if (present) {
          this.touch(digest, cached);
          return cached.path;
        }
        this.drop(digest);
        continue;
      }
      const running = this.downloads.get(digest);
      if (running) return running;
      const download = this.download(id, digest, blobs).finally(() => this.downloads.delete(digest));
      this.downloads.set(digest, download);
      return download;
    }
  }

  /** `materialize` and `hold` at once, so nothing can evict the copy in between. */
  async acquire(id: string, sha256: string, blobs: BlobStore): Promise<{ path: string; release: () => void }> {
    for (;;) {
      const p = await this.materialize(id, sha256, blobs);
      // The copy may have been evicted while this caller was waiting on a shared download.
      if (this.has(p)) return { path: p, release: this.hold(p) };
    }
  }

  /**
   * Keeps the copy at `p` from eviction until the returned function is called (calling it again
   * does nothing). Throws when `p` is not a copy this cache holds now.
   */
  hold(p: string): () => void {
    if (!this.has(p)) throw new Error(`${p} is not in the input cache (evicted, or never materialized)`);
    this.holds.set(p, (this.holds.get(p) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.holds.get(p) ?? 1) - 1;
      if (n > 0) this.holds.set(p, n);
      else {
        this.holds.delete(p);
        // A copy kept over the bound only because it was held can go now.
        this.evict();
      }
    };
  }

  /** Whether `p` is a copy the cache holds now. */
  has(p: string): boolean {
    const digest = path.basename(p);
    return path.dirname(p) === this.dir && this.entries.has(digest);
  }

  private async download(id: string, digest: string, blobs: BlobStore): Promise<string> {
    await this.removals.get(digest);
    const final = path.join(this.dir, digest);
    const temp = path.join(this.dir, `${TEMP_PREFIX}${digest}-${process.pid}-${++this.tempSeq}`);
    const hash = createHash('sha256');
    let size = 0;
    const check = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(await blobs.get(id), check, fs.createWriteStream(temp, { flags: 'wx' }));
      const got = hash.digest('hex');
      if (got !== digest) {
        throw new Error(`the content of file ${id} in ${blobs.description} does not match its recorded SHA-256 (expected ${digest}, got ${got}); it was not used`);
      }
      await fsp.rename(temp, final);
    } catch (err) {
      await fsp.rm(temp, { force: true });
      if (isDiskFull(err)) throw diskFullError(err, `input file ${id}`, this.dir);
      throw err;
    }
    this.add(digest, size);
    // Not the copy just made, even when it alone exceeds the bound: its caller is about to use
    // (and hold) it. It goes at a later eviction once nobody holds it.
    this.evict(digest);
    return final;
  }

  private add(digest: string, size: number): void {
    this.entries.set(digest, { path: path.join(this.dir, digest), size });
    this.totalBytes += size;
  }

  private touch(digest: string, entry: { path: string; size: number }): void {
    this.entries.delete(digest);
    this.entries.set(digest, entry);
  }

  private drop(digest: string): { path: string; size: number } | undefined {
    const entry = this.entries.get(digest);
    if (!entry) return undefined;
    this.entries.delete(digest);
    this.totalBytes -= entry.size;
    return entry;
  }

  /** Removes least recently used copies nobody holds (nor `spare`) until the total is within the bound. */
  private evict(spare?: string): void {
    if (this.totalBytes <= this.maxBytes) return;
    for (const [digest, entry] of this.entries) {
      if (this.totalBytes <= this.maxBytes) break;
      if (digest === spare || this.holds.has(entry.path)) continue;
      this.drop(digest);
      const removal = fsp
        .rm(entry.path, { force: true })
        // A copy that could not be removed is only disk space; the next download replaces it.
        .catch(() => undefined)
        .finally(() => {
          if (this.removals.get(digest) === removal) this.removals.delete(digest);
        });
      this.removals.set(digest, removal);
    }
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p);
    return true;
  } catch {
    return false;
  }
}
