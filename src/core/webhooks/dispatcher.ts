/**
 * Delivers the outbox's pending webhooks, apart from the job queue: a job never waits for a
 * receiver. A few attempts run at once, each bounded by KIAPI_WEBHOOK_TIMEOUT_S, so a receiver
 * that hangs delays other receivers' deliveries by at most that.
 *
 * Each attempt POSTs the body fixed when the event happened, with the same `webhook-id` every
 * time (receivers dedupe on it) and a fresh `webhook-timestamp` and signature. A 2xx answer
 * delivers it; anything else (another status, a refused connection, no answer within
 * KIAPI_WEBHOOK_TIMEOUT_S) is retried after KIAPI_WEBHOOK_BACKOFF_S, doubled per attempt up to an
 * hour, with jitter (so receivers coming back are not hit by every sender at once), until
 * KIAPI_WEBHOOK_RETRY_FOR_S after the event; then the delivery is `failed`. A 429 or 503 with
 * Retry-After is not retried sooner than it asks (up to the same hour); a 410 Gone fails the
 * delivery at once. Redirects are not followed (a 3xx is a failed attempt): the signature was
 * made for the URL the job named.
 *
 * A URL from a request goes through the same outbound rules as `url` inputs on every attempt:
 * resolved once, every address checked (loopback and private refused unless
 * KIAPI_NET_ALLOW_PRIVATE_URLS), the connection pinned to the checked address.
 *
 * On a shared outbox every node runs a dispatcher: each takes only the deliveries it claimed
 * (WebhookOutboxApi.claimDue), so one node POSTs each attempt, and it also looks for new work
 * every `idlePollMs`, since other nodes' jobs make deliveries pending without waking it.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { clip } from '../errors.js';
import { abortable, pinnedLookup } from '../files/url-fetch.js';
import { checkHttpUrl, resolveVetted, type CheckedUrl, type VettedAddress } from '../files/url-safety.js';
import type { DeliveryRow, WebhookOutboxApi } from './outbox.js';
import { signature } from './signing.js';

export interface DispatcherOptions {
  /** The signing key (the secret's bytes). */
  key: Buffer;
  timeoutMs: number;
  backoffMs: number;
  retryForMs: number;
  /** KIAPI_NET_ALLOW_PRIVATE_URLS. */
  allowPrivate: boolean;
  log: Logger;
  /** Who claims deliveries on a shared outbox (the node's id); one name will do for a single node. */
  nodeId?: string;
  /**
   * How often to look for due deliveries when none is known to be due: a shared outbox has rows
   * made pending by other nodes. Omitted: never (a single node's outbox wakes the dispatcher).
   */
  idlePollMs?: number;
}

/** Deliveries in flight at once: enough that one slow receiver does not hold up the others. */
const MAX_IN_FLIGHT = 4;
/** The longest wait between two attempts of one delivery. */
const MAX_BACKOFF_MS = 3600_000;
/** How much of a receiver's error answer is kept as `last_error`. */
const MAX_ERROR_CHARS = 200;
/** After the outbox could not be read (a shared database away), the next look. */
const RETRY_AFTER_ERROR_MS = 1000;

export class WebhookDispatcher {
  private readonly inFlight = new Map<string, { controller: AbortController; done: Promise<void> }>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** A pump is reading the outbox; `again` asks it for one more round once it is done. */
  private pumping: Promise<void> | null = null;
  private again = false;
  private readonly nodeId: string;

  constructor(
    private readonly outbox: WebhookOutboxApi,
    private readonly opts: DispatcherOptions,
  ) {
    this.nodeId = opts.nodeId ?? 'local';
    outbox.onPending = () => this.pump();
  }

  /** Starts delivering: what an earlier run left pending is due at once. */
  start(): void {
    this.pump();
  }

