/** Model variants and their registry: resolve by name, alias or repo; default when omitted. */
import { InputError, clip } from '../errors.js';

export interface ModelSpec {
  /** Variant name clients pass as `model` (e.g. `image`, `edit-2509`, `fp8`). */
  name: string;
  aliases: string[];
  family: string;
  domain: string;
  default: boolean;
  /** Modalities the variant accepts, sorted when listed (e.g. `image`, `text`). */
  features: string[];
  /** Hugging Face repo id or a local directory with the weights. */
  repo: string;
  /**
   * The commit the engine loads `repo` from (mflux's pin, see revisions.ts), or null when it loads
   * `main` (or `repo` is a local directory). Activation downloads it; readiness asks for it.
   */
  revision: string | null;
  /** Resident weight estimate in GiB (the budget uses it until a load is measured). */
  weightGb: number;
  /** Extra GiB a run needs on top of the weights (activations, VAE decode). */
  peakHeadroomGb: number;
  /** Eviction order: lower goes first. */
  priority: number;
  /** Quantization bits of the resident build; null = checkpoint precision. */
  defaultQuantize: number | null;
  /** Download size in GB, for activation's disk check and status. */
  diskGb: number;
  /** Gated on Hugging Face (needs an accepted licence and a token). */
  gated: boolean;
}

/** The public model list entry (CapabilityModelSpec in the seeds). */
export interface CapabilityModelInfo {
  name: string;
  family: string;
  domain: string;
  aliases: string[];
  default: boolean;
  features: string[];
}

export class ModelRegistry {
  private readonly byFamily = new Map<string, ModelSpec[]>();

  register(spec: ModelSpec): void {
    const list = this.byFamily.get(spec.family) ?? [];
    const taken = new Set(list.flatMap((s) => keysOf(s)));
    const clash = keysOf(spec).find((k) => taken.has(k));
    if (clash) throw new Error(`model key '${clash}' is registered twice in family '${spec.family}'`);
    list.push(spec);
    this.byFamily.set(spec.family, list);
  }

  families(): string[] {
    return [...this.byFamily.keys()];
  }

  list(family: string): ModelSpec[] {
    return this.byFamily.get(family) ?? [];
  }

  all(): ModelSpec[] {
    return [...this.byFamily.values()].flat();
  }

  /** By name, alias or repo (case-insensitive, trimmed); the family default when omitted. */
  resolve(family: string, name: string | null | undefined): ModelSpec {
    const specs = this.list(family);
    const wanted = name?.trim().toLowerCase();
    const found = wanted
      ? specs.find((s) => keysOf(s).includes(wanted))
      : (specs.find((s) => s.default) ?? specs[0]);
    if (!found) {
      const available = specs.map((s) => `'${s.name}'`).sort();
      const shown = name === null || name === undefined ? 'None' : `'${clip(name, 100)}'`;
      throw new InputError(`unknown ${family} model ${shown}; available: [${available.join(', ')}]`);
    }
    return found;
  }

  /** Looks a name up across families (for KIAPI_WARMUP); ambiguous names are reported, not guessed. */
  find(name: string): ModelSpec[] {
    const wanted = name.trim().toLowerCase();
    return this.all().filter((s) => keysOf(s).includes(wanted) || `${s.family}/${s.name}`.toLowerCase() === wanted);
  }

  publicInfo(family: string): CapabilityModelInfo[] {
    return this.list(family).map((s) => ({
      name: s.name,
      family: s.family,
      domain: s.domain,
      aliases: [...s.aliases],
      default: s.default,
      features: [...s.features].sort(),
    }));
  }
}

function keysOf(s: ModelSpec): string[] {
  return [s.name, s.repo, ...s.aliases].map((k) => k.toLowerCase());
}
