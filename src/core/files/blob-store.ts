/**
 * Where file contents live, apart from their records: a directory on one node, an S3-compatible
 * object store shared by a cluster's nodes. Core owns the interface so the files API, inputs and
 * job outputs are written once against it, whichever implementation the settings pick.
 *
 * Blobs are immutable and named by the file id that records them: a blob is written once, read
 * any number of times, then deleted. So a reader never meets a blob changing under it, and a
 * cache keyed by the content's SHA-256 (engines' local copies of inputs) stays valid forever.
 */
import type { Readable } from 'node:stream';

/** What a completed `put` stored: the record keeps both (the digest keys local input copies). */
export interface StoredBlob {
  size: number;
  /** Lower-case hex SHA-256 of the bytes stored. */
  sha256: string;
}

export interface PutOptions {
  /** Bytes beyond this abort the write (nothing is kept) with a TooLargeError. */
  maxBytes?: number;
  /** The TooLargeError's message, naming the limit and its setting (the caller knows which applies). */
  tooLargeMessage?: string;
  /** Stored with the blob where the store keeps one (a browser opening an object store URL). */
  contentType?: string;
}

/** Bytes `start` to `end` of a blob, both inclusive (as in an HTTP Range header). */
export interface ByteRange {
  start: number;
  end: number;
}

export interface BlobStore {
  /** What the store is, for messages ("the object store at http://…/bucket"). */
  readonly description: string;
  /**
   * Streams `source` into blob `id`: hashed (SHA-256) and counted on the way; beyond
   * opts.maxBytes it aborts and throws TooLargeError with opts.tooLargeMessage. The blob is
   * visible only once complete: no partial blob is ever found under the id, whatever fails.
   */
  put(id: string, source: Readable, opts?: PutOptions): Promise<StoredBlob>;
  /** The whole blob or bytes [start, end] inclusive, streamed; NotFoundError when missing. */
  get(id: string, range?: ByteRange): Promise<Readable>;
  /** Removes the blob; a missing one is fine (two nodes' sweeps may delete the same blob). */
  delete(id: string): Promise<void>;
  /** Ids of blobs last modified before `before` (the orphan sweep), streamed page by page. */
  listBefore(before: Date): AsyncIterable<string>;
}
