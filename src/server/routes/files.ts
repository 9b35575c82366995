/** Files API: upload (streamed to disk), list, metadata, download (Range, ETag), delete. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import contentDisposition from 'content-disposition';
import send from '@fastify/send';
import sharp from 'sharp';
import type { Static } from 'typebox';
import { InputError, MalformedBodyError, TooLargeError, isKiapiError } from '../../core/errors.js';
import type { AppContext } from '../context.js';
import { listAnswer, numericLimit, pageQuery } from '../list-paging.js';
import type { RouteDef } from '../route-def.js';
import { FileDeletedSchema, FileIdParams, FileListQuery, FileListSchema, FileRecordSchema, ThumbnailQuery } from '../schemas.js';
import { numericQuery } from '../query-numbers.js';
import { isMediaType, type FileRecord, type RecentBytes } from '../../core/files/file-store.js';

type FileRequest = FastifyRequest<{ Params: Static<typeof FileIdParams> }>;

/**
 * Media types a download is documented with. Named binary types first: client generators skip a
 * response that has only a wildcard, and then call a successful download an unexpected status.
 * The wildcard last: an upload is served with whatever type it was stored with (text/plain, a
 * PDF…), and the document must still cover that answer.
 */
const DOWNLOAD_TYPES = ['application/octet-stream', 'image/png', 'image/jpeg', 'image/webp', '*/*'];

async function upload(ctx: AppContext, req: FastifyRequest): Promise<FileRecord> {
  if (!req.isMultipart()) {
    return Promise.reject(missingFile('send multipart/form-data with a file field named "file"'));
  }
  let saved: FileRecord | null = null;
  try {
    for await (const part of req.parts()) {
      if (part.type === 'file' && part.fieldname === 'file' && !saved) {
        // busboy stops passing bytes at the limit but ends the file stream only when the part
        // ends, so an upload without a Content-Length would be read to its end before the 413.
        // Failing the stream at the limit answers at once (and closes the connection).
        part.file.once('limit', () => part.file.destroy(tooLarge(ctx.config.maxUploadBytes)));
        saved = await ctx.files.saveStream(
          part.file,
          { filename: part.filename || 'upload', contentType: statedType(part.mimetype), purpose: 'the upload' },
          ctx.config.maxUploadBytes,
        );
        if (part.file.truncated) throw tooLarge(ctx.config.maxUploadBytes);
      } else if (part.type === 'file') {
        part.file.resume(); // drain parts we do not keep so the request can finish
      }
    }
  } catch (err) {
    // Nothing is kept from an upload that did not complete.
    if (saved) await ctx.files.discard([saved.file_id]);
    throw uploadError(err, req.raw.socket?.destroyed ?? true);
  }
  if (!saved) throw missingFile('the multipart body has no file field named "file"');
  return saved;
}

/**
 * Streams a stored file with @fastify/send (Range, Last-Modified, If-Modified-Since). Blobs are
 * immutable, so the file id is a strong ETag; If-Match, If-None-Match and If-Range are compared
 * with it here (send only knows its own ETags, so it would refuse every If-Match with 412).
 * Conditional and Range headers apply to GET and HEAD only: a POST that generates an image always
 * answers with the whole new image.
 */
