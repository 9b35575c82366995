/**
 * The original server (pydantic's default "lax" mode) accepts a few string spellings for integer,
 * number and boolean fields: `"width": "256"`, `"guidance": "2.5"`, `"strict_caption_validation":
 * "yes"`. Clients written against it send them, so kiapi accepts exactly those forms too, and
 * nothing else: Ajv's own `coerceTypes` is off on purpose (it turned `null` into 0 inside nullable
 * unions and numbers into prompt strings).
 *
 * The body is rewritten in place before schema validation, so validation, the job's `params`
 * snapshot and the run all see the converted value. A string is only converted where the schema
 * says integer, number or boolean and does not accept a string there as well (a prompt stays a
 * string, whatever it spells). `null`, `""` and anything not in the forms below are left as they
 * are, for validation to refuse or accept as before.
 */

/** Accepted spellings (pydantic v2's documented lax string → bool set, compared case-insensitively). */
const TRUE_WORDS = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE_WORDS = new Set(['0', 'off', 'f', 'false', 'n', 'no']);

/**
 * Integers: decimal digits with an optional `-`, and an optional all-zero fraction (`"256.0"`,
 * which pydantic also accepts). No whitespace, `+`, exponent, hex or `_` separators.
 */
const INTEGER_TEXT = /^-?\d+(?:\.0+)?$/;
/** Numbers: the JSON number grammar (so `"inf"`, `"nan"`, `"0x10"`, `" 1"` and `""` stay strings). */
const NUMBER_TEXT = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

type Schema = Record<string, unknown>;
type Scalar = 'integer' | 'number' | 'boolean';

/**
 * Rewrites lax spellings in `body` where `schema` (a TypeBox/JSON schema, sub-schemas inlined)
 * asks for an integer, number or boolean, including inside `anyOf`/`oneOf` unions (nullable
 * fields) and in array items and nested objects. The walk follows the schema, which is a few
 * levels deep, so it is bounded whatever the body's nesting; it uses an explicit stack anyway.
 */
export function laxenBody(schema: object, body: unknown): void {
  const stack: { schema: Schema; holder: Record<string | number, unknown>; key: string | number }[] = [];
  const box = { body };
  stack.push({ schema: schema as Schema, holder: box, key: 'body' });
  while (stack.length > 0) {
    const { schema: s, holder, key } = stack.pop()!;
    const value = holder[key];
    if (typeof value === 'string') {
      const converted = convert(value, scalarKinds(s));
      if (converted !== undefined) holder[key] = converted;
      continue;
    }
    if (typeof value === 'number' && (value === 0 || value === 1)) {
      // pydantic takes 0 / 1 for a bool too; only where a number would be refused.
      const kinds = scalarKinds(s);
      if (kinds.has('boolean') && !kinds.has('number') && !kinds.has('integer')) holder[key] = value === 1;
      continue;
    }
    if (value === null || typeof value !== 'object') continue;
    for (const branch of objectBranches(s)) {
      if (Array.isArray(value)) {
        const items = branch.items;
        if (items && typeof items === 'object' && !Array.isArray(items)) {
          for (let i = 0; i < value.length; i++) stack.push({ schema: items as Schema, holder: value as unknown[] as Record<number, unknown>, key: i });
        }
        continue;
      }
      const props = branch.properties as Record<string, Schema> | undefined;
      if (!props) continue;
      for (const name of Object.keys(props)) {
        if (Object.hasOwn(value, name)) stack.push({ schema: props[name]!, holder: value as Record<string, unknown>, key: name });
      }
    }
  }
}

/** The schema itself and its union branches (one level of `anyOf`/`oneOf`, as nullable fields have). */
function branches(s: Schema): Schema[] {
  const out = [s];
  for (const k of ['anyOf', 'oneOf'] as const) {
    const list = s[k];
    if (Array.isArray(list)) for (const b of list) if (b && typeof b === 'object') out.push(...branches(b as Schema));
  }
  return out;
}

function objectBranches(s: Schema): Schema[] {
  return branches(s).filter((b) => b.properties !== undefined || b.items !== undefined);
}

/** The scalar types a value may take here; empty when a string is acceptable as it is. */
function scalarKinds(s: Schema): Set<Scalar> {
  const kinds = new Set<Scalar>();
  for (const b of branches(s)) {
    const types = Array.isArray(b.type) ? (b.type as unknown[]) : [b.type];
    for (const t of types) {
      if (t === 'string') return new Set();
      if (t === 'integer' || t === 'number' || t === 'boolean') kinds.add(t);
    }
  }
  return kinds;
}

function convert(text: string, kinds: Set<Scalar>): number | boolean | undefined {
  if (kinds.has('integer') && INTEGER_TEXT.test(text)) {
    const n = Number(text);
    // Beyond 2^53 the digits sent are not the number used: leave it for validation to refuse.
    if (Number.isSafeInteger(n)) return n === 0 ? 0 : n; // no -0
  }
  if (kinds.has('number') && NUMBER_TEXT.test(text)) {
    const n = Number(text);
    if (Number.isFinite(n)) return n === 0 ? 0 : n;
  }
  if (kinds.has('boolean')) {
    const word = text.toLowerCase();
    if (TRUE_WORDS.has(word)) return true;
    if (FALSE_WORDS.has(word)) return false;
  }
  return undefined;
}
