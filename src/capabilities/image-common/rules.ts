/** Capability rules the original checks before queueing, with its messages (docs/compatibility.md §4.3). */
import { RuleError } from '../../core/errors.js';

export function checkMultiplesOf16(width: number, height: number): void {
  if (width % 16 !== 0 || height % 16 !== 0) throw new RuleError('width and height must be multiples of 16');
}

export function checkCap(width: number, height: number, maxWidth: number, maxHeight: number): void {
  if (width > maxWidth || height > maxHeight) {
    throw new RuleError(`size ${width}x${height} exceeds the cap ${maxWidth}x${maxHeight}`);
  }
}

export function checkQuantize(q: number | null | undefined, allowed: readonly number[]): void {
  if (q !== null && q !== undefined && !allowed.includes(q)) {
    throw new RuleError(`quantize must be one of ${allowed.join(', ')}`);
  }
}

/** Not in the original (it had no limit); keeps the job table and the engine's tokenizer sane. */
export function checkPromptLength(prompt: string | null | undefined, max: number, field = 'prompt'): void {
  if (prompt && prompt.length > max) {
    throw new RuleError(`${field} is ${prompt.length} characters; at most ${max} are allowed (KIAPI_MAX_PROMPT_CHARS)`);
  }
}

/** KIAPI_MAX_INPUTS bounds each list and all inputs of a request together (each becomes a file). */
export function checkInputCount(field: string, count: number, max: number): void {
  const verb = field.includes(' and ') ? 'have' : 'has';
  if (count > max) throw new RuleError(`${field} ${verb} ${count} entries; at most ${max} inputs per request are allowed (KIAPI_MAX_INPUTS)`);
}
