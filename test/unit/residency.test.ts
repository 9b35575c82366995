/** Residency under a memory budget, with an engine double that records loads and unloads. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { UnavailableError } from '../../src/core/errors.js';
import type { ModelSpec } from '../../src/core/models/model-spec.js';
import { Residency } from '../../src/core/models/residency.js';
import { buildKey, type Engine, type LoraInput, type TaskModel } from '../../src/engines/engine.js';

class RecordingEngine implements Engine {
  readonly holdsWeights = true;
  readonly events: string[] = [];
  private readonly loaded = new Set<string>();
  private readonly resets: (() => void)[] = [];
  describe() {
    return { name: 'recording', detail: '' };
  }
  async load(model: TaskModel, loras: LoraInput[]) {
    const key = buildKey(model, loras);
    if (this.loaded.has(key)) return { loaded: false, weightGb: null };
    this.loaded.add(key);
    this.events.push(`load ${model.name}`);
    return { loaded: true, weightGb: null };
  }
  async unload(model: TaskModel, loras: LoraInput[]) {
    this.loaded.delete(buildKey(model, loras));
    this.events.push(`unload ${model.name}`);
  }
  run(): never {
    throw new Error('not used');
  }
  onReset(l: () => void) {
    this.resets.push(l);
  }
  crash() {
    this.loaded.clear();
    for (const l of this.resets) l();
  }
  async close() {}
}

function spec(name: string, weightGb: number, priority = 0, headroom = 2): ModelSpec {
  return { name, aliases: [], family: 'fam', domain: 'image', default: false, features: [], repo: `org/${name}`, weightGb, peakHeadroomGb: headroom, priority, defaultQuantize: null, diskGb: 1, gated: false };
}

const model = (s: ModelSpec, quantize: number | null = null): TaskModel => ({ family: s.family, name: s.name, repo: s.repo, quantize });

function setup(budgetGb: number, ttl = 0) {
  let now = 1000;
  const engine = new RecordingEngine();
  const residency = new Residency(engine, { budgetGb, defaultTtlS: ttl, log: pino({ level: 'silent' }), now: () => now });
  return { engine, residency, tick: (s: number) => (now += s) };
}

async function use(r: Residency, s: ModelSpec, q: number | null = null, loras: LoraInput[] = []) {
  const lease = await r.acquire(s, model(s, q), loras);
  r.release(lease);
}

void describe('Residency', () => {
  void it('loads on first use and reuses a resident build', async () => {
    const { engine, residency } = setup(100);
    const a = spec('a', 10);
    await use(residency, a);
    await use(residency, a);
    assert.deepEqual(engine.events, ['load a']);
    assert.equal(residency.stats().loaded[0]!.loads, 1);
    assert.equal(residency.stats().resident_gb, 10);
  });

  void it('keys builds by quantize and LoRA set, and reuses an identical LoRA build', async () => {
    const { engine, residency } = setup(100);
    const a = spec('a', 10);
    const lora = { fileId: 'file_1', path: '/x', scale: 0.5, digest: 'abc' };
    await use(residency, a);
    await use(residency, a, 4);
    await use(residency, a, null, [lora]);
    await use(residency, a, null, [{ ...lora, fileId: 'file_2' }]);
    assert.deepEqual(engine.events, ['load a', 'load a', 'load a']);
  });

  void it('evicts the least recently used first, lower priority before that', async () => {
    const { engine, residency, tick } = setup(30);
    const a = spec('a', 10);
    const b = spec('b', 10);
    const c = spec('c', 10);
    const pinned = spec('p', 5, 5);
    await use(residency, pinned);
    tick(1);
    await use(residency, a);
    tick(1);
    await use(residency, b);
    tick(1);
    await use(residency, a); // a is now more recent than b
    tick(1);
    await use(residency, c); // needs 12: 25 resident + 12 > 30 → evict b (LRU among priority 0)
    assert.deepEqual(engine.events.slice(-2), ['unload b', 'load c']);
    assert.deepEqual(residency.stats().loaded.map((m) => m.name), ['p', 'a', 'c']);
  });

  void it('refuses a build that can never fit without evicting anything', async () => {
    const { engine, residency } = setup(30);
    await use(residency, spec('a', 10));
    await assert.rejects(residency.acquire(spec('huge', 29), model(spec('huge', 29)), []), (e: unknown) => e instanceof UnavailableError && /nothing was evicted/.test(e.message));
    assert.deepEqual(engine.events, ['load a']);
  });

  void it('counts the idle TTL from the end of the last use', async () => {
    const { engine, residency, tick } = setup(100, 60);
    const a = spec('a', 10);
    const b = spec('b', 10);
    const lease = await residency.acquire(a, model(a), []);
    tick(120); // a long job: still in use, never expires under it
    await residency.sweep();
    assert.deepEqual(engine.events, ['load a']);
    residency.release(lease);
    tick(30);
    await use(residency, b);
    assert.deepEqual(engine.events, ['load a', 'load b'], 'a used 30 s ago is kept');
    tick(61);
    await residency.sweep();
    assert.deepEqual(engine.events.slice(-2), ['unload a', 'unload b']);
  });

  void it('forgets everything when the engine loses its builds', async () => {
    const { engine, residency } = setup(100);
    const a = spec('a', 10);
    await use(residency, a);
    engine.crash();
    assert.deepEqual(residency.stats().loaded, []);
    await use(residency, a);
    assert.deepEqual(engine.events, ['load a', 'load a']);
    assert.equal(residency.stats().loaded[0]!.loads, 2);
  });
});
