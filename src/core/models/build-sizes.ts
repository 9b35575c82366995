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

export class DbBuildSizes implements BuildSizes {
  private readonly select;
  private readonly upsert;

  constructor(db: Db) {
    this.select = db.prepare<[string], { weight_gb: number }>('SELECT weight_gb FROM build_sizes WHERE key = ?');
    this.upsert = db.prepare(
      'INSERT INTO build_sizes (key, weight_gb, measured_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET weight_gb = excluded.weight_gb, measured_at = excluded.measured_at',
    );
  }

  get(key: string): number | undefined {
    return this.select.get(key)?.weight_gb;
  }

  record(key: string, weightGb: number): void {
    this.upsert.run(key, weightGb, Date.now() / 1000);
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
