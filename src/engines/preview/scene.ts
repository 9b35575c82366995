/**
 * What a preview shows, as SVG: the backdrop and the request's content (prompt, caption layout or
 * edit band), plus an overlay that is never blended away (labels and the preview mark). Pure
 * string building; render.ts turns it into pixels.
 */
import type { ImageTask } from '../engine.js';
import { backgroundSvg } from './background.js';
import { placeElements, readCaption, stableJson } from './caption-layout.js';
import type { CaptionElement, CaptionModel } from './caption-layout.js';
import { INK_DARK, colorForKey, contrastingInk } from './colors.js';
import { darkLabelSvg } from './dark-label.js';
import { gridCells } from './edit-layout.js';
import { toGlyphText } from './hershey-text.js';
import { hashString, seededRandom } from './prng.js';
import { previewMarkElements } from './preview-mark.js';
import { blockSize, insetBox, rect, textBlockSvg } from './svg.js';
import type { Box, InkStyle } from './svg.js';
import { fitText } from './text-fit.js';
import type { FitLimits } from './text-fit.js';

export interface Scene {
  width: number;
  height: number;
  /** SVG elements of the backdrop and content; an init image is blended over these. */
  base: string;
  /** SVG elements drawn last and at full strength. */
  overlay: string;
  /** Pixel cells for the edit reference images, in input order. */
  imageCells: Box[];
  /** Share of the init image in the result: 0 = none, 1 = the input unchanged. */
  initStrength: number;
}

/** Drawing long prompts in full would only produce unreadably small text and a huge SVG. */
const MAX_PROMPT_CHARS = 3000;
const PANEL_COLOR = '#ffffff';
const PANEL_OPACITY = 0.62;

interface Canvas {
  width: number;
  height: number;
  /** The shorter side: text sizes follow it so wide and tall canvases look alike. */
  unit: number;
}

function asCaption(prompt: ImageTask['prompt']): Record<string, unknown> | null {
  return typeof prompt === 'object' && prompt !== null && !Array.isArray(prompt) ? prompt : null;
}

function promptText(prompt: unknown): string {
  return typeof prompt === 'string' ? prompt : stableJson(prompt);
}

function glyphs(text: string): string {
  return toGlyphText(text.length > MAX_PROMPT_CHARS ? `${text.slice(0, MAX_PROMPT_CHARS)}...` : text);
}

/** Text on a translucent panel that hugs the fitted block, so it reads on any backdrop. */
function panelText(text: string, area: Box, limits: FitLimits, valign: 'top' | 'middle'): string {
  const pad = limits.minCapPx * 1.2;
  const block = fitText(glyphs(text), insetBox(area, pad), limits);
  if (!block) return '';
  const size = blockSize(block);
  const panel = {
    x: area.x + (area.width - size.width) / 2 - pad,
    y: valign === 'top' ? area.y : area.y + (area.height - size.height) / 2 - pad,
    width: size.width + 2 * pad,
    height: size.height + 2 * pad,
  };
  return (
    rect(panel, { fill: PANEL_COLOR, fillOpacity: PANEL_OPACITY, radius: pad }) +
    textBlockSvg(block, insetBox(panel, pad), { color: INK_DARK, align: 'center', valign: 'middle' })
  );
}

function promptContent(text: string, canvas: Canvas): string {
  const { width, height, unit } = canvas;
  const area = insetBox({ x: 0, y: 0, width, height }, width * 0.07, height * 0.09);
  const minCapPx = Math.max(3, unit * 0.011);
  return panelText(text, area, { minCapPx, maxCapPx: Math.max(minCapPx, unit * 0.07) }, 'middle');
}

function elementColor(element: CaptionElement, fallback: string): string {
  return element.palette[0] ?? fallback;
}

function objElementSvg(element: CaptionElement, box: Box, canvas: Canvas): string {
  const color = elementColor(element, colorForKey(hashString(element.content)));
  const side = Math.min(box.width, box.height);
  const outline = rect(box, {
    fill: element.palette[1] ?? color,
    fillOpacity: 0.22,
    stroke: color,
    strokeWidth: Math.max(1, Math.min(6, canvas.unit * 0.004)),
    radius: side * 0.04,
  });
  const minCapPx = Math.max(3, canvas.unit * 0.009);
  const pad = Math.max(1, Math.min(side * 0.05, canvas.unit * 0.01));
  const maxCapPx = Math.max(minCapPx, Math.min(box.height * 0.14, canvas.unit * 0.03));
  const labelArea = { x: box.x + pad, y: box.y + pad, width: box.width - 4 * pad, height: Math.min(box.height * 0.3, canvas.unit * 0.09) };
  const block = fitText(glyphs(element.content), labelArea, { minCapPx, maxCapPx });
  if (!block) return outline;
  const size = blockSize(block);
  const tab = { x: box.x + pad, y: box.y + pad, width: size.width + 2 * pad, height: size.height + 2 * pad };
  const ink: InkStyle = { color: contrastingInk(color), align: 'left', valign: 'middle' };
  return outline + rect(tab, { fill: color, radius: pad }) + textBlockSvg(block, insetBox(tab, pad), ink);
}

