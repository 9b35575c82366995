/** Colour helpers. Every colour that reaches SVG markup passes through here, so none is raw input. */

const HEX_COLOR = /^#([0-9a-fA-F]{6})$/;

/** `#RRGGBB` (either case, since previews are lenient) → `#rrggbb`; anything else → null. */
export function parseHexColor(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const match = HEX_COLOR.exec(value.trim());
  return match?.[1] ? `#${match[1].toLowerCase()}` : null;
}

/** The valid colours of a palette-like value, in order; tolerant of non-lists and bad entries. */
export function readPalette(value: unknown, limit = 16): string[] {
  if (!Array.isArray(value)) return [];
  const colors: string[] = [];
  for (const entry of value) {
    const color = parseHexColor(entry);
    if (color) colors.push(color);
    if (colors.length >= limit) break;
  }
  return colors;
}

function toRgb(hex: string): [number, number, number] {
  const n = Number.parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function toHex(r: number, g: number, b: number): string {
  const channel = (v: number) =>
    Math.round(Math.min(255, Math.max(0, v)))
      .toString(16)
      .padStart(2, '0');
  return `#${channel(r)}${channel(g)}${channel(b)}`;
}

/** h in degrees, s and l in [0, 1]. */
export function hslToHex(h: number, s: number, l: number): string {
  const hue = (((h % 360) + 360) % 360) / 60;
  const chroma = (1 - Math.abs(2 * l - 1)) * s;
  const x = chroma * (1 - Math.abs((hue % 2) - 1));
  const m = l - chroma / 2;
  const sector = Math.floor(hue);
  const [r, g, b] =
    sector === 0 ? [chroma, x, 0]
    : sector === 1 ? [x, chroma, 0]
    : sector === 2 ? [0, chroma, x]
    : sector === 3 ? [0, x, chroma]
    : sector === 4 ? [x, 0, chroma]
    : [chroma, 0, x];
  return toHex((r + m) * 255, (g + m) * 255, (b + m) * 255);
}

/** Relative luminance (WCAG), 0 = black, 1 = white. */
export function luminance(hex: string): number {
  const linear = toRgb(hex).map((v) => {
    const c = v / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * (linear[0] ?? 0) + 0.7152 * (linear[1] ?? 0) + 0.0722 * (linear[2] ?? 0);
}

export const INK_DARK = '#141414';
export const INK_LIGHT = '#ffffff';

/** Black or white, whichever reads better on `background`. */
export function contrastingInk(background: string): string {
  return luminance(background) > 0.4 ? INK_DARK : INK_LIGHT;
}

/** Linear mix in sRGB; t = 0 gives a, t = 1 gives b. */
export function mixColors(a: string, b: string, t: number): string {
  const [ar, ag, ab] = toRgb(a);
  const [br, bg, bb] = toRgb(b);
  return toHex(ar + (br - ar) * t, ag + (bg - ag) * t, ab + (bb - ab) * t);
}

/** A stable, pleasant colour for a label that came without a palette. */
export function colorForKey(hash: number): string {
  return hslToHex(hash % 360, 0.55, 0.42);
}
