/**
 * Which model builds stay loaded, under one memory budget (reference §5.3–§5.5, with its edge
 * cases fixed, §11.20). A build is keyed by variant, quantization and LoRA set, so LoRA and
 * quantize-override builds live in the same cache as the default ones: a repeated LoRA request
 * reuses its build instead of rebuilding (the original rebuilt every time).
 *
 * Before a load: expired builds go, then the lowest priority, then the least recently used, until
 * weight + headroom fit. A build that could never fit is refused (503) without evicting anything.
 * The idle TTL counts from the end of the last use, so a long job cannot expire its own model.
 */
import type { Logger } from 'pino';
import { buildKey, type Engine, type LoraInput, type TaskModel } from '../../engines/engine.js';
import { UnavailableError } from '../errors.js';
import type { ModelSpec } from './model-spec.js';
import type { ResidentModelStats } from './model-runtime.js';

export interface ResidencyOptions {
  budgetGb: number;
  /** KIAPI_DEFAULT_TTL_S; ≤ 0 never expires. */
  defaultTtlS: number;
  log: Logger;
  now?: () => number;
}

interface Entry {
  key: string;
  spec: ModelSpec;
  model: TaskModel;
  loras: LoraInput[];
  weightGb: number;
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
  private readonly now: () => number;

  constructor(
    private readonly engine: Engine,
    private readonly opts: ResidencyOptions,
  ) {
    this.now = opts.now ?? (() => Date.now() / 1000);
    // The engine lost every build (its process died): nothing is resident any more.
    engine.onReset(() => this.entries.clear());
  }

  get budgetGb(): number {
    return this.opts.budgetGb;
  }

  /** Loads (or reuses) the build for `model` + `loras` and marks it in use until `release`. */
  async acquire(spec: ModelSpec, model: TaskModel, loras: LoraInput[], onLoading?: () => void): Promise<Lease> {
    const key = buildKey(model, loras);
    const existing = this.entries.get(key);
    const weight = existing?.weightGb ?? spec.weightGb;
    const need = weight + spec.peakHeadroomGb;
    if (need > this.opts.budgetGb) {
      throw new UnavailableError(
        `model '${spec.name}' needs ~${need.toFixed(1)} GB (weights ${weight.toFixed(1)} + headroom ${spec.peakHeadroomGb.toFixed(1)}) but the memory budget is ${this.opts.budgetGb.toFixed(1)} GB; raise KIAPI_MEMORY_LIMIT_GB if the machine has the memory (nothing was evicted)`,
      );
    }
    await this.sweep(key);
    await this.makeRoom(key, need, spec.name);
    if (!existing) onLoading?.();
    const result = await this.engine.load(model, loras);
    if (result.loaded) this.loadCounts.set(key, (this.loadCounts.get(key) ?? 0) + 1);
    const entry: Entry = existing && !result.loaded
      ? existing
      : { key, spec, model, loras, weightGb: result.weightGb ?? spec.weightGb, lastUsed: this.now(), busy: false };
    if (!this.entries.has(key)) this.entries.set(key, entry);
    entry.busy = true;
    entry.lastUsed = this.now();
    if (result.loaded) this.opts.log.info({ key, weight_gb: round1(entry.weightGb) }, 'model loaded');
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
      if (e.key !== exclude && !e.busy && now - e.lastUsed > ttl) await this.evict(e, 'idle TTL');
    }
  }

  async evictAll(): Promise<void> {
    for (const e of [...this.entries.values()]) await this.evict(e, 'shutdown');
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
        key: e.key,
        weight_gb: round1(e.weightGb),
        priority: e.spec.priority,
        idle_s: round1(idle),
        ttl_s: ttl,
        expires_in_s: ttl === null ? null : round1(ttl - idle),
        loads: this.loadCounts.get(e.key) ?? 0,
        in_use: e.busy,
      };
    });
    return {
      loaded,
      resident_gb: round1([...this.entries.values()].reduce((a, e) => a + e.weightGb, 0)),
      budget_gb: this.opts.budgetGb,
    };
  }

  /** How many times a build was loaded since start (tests and the bench read it). */
  loads(key: string): number {
    return this.loadCounts.get(key) ?? 0;
  }

  private async makeRoom(key: string, need: number, name: string): Promise<void> {
    for (;;) {
      const others = [...this.entries.values()].filter((e) => e.key !== key);
      const used = others.reduce((a, e) => a + e.weightGb, 0);
      if (used + need <= this.opts.budgetGb) return;
      const victim = others
        .filter((e) => !e.busy)
        .sort((a, b) => a.spec.priority - b.spec.priority || a.lastUsed - b.lastUsed || a.key.localeCompare(b.key))[0];
      if (!victim) {
        throw new UnavailableError(
          `model '${name}' needs ~${need.toFixed(1)} GB but the budget is ${this.opts.budgetGb.toFixed(1)} GB with nothing left to evict`,
        );
      }
      await this.evict(victim, `making room for ${key}`);
    }
  }

  private async evict(e: Entry, why: string): Promise<void> {
    this.entries.delete(e.key);
    try {
      await this.engine.unload(e.model, e.loras);
    } catch (err) {
      this.opts.log.warn({ err, key: e.key }, 'unload failed');
    }
    this.opts.log.info({ key: e.key, freed_gb: round1(e.weightGb), why }, 'model evicted');
  }
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
