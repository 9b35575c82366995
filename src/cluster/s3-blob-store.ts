/**
 * File blobs in an S3-compatible object store (AWS S3, MinIO, R2, S3Proxy…), shared by every node
 * of a cluster: a file stored by one node is read by any other.
 *
 * Nothing here holds a whole blob in memory. Uploads stream through a hashing, counting Transform
 * into lib-storage's `Upload`, which sends 5 MiB parts, two in flight (a blob of at most one part
 * goes as one PUT of that part), so memory stays near 20 MiB whatever the size; downloads hand the
 * response body on as it arrives. A multipart upload becomes an object only when it is completed,
 * and a failed one (too large, the source broke, the store went away) is aborted, so no partial
 * blob is ever found under an id.
 *
 * Failures reach callers as kiapi's errors: a store that does not answer (refused, reset, timed
 * out, a 5xx) is an UnavailableError naming the store and saying to retry (503: the request was
 * fine, the store was not); a missing object is a NotFoundError. The SDK has already retried
 * transient failures a few times with backoff before either is thrown.
 */
import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  S3Client,
  paginateListObjectsV2,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { BlobStore, ByteRange, PutOptions, StoredBlob } from '../core/files/blob-store.js';
import { KiapiError, NotFoundError, TooLargeError, UnavailableError } from '../core/errors.js';

export interface S3BlobStoreOptions {
  bucket: string;
  /** An S3-compatible server's URL; unset means AWS S3 itself (virtual-host addressing). */
  endpoint?: string;
  region: string;
  /** A key prefix, so one bucket can serve several clusters (`staging/`, `prod/`). */
  prefix?: string;
}

/** lib-storage's minimum part size; larger parts only cost memory (two are in flight). */
const PART_BYTES = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT = 2;
/** A store that does not accept the connection in this long is down, not slow. */
const CONNECT_TIMEOUT_MS = 5_000;
/**
 * A connection silent for this long is dead (a store that accepted and hung). Generous because a
 * download paused by a slow reader (backpressure) is silent too, and must not be cut.
 */
const IDLE_TIMEOUT_MS = 120_000;

/** Codes Node gives to a connection that failed or broke: the store is down or unreachable. */
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** Error names the store answers when it does not accept kiapi's credentials. */
const CREDENTIAL_ERRORS = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'CredentialsProviderError']);

interface SdkError extends Error {
  code?: unknown;
  $metadata?: { httpStatusCode?: number };
  errors?: unknown[];
}

/**
 * Why a request found the store unreachable ("ECONNREFUSED", "503 ServiceUnavailable"), or null
 * when the failure is something else. Looks through AggregateErrors and causes, where Node and the
 * SDK wrap the socket's error.
 */
export function connectionFault(err: unknown, depth = 0): string | null {
  if (!(err instanceof Error) || depth > 5) return null;
  const e = err as SdkError;
  if (typeof e.code === 'string' && CONNECTION_CODES.has(e.code)) return e.code;
  if (e.name === 'TimeoutError') return 'timed out';
  if (/socket hang up/i.test(e.message)) return 'socket hang up';
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined && status >= 500) return `${status} ${e.name}`;
  for (const inner of [...(e.errors ?? []), e.cause]) {
    const found = connectionFault(inner, depth + 1);
    if (found) return found;
  }
  return null;
}

/**
 * Why the store refused kiapi's identity, or null. AWS answers 403, not 404, for a missing key
 * when the identity may not list the bucket, so the identity needs s3:ListBucket (the orphan
 * sweep lists anyway) besides s3:GetObject, s3:PutObject and s3:DeleteObject.
 */
function credentialFault(err: unknown): string | null {
  if (!(err instanceof Error)) return null;
  const status = (err as SdkError).$metadata?.httpStatusCode;
  return CREDENTIAL_ERRORS.has(err.name) || status === 401 || status === 403 ? err.name : null;
}

