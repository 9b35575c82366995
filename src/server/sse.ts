/**
 * One server-sent-events answer. It takes the response over from Fastify (so the headers other
 * hooks set, such as CORS, are copied onto it), keeps idle proxies from cutting it with comment
 * lines, and protects the server from a watcher that stops reading: past a quarter of the
 * buffer limit previews are skipped (they are the bulk and a later one replaces them), past the
 * limit the watcher is dropped. It can reconnect with Last-Event-ID and catch up from there.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { JobEvent } from '../core/jobs/job-events.js';

export interface SseOptions {
  heartbeatMs: number;
  maxBufferBytes: number;
  /** Answers carry `Cache-Control: no-store` (a token is configured) instead of `no-cache`. */
  private: boolean;
}

/** How long EventSource waits before reconnecting after the stream broke. */
const RETRY_MS = 2000;

/** Every open stream of a server, so shutting the server down ends them (they never end by themselves). */
export class SseStreams {
  private readonly open = new Set<SseStream>();

  start(req: FastifyRequest, reply: FastifyReply, opts: SseOptions): SseStream {
    const stream = new SseStream(req, reply, opts, () => this.open.delete(stream));
    this.open.add(stream);
    return stream;
  }

  get size(): number {
    return this.open.size;
  }

  closeAll(): void {
    for (const s of [...this.open]) s.end();
  }
}

export class SseStream {
  private readonly heartbeat: NodeJS.Timeout;
  private readonly cleanups: (() => void)[] = [];
  private ended = false;
  /**
   * The reconnect delay rides on the first event: alone in a block of its own, some clients
   * (httpx-sse among them) report it as an event with empty data.
   */
  private retrySent = false;
  /** Previews not sent because the watcher was behind. */
  skippedPreviews = 0;

  constructor(
    req: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly opts: SseOptions,
    onEnd: () => void,
  ) {
    this.cleanups.push(onEnd);
    reply.hijack();
    const raw = reply.raw;
    // Only the heartbeat keeps a quiet stream going; the idle timeout would cut it.
    req.raw.socket.setTimeout(0);
    raw.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': opts.private ? 'no-store' : 'no-cache',
      'x-content-type-options': 'nosniff',
      // nginx buffers answers unless told not to; an event stream must not wait in a buffer.
      'x-accel-buffering': 'no',
    });
    // Headers otherwise leave with the first write; a quiet stream (the all-jobs feed between
    // jobs) would keep its client waiting for them until the first event or heartbeat.
    raw.flushHeaders();
    this.heartbeat = setInterval(() => this.write(': keep-alive\n\n'), opts.heartbeatMs);
    raw.once('close', () => this.end());
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Runs `fn` when the stream ends, however it ends. */
  onEnd(fn: () => void): void {
    if (this.ended) fn();
    else this.cleanups.push(fn);
  }

  send(e: JobEvent): void {
    if (this.ended) return;
    const behind = this.reply.raw.writableLength;
    if (behind > this.opts.maxBufferBytes) {
      this.end();
      return;
    }
    if (e.event === 'preview' && behind > this.opts.maxBufferBytes / 4) {
      this.skippedPreviews++;
      return;
    }
    const retry = this.retrySent ? '' : `retry: ${RETRY_MS}\n`;
    this.retrySent = true;
    this.write(`${retry}id: ${e.id}\nevent: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`);
  }

  /**
   * An event of a stream that is not a job's (the OpenAI image streams): a name and a JSON body,
   * no id, since such a stream cannot be resumed. A behind watcher gets no more previews.
   */
  sendData(event: string, data: unknown, opts: { preview?: boolean } = {}): void {
    if (this.ended) return;
    const behind = this.reply.raw.writableLength;
    if (behind > this.opts.maxBufferBytes) {
      this.end();
      return;
    }
    if (opts.preview && behind > this.opts.maxBufferBytes / 4) {
      this.skippedPreviews++;
      return;
    }
    const retry = this.retrySent ? '' : `retry: ${RETRY_MS}\n`;
    this.retrySent = true;
    this.write(`${retry}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.heartbeat);
    for (const fn of this.cleanups.splice(0)) fn();
    if (!this.reply.raw.writableEnded) this.reply.raw.end();
  }

  private write(text: string): void {
    if (!this.ended && this.reply.raw.writable) this.reply.raw.write(text);
  }
}
