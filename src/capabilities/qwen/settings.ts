/** KIAPI_QWEN_* settings (reference §7.3). */
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
  /** Used when `init_image` comes without `image_strength` (the original silently ignored the image: §11.7). */
  defaultImageStrength: number;
}

export function readQwenSettings(env: Record<string, string | undefined>): QwenSettings {
  const r = new EnvReader(env);
  const dim = { integer: true, min: 16, max: 8192 };
  const s: QwenSettings = {
    imageModel: r.string('KIAPI_QWEN_IMAGE_MODEL', 'Qwen/Qwen-Image'),
    editModel: r.string('KIAPI_QWEN_EDIT_MODEL', 'Qwen/Qwen-Image-Edit-2509'),
    defaultQuantize: r.optionalChoiceInt('KIAPI_QWEN_DEFAULT_QUANTIZE', QUANTIZE_CHOICES, 8),
    defaultWidth: r.number('KIAPI_QWEN_DEFAULT_WIDTH', 1024, dim),
    defaultHeight: r.number('KIAPI_QWEN_DEFAULT_HEIGHT', 1024, dim),
    maxWidth: r.number('KIAPI_QWEN_MAX_WIDTH', 2048, dim),
    maxHeight: r.number('KIAPI_QWEN_MAX_HEIGHT', 2048, dim),
    maxSteps: r.number('KIAPI_QWEN_MAX_STEPS', 100, { integer: true, min: 1, max: 1000 }),
    maxLoras: r.number('KIAPI_QWEN_MAX_LORAS', 4, { integer: true, min: 0, max: 16 }),
    generateSteps: r.number('KIAPI_QWEN_GENERATE_STEPS', 30, { integer: true, min: 1, max: 1000 }),
    generateGuidance: r.number('KIAPI_QWEN_GENERATE_GUIDANCE', 4.0),
    editSteps: r.number('KIAPI_QWEN_EDIT_STEPS', 30, { integer: true, min: 1, max: 1000 }),
    editGuidance: r.number('KIAPI_QWEN_EDIT_GUIDANCE', 2.5),
    defaultImageStrength: r.number('KIAPI_QWEN_DEFAULT_IMAGE_STRENGTH', 0.4, { min: 0, max: 1 }),
  };
  r.check();
  return s;
}
