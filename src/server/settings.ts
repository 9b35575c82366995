/**
 * HTTP connection settings: how long a client may take to send a request, and how long a
 * connection may sit with no byte moving. Read with the same EnvReader as every other setting, so
 * a bad value stops start-up with a message naming the variable.
 */
import { EnvReader } from '../core/config.js';

export interface ServerSettings {
  /**
   * KIAPI_REQUEST_TIMEOUT_S: the longest a client may take to send one whole request, headers
   * and body (Node's `requestTimeout`; answered 408). Generous, because an upload of many GB on a
   * slow link must fit; it bounds clients that trickle a byte now and then. 0 = no limit.
   */
  requestTimeoutS: number;
  /**
   * KIAPI_IDLE_TIMEOUT_S: a connection on which no byte moves for this long is closed — a stalled
   * upload, a client that stops reading a download. Not applied while a sync generation waits for
   * its job (KIAPI_SYNC_TIMEOUT_S bounds that wait). 0 = no limit.
   */
  idleTimeoutS: number;
}

export const DEFAULT_REQUEST_TIMEOUT_S = 3600;
export const DEFAULT_IDLE_TIMEOUT_S = 120;

export function readServerSettings(env: Record<string, string | undefined>): ServerSettings {
  const r = new EnvReader(env);
  const settings: ServerSettings = {
    requestTimeoutS: r.number('KIAPI_REQUEST_TIMEOUT_S', DEFAULT_REQUEST_TIMEOUT_S, { min: 0, max: 7 * 24 * 3600 }, 'longest a client may take to send one request, in seconds (0: no limit)'),
    idleTimeoutS: r.number('KIAPI_IDLE_TIMEOUT_S', DEFAULT_IDLE_TIMEOUT_S, { min: 0, max: 7 * 24 * 3600 }, 'close a connection on which no byte moves this long, in seconds (0: no limit)'),
  };
  r.check();
  return settings;
}
