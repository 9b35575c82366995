/** KIAPI_QWEN_* settings (docs/compatibility.md §7.3). */
import { EnvReader } from '../../core/config.js';

export const QUANTIZE_CHOICES = [3, 4, 5, 6, 8] as const;

export interface QwenSettings {
  imageModel: string;
  editModel: string;
  defaultQuantize: number | null;
  defaultWidth: number;
  defaultHeight: number;
  maxWidth: number;
  maxHeight: number;
  maxSteps: number;
  maxLoras: number;
  generateSteps: number;
  generateGuidance: number;
  editSteps: number;
  editGuidance: number;
  /** Used when `init_image` comes without `image_strength` (the original silently ignored the image: docs/compatibility.md §11.7). */
  defaultImageStrength: number;
}

export function readQwenSettings(env: Record<string, string | undefined>): QwenSettings {
  const r = new EnvReader(env);
  const dim = { integer: true, min: 16, max: 8192 };
  const s: QwenSettings = {
    imageModel: r.string('KIAPI_QWEN_IMAGE_MODEL', 'Qwen/Qwen-Image', 'Hugging Face repo or local directory of variant image'),
    editModel: r.string('KIAPI_QWEN_EDIT_MODEL', 'Qwen/Qwen-Image-Edit-2509', 'Hugging Face repo or local directory of variant edit-2509'),
    defaultQuantize: r.optionalChoiceInt('KIAPI_QWEN_DEFAULT_QUANTIZE', QUANTIZE_CHOICES, 8, 'quantization bits of resident models (none: full precision)'),
    defaultWidth: r.number('KIAPI_QWEN_DEFAULT_WIDTH', 1024, dim, 'width when a request omits it'),
    defaultHeight: r.number('KIAPI_QWEN_DEFAULT_HEIGHT', 1024, dim, 'height when a request omits it'),
    maxWidth: r.number('KIAPI_QWEN_MAX_WIDTH', 2048, dim, 'largest width a request may ask for'),
    maxHeight: r.number('KIAPI_QWEN_MAX_HEIGHT', 2048, dim, 'largest height a request may ask for'),
    maxSteps: r.number('KIAPI_QWEN_MAX_STEPS', 100, { integer: true, min: 1, max: 1000 }, 'most denoising steps a request may ask for'),
    maxLoras: r.number('KIAPI_QWEN_MAX_LORAS', 4, { integer: true, min: 0, max: 16 }, 'most LoRA adapters per request'),
    generateSteps: r.number('KIAPI_QWEN_GENERATE_STEPS', 30, { integer: true, min: 1, max: 1000 }, 'default steps of /generate'),
    generateGuidance: r.number('KIAPI_QWEN_GENERATE_GUIDANCE', 4.0, {}, 'default guidance of /generate'),
    editSteps: r.number('KIAPI_QWEN_EDIT_STEPS', 30, { integer: true, min: 1, max: 1000 }, 'default steps of /edit'),
    editGuidance: r.number('KIAPI_QWEN_EDIT_GUIDANCE', 2.5, {}, 'default guidance of /edit'),
    defaultImageStrength: r.number('KIAPI_QWEN_DEFAULT_IMAGE_STRENGTH', 0.4, { min: 0, max: 1 }, 'image_strength when init_image comes without one (higher keeps more)'),
  };
  r.check();
  return s;
}
