/**
 * SSRF guard for `url` inputs (docs/compatibility.md §3.3, §11.17).
 *
 * The original resolved the host, checked the answers and then let urllib resolve it again and follow
 * redirects unchecked, so DNS rebinding and a single redirect both walked around the check. Here the
 * check produces the exact addresses the connection is later pinned to (see url-fetch.ts), and the
 * caller re-runs it on every redirect hop.
 *
 * Classification is an allowlist: an address is public only if ipaddr.js calls it plain `unicast`
 * (and, for IPv6, it lies in 2000::/3, the only block IANA has allocated for global unicast). Every
 * special-purpose block ipaddr.js knows — including ones the original let through, like 100.64/10 —
 * and every block it does not know is therefore refused, which fails closed when registries grow.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { InputError } from '../errors.js';

/** One address a host resolved to, as handed to the socket layer. */
export interface VettedAddress {
  address: string;
  family: 4 | 6;
}

/** A parsed http(s) URL plus the pieces the connection needs. */
export interface CheckedUrl {
  url: URL;
  /** Host without IPv6 brackets, as dns.lookup, `host` and TLS SNI want it. */
  host: string;
  port: number;
}

export type Resolver = (hostname: string) => Promise<string[]>;

export interface VetOptions {
  kind: string;
  allowPrivate: boolean;
  /** Defaults to one `dns.lookup(host, {all: true})`. */
  resolve?: Resolver;
  /** Defaults to `isNonPublicAddress`; returns true for an address to refuse. */
  isRefusedAddress?: (ip: string) => boolean;
}

/** How long a URL may get in an error message; URLs can carry kilobytes of query string. */
const MAX_URL_IN_MESSAGE = 200;

/** Shorten and strip credentials so neither a huge URL nor a password ends up in logs or responses. */
export function urlForMessage(raw: string): string {
  const text = redactUserInfo(raw);
  return text.length > MAX_URL_IN_MESSAGE ? `${text.slice(0, MAX_URL_IN_MESSAGE)}…` : text;
}

/**
 * The URL without its `user:password@` part, for everything kiapi stores or answers (job params,
 * file meta, messages). A string that does not parse loses anything that looks like userinfo.
 */
export function redactUserInfo(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.username === '' && u.password === '') return raw;
    u.username = '';
    u.password = '';
    return u.href;
  } catch {
    return raw.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1');
  }
}

/**
 * Scheme, host and port checks. WHATWG parsing already normalises the odd IPv4 spellings
 * (`0x7f.1`, `2130706433`, `017700000001`) to dotted quads, so literal hosts need no extra parser.
 */
export function checkHttpUrl(raw: string, kind: string): CheckedUrl {
  const schemeError = () =>
    new InputError(`${kind} url must be an absolute http:// or https:// URL, got '${urlForMessage(raw)}'`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // Out-of-range ports (`:99999`) fail here too; WHATWG rejects them as invalid URLs.
    throw schemeError();
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw schemeError();
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (host === '') throw new InputError(`${kind} url has no host`);
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  // WHATWG accepts `:0`, which no server can listen on; refuse it rather than report a confusing socket error.
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InputError(`${kind} url has an invalid port '${url.port}'`);
  }
  return { url, host, port };
}

async function systemResolve(hostname: string): Promise<string[]> {
  // verbatim keeps the resolver's order, so pinning the first answer matches what a normal client would try.
  const answers = await dnsLookup(hostname, { all: true, verbatim: true });
  return answers.map((a) => a.address);
}

/**
 * Resolve `host` exactly once and return the addresses the connection must use. All answers must
 * pass: a name that resolves to one public and one private address could be steered to either.
 */
