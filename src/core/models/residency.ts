/**
 * The one owner of what is loaded: which model builds are resident, under one memory budget. A
 * build is keyed by variant, quantization and LoRA set (`ModelBuild.key`), so LoRA and
 * quantize-override builds live in the same cache as the default ones: a repeated LoRA request
 * reuses its build instead of rebuilding (the original rebuilt every time).
 *
 * The engine loads and unloads only when asked from here, and reports through `onReset` when its
 * process died and every build with it; nothing else keeps a list of builds.
 *
 * A build's size is what the engine measured when it was last loaded (kept across restarts by
 * `BuildSizes`), or the model spec's estimate before the first load. Before a load: expired
 * builds go, then the lowest priority, then the least recently used, until weight + headroom fit.
 * A build that could never fit is refused (503) without evicting anything. The idle TTL counts
 * from the end of the last use, so a long job cannot expire its own model.
 */
import type { Logger } from 'pino';
import type { Engine, ModelBuild } from '../../engines/engine.js';
import { UnavailableError } from '../errors.js';
import { MemoryBuildSizes, type BuildSizes } from './build-sizes.js';
import type { ModelSpec } from './model-spec.js';

export interface ResidencyOptions {
  budgetGb: number;
  /** KIAPI_DEFAULT_TTL_S; ≤ 0 never expires. */
  defaultTtlS: number;
  log: Logger;
  sizes?: BuildSizes;
  now?: () => number;
}

export interface ResidentModelStats {
  name: string;
  family: string;
  domain: string;
  repo: string;
  key: string;
  weight_gb: number;
  /** Whether `weight_gb` was measured by the engine (false: the spec's estimate). */
  measured: boolean;
  priority: number;
  idle_s: number;
  ttl_s: number | null;
  expires_in_s: number | null;
  loads: number;
  in_use: boolean;
}

interface Entry {
  build: ModelBuild;
  spec: ModelSpec;
  weightGb: number;
  measured: boolean;
  lastUsed: number;
  busy: boolean;
}

export interface Lease {
  readonly key: string;
}

export class Residency {
  /** Insertion order = load order, as /health lists them. */
  private readonly entries = new Map<string, Entry>();
  private readonly loadCounts = new Map<string, number>();
  private readonly sizes: BuildSizes;
  private readonly now: () => number;

  constructor(
    private readonly engine: Engine,
    private readonly opts: ResidencyOptions,
  ) {
    this.sizes = opts.sizes ?? new MemoryBuildSizes();
    this.now = opts.now ?? (() => Date.now() / 1000);
    engine.onReset(() => {
      if (this.entries.size > 0) this.opts.log.warn({ lost: [...this.entries.keys()] }, 'the engine lost its resident builds');
      this.entries.clear();
    });
  }

  get budgetGb(): number {
    return this.opts.budgetGb;
  }

  /** The GiB the budget counts for `key`: measured when it was ever loaded, else the estimate. */
  weightOf(key: string, spec: ModelSpec): { gb: number; measured: boolean } {
    const measured = this.sizes.get(key);
    return measured === undefined ? { gb: spec.weightGb, measured: false } : { gb: measured, measured: true };
  }

  /** 503 before queueing when the build could never fit the budget, even with nothing else loaded. */
  assertFits(spec: ModelSpec, key: string): void {
    const { gb } = this.weightOf(key, spec);
    const need = gb + spec.peakHeadroomGb;
    if (need > this.opts.budgetGb) {
      throw new UnavailableError(
        `model '${spec.name}' needs ~${fmt(need)} GB (weights ${fmt(gb)} + headroom ${fmt(spec.peakHeadroomGb)}) but the memory budget is ${fmt(this.opts.budgetGb)} GB; raise KIAPI_MEMORY_LIMIT_GB if the machine has the memory (nothing was evicted)`,
      );
    }
  }

