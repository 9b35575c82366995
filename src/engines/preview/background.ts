/**
 * The seeded backdrop: a two-colour gradient, a soft light spot and a handful of translucent shapes.
 * All vector, so librsvg paints it in one pass at any size (no per-pixel work in JavaScript).
 */
import { hslToHex, mixColors } from './colors.js';
import { randomBetween, randomInt } from './prng.js';
import type { Random } from './prng.js';
import { num } from './svg.js';

const SHAPE_COUNT_MIN = 5;
const SHAPE_COUNT_MAX = 9;

function seededColors(rng: Random): string[] {
  const hue = randomBetween(rng, 0, 360);
  const turn = randomBetween(rng, 40, 150) * (rng() < 0.5 ? -1 : 1);
  return [
    hslToHex(hue, randomBetween(rng, 0.35, 0.6), randomBetween(rng, 0.7, 0.84)),
    hslToHex(hue + turn, randomBetween(rng, 0.35, 0.6), randomBetween(rng, 0.55, 0.72)),
    hslToHex(hue + turn / 2, randomBetween(rng, 0.4, 0.7), randomBetween(rng, 0.5, 0.8)),
  ];
}

/**
 * `palette` (a caption's style colours) takes precedence over seeded colours; the seed still moves
 * the gradient direction and the shapes, so different seeds give different images either way.
 */
export function backgroundSvg(width: number, height: number, rng: Random, palette: string[]): string {
  const colors = palette.length > 0 ? palette : seededColors(rng);
  const first = colors[0] ?? '#cccccc';
  const second = colors[1] ?? mixColors(first, '#000000', 0.25);
  const angle = randomBetween(rng, 0, Math.PI * 2);
  const dx = Math.cos(angle) / 2;
  const dy = Math.sin(angle) / 2;
  const defs =
    `<defs><linearGradient id="bg" x1="${num(0.5 - dx)}" y1="${num(0.5 - dy)}" x2="${num(0.5 + dx)}" y2="${num(0.5 + dy)}">` +
    `<stop offset="0" stop-color="${first}"/><stop offset="1" stop-color="${second}"/></linearGradient>` +
    `<radialGradient id="glow"><stop offset="0" stop-color="#ffffff" stop-opacity="0.35"/>` +
    `<stop offset="1" stop-color="#ffffff" stop-opacity="0"/></radialGradient></defs>`;
  const base = `<rect width="${width}" height="${height}" fill="url(#bg)"/>`;
  const glowX = randomBetween(rng, 0.2, 0.8) * width;
  const glowY = randomBetween(rng, 0.2, 0.8) * height;
  const glowRadius = Math.max(width, height) * randomBetween(rng, 0.35, 0.6);
  const glow = `<circle cx="${num(glowX)}" cy="${num(glowY)}" r="${num(glowRadius)}" fill="url(#glow)"/>`;
  return defs + base + glow + shapesSvg(width, height, rng, colors);
}

function shapesSvg(width: number, height: number, rng: Random, colors: string[]): string {
  const count = randomInt(rng, SHAPE_COUNT_MIN, SHAPE_COUNT_MAX);
  const unit = Math.min(width, height);
  const shapes: string[] = [];
  for (let i = 0; i < count; i++) {
    const color = colors[randomInt(rng, 0, colors.length - 1)] ?? '#888888';
    const fill = `fill="${color}" fill-opacity="${num(randomBetween(rng, 0.12, 0.3))}"`;
    const cx = randomBetween(rng, -0.05, 1.05) * width;
    const cy = randomBetween(rng, -0.05, 1.05) * height;
    const size = unit * randomBetween(rng, 0.08, 0.38);
    const kind = randomInt(rng, 0, 2);
    if (kind === 0) {
      shapes.push(`<circle cx="${num(cx)}" cy="${num(cy)}" r="${num(size)}" ${fill}/>`);
    } else if (kind === 1) {
      const rotation = randomBetween(rng, -40, 40);
      const position = `x="${num(cx - size)}" y="${num(cy - size * 0.7)}"`;
      const geometry = `${position} width="${num(size * 2)}" height="${num(size * 1.4)}" rx="${num(size * 0.25)}"`;
      shapes.push(`<rect ${geometry} transform="rotate(${num(rotation)} ${num(cx)} ${num(cy)})" ${fill}/>`);
    } else {
      const rx = size * randomBetween(rng, 1, 1.8);
      shapes.push(`<ellipse cx="${num(cx)}" cy="${num(cy)}" rx="${num(rx)}" ry="${num(size * 0.6)}" ${fill}/>`);
    }
  }
  return shapes.join('');
}
