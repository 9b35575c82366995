/**
 * How long a job will take, from what earlier jobs of the same kind measured. A job's time is
 * modelled as `pre + steps × step + post`: `step` is the time per denoising step, `pre` what comes
 * before the first step (encoding the prompt, preparing inputs; a model load is not counted: it
 * happens once per build and is reported as its own phase), `post` what follows the last step
 * (decoding, encoding the file, storing it).
 *
 * Measurements are kept per model build kind and size (`Workload.key`) in SQLite, as moving
 * averages that follow the machine as it changes (another quantization, a busier machine), so the
 * estimate survives restarts and improves with every job. A size never measured borrows the
 * nearest measured size of the same model, scaled by pixel count. With no measurement of the
 * model at all there is no estimate (null), rather than a made-up number.
 */
import type { Db } from '../db.js';

/** What a job is, for estimating it: the same `key` means the same cost per step. */
export interface Workload {
  /** Model build kind: family, model, quantization, LoRAs or not. */
  group: string;
  /** `group` and the output size. */
  key: string;
  pixels: number;
  steps: number;
}

export interface Profile {
  stepS: number;
  preS: number;
  postS: number;
  /** `measured`: this very size; `scaled`: another size of the same model, scaled by pixels. */
  basis: 'measured' | 'scaled';
}

export interface Sample {
  stepS: number;
  preS: number;
  postS: number;
}

interface Row {
  key: string;
  grp: string;
  pixels: number;
  step_s: number;
  pre_s: number;
  post_s: number;
  samples: number;
}

/** Weight of a new measurement in the moving average: recent jobs count most, one outlier little. */
const ALPHA = 0.3;

export class EtaModel {
  private readonly rows = new Map<string, Row>();
  private readonly upsert;

  constructor(db: Db) {
    for (const row of db.prepare<[], Row>('SELECT key, grp, pixels, step_s, pre_s, post_s, samples FROM eta_history').all()) {
      this.rows.set(row.key, row);
    }
    this.upsert = db.prepare(
      `INSERT INTO eta_history (key, grp, pixels, step_s, pre_s, post_s, samples, updated_at)
       VALUES (@key, @grp, @pixels, @step_s, @pre_s, @post_s, @samples, @updated_at)
       ON CONFLICT(key) DO UPDATE SET step_s=excluded.step_s, pre_s=excluded.pre_s, post_s=excluded.post_s,
         samples=excluded.samples, updated_at=excluded.updated_at`,
    );
  }

  /** Folds one finished job's measurement into its workload's averages. */
  observe(w: Workload, s: Sample): void {
    if (![s.stepS, s.preS, s.postS].every((v) => Number.isFinite(v) && v >= 0)) return;
    const old = this.rows.get(w.key);
    const mix = (prev: number, now: number) => (old ? prev + ALPHA * (now - prev) : now);
    const row: Row = {
      key: w.key,
      grp: w.group,
      pixels: w.pixels,
      step_s: mix(old?.step_s ?? 0, s.stepS),
      pre_s: mix(old?.pre_s ?? 0, s.preS),
      post_s: mix(old?.post_s ?? 0, s.postS),
      samples: (old?.samples ?? 0) + 1,
    };
    this.rows.set(w.key, row);
    this.upsert.run({ ...row, updated_at: Date.now() / 1000 });
  }

  /** The expected phases of a workload, or null when its model was never measured. */
  profile(w: Workload): Profile | null {
    const exact = this.rows.get(w.key);
    if (exact) return { stepS: exact.step_s, preS: exact.pre_s, postS: exact.post_s, basis: 'measured' };
    let nearest: Row | undefined;
    for (const row of this.rows.values()) {
      if (row.grp !== w.group) continue;
      if (!nearest || Math.abs(Math.log(row.pixels / w.pixels)) < Math.abs(Math.log(nearest.pixels / w.pixels))) nearest = row;
    }
    if (!nearest) return null;
    const scale = w.pixels / nearest.pixels;
    return { stepS: nearest.step_s * scale, preS: nearest.pre_s, postS: nearest.post_s * scale, basis: 'scaled' };
  }

  /** Seconds a whole job of this workload takes, or null without history. */
  wholeJobS(w: Workload): number | null {
    const p = this.profile(w);
    return p ? p.preS + w.steps * p.stepS + p.postS : null;
  }
}
