/**
 * Reads an Ideogram 4 JSON caption into things the preview can draw. Non-strict validation lets
 * malformed captions through, so every field is optional here and anything odd is skipped, never
 * thrown on.
 *
 * bbox order is `[y_min, x_min, y_max, x_max]` on a 0..1000 scale: that is what mflux validates and
 * what the model was trained on (kiapi's older docs say `[x1, y1, x2, y2]`; the preview follows the
 * model so it shows where the real engine will put things).
 */
import { readPalette } from './colors.js';
import type { Box } from './svg.js';

export interface CaptionElement {
  kind: 'text' | 'obj';
  /** Pixel box from `bbox`, or null when the element has none (or an unusable one). */
  box: Box | null;
  /** For text elements the words to draw; for objects a short label from `desc`. */
  content: string;
  palette: string[];
}

export interface CaptionModel {
  /** `high_level_description`, else the composition's `background` text. */
  title: string;
  palette: string[];
  elements: CaptionElement[];
  /** Everything but the elements: what the backdrop is seeded from. */
  sceneKey: string;
}

const BBOX_SCALE = 1000;
/** Keeps a pathological caption from turning into a huge SVG. */
const MAX_ELEMENTS = 64;
const LABEL_MAX_WORDS = 6;
const LABEL_MAX_CHARS = 48;

function asRecord(value: unknown): Record<string, unknown> | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

function asText(value: unknown): string {
  return typeof value === 'string' ? value.trim() : '';
}

/** JSON text of a value, or '' for values JSON cannot express; used only as hashing input. */
export function stableJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    return '';
  }
}

/** `[y_min, x_min, y_max, x_max]` (0..1000) → pixels; null when it is not four numbers or is empty. */
export function bboxToBox(bbox: unknown, width: number, height: number): Box | null {
  if (!Array.isArray(bbox) || bbox.length !== 4) return null;
  if (!bbox.every((v): v is number => typeof v === 'number' && Number.isFinite(v))) return null;
  const [yA, xA, yB, xB] = bbox.map((v) => Math.min(BBOX_SCALE, Math.max(0, v)) / BBOX_SCALE) as [number, number, number, number];
  const box = {
    x: Math.min(xA, xB) * width,
    y: Math.min(yA, yB) * height,
    width: Math.abs(xB - xA) * width,
    height: Math.abs(yB - yA) * height,
  };
  return box.width >= 1 && box.height >= 1 ? box : null;
}

/** The first phrase of a description, short enough to label a box. */
export function shortLabel(desc: string): string {
  const phrase = desc.split(/[.;:,(\n]/)[0]?.trim() ?? '';
  const words = (phrase.length >= 3 ? phrase : desc).split(/\s+/).filter(Boolean);
  const full = words.join(' ');
  let label = words.slice(0, LABEL_MAX_WORDS).join(' ');
  if (label.length > LABEL_MAX_CHARS) label = label.slice(0, LABEL_MAX_CHARS).trimEnd();
  return label.length < full.length ? `${label}...` : label;
}

function readElement(value: unknown, width: number, height: number): CaptionElement | null {
  const element = asRecord(value);
  if (!element) return null;
  const text = asText(element.text);
  const desc = asText(element.desc);
  const kind = element.type === 'text' || (element.type !== 'obj' && text) ? 'text' : 'obj';
  const content = kind === 'text' ? text || desc : shortLabel(desc || text || 'object');
  if (!content) return null;
  return { kind, box: bboxToBox(element.bbox, width, height), content, palette: readPalette(element.color_palette, 5) };
}

export function readCaption(caption: Record<string, unknown>, width: number, height: number): CaptionModel {
  const style = asRecord(caption.style_description);
  const composition = asRecord(caption.compositional_deconstruction);
  const rawElements = Array.isArray(composition?.elements) ? (composition.elements as unknown[]) : [];
  const elements = rawElements
    .slice(0, MAX_ELEMENTS)
    .map((e) => readElement(e, width, height))
    .filter((e): e is CaptionElement => e !== null);
  return {
    title: asText(caption.high_level_description) || asText(composition?.background),
    palette: readPalette(style?.color_palette),
    elements,
    sceneKey: stableJson([caption.high_level_description, caption.style_description, composition?.background]),
  };
}

/**
 * Boxes for elements that came without one: equal rows stacked in `area`, so they are still shown
 * (in caption order) rather than dropped.
 */
export function stackBoxes(count: number, area: Box): Box[] {
  if (count <= 0) return [];
  const gap = Math.min(area.height * 0.04, 12);
  const rowHeight = (area.height - gap * (count - 1)) / count;
  return Array.from({ length: count }, (_, i) => ({ x: area.x, y: area.y + i * (rowHeight + gap), width: area.width, height: rowHeight }));
}

/** Where unboxed elements go: the lower part when boxed ones exist, else most of the canvas. */
export function defaultArea(width: number, height: number, anyBoxed: boolean): Box {
  const top = anyBoxed ? 0.62 : 0.16;
  return { x: width * 0.06, y: height * top, width: width * 0.88, height: height * (0.93 - top) };
}

/** Every element with a box: its own, or one from the default area. */
export function placeElements(elements: CaptionElement[], width: number, height: number): (CaptionElement & { box: Box })[] {
  const unboxed = elements.filter((e) => !e.box);
  const stacked = stackBoxes(unboxed.length, defaultArea(width, height, unboxed.length < elements.length));
  let next = 0;
  return elements.map((e) => ({ ...e, box: e.box ?? stacked[next++] ?? { x: 0, y: 0, width, height } }));
}
