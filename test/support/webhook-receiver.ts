/**
 * A webhook receiver for tests: a real node:http server on 127.0.0.1 that records every request
 * (headers and body), when it came (`at`, ms since the epoch), and answers as the test says: a status, a status with headers, or `hang` (never answers; the
 * connection stays open until the sender gives up or the receiver closes).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Set when the sender closed the connection before an answer (its timeout, its shutdown). */
  abandoned: boolean;
  /** When the request's body had arrived, ms since the epoch. */
  at: number;
}

/** A status, a status with headers (e.g. Retry-After), or `hang`. */
export type Answer = number | { status: number; headers: Record<string, string> } | 'hang';

export interface Receiver {
  url: string;
  port: number;
  received: Received[];
  /** Requests being held open (`hang`) right now. */
  readonly holding: number;
  /** Decides each answer from the number of requests before it (0 for the first). */
  answer: (index: number, r: Received) => Answer;
  close(): Promise<void>;
}

export async function startReceiver(answer: (index: number, r: Received) => Answer = () => 200, port = 0): Promise<Receiver> {
  const held = new Set<http.ServerResponse>();
  const receiver: Receiver = {
    url: '',
    port: 0,
    received: [],
    get holding() {
      return held.size;
    },
    answer,
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of held) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: Received = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), abandoned: false, at: Date.now() };
      const index = receiver.received.length;
      receiver.received.push(r);
      const a = receiver.answer(index, r);
      if (a === 'hang') {
        held.add(res);
        res.once('close', () => {
          held.delete(res);
          if (!res.writableFinished) r.abandoned = true;
        });
        return;
      }
      const status = typeof a === 'number' ? a : a.status;
      const headers = typeof a === 'number' ? {} : a.headers;
      res.writeHead(status, { 'content-type': 'text/plain', ...headers }).end(status >= 200 && status < 300 ? 'ok' : 'receiver error');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  receiver.port = (server.address() as AddressInfo).port;
  receiver.url = `http://127.0.0.1:${receiver.port}/hook`;
  return receiver;
}
