/** Residency under a memory budget, with an engine double that records loads and unloads. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { UnavailableError } from '../../src/core/errors.js';
import type { ModelSpec } from '../../src/core/models/model-spec.js';
import { Residency } from '../../src/core/models/residency.js';
import { MemoryBuildSizes, type BuildSizes } from '../../src/core/models/build-sizes.js';
import { modelBuild, type Engine, type LoraInput, type ModelBuild, type TaskModel } from '../../src/engines/engine.js';

class RecordingEngine implements Engine {
  readonly holdsWeights = true;
  readonly events: string[] = [];
  /** GiB the next loads report as measured, by model name (unset: cannot measure). */
  readonly measured = new Map<string, number>();
  private readonly resets: (() => void)[] = [];
  describe() {
    return { name: 'recording', detail: '' };
  }
  async identify() {
    return { name: 'recording', version: '0', python: null, mflux: null, mlx: null, device: null };
  }
  async load(build: ModelBuild) {
    this.events.push(`load ${build.model.name}`);
    return { weightGb: this.measured.get(build.model.name) ?? null, seconds: 0.1 };
  }
  async unload(key: string) {
    this.events.push(`unload ${key.split('/')[1]!.split('@')[0]!}`);
  }
  run(): never {
    throw new Error('not used');
  }
  onReset(l: () => void) {
    this.resets.push(l);
  }
  crash() {
    for (const l of this.resets) l();
  }
  async close() {}
}

function spec(name: string, weightGb: number, priority = 0, headroom = 2): ModelSpec {
  return { name, aliases: [], family: 'fam', domain: 'image', default: false, features: [], repo: `org/${name}`, revision: null, weightGb, peakHeadroomGb: headroom, priority, defaultQuantize: null, diskGb: 1, gated: false };
}

const model = (s: ModelSpec, quantize: number | null = null): TaskModel => ({ family: s.family, name: s.name, repo: s.repo, quantize });

function setup(budgetGb: number, ttl = 0, sizes: BuildSizes = new MemoryBuildSizes()) {
  let now = 1000;
  const engine = new RecordingEngine();
  const residency = new Residency(engine, { budgetGb, defaultTtlS: ttl, log: pino({ level: 'silent' }), now: () => now, sizes });
  return { engine, residency, tick: (s: number) => (now += s) };
}

async function use(r: Residency, s: ModelSpec, q: number | null = null, loras: LoraInput[] = []) {
  const lease = await r.acquire(s, modelBuild(model(s, q), loras));
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
    await assert.rejects(residency.acquire(spec('huge', 29), modelBuild(model(spec('huge', 29)), [])), (e: unknown) => e instanceof UnavailableError && /nothing was evicted/.test(e.message));
    assert.deepEqual(engine.events, ['load a']);
  });

  void it('counts the idle TTL from the end of the last use', async () => {
    const { engine, residency, tick } = setup(100, 60);
    const a = spec('a', 10);
    const b = spec('b', 10);
    const lease = await residency.acquire(a, modelBuild(model(a), []));
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

  void it('asks the engine to load only builds it does not hold', async () => {
    const { engine, residency } = setup(100);
    const a = spec('a', 10);
    for (let i = 0; i < 5; i++) await use(residency, a);
    assert.deepEqual(engine.events, ['load a']);
    assert.ok(residency.isResident(modelBuild(model(a), []).key));
  });

  void it('counts a build by its measured size, remembered across evictions and restarts', async () => {
    const sizes = new MemoryBuildSizes();
    const first = setup(100, 0, sizes);
    const a = spec('a', 40);
    first.engine.measured.set('a', 0.02);
    await use(first.residency, a);
    const stats = first.residency.stats().loaded[0]!;
    assert.equal(stats.weight_gb, 0.02);
    assert.equal(stats.measured, true);
    // A restart with a budget the estimate (40 + 2) could never fit: the measured size (0.02 + 2) does.
    const second = setup(2.5, 0, sizes);
    await use(second.residency, a);
    assert.deepEqual(second.engine.events, ['load a']);
    assert.equal(second.residency.stats().resident_gb, 0.02);
  });

  void it('evicts by measured sizes under a small budget', async () => {
    const { engine, residency, tick } = setup(2.035, 0);
    const a = spec('a', 0.01, 0, 2);
    const b = spec('b', 0.01, 0, 2);
    engine.measured.set('a', 0.03);
    engine.measured.set('b', 0.03);
    await use(residency, a);
    tick(1);
    // b's estimate (0.01 + 2 headroom) plus a's measured 0.03 is over 2.035: a goes.
    await use(residency, b);
    assert.deepEqual(engine.events, ['load a', 'unload a', 'load b']);
  });

  void it('makes room again when a load measured more than its estimate', async () => {
    const { engine, residency, tick } = setup(10, 0);
    const a = spec('a', 1, 0, 1);
    const b = spec('b', 1, 0, 1);
    engine.measured.set('a', 1);
    engine.measured.set('b', 9);
    await use(residency, a);
    tick(1);
    await use(residency, b); // estimated 1 + 1 fits beside a; measured 9 does not
    assert.deepEqual(engine.events, ['load a', 'load b', 'unload a']);
    assert.deepEqual(residency.stats().loaded.map((m) => m.name), ['b']);
  });
});
