/** A preview demand a test sets by hand, and a collector for what an engine delivers. */
import type { EnginePreview, PreviewDemand, PreviewRequest } from '../../src/engines/engine.js';

export class ManualDemand implements PreviewDemand {
  private listeners = new Set<() => void>();

  constructor(private value: PreviewRequest | null = null) {}

  current(): PreviewRequest | null {
    return this.value;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  set(value: PreviewRequest | null): void {
    this.value = value;
    for (const l of this.listeners) l();
  }

  get subscribers(): number {
    return this.listeners.size;
  }
}

/** JPEG start-of-image marker: every preview must begin with it. */
export function isJpeg(bytes: Buffer): boolean {
  return bytes.length > 4 && bytes[0] === 0xff && bytes[1] === 0xd8;
}

export type { EnginePreview };
