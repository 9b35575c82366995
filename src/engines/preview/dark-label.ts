/** Small one-line labels on a dark box (preview mark, cell numbers, strength note): legible on any image. */
import { INK_LIGHT } from './colors.js';
import { CAP_UNITS, GLYPH_UNITS, measureText, toGlyphText } from './hershey-text.js';
import { rect, textBlockSvg } from './svg.js';

const BOX_COLOR = '#111111';
const BOX_OPACITY = 0.78;
/** Horizontal padding, in font units, on each side of the text. */
const PAD_UNITS = 12;

export interface LabelPlacement {
  /** The corner of the label box given by `anchor`. */
  x: number;
  y: number;
  anchor: 'top-left' | 'bottom-right';
  /** Wanted capital height; shrunk when the label would be wider than `maxWidth`. */
  capPx: number;
  maxWidth: number;
}

export function darkLabelSvg(text: string, placement: LabelPlacement): string {
  const line = toGlyphText(text);
  const widthUnits = measureText(line);
  if (widthUnits <= 0 || placement.maxWidth <= 0) return '';
  const scale = Math.min(placement.capPx / CAP_UNITS, placement.maxWidth / (widthUnits + 2 * PAD_UNITS));
  const pad = PAD_UNITS * scale;
  const width = widthUnits * scale + 2 * pad;
  const height = GLYPH_UNITS * scale + pad;
  const box = {
    x: placement.anchor === 'top-left' ? placement.x : placement.x - width,
    y: placement.anchor === 'top-left' ? placement.y : placement.y - height,
    width,
    height,
  };
  const block = { lines: [line], scale, widthUnits };
  return (
    rect(box, { fill: BOX_COLOR, fillOpacity: BOX_OPACITY, radius: pad * 0.6 }) +
    textBlockSvg(block, box, { color: INK_LIGHT, align: 'center', valign: 'middle', weight: 1.1 })
  );
}
