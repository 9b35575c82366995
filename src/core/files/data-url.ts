/**
 * `data_url` inputs (docs/compatibility.md §3.2). Pure parsing: no file system, so the rules can be tested alone.
 */
import { InputError, TooLargeError } from '../errors.js';

export interface ParsedDataUrl {
  /** Lower-cased media type without parameters; `application/octet-stream` when the header names none. */
  mediaType: string;
  bytes: Buffer;
}

/** A data URL can be tens of megabytes; error messages show only its start. */
const PREVIEW_CHARS = 60;

export function previewText(text: string): string {
  return text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text;
}

export function tooLargeError(kind: string, maxBytes: number): TooLargeError {
  return new TooLargeError(`${kind} is larger than the ${maxBytes} byte limit (KIAPI_MAX_INPUT_BYTES)`);
}

/** Offset and description of the first thing that makes `payload` not strict, canonical-length base64. */
function base64Problem(payload: string): string | undefined {
  const bad = /[^A-Za-z0-9+/=]/.exec(payload);
  if (bad !== null) {
    const ch = bad[0];
    return /\s/.test(ch)
      ? `whitespace at offset ${bad.index} is not allowed`
      : `character ${JSON.stringify(ch)} at offset ${bad.index} is not in the base64 alphabet`;
  }
  if (payload.length % 4 !== 0) return `length ${payload.length} is not a multiple of 4`;
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(payload)) return "'=' padding is misplaced";
  return undefined;
}

/**
 * RFC 2397 / WHATWG percent-decoding of a non-base64 payload. The original stored the raw text, so
 * `data:image/svg+xml,%3Csvg…` (what browsers and encodeURIComponent produce) reached the engine
 * still encoded; decoding is what every other data-URL consumer does. Stray `%` not followed by two
 * hex digits is kept as is, as WHATWG specifies, so plain text without escapes is unchanged.
 */
function percentDecode(text: string): Buffer {
  const raw = Buffer.from(text, 'utf8');
  if (!raw.includes(0x25)) return raw;
  const out = Buffer.allocUnsafe(raw.length);
  const hex = (b: number | undefined): number => {
    if (b === undefined) return -1;
    if (b >= 0x30 && b <= 0x39) return b - 0x30;
    const lower = b | 0x20;
    return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
  };
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i] as number;
    const hi = b === 0x25 ? hex(raw[i + 1]) : -1;
    const lo = hi >= 0 ? hex(raw[i + 2]) : -1;
    if (lo >= 0) {
      out[n++] = (hi << 4) | lo;
      i += 2;
    } else {
      out[n++] = b;
    }
  }
  return out.subarray(0, n);
}

/**
 * Split and decode a data URL. The size cap is applied to the decoded length computed from the
 * base64 text, before any buffer of that size is allocated.
 */
export function parseDataUrl(dataUrl: string, kind: string, maxBytes: number): ParsedDataUrl {
  const comma = dataUrl.indexOf(',');
  // The original accepted a string with no comma as an empty payload; a header alone is not a data URL.
  if (comma < 0 || !dataUrl.startsWith('data:')) {
    throw new InputError(`${kind} data_url must be a data URL, got '${previewText(dataUrl)}'`);
  }
  const header = dataUrl.slice(0, comma);
  const payload = dataUrl.slice(comma + 1);
  const semi = header.indexOf(';');
  const declared = (semi < 0 ? header.slice(5) : header.slice(5, semi)).trim().toLowerCase();
  const mediaType = declared === '' ? 'application/octet-stream' : declared;

  // Case-sensitive and anywhere in the header, like the original (`;base64` is always written lower-case).
  if (header.includes(';base64')) {
    const padding = payload.endsWith('==') ? 2 : payload.endsWith('=') ? 1 : 0;
    const decodedSize = Math.floor((payload.length * 3) / 4) - padding;
    if (decodedSize > maxBytes) throw tooLargeError(kind, maxBytes);
    const problem = base64Problem(payload);
    if (problem !== undefined) throw new InputError(`invalid ${kind} data_url payload: ${problem}`);
    return { mediaType, bytes: Buffer.from(payload, 'base64') };
  }

  const bytes = percentDecode(payload);
  if (bytes.length > maxBytes) throw tooLargeError(kind, maxBytes);
  return { mediaType, bytes };
}
