/**
 * Model lookup across families (KIAPI_WARMUP, docs/compatibility.md §11.23): the original resolved a warmup
 * name in the first family that knew it; here an ambiguous name returns every match (the server
 * then warns and asks for `<family>/<name>`), and `<family>/<name>` picks exactly one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ModelRegistry, type ModelSpec } from '../../src/core/models/model-spec.js';

function spec(family: string, name: string, aliases: string[] = []): ModelSpec {
  return {
    name,
    aliases,
    family,
    domain: 'image',
    default: true,
    features: ['text'],
    repo: `org/${family}-${name}`,
    revision: null,
    weightGb: 1,
    peakHeadroomGb: 1,
    priority: 0,
    defaultQuantize: null,
    diskGb: 1,
    gated: false,
  };
}

void describe('ModelRegistry.find (warmup names across families)', () => {
  const registry = new ModelRegistry();
  registry.register(spec('zimage', 'turbo'));
  registry.register(spec('ernie', 'turbo', ['fast']));
  registry.register(spec('acestep', 'base', ['turbo-audio']));

  void it('an ambiguous name returns every family that knows it, never just the first registered', () => {
    assert.deepEqual(registry.find('turbo').map((m) => `${m.family}/${m.name}`).sort(), ['ernie/turbo', 'zimage/turbo']);
  });

  void it('<family>/<name> picks exactly one, case-insensitively', () => {
    assert.deepEqual(registry.find('Ernie/Turbo').map((m) => m.family), ['ernie']);
  });

  void it('aliases and repos are found; unknown names find nothing', () => {
    assert.deepEqual(registry.find('fast').map((m) => m.family), ['ernie']);
    assert.deepEqual(registry.find('org/acestep-base').map((m) => m.family), ['acestep']);
    assert.deepEqual(registry.find('nope'), []);
  });
});
