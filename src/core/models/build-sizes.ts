/**
 * Measured memory of model builds, kept in the database so the budget uses real figures after the
 * first load of a build, across restarts. Before a build was ever measured the model spec's
 * estimate stands in (a full-size Qwen-Image is ~22 GiB at 8 bits; a test checkpoint a few MiB).
 */
import type { Db } from '../db.js';

export interface BuildSizes {
  /** GiB the build `key` occupied when it was last loaded, if it ever was. */
  get(key: string): number | undefined;
  record(key: string, weightGb: number): void;
}

/**
 * The table's one owner is the server holding the data dir (its lock keeps others out), so what it
 * read or wrote once stays true: every job asks for its build's size (the budget check at submit
 * and at run), and a read from memory spares a query each time.
 */
export class DbBuildSizes implements BuildSizes {
  private readonly select;
  private readonly upsert;
  private readonly known = new Map<string, number | undefined>();

  constructor(db: Db) {
    this.select = db.prepare<[string], { weight_gb: number }>('SELECT weight_gb FROM build_sizes WHERE key = ?');
    this.upsert = db.prepare(
      'INSERT INTO build_sizes (key, weight_gb, measured_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET weight_gb = excluded.weight_gb, measured_at = excluded.measured_at',
    );
  }

  get(key: string): number | undefined {
    if (this.known.has(key)) return this.known.get(key);
    const gb = this.select.get(key)?.weight_gb;
    // Builds are few (a model times the LoRA sets it ran with); the bound is for a years-long run.
    if (this.known.size >= 1024) this.known.clear();
    this.known.set(key, gb);
    return gb;
  }

  record(key: string, weightGb: number): void {
    this.upsert.run(key, weightGb, Date.now() / 1000);
    this.known.set(key, weightGb);
  }
}

/** For engines and tests without a database. */
export class MemoryBuildSizes implements BuildSizes {
  private readonly sizes = new Map<string, number>();
  get(key: string): number | undefined {
    return this.sizes.get(key);
  }
  record(key: string, weightGb: number): void {
    this.sizes.set(key, weightGb);
  }
}
