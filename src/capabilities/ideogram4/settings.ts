/** KIAPI_IDEOGRAM4_* settings (docs/compatibility.md §7.4). */
import { EnvReader } from '../../core/config.js';

export const QUANTIZE_CHOICES = [3, 4, 5, 6, 8] as const;

/** mflux's presets (docs/compatibility.md §9.5): steps per preset. */
export const PRESET_STEPS = { V4_DEFAULT_20: 20, V4_QUALITY_48: 48, V4_TURBO_12: 12 } as const;
export type Preset = keyof typeof PRESET_STEPS;

export interface Ideogram4Settings {
  modelRepo: string;
  defaultWidth: number;
  defaultHeight: number;
  minWidth: number;
  minHeight: number;
  maxWidth: number;
  maxHeight: number;
  defaultPreset: Preset;
  defaultQuantize: number | null;
}

export function readIdeogram4Settings(env: Record<string, string | undefined>): Ideogram4Settings {
  const r = new EnvReader(env);
  // mflux itself only accepts 256..2048 (docs/compatibility.md §10.8), so the settings cannot widen that.
  const dim = { integer: true, min: 256, max: 2048 };
  const s: Ideogram4Settings = {
    modelRepo: r.string('KIAPI_IDEOGRAM4_MODEL_REPO', 'ideogram-ai/ideogram-4-fp8', 'Hugging Face repo (gated) or local directory of variant fp8'),
    defaultWidth: r.number('KIAPI_IDEOGRAM4_DEFAULT_WIDTH', 1024, dim, 'width when a request omits it'),
    defaultHeight: r.number('KIAPI_IDEOGRAM4_DEFAULT_HEIGHT', 1024, dim, 'height when a request omits it'),
    minWidth: r.number('KIAPI_IDEOGRAM4_MIN_WIDTH', 256, dim, 'smallest width a request may ask for'),
    minHeight: r.number('KIAPI_IDEOGRAM4_MIN_HEIGHT', 256, dim, 'smallest height a request may ask for'),
    maxWidth: r.number('KIAPI_IDEOGRAM4_MAX_WIDTH', 2048, dim, 'largest width a request may ask for'),
    maxHeight: r.number('KIAPI_IDEOGRAM4_MAX_HEIGHT', 2048, dim, 'largest height a request may ask for'),
    defaultPreset: r.choice('KIAPI_IDEOGRAM4_DEFAULT_PRESET', ['v4_default_20', 'v4_quality_48', 'v4_turbo_12'] as const, 'v4_default_20', 'preset when a request omits it').toUpperCase() as Preset,
    defaultQuantize: r.optionalChoiceInt('KIAPI_IDEOGRAM4_DEFAULT_QUANTIZE', QUANTIZE_CHOICES, null, 'quantization bits of the resident model (none: checkpoint precision)'),
  };
  r.check();
  return s;
}
