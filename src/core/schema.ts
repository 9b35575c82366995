/**
 * Schema helpers shared by validation and OpenAPI. A TypeBox schema is the one source: Fastify
 * validates with it, TypeScript types come from `Static<>`, and the OpenAPI assembler
 * (server/openapi.ts) writes it out. Named components are marked here so the assembler can emit
 * `$ref`s by object identity instead of inlining: TypeBox does not clone sub-schemas.
 */
import { Type, type TObject, type TSchema } from 'typebox';

const NAMES = new WeakMap<object, string>();
const REF = Symbol('kiapi.componentRef');

/** Marks `schema` as the OpenAPI component `name` and returns it unchanged. */
export function component<T extends TSchema>(name: string, schema: T): T {
  NAMES.set(schema, name);
  return schema;
}

export function componentName(schema: object): string | undefined {
  return NAMES.get(schema);
}

/**
 * A use of a component with its own keywords beside the `$ref` (OpenAPI 3.1 allows siblings such
 * as `description`). Validation sees the merged schema; the assembler sees `$ref` + `extra`.
 */
export function refTo<T extends TSchema>(target: T, extra: Record<string, unknown>): T {
  const merged = { ...target, ...extra } as T;
  Object.defineProperty(merged, REF, { value: { target, extra }, enumerable: false });
  return merged;
}

export function refOf(schema: object): { target: object; extra: Record<string, unknown> } | undefined {
  return (schema as Record<symbol, { target: object; extra: Record<string, unknown> } | undefined>)[REF];
}

/** `{type: object, additionalProperties: true}`: a free-form object, as pydantic writes `dict`. */
export function openObject(opts: Record<string, unknown>): TObject {
  return Type.Object({}, { additionalProperties: true, ...opts });
}
