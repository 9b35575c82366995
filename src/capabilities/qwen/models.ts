/** Qwen model variants (docs/compatibility.md §8.2). */
import type { ModelSpec } from '../../core/models/model-spec.js';
import { pinnedRevision } from '../../core/models/revisions.js';
import type { QwenSettings } from './settings.js';

export function qwenModels(s: QwenSettings): ModelSpec[] {
  const common = {
    family: 'qwen',
    domain: 'image',
    features: ['image', 'text'],
    weightGb: 22.0,
    peakHeadroomGb: 8.0,
    priority: 0,
    defaultQuantize: s.defaultQuantize,
    diskGb: 58.0,
    gated: false,
  };
  return [
    { ...common, name: 'image', aliases: ['qwen-image', 'Qwen/Qwen-Image'], default: true, repo: s.imageModel, revision: pinnedRevision(s.imageModel) },
    {
      ...common,
      name: 'edit-2509',
      aliases: ['qwen-edit', 'qwen-image-edit', 'Qwen/Qwen-Image-Edit-2509'],
      default: false,
      repo: s.editModel,
      revision: pinnedRevision(s.editModel),
    },
  ];
}