export async function resolveVetted(checked: CheckedUrl, opts: VetOptions): Promise<VettedAddress[]> {
  const { host } = checked;
  let ips: string[];
  if (isIP(host) !== 0) {
    ips = [host];
  } else {
    try {
      ips = await (opts.resolve ?? systemResolve)(host);
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new InputError(`cannot resolve ${opts.kind} url host '${host}': ${reason}`);
    }
  }
  if (ips.length === 0) throw new InputError(`cannot resolve ${opts.kind} url host '${host}': no addresses`);
  const refused = opts.isRefusedAddress ?? isNonPublicAddress;
  const vetted: VettedAddress[] = [];
  for (const ip of ips) {
    const family = isIP(ip);
    if (family !== 4 && family !== 6) {
      throw new InputError(`cannot resolve ${opts.kind} url host '${host}': resolver returned '${ip}'`);
    }
    if (!opts.allowPrivate && refused(ip)) {
      throw new InputError(`${opts.kind} url host '${host}' resolves to non-public address ${ip}`);
    }
    vetted.push({ address: ip, family });
  }
  return vetted;
}

function ipv4FromWords(hi: number, lo: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
}

function isPublicIPv4(addr: ipaddr.IPv4): boolean {
  // ipaddr.js's IPv4 table already covers every IANA special block (0/8, 10/8, 100.64/10, 127/8,
  // 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15,
  // 198.51.100/24, 203.0.113/24, 224/4, 240/4, 255.255.255.255). AS112 and AMT anycast blocks are
  // refused too: nobody serves image inputs from them and refusing keeps the rule "unicast only".
  return addr.range() === 'unicast';
}

/**
 * The IPv4 address an IPv6 address stands for, if it is one of the forms that make the host talk
 * IPv4 (or that a translator turns into IPv4): mapped ::ffff:0:0/96, SIIT ::ffff:0:0:0/96,
 * deprecated compatible ::/96, NAT64 well-known prefix 64:ff9b::/96, and 6to4 2002::/16.
 * Checked on the 16-bit words because ipaddr.js parses `::10.0.0.1` as a *mapped* address and
 * `::a00:1` as plain unicast, so its range names cannot be trusted for this.
 */
function embeddedIPv4(p: number[]): ipaddr.IPv4 | undefined {
  const w = (i: number) => p[i] ?? 0;
  const zeroUpTo = (n: number) => p.slice(0, n).every((x) => x === 0);
  if (zeroUpTo(5) && (w(5) === 0xffff || w(5) === 0)) return ipv4FromWords(w(6), w(7)); // mapped / compatible
  if (zeroUpTo(4) && w(4) === 0xffff && w(5) === 0) return ipv4FromWords(w(6), w(7)); // RFC 6145
  if (w(0) === 0x64 && w(1) === 0xff9b && p.slice(2, 6).every((x) => x === 0)) return ipv4FromWords(w(6), w(7));
  if (w(0) === 0x2002) return ipv4FromWords(w(1), w(2));
  return undefined;
}

function isPublicIPv6(addr: ipaddr.IPv6): boolean {
  const embedded = embeddedIPv4(addr.parts);
  if (embedded !== undefined) return isPublicIPv4(embedded);
  // Anything ipaddr.js names (teredo, 64:ff9b:1::/48 local-use NAT64, fc00::/7, fe80::/10,
  // fec0::/10, ff00::/8, 2001:db8::/32, 2001:2::/48, 3fff::/20, orchid, 100::/64 …) is refused;
  // what it leaves as `unicast` outside 2000::/3 is unallocated space (Python's is_reserved).
  const first = addr.parts[0] ?? 0;
  return addr.range() === 'unicast' && (first & 0xe000) === 0x2000;
}

/**
 * True for every address kiapi refuses to fetch from when private URLs are not allowed.
 * Only canonical textual addresses count as addresses (that is what resolvers and WHATWG URL
 * produce); anything else is refused rather than guessed at.
 */
export function isNonPublicAddress(ip: string): boolean {
  const text = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  if (isIP(text) === 0) return true;
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.parse(text);
  } catch {
    return true;
  }
  return addr.kind() === 'ipv4' ? !isPublicIPv4(addr as ipaddr.IPv4) : !isPublicIPv6(addr as ipaddr.IPv6);
}
