/** Files API: upload (streamed to disk), list, metadata, download (Range, ETag), delete. */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { IncomingMessage } from 'node:http';
import contentDisposition from 'content-disposition';
import send from '@fastify/send';
import type { Static } from 'typebox';
import { TooLargeError } from '../../core/errors.js';
import type { AppContext } from '../context.js';
import type { CommonRoute } from '../openapi.js';
import { FileDeletedSchema, FileIdParams, FileListSchema, FileRecordSchema } from '../schemas.js';
import type { FileRecord } from '../../core/files/file-store.js';

type FileParams = Static<typeof FileIdParams>;

export function fileRoutes(app: FastifyInstance, ctx: AppContext): void {
  app.post('/v1/files', async (req) => {
    if (!req.isMultipart()) {
      return Promise.reject(missingFile('send multipart/form-data with a file field named "file"'));
    }
    let saved: FileRecord | null = null;
    for await (const part of req.parts()) {
      if (part.type === 'file' && part.fieldname === 'file' && !saved) {
        saved = await ctx.files.saveStream(
          part.file,
          { filename: part.filename || 'upload', contentType: statedType(part.mimetype) },
          ctx.config.maxUploadBytes,
        );
        if (part.file.truncated) {
          await ctx.files.discard([saved.file_id]);
          throw new TooLargeError(`upload is larger than the ${ctx.config.maxUploadBytes} byte limit (KIAPI_MAX_UPLOAD_BYTES)`);
        }
      } else if (part.type === 'file') {
        part.file.resume(); // drain parts we do not keep so the request can finish
      }
    }
    if (!saved) throw missingFile('the multipart body has no file field named "file"');
    return saved;
  });

  app.get('/v1/files', async () => ({ object: 'list', data: ctx.files.list() }));

  app.get<{ Params: FileParams }>('/v1/files/:file_id', { schema: { params: FileIdParams } }, async (req) =>
    ctx.files.get(req.params.file_id),
  );

  app.get<{ Params: FileParams }>('/v1/files/:file_id/download', { schema: { params: FileIdParams } }, async (req, reply) => {
    const record = ctx.files.get(req.params.file_id);
    return sendFile(reply, req.raw, ctx.files.root, record);
  });

  app.delete<{ Params: FileParams }>('/v1/files/:file_id', { schema: { params: FileIdParams } }, async (req) => {
    await ctx.files.delete(req.params.file_id);
    return { deleted: true, file_id: req.params.file_id };
  });
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
  root: string,
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
    const ifRange = h['if-range'];
    const rangeHolds = ifRange === undefined || (ifRange.includes('"') ? ifRange.trim() === etag : true);
    if (rangeHolds) {
      forSend.range = h.range;
      if (ifRange !== undefined && !ifRange.includes('"')) forSend['if-range'] = ifRange;
    }
  }
  const request = { method: raw.method === 'HEAD' ? 'HEAD' : 'GET', headers: dropUndefined(forSend) } as unknown as IncomingMessage;
  // 1 MiB reads: with the 64 KiB default, syscalls and chunk handling dominate large downloads.
  const result = await send(request, `/${record.file_id}`, { root, contentType: false, etag: false, dotfiles: 'deny', acceptRanges: conditional, highWaterMark: 1024 * 1024 });
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
    .header('content-type', record.content_type)
    .header('content-disposition', contentDisposition(record.filename, { fallback: asciiFallback(record.filename) }))
    .header('etag', etag)
    .headers(extraHeaders)
    .send(result.stream);
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

function dropUndefined(o: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).filter((e): e is [string, string] => e[1] !== undefined));
}

/**
 * busboy reports `text/plain` for a part that has no Content-Type header (RFC 7578's default), so
 * a stated `text/plain` cannot be told from none. Clients such as Python `requests` send file parts
 * without a type; taking that default at its word stored PNGs as text/plain. So `text/plain` counts
 * as "not stated" (like application/octet-stream) and the store sniffs / goes by the extension,
 * which is what the original did for a part without a type (reference §1.4).
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

function missingFile(msg: string) {
  return Object.assign(new Error(msg), { statusCode: 422, code: 'FST_NO_FORM_DATA' });
}

export const fileDocs: CommonRoute[] = [
  {
    method: 'post',
    path: '/v1/files',
    summary: 'Upload File',
    description:
      'Upload one file as multipart/form-data field `file`. The body is streamed to disk (limit KIAPI_MAX_UPLOAD_BYTES). Content type: the part\'s own, else sniffed (png/jpeg/webp/gif), else from the extension, else application/octet-stream.',
    operationId: 'upload_file_v1_files_post',
    multipartFile: true,
    responses: {
      '200': { description: 'The stored file record.', schema: FileRecordSchema },
      '413': { description: 'Upload larger than KIAPI_MAX_UPLOAD_BYTES.' },
      '422': { description: 'No `file` field.' },
    },
  },
  {
    method: 'get',
    path: '/v1/files',
    summary: 'List Files',
    description: 'Every stored file, newest first.',
    operationId: 'list_files_v1_files_get',
    responses: { '200': { description: 'File list.', schema: FileListSchema } },
  },
  {
    method: 'get',
    path: '/v1/files/{file_id}',
    summary: 'Get File',
    description: 'Metadata of one file.',
    operationId: 'get_file_v1_files__file_id__get',
    params: FileIdParams,
    responses: {
      '200': { description: 'The file record.', schema: FileRecordSchema },
      '404': { description: 'Unknown file id.' },
      '422': { description: 'Malformed file id.' },
    },
  },
  {
    method: 'get',
    path: '/v1/files/{file_id}/download',
    summary: 'Download File',
    description:
      'The file bytes with Content-Type, Content-Length, Content-Disposition and a strong ETag; honours Range (206) and If-None-Match (304).',
    operationId: 'download_file_v1_files__file_id__download_get',
    params: FileIdParams,
    responses: {
      '200': { description: 'File bytes.', binary: true },
      '206': { description: 'Partial content for a Range request.', binary: true },
      '304': { description: 'Not modified (If-None-Match matched).' },
      '404': { description: 'Unknown file id.' },
      '416': { description: 'Range not satisfiable.' },
      '422': { description: 'Malformed file id.' },
    },
  },
  {
    method: 'delete',
    path: '/v1/files/{file_id}',
    summary: 'Delete File',
    description: 'Removes the record and its bytes. Jobs that list the id keep listing it.',
    operationId: 'delete_file_v1_files__file_id__delete',
    params: FileIdParams,
    responses: {
      '200': { description: 'Deleted.', schema: FileDeletedSchema },
      '404': { description: 'Unknown file id.' },
      '422': { description: 'Malformed file id.' },
    },
  },
];
