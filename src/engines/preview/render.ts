/**
 * Pixels for a scene, in one sharp pipeline: the base SVG, edit references in their cells, the init
 * image blended at its strength, then the overlay; written as a lossless RGB PNG.
 */
import sharp from 'sharp';
import type { OverlayOptions } from 'sharp';
import type { ImageTask } from '../engine.js';
import { buildScene } from './scene.js';
import { svgDocument } from './svg.js';
import type { Box } from './svg.js';

/** Speed over size: the PNG is an intermediate the capability re-encodes to the requested format. */
const PNG_OPTIONS = { compressionLevel: 1, adaptiveFiltering: false } as const;

async function referenceLayer(path: string, cell: Box, canvas: { width: number; height: number }): Promise<OverlayOptions> {
  const width = Math.max(1, Math.min(cell.width, canvas.width - cell.x));
  const height = Math.max(1, Math.min(cell.height, canvas.height - cell.y));
  const { data, info } = await sharp(path)
    .autoOrient()
    .resize(width, height, { fit: 'contain', background: { r: 0, g: 0, b: 0, alpha: 0 } })
    .ensureAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { input: data, raw: { width: info.width, height: info.height, channels: info.channels }, left: cell.x, top: cell.y };
}

/**
 * The init image with a constant alpha of `strength`: composited "over" the generated picture this
 * gives strength·input + (1 − strength)·generated. Transparent inputs are flattened onto white
 * first so their own alpha does not skew the blend.
 */
async function initLayer(path: string, strength: number, width: number, height: number): Promise<OverlayOptions> {
  const { data, info } = await sharp(path)
    .autoOrient()
    .resize(width, height, { fit: 'cover' })
    .flatten({ background: '#ffffff' })
    .ensureAlpha(strength)
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { input: data, raw: { width: info.width, height: info.height, channels: info.channels } };
}

/** Renders the preview for `task` and resolves with the PNG bytes. */
export async function renderPreviewPng(task: ImageTask): Promise<Buffer> {
  const scene = buildScene(task);
  const canvas = { width: scene.width, height: scene.height };
  const references = scene.imageCells.flatMap((cell, i) => {
    const input = task.images?.[i];
    return input ? [referenceLayer(input.path, cell, canvas)] : [];
  });
  // At strength 0 the input cannot show, so it is not even decoded.
  const init =
    task.initImage && scene.initStrength > 0 ? [initLayer(task.initImage.path, scene.initStrength, scene.width, scene.height)] : [];
  const layers = await Promise.all([...references, ...init]);
  const svg = (body: string) => Buffer.from(svgDocument(scene.width, scene.height, body));
  // Without raster layers in between, one SVG render does the job of two plus a composite.
  const pipeline =
    layers.length === 0
      ? sharp(svg(scene.base + scene.overlay))
      : sharp(svg(scene.base)).composite([...layers, { input: svg(scene.overlay) }]);
  return pipeline.removeAlpha().png(PNG_OPTIONS).toBuffer();
}
