/**
 * Minimal SVG building blocks. Only numbers, validated colours and glyph path data ever enter the
 * markup, so nothing needs escaping and no `<text>` element is ever produced.
 */
import { LINE_TOP_UNITS, LINE_UNITS, STROKE_UNITS, linePathData, measureText } from './hershey-text.js';
import { blockHeightUnits } from './text-fit.js';
import type { TextBlock } from './text-fit.js';

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** Rounds to 0.01 so the markup (and hence the PNG) does not depend on float noise. */
export function num(value: number): string {
  return String(Math.round(value * 100) / 100);
}

export function svgDocument(width: number, height: number, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${body}</svg>`;
}

export interface RectStyle {
  fill?: string;
  fillOpacity?: number;
  stroke?: string;
  strokeWidth?: number;
  strokeOpacity?: number;
  dash?: number;
  radius?: number;
}

export function rect(box: Box, style: RectStyle): string {
  const attrs = [
    `x="${num(box.x)}" y="${num(box.y)}" width="${num(Math.max(0, box.width))}" height="${num(Math.max(0, box.height))}"`,
    style.radius ? `rx="${num(style.radius)}"` : '',
    `fill="${style.fill ?? 'none'}"`,
    style.fillOpacity !== undefined ? `fill-opacity="${num(style.fillOpacity)}"` : '',
    style.stroke ? `stroke="${style.stroke}" stroke-width="${num(style.strokeWidth ?? 1)}"` : '',
    style.stroke && style.strokeOpacity !== undefined ? `stroke-opacity="${num(style.strokeOpacity)}"` : '',
    style.stroke && style.dash ? `stroke-dasharray="${num(style.dash)} ${num(style.dash * 0.6)}"` : '',
  ];
  return `<rect ${attrs.filter(Boolean).join(' ')}/>`;
}

export function insetBox(box: Box, dx: number, dy = dx): Box {
  return { x: box.x + dx, y: box.y + dy, width: box.width - 2 * dx, height: box.height - 2 * dy };
}

export interface InkStyle {
  color: string;
  /** A wider stroke under the text in this colour, so it reads on any background. */
  halo?: string;
  align?: 'left' | 'center';
  valign?: 'top' | 'middle';
  /** Stroke weight relative to the default. */
  weight?: number;
}

/** Pixel size of a laid-out block. */
export function blockSize(block: TextBlock): { width: number; height: number } {
  return { width: block.widthUnits * block.scale, height: blockHeightUnits(block.lines.length) * block.scale };
}

/**
 * Draw a fitted block inside `box`: one `<path>` per line, positioned by a transform so the path
 * data stays in integer font units.
 */
export function textBlockSvg(block: TextBlock, box: Box, style: InkStyle): string {
  const { scale, lines } = block;
  const strokeUnits = Math.max(STROKE_UNITS * (style.weight ?? 1), 1 / scale);
  const haloUnits = strokeUnits + Math.max(2.4, 2 / scale);
  const top = style.valign === 'top' ? box.y : box.y + (box.height - blockSize(block).height) / 2;
  const strokes: string[] = [];
  const halos: string[] = [];
  lines.forEach((line, i) => {
    const d = linePathData(line);
    if (!d) return;
    const lineWidth = measureText(line) * scale;
    const left = style.align === 'left' ? box.x : box.x + (box.width - lineWidth) / 2;
    const transform = `translate(${num(left)} ${num(top + (i * LINE_UNITS - LINE_TOP_UNITS) * scale)}) scale(${num4(scale)})`;
    if (style.halo) halos.push(`<path transform="${transform}" d="${d}"/>`);
    strokes.push(`<path transform="${transform}" d="${d}"/>`);
  });
  const group = (color: string, width: number, paths: string[]) => {
    if (paths.length === 0) return '';
    const stroke = `stroke="${color}" stroke-width="${num(width)}" stroke-linecap="round" stroke-linejoin="round"`;
    return `<g fill="none" ${stroke}>${paths.join('')}</g>`;
  };
  return (style.halo ? group(style.halo, haloUnits, halos) : '') + group(style.color, strokeUnits, strokes);
}

/** Scales need more precision than pixel positions: an error of 0.005 at scale 0.2 is 2.5 %. */
function num4(value: number): string {
  return String(Math.round(value * 10000) / 10000);
}
