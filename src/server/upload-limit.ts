/**
 * An upload that says in its Content-Length that it is larger than KIAPI_MAX_UPLOAD_BYTES is
 * refused before one byte of its body is read (413, and the connection closes): a client sending
 * 50 GB must not have to send them to learn that. One without a length (chunked) is counted as it
 * is streamed and cut off as soon as it passes the limit (file-store.ts, routes/files.ts).
 *
 * The limit is on the file; the body also carries the multipart framing (boundaries, part
 * headers), so a body may exceed the limit by MULTIPART_ALLOWANCE before its length alone refuses
 * it. A file over the limit inside such a body is still refused, when it is streamed.
 */
import type { FastifyInstance } from 'fastify';
import { TooLargeError } from '../core/errors.js';

export const MULTIPART_ALLOWANCE = 64 * 1024;

export function installEarlyUploadLimit(app: FastifyInstance, maxUploadBytes: number): void {
  app.addHook('onRequest', async (req) => {
    if (req.method !== 'POST' || (req.url.split('?')[0] ?? '') !== '/v1/files') return;
    const length = Number(req.headers['content-length']);
    if (Number.isFinite(length) && length > maxUploadBytes + MULTIPART_ALLOWANCE) {
      throw new TooLargeError(
        `upload of ${length} bytes is larger than the ${maxUploadBytes} byte limit (KIAPI_MAX_UPLOAD_BYTES); nothing was read or stored`,
      );
    }
  });
}