export async function sendFile(
  reply: FastifyReply,
  raw: IncomingMessage,
  /** The bytes on this machine (FileStoreApi.localPath). */
  blob: string,
  record: FileRecord,
  extraHeaders: Record<string, string> = {},
): Promise<FastifyReply> {
  const etag = `"${record.file_id}"`;
  const conditional = raw.method === 'GET' || raw.method === 'HEAD';
  const h = raw.headers;
  if (conditional && h['if-match'] !== undefined && !etagMatches(h['if-match'], etag, 'strong')) {
    return reply.code(412).header('etag', etag).send({ detail: `precondition failed: If-Match does not name this file's ETag ${etag}` });
  }
  if (conditional && h['if-none-match'] !== undefined && etagMatches(h['if-none-match'], etag, 'weak')) {
    return reply.code(304).header('etag', etag).send();
  }
  // What send may see: the date conditions (it knows Last-Modified) and a Range whose If-Range
  // still holds. If-None-Match that did not match overrides If-Modified-Since (RFC 9110 13.1.3),
  // and If-Match overrides If-Unmodified-Since.
  const forSend: Record<string, string | undefined> = {};
  if (conditional) {
    if (h['if-none-match'] === undefined) forSend['if-modified-since'] = h['if-modified-since'];
    if (h['if-match'] === undefined) forSend['if-unmodified-since'] = h['if-unmodified-since'];
    forSend['cache-control'] = h['cache-control'];
    const ifRange = one(h['if-range']);
    const rangeHolds = ifRange === undefined || (ifRange.includes('"') ? ifRange.trim() === etag : true);
    if (rangeHolds) {
      forSend.range = h.range;
      if (ifRange !== undefined && !ifRange.includes('"')) forSend['if-range'] = ifRange;
    }
  }
  const request = { method: raw.method === 'HEAD' ? 'HEAD' : 'GET', headers: dropUndefined(forSend) } as unknown as IncomingMessage;
  // 1 MiB reads: with the 64 KiB default, syscalls and chunk handling dominate large downloads.
  const result = await send(request, `/${path.basename(blob)}`, { root: path.dirname(blob), contentType: false, etag: false, dotfiles: 'deny', acceptRanges: conditional, highWaterMark: 1024 * 1024 });
  if (result.type === 'error') {
    const status = (result.metadata.error as { status?: number }).status ?? 500;
    if (status === 404) throw new Error(`blob of ${record.file_id} is missing from the files directory`);
    // send's error headers describe its HTML error page (text/html, its Content-Length); sending
    // them with our JSON body made Fastify refuse the payload (500 instead of 416). Keep only
    // Content-Range, which a 416 must carry.
    const range = Object.entries(result.headers).find(([k]) => k.toLowerCase() === 'content-range')?.[1];
    if (range !== undefined) void reply.header('content-range', range);
    const detail =
      status === 416
        ? `range not satisfiable: the file has ${record.size} bytes`
        : status === 412
          ? 'precondition failed: the file was modified after If-Unmodified-Since'
          : result.metadata.error.message;
    return reply.code(status).send({ detail });
  }
  return reply
    .code(result.statusCode)
    .headers(result.headers)
    // Records written before types were checked may hold one that is no valid header value.
    .header('content-type', isMediaType(record.content_type) ? record.content_type : 'application/octet-stream')
    .header('content-disposition', contentDisposition(record.filename, { fallback: asciiFallback(record.filename) }))
    .header('etag', etag)
    .headers(extraHeaders)
    .send(result.stream);
}

/**
 * The whole file from bytes already in memory, with the headers `sendFile` gives a whole-body
 * answer to a POST (no Range or conditions apply there): for the image of a sync generation,
 * which the store has just read to hash it.
 */
export function sendBytes(reply: FastifyReply, record: FileRecord, kept: RecentBytes, extraHeaders: Record<string, string> = {}): FastifyReply {
  return reply
    .code(200)
    .header('cache-control', 'public, max-age=0')
    .header('last-modified', kept.modified.toUTCString())
    .header('content-type', isMediaType(record.content_type) ? record.content_type : 'application/octet-stream')
    .header('content-disposition', contentDisposition(record.filename, { fallback: asciiFallback(record.filename) }))
    .header('etag', `"${record.file_id}"`)
    .headers(extraHeaders)
    .send(kept.bytes);
}

/** Whether an If-Match / If-None-Match list names `etag` (`*` names every existing file). */
function etagMatches(list: string, etag: string, comparison: 'strong' | 'weak'): boolean {
  return list.split(',').some((raw) => {
    const tag = raw.trim();
    if (tag === '*') return true;
    if (tag.startsWith('W/')) return comparison === 'weak' && tag.slice(2) === etag;
    return tag === etag;
  });
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

function dropUndefined(o: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).filter((e): e is [string, string] => e[1] !== undefined));
}