  /** Loads (or reuses) `build` and marks it in use until `release`. */
  async acquire(spec: ModelSpec, build: ModelBuild, onLoading?: () => void): Promise<Lease> {
    const { key } = build;
    this.assertFits(spec, key);
    await this.sweep(key);
    const existing = this.entries.get(key);
    if (existing) {
      existing.busy = true;
      existing.lastUsed = this.now();
      return { key };
    }
    const estimate = this.weightOf(key, spec);
    await this.makeRoom(key, estimate.gb + spec.peakHeadroomGb, spec.name);
    onLoading?.();
    const result = await this.engine.load(build);
    const measured = result.weightGb !== null && result.weightGb > 0;
    const weightGb = measured ? result.weightGb! : estimate.gb;
    if (measured) this.sizes.record(key, weightGb);
    this.loadCounts.set(key, (this.loadCounts.get(key) ?? 0) + 1);
    this.entries.set(key, { build, spec, weightGb, measured: measured || estimate.measured, lastUsed: this.now(), busy: true });
    this.opts.log.info({ key, weight_gb: round3(weightGb), measured, load_s: round3(result.seconds) }, 'model loaded');
    // The estimate may have been far below the real size: make room again now that it is known.
    if (weightGb > estimate.gb) await this.makeRoom(key, spec.peakHeadroomGb, spec.name, true);
    return { key };
  }

  release(lease: Lease): void {
    const entry = this.entries.get(lease.key);
    if (!entry) return;
    entry.busy = false;
    entry.lastUsed = this.now();
  }

  /** Evicts idle builds past their TTL (except `exclude`). */
  async sweep(exclude?: string): Promise<void> {
    const ttl = this.opts.defaultTtlS;
    if (ttl <= 0) return;
    const now = this.now();
    for (const e of [...this.entries.values()]) {
      if (e.build.key !== exclude && !e.busy && now - e.lastUsed > ttl) await this.evict(e, 'idle TTL');
    }
  }

  async evictAll(): Promise<void> {
    for (const e of [...this.entries.values()]) await this.evict(e, 'shutdown');
  }

  isResident(key: string): boolean {
    return this.entries.has(key);
  }

  stats(): { loaded: ResidentModelStats[]; resident_gb: number; budget_gb: number } {
    const now = this.now();
    const ttl = this.opts.defaultTtlS > 0 ? this.opts.defaultTtlS : null;
    const loaded = [...this.entries.values()].map((e) => {
      const idle = e.busy ? 0 : now - e.lastUsed;
      return {
        name: e.spec.name,
        family: e.spec.family,
        domain: e.spec.domain,
        repo: e.spec.repo,
        key: e.build.key,
        weight_gb: round3(e.weightGb),
        measured: e.measured,
        priority: e.spec.priority,
        idle_s: round1(idle),
        ttl_s: ttl,
        expires_in_s: ttl === null ? null : round1(ttl - idle),
        loads: this.loadCounts.get(e.build.key) ?? 0,
        in_use: e.busy,
      };
    });
    return {
      loaded,
      resident_gb: round3([...this.entries.values()].reduce((a, e) => a + e.weightGb, 0)),
      budget_gb: this.opts.budgetGb,
    };
  }

  /** How many times a build was loaded since start (tests and the bench read it). */
  loads(key: string): number {
    return this.loadCounts.get(key) ?? 0;
  }

  /**
   * Evicts idle builds until the others plus `need` fit. `after` is the re-check once a load
   * measured more than estimated: then running over is logged, not refused (the build is in).
   */
  private async makeRoom(key: string, need: number, name: string, after = false): Promise<void> {
    for (;;) {
      const others = [...this.entries.values()].filter((e) => e.build.key !== key);
      const self = after ? (this.entries.get(key)?.weightGb ?? 0) : 0;
      const used = others.reduce((a, e) => a + e.weightGb, 0) + self;
      if (used + need <= this.opts.budgetGb) return;
      const victim = others
        .filter((e) => !e.busy)
        .sort((a, b) => a.spec.priority - b.spec.priority || a.lastUsed - b.lastUsed || a.build.key.localeCompare(b.build.key))[0];
      if (!victim) {
        if (after) {
          this.opts.log.warn({ key, used_gb: round3(used), budget_gb: this.opts.budgetGb }, 'over the memory budget: nothing left to evict');
          return;
        }
        throw new UnavailableError(
          `model '${name}' needs ~${fmt(need)} GB but the budget is ${fmt(this.opts.budgetGb)} GB with nothing left to evict`,
        );
      }
      await this.evict(victim, `making room for ${key}`);
    }
  }

  private async evict(e: Entry, why: string): Promise<void> {
    this.entries.delete(e.build.key);
    try {
      await this.engine.unload(e.build.key);
    } catch (err) {
      this.opts.log.warn({ err, key: e.build.key }, 'unload failed');
    }
    this.opts.log.info({ key: e.build.key, freed_gb: round3(e.weightGb), why }, 'model evicted');
  }
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

/** Test checkpoints weigh a few MiB: one decimal would show them as 0. */
function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function fmt(n: number): string {
  return n >= 1 ? n.toFixed(1) : n.toPrecision(2);
}
