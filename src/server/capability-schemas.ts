/** The public model list entry of every capability (CapabilityModelSpec in the seeds). */
import { Type } from 'typebox';
import { component } from '../core/schema.js';

export const CapabilityModelSpecSchema = component(
  'CapabilityModelSpec',
  Type.Object(
    {
      name: Type.String({ title: 'Name', description: 'Model variant name to pass in the request model field.', examples: ['image'] }),
      family: Type.String({ title: 'Family', description: 'Capability family that resolves this model variant.', examples: ['qwen'] }),
      domain: Type.String({ title: 'Domain', description: 'Capability domain used for grouping model lists.', examples: ['image'] }),
      aliases: Type.Optional(
        Type.Array(Type.String(), {
          title: 'Aliases',
          description: 'Alternative names that also resolve to this model.',
          examples: [['qwen-image', 'Qwen/Qwen-Image']],
        }),
      ),
      default: Type.Optional(
        Type.Boolean({ title: 'Default', description: 'Whether this is the default model when the request omits model.', default: false, examples: [true] }),
      ),
      features: Type.Optional(
        Type.Array(Type.String(), {
          title: 'Features',
          description: 'Handler-declared modalities and features supported by this model.',
          examples: [['image', 'text']],
        }),
      ),
    },
    { title: 'CapabilityModelSpec', description: 'Public model discovery entry for capability-specific model lists.' },
  ),
);
