/**
 * Wrapping and sizing of glyph text: find the largest scale at which a text fits a box, and when
 * even the smallest legible scale does not fit, keep as many lines as fit and end with "...".
 */
import { CAP_UNITS, GLYPH_UNITS, LINE_UNITS, charAdvance, measureText } from './hershey-text.js';

export interface Size {
  width: number;
  height: number;
}

export interface TextBlock {
  lines: string[];
  /** Pixels per font unit. */
  scale: number;
  /** Widest line, in font units. */
  widthUnits: number;
}

export interface FitLimits {
  /** Upper bound for the height of a capital letter, in pixels. */
  maxCapPx: number;
  /** Below this capital height text is cut instead of shrunk further. */
  minCapPx: number;
}

const ELLIPSIS = '...';
const SEARCH_ITERATIONS = 18;

/** Height in font units of `lineCount` lines. */
export function blockHeightUnits(lineCount: number): number {
  return lineCount <= 0 ? 0 : (lineCount - 1) * LINE_UNITS + GLYPH_UNITS;
}

/** Break glyph text into lines no wider than `maxUnits`; words longer than a line are split. */
export function wrapText(text: string, maxUnits: number): string[] {
  const lines: string[] = [];
  for (const paragraph of text.split('\n')) {
    const words = paragraph.split(' ').filter((w) => w.length > 0);
    let line = '';
    let lineWidth = 0;
    for (const word of words) {
      const wordWidth = measureText(word);
      const spaced = line ? charAdvance(' ') + wordWidth : wordWidth;
      if (lineWidth + spaced <= maxUnits) {
        line = line ? `${line} ${word}` : word;
        lineWidth += spaced;
        continue;
      }
      if (line) lines.push(line);
      if (wordWidth <= maxUnits) {
        line = word;
        lineWidth = wordWidth;
      } else {
        const pieces = splitWord(word, maxUnits);
        line = pieces.pop() ?? '';
        lineWidth = measureText(line);
        lines.push(...pieces);
      }
    }
    if (line) lines.push(line);
  }
  return lines;
}

/** Hard-break a word; every piece holds at least one character so wrapping always progresses. */
function splitWord(word: string, maxUnits: number): string[] {
  const pieces: string[] = [];
  let piece = '';
  let width = 0;
  for (const ch of word) {
    const advance = charAdvance(ch);
    if (piece && width + advance > maxUnits) {
      pieces.push(piece);
      piece = '';
      width = 0;
    }
    piece += ch;
    width += advance;
  }
  if (piece) pieces.push(piece);
  return pieces;
}

function fitsAt(text: string, box: Size, scale: number): string[] | null {
  const lines = wrapText(text, box.width / scale);
  const tooWide = lines.some((line) => measureText(line) * scale > box.width);
  if (tooWide || blockHeightUnits(lines.length) * scale > box.height) return null;
  return lines;
}

/**
 * Lay `text` (already glyph text) into `box`, as large as the limits allow. Returns null when there
 * is nothing to draw or the box cannot hold a single line at the minimum size.
 */
export function fitText(text: string, box: Size, limits: FitLimits): TextBlock | null {
  if (!text.trim() || box.width <= 0 || box.height <= 0) return null;
  const minScale = limits.minCapPx / CAP_UNITS;
  // Splitting a word ("BOULANG / ERIE") reads worse than smaller text, so the longest word caps
  // the scale unless that would go below the minimum.
  const longestWord = text.split(/\s+/).reduce((widest, word) => Math.max(widest, measureText(word)), 0);
  const wordScale = longestWord > 0 ? box.width / longestWord : Infinity;
  const maxScale = Math.max(minScale, Math.min(limits.maxCapPx / CAP_UNITS, wordScale));
  const atMax = fitsAt(text, box, maxScale);
  if (atMax) return makeBlock(atMax, maxScale);
  if (fitsAt(text, box, minScale)) {
    let low = minScale;
    let high = maxScale;
    for (let i = 0; i < SEARCH_ITERATIONS; i++) {
      const mid = (low + high) / 2;
      if (fitsAt(text, box, mid)) low = mid;
      else high = mid;
    }
    const lines = fitsAt(text, box, low);
    if (lines) return makeBlock(lines, low);
  }
  return truncatedBlock(text, box, minScale);
}

function truncatedBlock(text: string, box: Size, scale: number): TextBlock | null {
  const maxUnits = box.width / scale;
  const capacity = Math.floor((box.height / scale - GLYPH_UNITS) / LINE_UNITS) + 1;
  if (capacity < 1 || measureText(ELLIPSIS) > maxUnits) return null;
  const lines = wrapText(text, maxUnits).slice(0, capacity);
  const last = lines.pop() ?? '';
  lines.push(withEllipsis(last, maxUnits));
  return makeBlock(lines, scale);
}

function withEllipsis(line: string, maxUnits: number): string {
  const chars = Array.from(line);
  while (chars.length > 0 && measureText(`${chars.join('')}${ELLIPSIS}`) > maxUnits) chars.pop();
  return `${chars.join('').trimEnd()}${ELLIPSIS}`;
}

function makeBlock(lines: string[], scale: number): TextBlock {
  return { lines, scale, widthUnits: lines.reduce((widest, line) => Math.max(widest, measureText(line)), 0) };
}
