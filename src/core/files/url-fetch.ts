/**
 * HTTP(S) GET with the SSRF guard applied to every hop and the socket pinned to the vetted address.
 * Knows nothing about files: it hands back the final 2xx response for the caller to stream.
 */
import type { IncomingMessage } from 'node:http';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { isIP } from 'node:net';
import { InputError } from '../errors.js';
import type { CheckedUrl, VetOptions, VettedAddress } from './url-safety.js';
import { checkHttpUrl, resolveVetted, urlForMessage } from './url-safety.js';

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export interface OpenOptions extends VetOptions {
  maxRedirects: number;
  /** Aborts DNS, connect and headers; the caller also uses it for the body. */
  signal: AbortSignal;
  /** The URL as the client gave it, for messages. */
  originalUrl: string;
}

export interface OpenedResponse {
  response: IncomingMessage;
  finalUrl: URL;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for http.request that never asks DNS: it answers with the addresses already vetted, so a
 * resolver that changes its answer between check and connect (DNS rebinding) has nothing to change.
 * Honours `all` because Node's happy-eyeballs (autoSelectFamily) asks for every address.
 * Webhook deliveries connect the same way (core/webhooks/dispatcher.ts).
 */
export function pinnedLookup(vetted: VettedAddress[]) {
  return (_hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    const wanted = options.family === 4 || options.family === 6 ? vetted.filter((a) => a.family === options.family) : vetted;
    const first = wanted[0];
    if (first === undefined) {
      const err: NodeJS.ErrnoException = new Error(`no vetted IPv${String(options.family)} address`);
      err.code = 'ENOTFOUND';
      callback(err, '', undefined);
      return;
    }
    if (options.all === true) callback(null, wanted.map((a) => ({ address: a.address, family: a.family })));
    else callback(null, first.address, first.family);
  };
}

/** Lets the deadline interrupt work that takes no signal (dns.lookup). */
export async function abortable<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** One GET to `checked`, connected to `vetted`; resolves once headers arrive. */
function getOnce(checked: CheckedUrl, vetted: VettedAddress[], signal: AbortSignal): Promise<IncomingMessage> {
  const { url, host, port } = checked;
  const https = url.protocol === 'https:';
  const auth =
    url.username !== '' || url.password !== ''
      ? `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`
      : undefined;
  return new Promise<IncomingMessage>((resolve, reject) => {
    const req = (https ? httpsRequest : httpRequest)({
      method: 'GET',
      host,
      port,
      path: `${url.pathname}${url.search}`,
      auth,
      headers: {
        'user-agent': 'kiapi',
        accept: '*/*',
        // We store the bytes as served; a compressed body would be counted and saved compressed.
        'accept-encoding': 'identity',
      },
      lookup: pinnedLookup(vetted),
      // SNI and the certificate check use the name, not the pinned address; SNI must not be an IP.
      servername: https && isIP(host) === 0 ? host : undefined,
      // No pooling: a kept-alive socket from an earlier request was vetted under other options.
      agent: false,
      signal,
    });
    req.once('response', resolve);
    // Persistent: the socket can still fail after headers, and an unhandled 'error' would crash the process.
    req.on('error', reject);
    req.end();
  });
}

/**
 * GET `originalUrl`, following redirects by hand so each hop goes through the scheme check, one
 * resolution and the address check again (urllib followed up to 10 unchecked, even to ftp://).
 */
export async function openVettedResponse(opts: OpenOptions): Promise<OpenedResponse> {
  const shown = urlForMessage(opts.originalUrl);
  let checked = checkHttpUrl(opts.originalUrl, opts.kind);
  for (let redirects = 0; ; redirects++) {
    const vetted = await abortable(resolveVetted(checked, opts), opts.signal);
    const response = await getOnce(checked, vetted, opts.signal);
    const status = response.statusCode ?? 0;
    const location = response.headers.location;
    if (REDIRECT_STATUSES.has(status) && location !== undefined && location !== '') {
      response.destroy();
      if (redirects >= opts.maxRedirects) {
        throw new InputError(
          `failed to fetch ${opts.kind} url '${shown}': too many redirects (more than ${opts.maxRedirects})`,
        );
      }
      let next: string;
      try {
        next = new URL(location, checked.url).href;
      } catch {
        throw new InputError(`failed to fetch ${opts.kind} url '${shown}': redirect to an invalid location`);
      }
      checked = checkHttpUrl(next, opts.kind);
      continue;
    }
    if (status < 200 || status > 299) {
      response.destroy();
      throw new InputError(`failed to fetch ${opts.kind} url '${shown}': HTTP ${status}`);
    }
    return { response, finalUrl: checked.url };
  }
}
