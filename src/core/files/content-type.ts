/** Content types from magic bytes and file extensions (the few kinds an image server meets). */
import path from 'node:path';

/** Sniffs png/jpeg/webp/gif from the first bytes; null when it is none of them. */
export function sniffImageType(head: Buffer): string | null {
  if (head.length >= 8 && head.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    return 'image/png';
  }
  if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return 'image/jpeg';
  if (head.length >= 12 && head.toString('latin1', 0, 4) === 'RIFF' && head.toString('latin1', 8, 12) === 'WEBP') {
    return 'image/webp';
  }
  if (head.length >= 6 && ['GIF87a', 'GIF89a'].includes(head.toString('latin1', 0, 6))) return 'image/gif';
  return null;
}

const BY_EXTENSION: Record<string, string> = {
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
  '.json': 'application/json',
  '.txt': 'text/plain',
  '.safetensors': 'application/octet-stream',
};

export function typeFromExtension(filename: string): string | null {
  return BY_EXTENSION[path.extname(filename).toLowerCase()] ?? null;
}

const EXTENSION_BY_TYPE: Record<string, string> = {
  'image/png': '.png',
  'image/jpeg': '.jpg',
  'image/webp': '.webp',
  'image/gif': '.gif',
};

export function extensionForType(contentType: string): string {
  return EXTENSION_BY_TYPE[contentType] ?? '.bin';
}

const MAX_FILENAME_CHARS = 200;

/**
 * A client- or URL-supplied name is stored and later offered as a download name, so it must not
 * carry a path, control characters or unbounded length. Undefined when nothing usable is left.
 */
export function cleanFilename(name: string): string | undefined {
  const cleaned = name
    // eslint-disable-next-line no-control-regex -- stripping control characters is the point
    .replace(/[\u0000-\u001f\u007f-\u009f]/g, '')
    // Format characters (bidi overrides and isolates, zero-width marks) and line/paragraph
    // separators: a name shown with U+202E "gnp.exe" reads as "exe.png".
    .replace(/[\p{Cf}\u2028\u2029]/gu, '')
    .replace(/[/\\]/g, '_')
    .trim();
  if (cleaned === '' || cleaned === '.' || cleaned === '..') return undefined;
  const chars = Array.from(cleaned);
  if (chars.length <= MAX_FILENAME_CHARS) return cleaned;
  // Keep a short extension: it tells a later reader what the file is.
  const dot = cleaned.lastIndexOf('.');
  const ext = dot > 0 && cleaned.length - dot <= 16 ? Array.from(cleaned.slice(dot)) : [];
  return chars.slice(0, MAX_FILENAME_CHARS - ext.length).join('') + ext.join('');
}

export function sanitizeFilename(name: string | undefined | null, fallback = 'upload'): string {
  return cleanFilename(name ?? '') ?? fallback;
}
