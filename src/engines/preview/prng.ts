/**
 * A tiny seeded PRNG so the preview is reproducible across runs and platforms (Math.random is not
 * seedable, and a library would be overkill for picking a few colours and shapes).
 */

/** Returns floats in [0, 1). */
export type Random = () => number;

/** FNV-1a, 32 bit: cheap and stable, enough to spread prompt text over the seed space. */
export function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** mulberry32: one 32-bit state word, good enough statistical quality for drawing. */
export function mulberry32(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A generator for one (seed, key) pair. The seed goes through its decimal string so seeds above
 * 2^32 (the API allows larger integers) still change the stream instead of aliasing.
 */
export function seededRandom(seed: number, key: string): Random {
  return mulberry32(hashString(`${seed}\u0000${key}`));
}

export function randomBetween(rng: Random, min: number, max: number): number {
  return min + (max - min) * rng();
}

export function randomInt(rng: Random, min: number, maxInclusive: number): number {
  return Math.floor(randomBetween(rng, min, maxInclusive + 1));
}
