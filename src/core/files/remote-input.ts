/**
 * Turning `url` and `data_url` FileRefs into local files (docs/compatibility.md §3.2, §3.3, §11.17).
 *
 * Differences from the original, on purpose: redirects are followed by hand and re-checked, the
 * connection is pinned to the address that passed the check, 100.64.0.0/10 is refused, inputs are
 * capped at KIAPI_MAX_INPUT_BYTES, a timeout is a 400 (the original let it surface as a 504 "sync
 * timeout" although the job had failed), and an unknown content type is
 * `application/octet-stream` rather than urllib's `text/plain`.
 */
import { createWriteStream } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InputError, isKiapiError } from '../errors.js';
import { isDiskFull } from './disk-full.js';
import { parseDataUrl, tooLargeError } from './data-url.js';
import { openVettedResponse } from './url-fetch.js';
import type { Resolver } from './url-safety.js';
import { urlForMessage } from './url-safety.js';
import { cleanFilename, extensionForType, sniffImageType } from './content-type.js';

export { isNonPublicAddress } from './url-safety.js';
export type { Resolver } from './url-safety.js';

export interface FetchedInput {
  path: string;
  size: number;
  contentType: string;
  filename: string;
}

export interface UrlFetchOptions {
  /** Logical input name used in messages: 'init_image', 'images[1]', 'loras[0]'. */
  kind: string;
  /** KIAPI_MAX_INPUT_BYTES, default 64 MiB. */
  maxBytes: number;
  /** Deadline for the whole fetch: every hop's DNS, connect and headers, and the body. */
  timeoutMs: number;
  /** KIAPI_NET_ALLOW_PRIVATE_URLS: skip the address check (the host is still resolved once and pinned). */
  allowPrivate: boolean;
  /** Default 5. */
  maxRedirects?: number;
  /** Aborting rejects with the signal's reason (e.g. a job cancel), not with a fetch error. */
  signal?: AbortSignal;
  /**
   * Replaces the one `dns.lookup(host, {all: true})` per hop. Whatever it returns is what gets vetted
   * and what the socket connects to, so tests can map made-up names to 127.0.0.1 without touching
   * system DNS. Not consulted for IP-literal hosts.
   */
  resolve?: Resolver;
  /**
   * Replaces `isNonPublicAddress` (true = refuse). Exists so tests can treat 127.0.0.1 as "public"
   * for one hop and still see a later hop refused; production callers leave it unset.
   */
  isRefusedAddress?: (ip: string) => boolean;
}

const DEFAULT_MAX_REDIRECTS = 5;
/** Enough for every signature `sniffImageType` knows. */
const SNIFF_BYTES = 12;

/** Media type of a Content-Type header, or undefined when absent or not `type/subtype`. */
function mediaTypeOf(header: string | undefined): string | undefined {
  const media = header?.split(';')[0]?.trim().toLowerCase();
  return media !== undefined && /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(media) ? media : undefined;
}

function fallbackFilename(kind: string, contentType: string): string {
  return `${cleanFilename(kind) ?? 'input'}${extensionForType(contentType)}`;
}

function filenameFromUrl(url: URL): string | undefined {
  const segment = url.pathname.split('/').filter((s) => s !== '').pop();
  if (segment === undefined) return undefined;
  let decoded = segment;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    // Malformed escapes: keep the segment as written rather than lose the name.
  }
  return cleanFilename(decoded);
}

function secondsText(ms: number): string {
  return String(Number((ms / 1000).toFixed(3)));
}

/** Counts bytes as they pass and fails the pipeline the moment the cap is crossed. */
class ByteCap extends Transform {
  size = 0;
  private readonly headChunks: Buffer[] = [];
  private headSize = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly kind: string,
  ) {
    super();
  }

  get head(): Buffer {
    return Buffer.concat(this.headChunks).subarray(0, SNIFF_BYTES);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.size += chunk.length;
    if (this.size > this.maxBytes) {
      callback(tooLargeError(this.kind, this.maxBytes));
      return;
    }
    if (this.headSize < SNIFF_BYTES) {
      this.headChunks.push(chunk.subarray(0, SNIFF_BYTES - this.headSize));
      this.headSize += Math.min(chunk.length, SNIFF_BYTES - this.headSize);
    }
    callback(null, chunk);
  }
}

/** Download `url` into `destPath` (streamed, never held whole in memory). */
export async function fetchUrlToFile(url: string, destPath: string, opts: UrlFetchOptions): Promise<FetchedInput> {
  const shown = urlForMessage(url);
  const deadline = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    deadline.abort(new Error('timed out'));
  }, opts.timeoutMs);
  const outer = opts.signal;
  const onOuterAbort = () => deadline.abort(outer?.reason);
  if (outer?.aborted === true) onOuterAbort();
  else outer?.addEventListener('abort', onOuterAbort, { once: true });

  let file: WriteStream | undefined;
  try {
    const { response, finalUrl } = await openVettedResponse({
      kind: opts.kind,
      allowPrivate: opts.allowPrivate,
      resolve: opts.resolve,
      isRefusedAddress: opts.isRefusedAddress,
      maxRedirects: opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
      signal: deadline.signal,
      originalUrl: url,
    });

    const lengthHeader = response.headers['content-length'];
    if (lengthHeader !== undefined && /^\d+$/.test(lengthHeader) && Number(lengthHeader) > opts.maxBytes) {
      response.destroy();
      throw tooLargeError(opts.kind, opts.maxBytes);
    }

    const cap = new ByteCap(opts.maxBytes, opts.kind);
    file = createWriteStream(destPath);
    await pipeline(response, cap, file, { signal: deadline.signal });

    const contentType =
      mediaTypeOf(response.headers['content-type']) ?? sniffImageType(cap.head) ?? 'application/octet-stream';
    return {
      path: destPath,
      size: cap.size,
      contentType,
      filename: filenameFromUrl(finalUrl) ?? fallbackFilename(opts.kind, contentType),
    };
  } catch (err) {
    if (file !== undefined) {
      // The stream may still be opening or flushing; deleting first would let it recreate the file.
      // Not events.once: it rejects on the 'error' that pipeline's destroy emits, skipping the rm.
      const stream = file;
      if (!stream.closed) {
        await new Promise<void>((resolve) => {
          stream.once('close', () => resolve());
          stream.destroy();
        });
      }
      await rm(destPath, { force: true });
    }
    if (isKiapiError(err)) throw err;
    if (timedOut) {
      throw new InputError(`failed to fetch ${opts.kind} url '${shown}': timed out after ${secondsText(opts.timeoutMs)}s`);
    }
    if (outer?.aborted === true) throw outer.reason instanceof Error ? outer.reason : err;
    // Our disk, not the URL: the input resolver reports it as a full disk (507).
    if (isDiskFull(err)) throw err;
    const reason = err instanceof Error ? err.message : String(err);
    throw new InputError(`failed to fetch ${opts.kind} url '${shown}': ${reason}`);
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener('abort', onOuterAbort);
  }
}

/** Decode a data URL into `destPath`. */
export async function writeDataUrlToFile(
  dataUrl: string,
  destPath: string,
  opts: { kind: string; maxBytes: number },
): Promise<FetchedInput> {
  const { mediaType, bytes } = parseDataUrl(dataUrl, opts.kind, opts.maxBytes);
  try {
    await writeFile(destPath, bytes);
  } catch (err) {
    await rm(destPath, { force: true });
    throw err;
  }
  return {
    path: destPath,
    size: bytes.length,
    contentType: mediaType,
    filename: fallbackFilename(opts.kind, mediaType),
  };
}