/**
 * busboy reports `text/plain` for a part that has no Content-Type header (RFC 7578's default), so
 * a stated `text/plain` cannot be told from none. Clients such as Python `requests` send file parts
 * without a type; taking that default at its word stored PNGs as text/plain. So `text/plain` counts
 * as "not stated" (like application/octet-stream) and the store sniffs / goes by the extension,
 * which is what the original did for a part without a type (docs/compatibility.md §1.4).
 */
function statedType(mimetype: string): string | null {
  return mimetype.toLowerCase() === 'text/plain' ? null : mimetype;
}

/**
 * The plain `filename="…"` fallback must be ASCII: content-disposition keeps Latin-1 letters (é)
 * there, which go out as raw non-ASCII header bytes that clients decode inconsistently. The exact
 * name is always in `filename*` (RFC 5987) when it is not plain ASCII.
 */
function asciiFallback(filename: string): string {
  return filename.replace(/[^\x20-\x7e]/g, '_');
}

/**
 * What a failed upload answers. The multipart parser (busboy) throws plain Errors for a body it
 * cannot parse (no boundary, truncated data, a broken part header): the client's fault, 400, not
 * the 500 they used to be. Named and framework errors keep their mapping (error-handler.ts).
 */
export function uploadError(err: unknown, connectionGone: boolean): unknown {
  if (isKiapiError(err)) return err;
  const code = (err as { code?: unknown }).code;
  if (code === 'FST_PROTO_VIOLATION' || code === 'FST_INVALID_JSON_FIELD_ERROR') {
    return new MalformedBodyError(`malformed multipart body: ${(err as Error).message}`);
  }
  if (connectionGone || code === 'FST_MP_PREMATURE_CLOSE' || code === 'ECONNRESET') {
    // Nobody reads this answer; it keeps the log free of a stack trace for a client that left
    // (or was cut off by KIAPI_REQUEST_TIMEOUT_S / KIAPI_IDLE_TIMEOUT_S).
    return new MalformedBodyError('the upload ended before it was complete (client gone or timed out); nothing was stored');
  }
  if (typeof code === 'string') return err;
  if (err instanceof Error && Object.getPrototypeOf(err) === Error.prototype) {
    return new MalformedBodyError(
      `malformed multipart body: ${err.message}; send multipart/form-data with its boundary and one file field named "file"`,
    );
  }
  return err;
}

function tooLarge(maxBytes: number): TooLargeError {
  return new TooLargeError(`upload is larger than the ${maxBytes} byte limit (KIAPI_MAX_UPLOAD_BYTES); nothing was stored`);
}

function missingFile(msg: string) {
  return Object.assign(new Error(msg), { statusCode: 422, code: 'FST_NO_FORM_DATA' });
}

/**
 * A small WebP of a stored image, its longest side at most `size` pixels (never enlarged), made on
 * request and not stored: a gallery of thumbnails costs a few KB per image instead of the full
 * images. The file id and size name it for good (blobs never change), so it carries a strong ETag
 * and may be cached.
 */