  /** Stops: in-flight attempts are aborted and stay pending (not counted), delivered at the next start. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.pumping;
    const running = [...this.inFlight.values()];
    for (const r of running) r.controller.abort(new Error('the server is shutting down'));
    await Promise.all(running.map((r) => r.done));
  }

  /**
   * Starts every due delivery there is room for, then sleeps until the next one is due. One round
   * at a time (the outbox answers asynchronously); a wake-up during a round makes one more.
   */
  private pump(): void {
    if (this.closed) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = this.round()
      .catch((err: unknown) => {
        this.opts.log.error({ err }, 'could not read the webhook outbox; trying again shortly');
        this.sleep(RETRY_AFTER_ERROR_MS);
      })
      .finally(() => {
        this.pumping = null;
        if (this.again) {
          this.again = false;
          this.pump();
        }
      });
  }

  private async round(): Promise<void> {
    const room = MAX_IN_FLIGHT - this.inFlight.size;
    if (room > 0) {
      const now = Date.now() / 1000;
      // Claimed rows are this dispatcher's until it records them: the ones in flight are not returned.
      for (const row of await this.outbox.claimDue(now, room, this.nodeId)) {
        if (this.closed || this.inFlight.size >= MAX_IN_FLIGHT) break;
        if (this.inFlight.has(row.id)) continue;
        const controller = new AbortController();
        const done = this.attempt(row, controller).finally(() => {
          this.inFlight.delete(row.id);
          this.pump();
        });
        this.inFlight.set(row.id, { controller, done });
      }
    }
    await this.schedule();
  }

  /** Wakes up when the soonest pending delivery is due (rows in flight are woken by their end). */
  private async schedule(): Promise<void> {
    if (this.closed) return;
    if (this.inFlight.size >= MAX_IN_FLIGHT) return this.sleep(null);
    const next = await this.outbox.nextDueAt();
    if (next === null) return this.sleep(this.opts.idlePollMs ?? null);
    const waitMs = Math.max(0, next * 1000 - Date.now());
    // Nothing due now that is not in flight: wait for the flights (they pump when done).
    if (waitMs === 0 && this.inFlight.size > 0) return this.sleep(this.opts.idlePollMs ?? null);
    this.sleep(Math.min(waitMs, this.opts.idlePollMs ?? Infinity));
  }

