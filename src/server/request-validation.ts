/**
 * Makes Ajv's lax coercion (app.ts: `coerceTypes: true`, for pydantic-style `"1024"` → 1024) stop
 * where pydantic's lax mode stops. Ajv alone would, on a generation request:
 * - turn `null` into `0` / `""` / `false` in a nullable field (`anyOf: [X, {type: null}]`): Ajv tries X
 *   first and coerces in place, so `{"width": null}` became width 0 (422) and `{"seed": null}` seed 0;
 * - turn `0` / `""` / `false` into `null` when X rejects them, so `{"steps": 0}` became "use the default";
 * - turn a number or boolean into a string (`{"prompt": 5}` → `"5"`), which pydantic rejects.
 *
 * The TypeBox schemas stay in the seed's shape (they are the OpenAPI documents too); validation gets
 * a copy in which every nullable `{type: "null"}` branch is `{const: null}` and comes first, so null is
 * matched without coercion and nothing is coerced into null. Number/boolean → string coercions are
 * caught after validation by comparing with the leaves of the body as parsed.
 */
import type { FastifyRequest } from 'fastify';
import type { TSchema } from 'typebox';

/** A deep copy of `schema` for Ajv, with nullable unions rewritten as described above. */
export function validationSchema<T extends TSchema>(schema: T): T {
  return rewrite(schema) as T;
}

function isNullBranch(s: unknown): boolean {
  return s !== null && typeof s === 'object' && !Array.isArray(s) && Object.keys(s).length === 1 && (s as { type?: unknown }).type === 'null';
}

function rewrite(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(rewrite);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if ((key === 'anyOf' || key === 'oneOf') && Array.isArray(v) && v.some(isNullBranch)) {
      out[key] = [{ const: null }, ...v.filter((b) => !isNullBranch(b)).map(rewrite)];
    } else {
      out[key] = rewrite(v);
    }
  }
  return out;
}

type Path = (string | number)[];
interface Leaf {
  path: Path;
  kind: 'null' | 'number' | 'boolean';
}

const rawLeaves = new WeakMap<FastifyRequest, Leaf[]>();

function collect(value: unknown, path: Path, out: Leaf[]): void {
  if (value === null) out.push({ path, kind: 'null' });
  else if (typeof value === 'number') out.push({ path, kind: 'number' });
  else if (typeof value === 'boolean') out.push({ path, kind: 'boolean' });
  else if (Array.isArray(value)) value.forEach((v, i) => collect(v, [...path, i], out));
  else if (typeof value === 'object') for (const [k, v] of Object.entries(value)) collect(v, [...path, k], out);
}

function at(root: unknown, path: Path): unknown {
  let cur = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[seg];
  }
  return cur;
}

/** preValidation hook: remembers where the parsed body had null, number and boolean values. */
export async function recordRawBody(req: FastifyRequest): Promise<void> {
  const leaves: Leaf[] = [];
  collect(req.body, [], leaves);
  rawLeaves.set(req, leaves);
}

/**
 * preHandler hook: a 422 issue list (the schema-error shape) for values Ajv converted where
 * pydantic would not: number/boolean → string, null → anything.
 */
export async function rejectLossyCoercion(req: FastifyRequest): Promise<void> {
  const leaves = rawLeaves.get(req);
  rawLeaves.delete(req);
  if (!leaves) return;
  const issues: { keyword: string; instancePath: string; message: string; params: Record<string, unknown> }[] = [];
  for (const leaf of leaves) {
    const now = at(req.body, leaf.path);
    const instancePath = leaf.path.map((s) => `/${String(s).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
    if (leaf.kind === 'null' && now !== null && now !== undefined) {
      issues.push({ keyword: 'type', instancePath, message: 'must not be null', params: { type: typeof now } });
    } else if (leaf.kind !== 'null' && typeof now === 'string') {
      issues.push({
        keyword: 'string_type',
        instancePath,
        message: `must be a JSON string, not a ${leaf.kind} (numbers and booleans are not converted to text)`,
        params: {},
      });
    }
  }
  if (issues.length > 0) {
    throw Object.assign(new Error('request body validation failed'), { validation: issues, validationContext: 'body', statusCode: 422 });
  }
}