function isMissing(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return err.name === 'NoSuchKey' || err.name === 'NotFound' || (err as SdkError).$metadata?.httpStatusCode === 404;
}

export class S3BlobStore implements BlobStore {
  readonly description: string;
  readonly bucket: string;
  private readonly client: S3Client;
  /** Keys are `<prefix>files/<id>`; the rest of the bucket is not kiapi's to list or sweep. */
  private readonly keyPrefix: string;

  constructor(private readonly opts: S3BlobStoreOptions) {
    this.bucket = opts.bucket;
    const prefix = (opts.prefix ?? '').replace(/^\/+/, '');
    this.keyPrefix = `${prefix && !prefix.endsWith('/') ? `${prefix}/` : prefix}files/`;
    this.description = opts.endpoint
      ? `the object store at ${opts.endpoint.replace(/\/+$/, '')}/${opts.bucket}`
      : `the S3 bucket ${opts.bucket} (${opts.region})`;
    this.client = new S3Client({
      region: opts.region,
      // Credentials come from the SDK's default chain (environment, profile, instance role).
      ...(opts.endpoint
        ? // Path-style URLs: self-hosted stores (MinIO, S3Proxy) have no per-bucket DNS names.
          { endpoint: opts.endpoint, forcePathStyle: true }
        : {}),
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, socketTimeout: IDLE_TIMEOUT_MS },
    });
  }

  /**
   * A store whose bucket is there: checked (HeadBucket) and created when missing, so a fresh
   * MinIO or S3Proxy works without a manual step. Fails start-up with a message naming the
   * setting to correct when the store cannot be reached or refuses kiapi.
   */
  static async open(opts: S3BlobStoreOptions): Promise<S3BlobStore> {
    const store = new S3BlobStore(opts);
    try {
      await store.ensureBucket();
    } catch (err) {
      store.close();
      throw err;
    }
    return store;
  }

  private async ensureBucket(): Promise<void> {
    const where = this.opts.endpoint ? `KIAPI_CLUSTER_S3_ENDPOINT=${this.opts.endpoint}` : 'KIAPI_CLUSTER_S3_ENDPOINT unset: AWS S3';
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return;
    } catch (err) {
      if (!isMissing(err)) throw this.startupError(err, where);
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      // Another node starting at the same moment created it: what matters is that it exists.
      if (err instanceof Error && (err.name === 'BucketAlreadyOwnedByYou' || err.name === 'BucketAlreadyExists')) {
        try {
          await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
          return;
        } catch (again) {
          throw this.startupError(again, where);
        }
      }
      throw this.startupError(err, where, 'create');
    }
  }

  private startupError(err: unknown, where: string, doing: 'check' | 'create' = 'check'): UnavailableError {
    const down = connectionFault(err);
    if (down) {
      return new UnavailableError(
        `${this.description} does not answer (${down}): start it, or correct KIAPI_CLUSTER_S3_ENDPOINT (${where}); the bucket is KIAPI_CLUSTER_S3_BUCKET=${this.bucket}`,
      );
    }
    const refused = credentialFault(err);
    if (refused) {
      return new UnavailableError(
        `${this.description} refused kiapi's credentials (${refused}: ${(err as Error).message}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role) for an identity that may use KIAPI_CLUSTER_S3_BUCKET=${this.bucket}`,
      );
    }
    const e = err as Error;
    return new UnavailableError(
      `could not ${doing} KIAPI_CLUSTER_S3_BUCKET=${this.bucket} at ${where} (${e.name}: ${e.message}): check KIAPI_CLUSTER_S3_BUCKET, KIAPI_CLUSTER_S3_ENDPOINT and KIAPI_CLUSTER_S3_REGION (${this.opts.region})`,
    );
  }

  /** The error a caller gets for a failed request: kiapi's own where the cause is known. */
  private fault(err: unknown, id?: string): Error {
    if (err instanceof KiapiError) return err;
    const down = connectionFault(err);
    if (down) return new UnavailableError(`${this.description} is unreachable (${down}); retry shortly`);
    const refused = credentialFault(err);
    if (refused) {
      return new UnavailableError(
        `${this.description} refused kiapi's credentials (${refused}); the operator must check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile or role)`,
      );
    }
    if (id !== undefined && isMissing(err)) return new NotFoundError(`the content of file ${id} is not in ${this.description}`);
    return err instanceof Error ? err : new Error(String(err));
  }

  private key(id: string): string {
    // Ids are file ids the core generated; a slash would make a key listBefore cannot name back.
    if (id.length === 0 || id.includes('/')) throw new Error(`not a blob id: ${JSON.stringify(id)}`);
    return this.keyPrefix + id;
  }

  async put(id: string, source: Readable, opts: PutOptions = {}): Promise<StoredBlob> {
    const key = this.key(id);
    const max = opts.maxBytes ?? Number.POSITIVE_INFINITY;
    const hash = createHash('sha256');
    let size = 0;
    // An object, not a `let`: the transform sets it, and TypeScript does not track closures' writes.
    const limit: { exceeded: TooLargeError | null } = { exceeded: null };
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > max) {
          limit.exceeded = new TooLargeError(opts.tooLargeMessage ?? `the content is larger than the ${max} byte limit`);
          done(limit.exceeded);
          return;
        }
        hash.update(chunk);
        done(null, chunk);
      },
    });
    // The source feeds the counter; a source error (a client gone mid-upload) reaches the upload
    // through it, and a failed upload destroys it, so the source is never left hanging.
    const piped = pipeline(source, counter);
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: counter, ...(opts.contentType ? { ContentType: opts.contentType } : {}) },
      partSize: PART_BYTES,
      queueSize: PARTS_IN_FLIGHT,
    });
    // done() settles only after a failed multipart upload was aborted (its parts discarded).
    const uploaded = upload.done().catch((err: unknown) => {
      counter.destroy();
      throw err;
    });
    const [up, pipe] = await Promise.allSettled([uploaded, piped]);
    if (up.status === 'fulfilled' && pipe.status === 'fulfilled') return { size, sha256: hash.digest('hex') };
    if (limit.exceeded) throw limit.exceeded;
    // The upload failed on its own (not because its source did): the store's fault.
    if (up.status === 'rejected' && !(pipe.status === 'rejected' && pipe.reason === up.reason)) throw this.fault(up.reason);
    throw (pipe as PromiseRejectedResult).reason;
  }

  async get(id: string, range?: ByteRange): Promise<Readable> {
    const key = this.key(id);
    let body: unknown;
    try {
      const res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
      );
      body = res.Body;
    } catch (err) {
      throw this.fault(err, id);
    }
    if (!(body instanceof Readable)) throw new Error(`${this.description} answered file ${id} without a body stream`);
    // A connection lost mid-body surfaces as the same UnavailableError as one lost before it; a
    // reader that stops early releases the connection.
    const out = new PassThrough();
    body.on('error', (err) => out.destroy(this.fault(err)));
    out.on('close', () => {
      if (!body.readableEnded) body.destroy();
    });
    body.pipe(out);
    return out;
  }

  async delete(id: string): Promise<void> {
    try {
      // S3 answers a delete of a missing key with success, so "missing is fine" needs no check.
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(id) }));
    } catch (err) {
      if (isMissing(err)) return;
      throw this.fault(err);
    }
  }

  async *listBefore(before: Date): AsyncIterable<string> {
    const pages = paginateListObjectsV2({ client: this.client }, { Bucket: this.bucket, Prefix: this.keyPrefix });
    try {
      for await (const page of pages) {
        for (const object of page.Contents ?? []) {
          const id = object.Key?.slice(this.keyPrefix.length);
          if (!id || id.includes('/') || !object.LastModified || object.LastModified >= before) continue;
          yield id;
        }
      }
    } catch (err) {
      throw this.fault(err);
    }
  }

  /** Closes the client's connections (shutdown, tests). */
  close(): void {
    this.client.destroy();
  }
}
