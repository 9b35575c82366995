/**
 * Which models a setup command acts on: `--all`, or any of the repeatable `--family F` and
 * `--model M` (their union; M is a name, alias, repo or `family/name`). Unknown names are errors
 * that list the valid ones. No flag at all: a checkbox list on a terminal, else an error naming
 * the flags.
 */
import type { ModelRegistry, ModelSpec } from '../core/models/model-spec.js';
import { chooseMany, isInteractive, type Choice } from './prompt.js';
import { UsageError } from './usage-error.js';

export interface SelectionFlags {
  family?: string[];
  model?: string[];
  all?: boolean;
}

export const SELECTION_OPTIONS = {
  family: { type: 'string', multiple: true },
  model: { type: 'string', multiple: true },
  all: { type: 'boolean' },
} as const;

export function modelLabel(spec: ModelSpec): string {
  return `${spec.family}/${spec.name}`;
}

/** `qwen/image (aliases: qwen-image, Qwen/Qwen-Image)`, one per line, for error messages. */
export function knownModelsText(models: ModelRegistry): string {
  return models
    .all()
    .map((s) => `  ${modelLabel(s)}${s.default ? ' (default)' : ''} — also: ${[...s.aliases, s.repo].filter((v, i, a) => a.indexOf(v) === i).join(', ')}`)
    .join('\n');
}

/** The models the flags name, or null when no selection flag was given. */
export function selectModels(models: ModelRegistry, flags: SelectionFlags): ModelSpec[] | null {
  if (flags.all) return models.all();
  const families = flags.family ?? [];
  const names = flags.model ?? [];
  if (families.length === 0 && names.length === 0) return null;
  const picked = new Map<string, ModelSpec>();
  for (const family of families) {
    const list = models.list(family.trim().toLowerCase());
    if (list.length === 0) {
      throw new UsageError(`unknown family '${family}'; known families: ${models.families().sort().join(', ')}`);
    }
    for (const s of list) picked.set(modelLabel(s), s);
  }
  for (const name of names) {
    const found = models.find(name);
    if (found.length === 0) throw new UsageError(`unknown model '${name}'; known models:\n${knownModelsText(models)}`);
    if (found.length > 1) {
      throw new UsageError(`'${name}' matches ${found.map(modelLabel).join(', ')}; write <family>/<name>`);
    }
    picked.set(modelLabel(found[0]!), found[0]!);
  }
  return [...picked.values()];
}

/**
 * The selection from flags, else from a checkbox list on a terminal. Without a terminal and
 * without flags this is a usage error naming the flags.
 */
export async function resolveSelection(
  models: ModelRegistry,
  flags: SelectionFlags,
  opts: { verb: string; describe: (spec: ModelSpec) => string; preselect?: (spec: ModelSpec) => boolean },
): Promise<ModelSpec[]> {
  const selected = selectModels(models, flags);
  if (selected) return selected;
  if (!isInteractive()) {
    throw new UsageError(
      `no models selected: pass --model NAME (repeatable), --family NAME or --all to ${opts.verb}. Known models:\n${knownModelsText(models)}`,
    );
  }
  const all = models.all();
  const choices: Choice[] = all.map((s) => ({ label: modelLabel(s).padEnd(18), detail: opts.describe(s) }));
  const initial = all.flatMap((s, i) => (opts.preselect?.(s) ? [i] : []));
  const picks = await chooseMany(`Models to ${opts.verb}:`, choices, initial);
  return picks.map((i) => all[i]!);
}