async function thumbnail(ctx: AppContext, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const { params, query } = req as FastifyRequest<{ Params: Static<typeof FileIdParams>; Querystring: Static<typeof ThumbnailQuery> }>;
  const record = await ctx.files.get(params.file_id);
  const size = query.size ?? 256;
  const etag = `"${record.file_id}-${size}"`;
  if (!record.content_type.toLowerCase().startsWith('image/') || record.content_type.toLowerCase() === 'image/svg+xml') {
    throw new InputError(
      `file_id ${record.file_id} is ${record.content_type}, not a raster image: thumbnails are made of png, jpeg, webp or gif files; download it instead`,
    );
  }
  const inm = req.headers['if-none-match'];
  if (inm !== undefined && etagMatches(inm, etag, 'weak')) return reply.code(304).header('etag', etag).send();
  let bytes: Buffer;
  try {
    bytes = await sharp(await ctx.files.localPath(record.file_id), { limitInputPixels: 268_402_689 })
      .rotate()
      .resize(size, size, { fit: 'inside', withoutEnlargement: true })
      .webp({ quality: 80 })
      .toBuffer();
  } catch (err) {
    throw new InputError(`file_id ${record.file_id} cannot be decoded as an image (${(err as Error).message}); download it instead`);
  }
  return reply
    .code(200)
    .header('content-type', 'image/webp')
    .header('cache-control', 'private, max-age=86400')
    .header('etag', etag)
    .send(bytes);
}

/** OpenAPI links: where a file id in a response can be used next. */
function fileLinks(fileId: string): Record<string, Record<string, unknown>> {
  const link = (operationId: string, description: string) => ({ operationId, parameters: { file_id: fileId }, description });
  return {
    GetFile: link('get_file_v1_files__file_id__get', 'Metadata of this file.'),
    DownloadFile: link('download_file_v1_files__file_id__download_get', 'Bytes of this file.'),
    DeleteFile: link('delete_file_v1_files__file_id__delete', 'Delete this file.'),
  };
}


