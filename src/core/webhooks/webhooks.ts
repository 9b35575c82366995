/**
 * Completion webhooks as the rest of kiapi sees them: what a request's `webhook` /
 * `webhook_events_filter` fields (or KIAPI_WEBHOOK_URL) mean for its job, the outbox that owns
 * delivery state, and the dispatcher that delivers it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../config.js';
import { InputError, RuleError, isKiapiError } from '../errors.js';
import { abortable } from '../files/url-fetch.js';
import { checkHttpUrl, resolveVetted, type CheckedUrl } from '../files/url-safety.js';
import { syncOnly, type JobRecord, type JobStore } from '../jobs/job-store.js';
import { WebhookDispatcher } from './dispatcher.js';
import type { WebhookEvent, WebhookOutboxApi, WebhookTarget } from './outbox.js';
import type { WebhookSettings } from './settings.js';
import { generateSecret, parseSecret } from './signing.js';

/** The request fields, as the families' schemas declare them (webhookFields). */
export interface WebhookRequest {
  webhook?: string | null;
  webhook_events_filter?: string[];
}

export const DEFAULT_EVENTS: readonly WebhookEvent[] = ['completed'];
/** Where the generated secret lives when KIAPI_WEBHOOK_SECRET is unset. */
export const SECRET_FILE = 'webhook-secret';

export class Webhooks {
  private readonly dispatcher: WebhookDispatcher;

  constructor(
    /** The owner of delivery state: SQLite's WebhookOutbox on one node, the shared one in a cluster. */
    readonly outbox: WebhookOutboxApi,
    private readonly settings: WebhookSettings,
    private readonly allowPrivate: boolean,
    key: Buffer,
    private readonly log: Logger,
    /** What a cluster's dispatcher needs (DispatcherOptions): its node id, how often it looks for others' deliveries. */
    shared: { nodeId?: string; idlePollMs?: number } = {},
  ) {
    this.dispatcher = new WebhookDispatcher(this.outbox, {
      key,
      timeoutMs: settings.timeoutS * 1000,
      backoffMs: settings.backoffS * 1000,
      retryForMs: settings.retryForS * 1000,
      allowPrivate,
      log,
      ...shared,
    });
  }

  /**
   * Hooks the outbox to the single-node job store's transitions, whose SQLite transaction calls
   * it synchronously. Before start-up recovery, so the jobs it fails (or completes) queue their
   * `completed` event like any other. (A cluster's queue calls `outbox.transition` with its own
   * transaction's client instead.)
   */
  attach(jobs: JobStore, view: (job: JobRecord) => Record<string, unknown>): void {
    jobs.onTransition((job) => syncOnly(this.outbox.transition(job, () => view(job), undefined), 'the webhook outbox'));
  }

  start(): void {
    this.outbox.prune().catch((err: unknown) => this.log.error({ err }, 'could not prune the webhook outbox'));
    this.dispatcher.start();
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }

  /**
   * The webhook a request asks for, checked before anything is stored: its own `webhook`, else
   * KIAPI_WEBHOOK_URL; `webhook: null` opts out of the server's. A URL from the request must be
   * http(s) and (unless KIAPI_NET_ALLOW_PRIVATE_URLS) resolve to public addresses only, as for
   * `url` inputs; it is checked again on every delivery.
   */
  async target(body: WebhookRequest, signal?: AbortSignal): Promise<WebhookTarget | null> {
    const filter = body.webhook_events_filter;
    // The schema admits only WEBHOOK_EVENTS, at least one.
    const events = [...(filter ?? DEFAULT_EVENTS)] as WebhookEvent[];
    if (body.webhook === null) return null;
    if (body.webhook === undefined) {
      if (this.settings.defaultUrl !== null) return { url: this.settings.defaultUrl, events, vet: false };
      if (filter !== undefined) {
        throw new RuleError('webhook_events_filter needs a webhook URL: set `webhook` in the request (or KIAPI_WEBHOOK_URL on the server)');
      }
      return null;
    }
    let checked;
    try {
      checked = checkHttpUrl(body.webhook, 'webhook');
    } catch (err) {
      if (isKiapiError(err)) throw new RuleError(err.message);
      throw err;
    }
    if (!this.allowPrivate) await this.checkAddresses(checked, signal);
    return { url: checked.url.href, events, vet: true };
  }

  /**
   * Resolves the host once, as a delivery will, within KIAPI_WEBHOOK_TIMEOUT_S (a resolver that
   * does not answer must not hold the request), and refuses non-public addresses.
   */
  private async checkAddresses(checked: CheckedUrl, signal?: AbortSignal): Promise<void> {
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new InputError(`cannot resolve webhook url host '${checked.host}': no answer within ${this.settings.timeoutS} s (KIAPI_WEBHOOK_TIMEOUT_S)`)), this.settings.timeoutS * 1000);
    const onAbort = () => deadline.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await abortable(resolveVetted(checked, { kind: 'webhook', allowPrivate: false }), deadline.signal);
    } catch (err) {
      if (err instanceof InputError && / resolves to non-public address /.test(err.message)) {
        throw new InputError(`${err.message}; KIAPI_NET_ALLOW_PRIVATE_URLS=true on the server allows loopback and private receivers`);
      }
      throw err;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

/**
 * The signing key: KIAPI_WEBHOOK_SECRET, or the secret kiapi generated into the data dir on its
 * first start without one (mode 0600), so webhooks are signed out of the box and the receiver
 * can read the secret from that file. Logged by path, never by value.
 */
export function webhookKey(settings: WebhookSettings, dataDir: string, log: Logger): Buffer {
  if (settings.secret !== null) return parseSecret(settings.secret).key ?? Buffer.alloc(0);
  const file = path.join(dataDir, SECRET_FILE);
  let secret: string;
  try {
    secret = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    secret = generateSecret();
    // `wx`: two starts racing on a fresh data dir cannot both write (the data dir lock also guards this).
    fs.writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
    log.info({ file }, 'generated the webhook signing secret (KIAPI_WEBHOOK_SECRET is unset)');
  }
  const parsed = parseSecret(secret);
  if (!parsed.key) throw new ConfigError([`${file}: ${parsed.problem}; delete it to have kiapi generate a new one, or set KIAPI_WEBHOOK_SECRET`]);
  return parsed.key;
}
