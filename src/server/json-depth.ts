/**
 * JSON bodies nested deeper than MAX_JSON_DEPTH are refused before they are parsed. JSON.parse
 * itself copes with deep nesting, but schema validation, job-param snapshots, the caption
 * verifier and JSON.stringify recurse once per level: ~20 000 levels (a 40 KB body) overflowed
 * the stack in them and answered 500. No kiapi request needs more than a handful of levels (an
 * Ideogram caption is about 6 deep), so the limit is generous and not a setting.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * Whether `text` opens more than `max` nested arrays/objects at some point. One pass without
 * recursion; string contents are skipped with indexOf, so a body that is mostly one large
 * data URL is scanned at memchr speed.
 */
export function jsonDepthExceeds(text: string, max = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      i = stringEnd(text, i);
      if (i < 0) return false; // unterminated: JSON.parse reports it
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > max) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    }
  }
  return false;
}

/** Index of the quote that closes the string opened at `start`, or -1. */
function stringEnd(text: string, start: number): number {
  let i = start;
  for (;;) {
    i = text.indexOf('"', i + 1);
    if (i < 0) return -1;
    let backslashes = 0;
    for (let j = i - 1; j > start && text.charCodeAt(j) === 0x5c; j--) backslashes++;
    if (backslashes % 2 === 0) return i;
  }
}
