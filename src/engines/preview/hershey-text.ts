/**
 * Text as Hershey single-stroke glyphs (the `futural` face of the hersheytext package), turned into
 * SVG path data. Drawing text as paths instead of SVG `<text>` keeps previews byte-identical on every
 * machine: no system font lookup, no fontconfig, no hinting differences.
 *
 * Units: glyph coordinates are integers, a capital spans y = 1..22 (baseline at 22), ascenders reach
 * y = -3 and descenders y = 29. Layout works in these font units and scales once per line.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const FONT_NAME = 'futural';
/** Offset between a character code and its index in the font's `chars` list (the list starts at '!'). */
const FIRST_CODE = 33;
const LAST_CODE = 126;
const SPACE_ADVANCE = 14;
const PLACEHOLDER = '?';

/** Height of a capital letter, in font units. */
export const CAP_UNITS = 21;
/** Top of the line box relative to glyph coordinates (just above the tallest ascender). */
export const LINE_TOP_UNITS = -4;
/** Glyph extent from the line top to the lowest descender. */
export const GLYPH_UNITS = 34;
/** Distance between consecutive baselines. */
export const LINE_UNITS = 38;
/** A stroke weight that reads as a regular-to-bold sans at display sizes. */
export const STROKE_UNITS = 2.4;

interface Glyph {
  advance: number;
  /** Path data for the glyph at x = 0, split into strokes of [x0, y0, x1, y1, ...]. */
  strokes: number[][];
}

let glyphTable: (Glyph | undefined)[] | undefined;

function parseGlyph(d: string, halfWidth: number): Glyph {
  const strokes = d
    .split('M')
    .map((segment) => Array.from(segment.matchAll(/(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)/g), (m) => [Number(m[1]), Number(m[2])]).flat())
    .filter((points) => points.length >= 2);
  return { advance: 2 * halfWidth, strokes };
}

function isCharList(value: unknown): value is { d: unknown; o: unknown }[] {
  return Array.isArray(value) && value.every((c) => typeof c === 'object' && c !== null);
}

/** Parsed once per process: the JSON holds two dozen fonts and we need one. */
function glyphs(): (Glyph | undefined)[] {
  if (glyphTable) return glyphTable;
  const require = createRequire(import.meta.url);
  const file = require.resolve('hersheytext/hersheytext.min.json');
  const fonts = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { chars?: unknown } | undefined>;
  const chars = fonts[FONT_NAME]?.chars;
  if (!isCharList(chars)) throw new Error(`hersheytext: font '${FONT_NAME}' is missing or malformed`);
  const table: (Glyph | undefined)[] = [];
  for (let code = FIRST_CODE; code <= LAST_CODE; code++) {
    const entry = chars[code - FIRST_CODE];
    const halfWidth = Number(entry?.o);
    if (entry && typeof entry.d === 'string' && Number.isFinite(halfWidth)) table[code] = parseGlyph(entry.d, halfWidth);
  }
  glyphTable = table;
  return table;
}

/** Typographic characters that NFKD leaves alone but have an obvious ASCII stand-in. */
const ASCII_STAND_INS: Record<string, string> = {
  '\u2018': "'",
  '\u2019': "'",
  '\u201a': "'",
  '\u201c': '"',
  '\u201d': '"',
  '\u201e': '"',
  '\u2010': '-',
  '\u2011': '-',
  '\u2012': '-',
  '\u2013': '-',
  '\u2014': '-',
  '\u2212': '-',
  '\u00ab': '"',
  '\u00bb': '"',
  '\u00d7': 'x',
};

/**
 * Reduce text to what the font can draw: accents are dropped (é → e), a few typographic marks
 * become ASCII, line breaks stay, other whitespace becomes a space, and anything left without a
 * glyph becomes a placeholder, one per code point.
 */
export function toGlyphText(text: string): string {
  const decomposed = text.normalize('NFKD').replace(/\p{M}/gu, '');
  let out = '';
  for (const ch of decomposed) {
    const code = ch.codePointAt(0) ?? 0;
    if (code >= FIRST_CODE && code <= LAST_CODE) out += ch;
    else if (ch === '\n') out += '\n';
    else if (/\s/u.test(ch)) out += ' ';
    else if (code < 32 || code === 127) continue;
    else out += ASCII_STAND_INS[ch] ?? PLACEHOLDER;
  }
  return out;
}

function glyphFor(ch: string): Glyph | undefined {
  return glyphs()[ch.charCodeAt(0)];
}

/** Advance of one character of glyph text (spaces included), in font units. */
export function charAdvance(ch: string): number {
  if (ch === ' ') return SPACE_ADVANCE;
  return glyphFor(ch)?.advance ?? glyphFor(PLACEHOLDER)?.advance ?? SPACE_ADVANCE;
}

/** Width of a single line of glyph text, in font units. */
export function measureText(text: string): number {
  let width = 0;
  for (const ch of text) width += charAdvance(ch);
  return width;
}

/**
 * Path data for one line of glyph text, starting at x = 0 in font units. Coordinates stay integers,
 * which keeps the SVG small; callers position and scale the line with a transform.
 */
export function linePathData(text: string): string {
  const parts: string[] = [];
  let x = 0;
  for (const ch of text) {
    const glyph = ch === ' ' ? undefined : (glyphFor(ch) ?? glyphFor(PLACEHOLDER));
    if (glyph) {
      for (const stroke of glyph.strokes) parts.push(strokePathData(stroke, x));
    }
    x += charAdvance(ch);
  }
  return parts.join('');
}

function strokePathData(stroke: number[], dx: number): string {
  let d = `M${(stroke[0] ?? 0) + dx},${stroke[1] ?? 0}`;
  if (stroke.length > 2) d += 'L';
  for (let i = 2; i + 1 < stroke.length; i += 2) {
    d += `${i > 2 ? ' ' : ''}${(stroke[i] ?? 0) + dx},${stroke[i + 1] ?? 0}`;
  }
  return d;
}