export function fileRoutes(ctx: AppContext): RouteDef[] {
  return [
    {
      method: 'post',
      path: '/v1/files',
      handler: async (req) => upload(ctx, req),
      doc: {
        summary: 'Upload File',
        description:
          'Upload one file as multipart/form-data field `file`. The body is streamed to disk (limit KIAPI_MAX_UPLOAD_BYTES). Content type: the part\'s own, else sniffed (png/jpeg/webp/gif), else from the extension, else application/octet-stream.',
        operationId: 'upload_file_v1_files_post',
        multipartFile: true,
        responses: {
          '200': { description: 'The stored file record.', schema: FileRecordSchema, links: fileLinks('$response.body#/file_id') },
          '400': { description: 'Malformed multipart body (no boundary, truncated data, broken part headers, too many parts).' },
          '408': { description: 'The upload did not arrive within KIAPI_REQUEST_TIMEOUT_S.' },
          '403': { description: 'A cross-site browser request (Origin not in KIAPI_ALLOWED_ORIGINS) or a Host that is not served (KIAPI_ALLOWED_HOSTS).' },
          '413': { description: 'Upload larger than KIAPI_MAX_UPLOAD_BYTES: refused before the body is read when its Content-Length says so, cut off at the limit otherwise; the connection is closed.' },
          '415': { description: 'The body has a Content-Type that is neither multipart/form-data nor JSON.' },
          '422': { description: 'Not multipart/form-data (a JSON or empty body), or no `file` field.' },
          '507': { description: 'The disk was full while the upload was saved; nothing was stored. The message names the directory to free space in.' },
        },
      },
    },
    {
      method: 'get',
      path: '/v1/files',
      query: FileListQuery,
      preValidation: numericLimit,
      handler: async (req) => {
        const { query } = req as FastifyRequest<{ Querystring: Static<typeof FileListQuery> }>;
        const page = await ctx.files.list(pageQuery(query), { contentType: query.content_type, jobId: query.job_id });
        return listAnswer(page.data, page.hasMore, (f) => f.file_id);
      },
      doc: {
        summary: 'List Files',
        description:
          "Stored files, newest first, optionally only one media type or type family (content_type) or one job's artifacts (job_id). Cursor paging as in OpenAI's list endpoints: limit, after, before; the answer says has_more, first_id and last_id; filters and cursors combine. With KIAPI_FILE_RETENTION_S set, files older than that are deleted (never the inputs of a queued or running job).",
        operationId: 'list_files_v1_files_get',
        responses: {
          '200': { description: 'File list.', schema: FileListSchema, links: fileLinks('$response.body#/data/0/file_id') },
          '400': { description: 'after or before names no file (deleted or pruned): start again without it.' },
          '422': { description: 'A malformed query parameter (limit out of range, a cursor that is not a file id, a content_type that is neither type/subtype nor type/*, a job_id that is not a job id).' },
        },
      },
    },
    {
      method: 'get',
      path: '/v1/files/{file_id}',
      params: FileIdParams,
      handler: async (req) => ctx.files.get((req as FileRequest).params.file_id),
      doc: {
        summary: 'Get File',
        description: 'Metadata of one file.',
        operationId: 'get_file_v1_files__file_id__get',
        responses: {
          '200': { description: 'The file record.', schema: FileRecordSchema },
          '404': { description: 'Unknown file id.' },
          '422': { description: 'Malformed file id.' },
        },
      },
    },
    {
      method: 'get',
      path: '/v1/files/{file_id}/download',
      params: FileIdParams,
      handler: async (req, reply) => {
        const record = await ctx.files.get((req as FileRequest).params.file_id);
        return sendFile(reply, req.raw, await ctx.files.localPath(record.file_id), record);
      },
      doc: {
        summary: 'Download File',
        description:
          'The file bytes with their stored Content-Type, Content-Length, Content-Disposition and a strong ETag (the file id in quotes); honours Range and If-Range (206), If-None-Match and If-Modified-Since (304), If-Match and If-Unmodified-Since (412). An upload stored with another media type is served with that type.',
        operationId: 'download_file_v1_files__file_id__download_get',
        responses: {
          '200': { description: 'File bytes, with the Content-Type the file was stored with.', binary: DOWNLOAD_TYPES },
          '206': { description: 'Partial content for a Range request.', binary: DOWNLOAD_TYPES },
          '304': { description: 'Not modified (If-None-Match or If-Modified-Since).' },
          '404': { description: 'Unknown file id.' },
          '412': { description: 'If-Match does not name the ETag, or the file changed after If-Unmodified-Since.' },
          '416': { description: 'Range not satisfiable.' },
          '422': { description: 'Malformed file id.' },
        },
      },
    },
    {
      method: 'get',
      path: '/v1/files/{file_id}/thumbnail',
      params: FileIdParams,
      query: ThumbnailQuery,
      preValidation: numericQuery('size'),
      handler: async (req, reply) => thumbnail(ctx, req, reply),
      doc: {
        summary: 'File Thumbnail',
        description:
          'kiapi extension. A small WebP of an image file, its longest side at most `size` pixels (an image already smaller is not enlarged), made on request and not stored; for galleries. Strong ETag (If-None-Match answers 304).',
        operationId: 'file_thumbnail_v1_files__file_id__thumbnail_get',
        responses: {
          // Always WebP; application/octet-stream beside it because some client generators
          // (openapi-python-client) parse no image/* response and would leave the answer out.
          '200': { description: 'The thumbnail (image/webp).', binary: ['image/webp', 'application/octet-stream'] },
          '304': { description: 'Not modified (If-None-Match names this thumbnail).' },
          '400': { description: 'The file is not a png, jpeg, webp or gif image, or cannot be decoded.' },
          '404': { description: 'Unknown file id.' },
          '422': { description: 'Malformed file id, or size outside 16..1024.' },
        },
      },
    },
    {
      method: 'delete',
      path: '/v1/files/{file_id}',
      params: FileIdParams,
      handler: async (req) => {
        const fileId = (req as FileRequest).params.file_id;
        await ctx.files.delete(fileId);
        return { deleted: true, file_id: fileId };
      },
      doc: {
        summary: 'Delete File',
        description: 'Removes the record and its bytes. Jobs that list the id keep listing it.',
        operationId: 'delete_file_v1_files__file_id__delete',
        responses: {
          '200': { description: 'Deleted.', schema: FileDeletedSchema },
          '404': { description: 'Unknown file id.' },
          '422': { description: 'Malformed file id.' },
        },
      },
    },
  ];
}
