/**
 * Watching kiapi's event streams from tests: with the `eventsource` package (a real EventSource,
 * reconnects and Last-Event-ID included) and with a plain fetch reader for the cases an
 * EventSource hides (the status of an answer, an exact first event, an abrupt disconnect).
 */
import { EventSource } from 'eventsource';

export interface SseEvent {
  id: string;
  event: string;
  data: Record<string, unknown>;
}

export const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);
const NAMES = ['queued', 'position', 'started', 'progress', 'preview', 'succeeded', 'failed', 'canceled'];

export interface Watcher {
  events: SseEvent[];
  /** Resolves with the events once a terminal event arrived. */
  ended: Promise<SseEvent[]>;
  /** Resolves once `predicate` holds for the events received so far. */
  until(predicate: (events: SseEvent[]) => boolean, timeoutMs?: number): Promise<SseEvent[]>;
  es: EventSource;
  close(): void;
}

/** An EventSource on `url`, collecting every named event. */
export function watch(url: string, headers: Record<string, string> = {}, timeoutMs = 60_000): Watcher {
  const es = new EventSource(url, { fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, ...headers } }) });
  const events: SseEvent[] = [];
  const waiters: { predicate: (e: SseEvent[]) => boolean; resolve: (e: SseEvent[]) => void }[] = [];
  const check = () => {
    for (const w of [...waiters]) {
      if (w.predicate(events)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(events);
      }
    }
  };
  for (const name of NAMES) {
    es.addEventListener(name, (m) => {
      events.push({ id: m.lastEventId, event: name, data: JSON.parse(String(m.data)) as Record<string, unknown> });
      check();
    });
  }
  const until = (predicate: (e: SseEvent[]) => boolean, ms = timeoutMs) =>
    new Promise<SseEvent[]>((resolve, reject) => {
      if (predicate(events)) return resolve(events);
      const timer = setTimeout(() => reject(new Error(`condition not met within ${ms} ms; events: ${events.map((e) => e.event).join(',')}`)), ms);
      waiters.push({
        predicate,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  const ended = until((e) => e.some((x) => TERMINAL.has(x.event)));
  return { events, ended, until, es, close: () => es.close() };
}

/** Reads a stream with fetch until `stop` says so (or it ends); returns the answer and its events. */
export async function readStream(
  url: string,
  headers: Record<string, string> = {},
  stop: (events: SseEvent[]) => boolean = (e) => e.some((x) => TERMINAL.has(x.event)),
): Promise<{ status: number; headers: Headers; events: SseEvent[]; text: string }> {
  const controller = new AbortController();
  const res = await fetch(url, { headers, signal: controller.signal });
  const events: SseEvent[] = [];
  let text = '';
  if (res.status !== 200 || !res.body) return { status: res.status, headers: res.headers, events, text: await res.text() };
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for await (const chunk of res.body) {
      const piece = decoder.decode(chunk as Uint8Array, { stream: true });
      text += piece;
      buffer += piece;
      let at;
      while ((at = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        const fields: Record<string, string> = {};
        for (const line of block.split('\n')) {
          if (line.startsWith(':') || !line.includes(':')) continue;
          const i = line.indexOf(':');
          fields[line.slice(0, i)] = line.slice(i + 1).trimStart();
        }
        if (fields.event && fields.data !== undefined) events.push({ id: fields.id ?? '', event: fields.event, data: JSON.parse(fields.data) as Record<string, unknown> });
      }
      if (stop(events)) break;
    }
  } finally {
    controller.abort();
  }
  return { status: res.status, headers: res.headers, events, text };
}
