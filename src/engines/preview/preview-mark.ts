/** The "PREVIEW" corner mark every preview image carries, so nobody mistakes it for model output. */
import { darkLabelSvg } from './dark-label.js';
import { svgDocument } from './svg.js';

const MARK_TEXT = 'PREVIEW';

/** The mark as SVG elements for a width×height canvas: bottom-right, on a dark box. */
export function previewMarkElements(width: number, height: number): string {
  const unit = Math.min(width, height);
  const margin = Math.max(1, Math.round(unit * 0.012));
  return darkLabelSvg(MARK_TEXT, {
    x: width - margin,
    y: height - margin,
    anchor: 'bottom-right',
    capPx: Math.min(22, Math.max(5, Math.round(unit * 0.022))),
    // On tiny canvases the mark shrinks rather than covering the whole image.
    maxWidth: width * 0.8,
  });
}

/** The mark as a standalone SVG document (transparent elsewhere). */
export function previewMarkSvg(width: number, height: number): string {
  return svgDocument(width, height, previewMarkElements(width, height));
}
