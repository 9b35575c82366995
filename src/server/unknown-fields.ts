/**
 * Unknown top-level fields of a request body. The contract allows extra fields (the original
 * ignores them), so they cannot be refused; but a misspelt `"widht": 512` silently gave a
 * 1024-wide image. Each one is reported instead, with the closest known name when it is close
 * enough to be a typo: on the answer as a `Warning` header and in the job's `result.warnings`.
 */
import { head } from '../core/errors.js';

/** A body can carry thousands of extra keys; a few warnings say enough. */
const MAX_WARNINGS = 10;
/** Names are client text: quoted clipped. */
const MAX_NAME_CHARS = 64;

export function unknownFieldWarnings(known: readonly string[], body: unknown): string[] {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return [];
  const knownSet = new Set(known);
  const unknown = Object.keys(body).filter((k) => !knownSet.has(k));
  const warnings = unknown.slice(0, MAX_WARNINGS).map((name) => {
    const guess = closest(name, known);
    const shown = name.length > MAX_NAME_CHARS ? `${head(name, MAX_NAME_CHARS)}…` : name;
    return `unknown field '${shown}' ignored${guess ? `; did you mean '${guess}'?` : ''}`;
  });
  if (unknown.length > MAX_WARNINGS) warnings.push(`${unknown.length - MAX_WARNINGS} more unknown fields ignored`);
  return warnings;
}

/**
 * The `Warning` header value (RFC 9111 §5.5 form `299 - "text"`, one per warning, comma-joined).
 * Header text must be visible ASCII: other characters become `?`, and `"` / `\` are escaped as
 * a quoted-string requires.
 */
export function warningHeader(warnings: readonly string[]): string {
  return warnings.map((w) => `299 - "${w.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, '\\$&')}"`).join(', ');
}

/**
 * The known name within a typo's reach: Damerau-style edit distance (a swap of two neighbours
 * costs one, as in `widht`) of at most 1 for short names and 2 from six characters on,
 * compared case-insensitively. Ties go to the first name in schema order.
 */
function closest(name: string, known: readonly string[]): string | null {
  if (name.length > MAX_NAME_CHARS) return null;
  const a = name.toLowerCase();
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const limit = k.length >= 6 ? 2 : 1;
    const d = distance(a, k.toLowerCase());
    if (d <= limit && d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/** Optimal string alignment distance (insert, delete, substitute, swap neighbours). */
function distance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return Infinity;
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}