function textElementSvg(element: CaptionElement, box: Box, canvas: Canvas, defaultInk: string): string {
  const color = elementColor(element, defaultInk);
  const outline = rect(box, {
    stroke: color,
    strokeOpacity: 0.45,
    strokeWidth: Math.max(1, canvas.unit * 0.002),
    dash: Math.max(3, canvas.unit * 0.01),
  });
  const pad = Math.min(box.width, box.height) * 0.06;
  const minCapPx = Math.max(3, canvas.unit * 0.008);
  const block = fitText(glyphs(element.content), insetBox(box, pad), { minCapPx, maxCapPx: Math.max(minCapPx, box.height * 0.6) });
  if (!block) return outline;
  return outline + textBlockSvg(block, insetBox(box, pad), { color, halo: contrastingInk(color), align: 'center', valign: 'middle' });
}

function captionContent(caption: CaptionModel, canvas: Canvas): string {
  const { width, height, unit } = canvas;
  const parts: string[] = [];
  if (caption.title) {
    const band = { x: width * 0.04, y: height * 0.025, width: width * 0.92, height: height * 0.1 };
    const minCapPx = Math.max(3, unit * 0.01);
    parts.push(panelText(caption.title, band, { minCapPx, maxCapPx: Math.max(minCapPx, unit * 0.026) }, 'top'));
  }
  // Seeded backdrops are light; a caption palette may well be dark.
  const defaultInk = caption.palette[0] ? contrastingInk(caption.palette[0]) : INK_DARK;
  for (const element of placeElements(caption.elements, width, height)) {
    const { box } = element;
    parts.push(element.kind === 'text' ? textElementSvg(element, box, canvas, defaultInk) : objElementSvg(element, box, canvas));
  }
  return parts.join('');
}

interface EditLayout {
  content: string;
  cells: Box[];
  tags: string;
}

function editContent(text: string, count: number, canvas: Canvas): EditLayout {
  const { width, height, unit } = canvas;
  const bandHeight = Math.max(4, height * 0.16);
  const minCapPx = Math.max(3, unit * 0.011);
  const bandArea = insetBox({ x: 0, y: 0, width, height: bandHeight }, width * 0.04, height * 0.02);
  const band = panelText(text, bandArea, { minCapPx, maxCapPx: Math.max(minCapPx, unit * 0.04) }, 'middle');
  // Below the band, leaving the bottom strip to the preview mark.
  const area = { x: width * 0.04, y: bandHeight + height * 0.02, width: width * 0.92, height: height * 0.9 - bandHeight };
  const cells = gridCells(count, area, Math.max(1, Math.round(unit * 0.02)));
  const frameStyle = { fill: PANEL_COLOR, fillOpacity: 0.35, stroke: '#ffffff', strokeOpacity: 0.8, strokeWidth: 1 };
  const frames = cells.map((cell) => rect(insetBox(cell, -1), frameStyle)).join('');
  // Numbers let "image 2" in an edit prompt be matched to a cell.
  const capPx = Math.max(4, Math.min(18, unit * 0.022));
  const tag = (cell: Box, i: number) =>
    darkLabelSvg(String(i + 1), { x: cell.x, y: cell.y, anchor: 'top-left', capPx, maxWidth: cell.width });
  const tags = count > 1 ? cells.map(tag).join('') : '';
  return { content: band + frames, cells, tags };
}

function strengthLabel(strength: number, canvas: Canvas): string {
  const margin = canvas.unit * 0.012;
  return darkLabelSvg(`init image, strength ${strength.toFixed(2)}`, {
    x: margin,
    y: margin,
    anchor: 'top-left',
    capPx: Math.max(4, Math.min(14, canvas.unit * 0.016)),
    maxWidth: canvas.width * 0.6,
  });
}

/** `imageStrength` as the share of the input kept; missing or invalid means none. */
export function initStrengthOf(task: ImageTask): number {
  const strength = task.imageStrength;
  if (!task.initImage || typeof strength !== 'number' || !Number.isFinite(strength)) return 0;
  return Math.min(1, Math.max(0, strength));
}

export function buildScene(task: ImageTask): Scene {
  const { width, height } = task;
  const canvas: Canvas = { width, height, unit: Math.min(width, height) };
  const captionObject = asCaption(task.prompt);
  const caption = captionObject ? readCaption(captionObject, width, height) : null;
  const sceneKey = caption ? caption.sceneKey : promptText(task.prompt);
  const backdrop = backgroundSvg(width, height, seededRandom(task.seed, sceneKey), caption?.palette ?? []);
  const imageCount = task.images?.length ?? 0;
  const initStrength = initStrengthOf(task);

  let content: string;
  let cells: Box[] = [];
  let tags = '';
  if (imageCount > 0) {
    const edit = editContent(caption?.title || promptText(task.prompt), imageCount, canvas);
    ({ content, cells, tags } = edit);
  } else if (caption && (caption.title || caption.elements.length > 0)) {
    content = captionContent(caption, canvas);
  } else {
    // A caption with nothing drawable still shows what was sent.
    content = promptContent(promptText(task.prompt), canvas);
  }
  const overlay = tags + (task.initImage ? strengthLabel(initStrength, canvas) : '') + previewMarkElements(width, height);
  return {
    width,
    height,
    base: backdrop + content,
    overlay,
    imageCells: cells,
    initStrength,
  };
}