  /** The next round in `ms` (null: only when woken), replacing any earlier timer. */
  private sleep(ms: number | null): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.closed || ms === null) return;
    this.timer = setTimeout(() => this.pump(), Math.min(ms, 2 ** 31 - 1));
    this.timer.unref();
  }

  private async attemptOnce(row: DeliveryRow, controller: AbortController): Promise<void> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error('timed out'));
    }, this.opts.timeoutMs);
    try {
      const { status, retryAfterMs } = await this.post(row, controller.signal);
      if (status >= 200 && status <= 299) {
        await this.outbox.recordDelivered(row.id, status);
        this.opts.log.info({ job_id: row.job_id, webhook_id: row.id, status }, 'webhook delivered');
      } else if (status === 410) {
        // Standard Webhooks: 410 Gone says the endpoint was removed on purpose; retrying it for a
        // day would only knock on a closed door.
        await this.failed(row, status, 'HTTP 410: the receiver says this endpoint is gone; not retried', { giveUp: true });
      } else {
        await this.failed(row, status, `HTTP ${status}`, { retryAfterMs });
      }
    } catch (err) {
      // Shutdown: not an attempt of the receiver's; the row stays pending for the next start.
      if (this.closed && !timedOut) return;
      const reason = timedOut
        ? `no answer within ${this.opts.timeoutMs / 1000} s (KIAPI_WEBHOOK_TIMEOUT_S)`
        : err instanceof Error
          ? err.message
          : String(err);
      await this.failed(row, null, reason);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One attempt, its result recorded. Recording can fail only on a shared database that is away:
   * the delivery then stays claimed until its lease lapses and is attempted again (the receiver
   * dedupes on `webhook-id`).
   */
  private async attempt(row: DeliveryRow, controller: AbortController): Promise<void> {
    try {
      await this.attemptOnce(row, controller);
    } catch (err) {
      this.opts.log.error({ err, job_id: row.job_id, webhook_id: row.id }, 'could not record a webhook attempt; it is tried again once its claim lapses');
    }
  }

  /** Records a failed attempt and when the next one is due, or gives up past the retry horizon. */
  private async failed(row: DeliveryRow, status: number | null, error: string, how: { retryAfterMs?: number | null; giveUp?: boolean } = {}): Promise<void> {
    const attempts = row.attempts + 1;
    const base = Math.min(MAX_BACKOFF_MS, this.opts.backoffMs * 2 ** (attempts - 1));
    // "Equal jitter": at least half the backoff, so retries still spread out over time. A receiver
    // that says when to come back (Retry-After on a 429 or 503) is not asked again sooner, within
    // the same one-hour cap as the backoff.
    const jittered = base / 2 + Math.random() * (base / 2);
    const delayMs = Math.max(jittered, Math.min(MAX_BACKOFF_MS, how.retryAfterMs ?? 0));
    const nextMs = Date.now() + delayMs;
    const horizonMs = (row.event_at ?? row.created_at) * 1000 + this.opts.retryForMs;
    const giveUp = how.giveUp === true || nextMs > horizonMs;
    await this.outbox.recordFailure(row.id, status, clip(error, MAX_ERROR_CHARS), giveUp ? null : nextMs / 1000);
    const fields = { job_id: row.job_id, webhook_id: row.id, attempts, status, error };
    if (giveUp) this.opts.log.warn(fields, how.giveUp ? 'webhook delivery given up (the receiver answered 410 Gone)' : 'webhook delivery given up (KIAPI_WEBHOOK_RETRY_FOR_S)');
    else this.opts.log.info(fields, 'webhook delivery failed; will retry');
  }

  /** One POST; resolves with the receiver's status (and Retry-After) once its headers arrive. */
  private async post(row: DeliveryRow, signal: AbortSignal): Promise<PostAnswer> {
    const checked = checkHttpUrl(row.url, 'webhook');
    const vetted = await abortable(
      resolveVetted(checked, { kind: 'webhook', allowPrivate: row.vet === 0 || this.opts.allowPrivate }),
      signal,
    );
    const body = row.payload ?? '{}';
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      'user-agent': 'kiapi-webhook',
      'webhook-id': row.id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signature(this.opts.key, row.id, timestamp, body),
    };
    return postOnce(checked, vetted, headers, body, signal);
  }
}

interface PostAnswer {
  status: number;
  /** What the receiver's Retry-After asks for, in ms from now; null without one. */
  retryAfterMs: number | null;
}

/** Retry-After as RFC 9110 has it: a number of seconds or an HTTP date; anything else is ignored. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | null {
  if (value === undefined) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // Only what looks like an HTTP date (it names a day or month): Date.parse alone reads "-5" or
  // "1.5" as dates too.
  if (!/[A-Za-z]{3}/.test(v)) return null;
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

function postOnce(checked: CheckedUrl, vetted: VettedAddress[], headers: Record<string, string>, body: string, signal: AbortSignal): Promise<PostAnswer> {
  const { url, host, port } = checked;
  const https = url.protocol === 'https:';
  const auth =
    url.username !== '' || url.password !== '' ? `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}` : undefined;
  return new Promise<PostAnswer>((resolve, reject) => {
    const req = (https ? httpsRequest : httpRequest)({
      method: 'POST',
      host,
      port,
      path: `${url.pathname}${url.search}`,
      auth,
      headers,
      lookup: pinnedLookup(vetted),
      servername: https && isIP(host) === 0 ? host : undefined,
      // No pooling: a kept-alive socket was connected to an address checked for another delivery.
      agent: false,
      signal,
    });
    req.once('response', (res) => {
      // The answer's body means nothing to kiapi; read it away so the socket closes cleanly.
      res.resume();
      res.on('error', () => undefined);
      const status = res.statusCode ?? 0;
      resolve({ status, retryAfterMs: status === 429 || status === 503 ? retryAfterMs(res.headers['retry-after']) : null });
    });
    req.on('error', reject);
    req.end(body);
  });
}
