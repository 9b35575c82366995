/**
 * Reading a safetensors header without loading the tensors: 8 bytes little-endian length, then
 * that many bytes of JSON mapping tensor names to {dtype, shape, data_offsets} (plus an optional
 * `__metadata__`). Used to refuse, before a job is queued, a LoRA file the engine could not load.
 */
import fsp from 'node:fs/promises';
import { InputError } from '../errors.js';

/** The format's own reference implementation refuses headers above 100 MB. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsHeader {
  tensors: Map<string, { dtype: string; shape: number[] }>;
}

/** Parses the header of `file`, or throws an Error saying what is wrong with it. */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  const handle = await fsp.open(file, 'r');
  try {
    const { size } = await handle.stat();
    const prefix = Buffer.alloc(8);
    if (size < 8 || (await handle.read(prefix, 0, 8, 0)).bytesRead < 8) throw new Error('the file is shorter than a safetensors header');
    const length = prefix.readBigUInt64LE(0);
    if (length < 2n || length > BigInt(Math.min(MAX_HEADER_BYTES, size - 8))) {
      throw new Error('it does not start with a safetensors header (bad header length)');
    }
    const raw = Buffer.alloc(Number(length));
    await handle.read(raw, 0, raw.length, 8);
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.toString('utf8'));
    } catch {
      throw new Error('its safetensors header is not JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('its safetensors header is not a JSON object');
    const tensors = new Map<string, { dtype: string; shape: number[] }>();
    const dataBytes = size - 8 - Number(length);
    for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
      if (name === '__metadata__') continue;
      const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const offsets = v?.data_offsets;
      if (
        typeof v?.dtype !== 'string' ||
        !Array.isArray(v.shape) ||
        !Array.isArray(offsets) ||
        offsets.length !== 2 ||
        !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0 && (o as number) <= dataBytes)
      ) {
        throw new Error(`tensor '${name.slice(0, 100)}' has a malformed entry in the safetensors header`);
      }
      tensors.set(name, { dtype: v.dtype, shape: v.shape as number[] });
    }
    return { tensors };
  } finally {
    await handle.close();
  }
}

/**
 * Adapter weights carry these in their tensor names in every format mflux reads (PEFT/diffusers
 * `lora_A`/`lora_B`, kohya `lora_up`/`lora_down`, LoKr `lokr_`, LoHa `hada_`).
 */
const ADAPTER_MARKERS = /lora|lokr_|hada_/i;

/**
 * A 400 naming the input unless `file` is a safetensors file holding adapter weights. A full
 * checkpoint or any other file would otherwise reach the engine and fail the job (or, with older
 * mflux, be skipped while the job "succeeded").
 */
export async function assertLoraFile(file: string, kind: string): Promise<void> {
  let header: SafetensorsHeader;
  try {
    header = await readSafetensorsHeader(file);
  } catch (err) {
    throw new InputError(`${kind} is not a LoRA: ${(err as Error).message}. Pass a LoRA adapter in .safetensors format`);
  }
  if (header.tensors.size === 0) throw new InputError(`${kind} is not a LoRA: the safetensors file holds no tensors`);
  if (![...header.tensors.keys()].some((name) => ADAPTER_MARKERS.test(name))) {
    const sample = [...header.tensors.keys()].slice(0, 3).map((n) => `'${n.slice(0, 80)}'`).join(', ');
    throw new InputError(
      `${kind} is not a LoRA: none of its ${header.tensors.size} tensors is adapter weights (lora_A/lora_B, lora_up/lora_down, …; found ${sample}). Pass a LoRA adapter, not a full checkpoint`,
    );
  }
}
