/**
 * KIAPI_WEBHOOK_* settings: the callback every job gets unless its request names one, the
 * signing secret, and how long and how patiently a delivery is tried.
 */
import { EnvReader } from '../config.js';
import { checkHttpUrl } from '../files/url-safety.js';
import { isKiapiError } from '../errors.js';
import { parseSecret } from './signing.js';

export interface WebhookSettings {
  /** KIAPI_WEBHOOK_URL: the callback of every job whose request names none (null: none). */
  defaultUrl: string | null;
  /**
   * KIAPI_WEBHOOK_SECRET as given (`whsec_` + base64), or null: then kiapi uses the one it
   * generated into the data dir (webhook-secret.ts).
   */
  secret: string | null;
  /** KIAPI_WEBHOOK_RETRY_FOR_S: a delivery that has not succeeded this long after its event is given up. */
  retryForS: number;
  /** KIAPI_WEBHOOK_TIMEOUT_S: one attempt (connect, send, the receiver's answer) may take this long. */
  timeoutS: number;
  /** KIAPI_WEBHOOK_BACKOFF_S: the wait before the first retry; each later one waits twice as long (with jitter). */
  backoffS: number;
}

export function readWebhookSettings(env: Record<string, string | undefined>): WebhookSettings {
  const r = new EnvReader(env);
  const url = r.optionalString('KIAPI_WEBHOOK_URL', 'callback URL POSTed when any job ends, unless its request names its own `webhook` (unset: none)');
  const secret = r.optionalString(
    'KIAPI_WEBHOOK_SECRET',
    'whsec_<base64> key that signs webhooks (Standard Webhooks); unset: one is generated into <data dir>/webhook-secret',
  );
  const retryForS = r.number('KIAPI_WEBHOOK_RETRY_FOR_S', 24 * 3600, { min: 0, max: 7 * 24 * 3600 }, 'how long a failing webhook delivery is retried, in seconds from its event');
  const timeoutS = r.number('KIAPI_WEBHOOK_TIMEOUT_S', 10, { min: 0.01, max: 300 }, 'one webhook delivery attempt may take this long, in seconds');
  const backoffS = r.number('KIAPI_WEBHOOK_BACKOFF_S', 5, { min: 0.001, max: 3600 }, 'wait before the first webhook retry, in seconds; doubled for each later one (up to an hour)');
  let defaultUrl: string | null = null;
  if (url !== null) {
    try {
      defaultUrl = checkHttpUrl(url, 'KIAPI_WEBHOOK_URL').url.href;
    } catch (err) {
      if (!isKiapiError(err)) throw err;
      r.problems.push(`KIAPI_WEBHOOK_URL=${JSON.stringify(url)}: expected an absolute http:// or https:// URL`);
    }
  }
  if (secret !== null) {
    const problem = parseSecret(secret).problem;
    if (problem) r.problems.push(`KIAPI_WEBHOOK_SECRET: ${problem}`);
  }
  r.check();
  return { defaultUrl, secret, retryForS, timeoutS, backoffS };
}
