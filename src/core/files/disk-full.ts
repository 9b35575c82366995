/**
 * Recognises "the disk is full" however it arrives — a Node errno (ENOSPC, EDQUOT, or EFBIG when
 * a file size limit is hit), sharp/libvips text ("No space left on device"), or the Python
 * worker's OSError text ("[Errno 28]") — and turns it into one clear StorageFullError (507):
 * `disk full while saving <what>: <reason>; free space in <dir>`.
 */
import path from 'node:path';
import { EngineError, StorageFullError, isKiapiError } from '../errors.js';

const CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);
// strerror texts as libvips ("system error: File too large") and Python ("[Errno 28] ...") print them.
const TEXT = /no space left on device|disk quota exceeded|system error: file too large|\bENOSPC\b|\bEDQUOT\b|\bEFBIG\b|\[Errno (28|27|122)\]/i;

export function isDiskFull(err: unknown): boolean {
  if (err instanceof StorageFullError) return true;
  if (!(err instanceof Error)) return false;
  // Other named errors are about the request (their text may quote it); only engine failures
  // carry a disk error as text.
  if (isKiapiError(err) && !(err instanceof EngineError)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return (typeof code === 'string' && CODES.has(code)) || TEXT.test(err.message);
}

/**
 * The StorageFullError for `err` (which `isDiskFull` accepted). `fallbackDir` is named when the
 * error does not say which file it was writing (sharp, the worker).
 */
export function diskFullError(err: unknown, what: string, fallbackDir: string): StorageFullError {
  if (err instanceof StorageFullError) return err;
  const e = err as NodeJS.ErrnoException & { dest?: string };
  const file = typeof e.dest === 'string' ? e.dest : typeof e.path === 'string' ? e.path : null;
  const dir = file ? path.dirname(file) : fallbackDir;
  const result = new StorageFullError(`disk full while saving ${what}: ${reasonOf(e)}; free space in ${dir}`);
  result.cause = err;
  return result;
}

/** One line: the errno message, or the line of a multi-line library message that says it. */
function reasonOf(err: Error): string {
  const lines = err.message.split('\n').map((l) => l.trim()).filter(Boolean);
  const line = lines.find((l) => TEXT.test(l)) ?? lines[0] ?? 'no space left on device';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
