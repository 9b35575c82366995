/**
 * Which kiapi family, variant and operation each OpenAI model id stands for. The ids are names
 * the families already answer to (their aliases), so a kiapi alias or repo name given as `model`
 * finds the same entry.
 */
import type { OperationDef } from '../core/capability.js';
import { InputError, NotFoundError, clip } from '../core/errors.js';
import type { ModelSpec } from '../core/models/model-spec.js';
import type { AppContext } from '../server/context.js';

export interface OpenAiModel {
  id: string;
  family: string;
  variant: string;
  /** The family operation an OpenAI route runs with this model. */
  generate: string | null;
  edit: string | null;
}

const MODELS: OpenAiModel[] = [
  { id: 'qwen-image', family: 'qwen', variant: 'image', generate: '/generate', edit: null },
  { id: 'qwen-image-edit', family: 'qwen', variant: 'edit-2509', generate: null, edit: '/edit' },
  { id: 'ideogram-4', family: 'ideogram4', variant: 'fp8', generate: '/generate', edit: null },
];

/** The entries whose family is registered. */
export function openAiModels(ctx: AppContext): OpenAiModel[] {
  const families = new Set(ctx.capabilities.list().map((c) => c.family));
  return MODELS.filter((m) => families.has(m.family));
}

export function specOf(ctx: AppContext, m: OpenAiModel): ModelSpec {
  return ctx.models.resolve(m.family, m.variant);
}

/** The entry `name` (an id or any kiapi name of its variant) stands for, or null. */
export function findModel(ctx: AppContext, name: string): OpenAiModel | null {
  const all = openAiModels(ctx);
  const direct = all.find((m) => m.id === name);
  if (direct) return direct;
  const specs = ctx.models.find(name);
  if (specs.length !== 1) return null;
  return all.find((m) => m.family === specs[0]!.family && m.variant === specs[0]!.name) ?? null;
}

export function modelOrNotFound(ctx: AppContext, name: string): OpenAiModel {
  const m = findModel(ctx, name);
  if (!m) throw withParam(new NotFoundError(`The model '${clip(name, 100)}' does not exist; GET /v1/models lists ${ids(ctx)}`), 'model', 'model_not_found');
  return m;
}

/** The model and family operation a generation (`edit` false) or edit request runs. */
export function operationFor(ctx: AppContext, name: string, edit: boolean): { model: OpenAiModel; op: OperationDef } {
  let m = findModel(ctx, name);
  if (!m) throw withParam(new InputError(`unknown model '${clip(name, 100)}'; use one of ${ids(ctx)} (GET /v1/models)`), 'model', 'model_not_found');
  // An edit asked of a family's generation model runs on that family's edit model.
  if (edit && !m.edit) m = openAiModels(ctx).find((o) => o.family === m!.family && o.edit) ?? m;
  const path = edit ? m.edit : m.generate;
  if (!path) {
    const route = edit ? 'POST /v1/images/edits' : 'POST /v1/images/generations';
    const other = edit ? 'generations' : 'edits';
    throw withParam(new InputError(`model '${m.id}' cannot be used with ${route}; it serves /v1/images/${other}`), 'model', 'invalid_value');
  }
  const def = ctx.capabilities.list().find((c) => c.family === m.family)!;
  return { model: m, op: def.operations.find((o) => o.path === path)! };
}

function ids(ctx: AppContext): string {
  return openAiModels(ctx).map((m) => `'${m.id}'`).join(', ');
}

/** Tags an error with the request field at fault and an OpenAI error code (error-handler.ts reads both). */
export function withParam<E extends Error>(err: E, param: string | null, code: string | null = null): E {
  return Object.assign(err, { param, code });
}
