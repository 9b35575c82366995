/** Every model family kiapi serves, and the runners their jobs run by: a new family is a folder plus one line here. */
import type { CapabilityRegistry } from '../core/capability.js';
import { IMAGE_RUNNER, imageRunner } from './image-common/image-job.js';
import { ideogram4Capability } from './ideogram4/index.js';
import { qwenCapability } from './qwen/index.js';

export function registerCapabilities(registry: CapabilityRegistry, env: Record<string, string | undefined>): void {
  registry.register(ideogram4Capability(env));
  registry.register(qwenCapability(env));
  registry.registerRunner(IMAGE_RUNNER, imageRunner);
}
