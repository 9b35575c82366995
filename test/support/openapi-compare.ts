/**
 * A structural comparator for OpenAPI 3.1 documents: walks a seed (the contract) and reports every
 * place where a served document differs in a way a client generated from, or written against, the
 * seed could notice. Each difference is a path string plus what each side has, e.g.
 * `components.schemas.GenerateRequest.properties.width.anyOf[0].type: seed integer, served number`.
 *
 * What is compared: paths, operations (operationId, parameters, request body, responses, response
 * headers and media types) and schemas (type, properties, required, enum, const, default, bounds,
 * format, pattern, additionalProperties, items, anyOf/oneOf/allOf, discriminator and `$ref` targets).
 * Annotations are not compared: description, title, summary, examples, example, $comment — and
 * `info` as a whole (its version is the package's; tests check `info.title` themselves).
 *
 * What a served document may add without it being a difference (each keeps every seed client
 * working, because it only adds something such a client never relies on):
 * - paths, methods, response codes, response media types, response headers, request media types;
 *   `content` on a response the seed describes without a body (e.g. the `{"detail": …}` error body);
 *   components (schemas, security schemes) and top-level keys (`security`, `x-…`);
 * - optional parameters (a new *required* parameter would break seed clients: reported);
 * - properties in an object schema — but not required ones: `required` is compared as a set, so an
 *   extra required name is reported (a seed client would not send it / not expect it to be there);
 * - `properties: {}` or `additionalProperties: true` where the seed has neither: both are JSON Schema
 *   defaults and constrain nothing.
 * Any other keyword a served schema adds (an enum, a bound, a default, a format, `additionalProperties:
 * false`, …) changes what is accepted or promised, so it is reported; an intended one belongs in the
 * caller's allow-list with its reason.
 *
 * `$ref`s are compared by target; when one side has a `$ref` and the other an inline schema (or the
 * targets differ) the difference is reported and the resolved schemas are compared too, up to a
 * depth guard, so a renamed-but-identical component shows up as one difference only.
 */

type Json = unknown;
type JsonObject = Record<string, Json>;

export interface Difference {
  /** Where, as dotted keys and [index]es from the document root (seed-side path). */
  path: string;
  /** What differs, with the seed's and the served values. */
  message: string;
}

export interface CompareOptions {
  /** How many `$ref` resolutions deep an inline-vs-ref comparison may go. */
  maxRefDepth?: number;
}

const ANNOTATIONS = new Set(['description', 'title', 'summary', 'examples', 'example', '$comment']);

function isObject(v: Json): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function show(v: Json): string {
  if (v === undefined) return 'absent';
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

function join(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

function deepEqual(a: Json, b: Json): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => k in b && deepEqual(a[k], b[k]));
  }
  return false;
}

class Comparator {
  readonly diffs: Difference[] = [];
  private readonly maxRefDepth: number;

  constructor(
    private readonly seed: JsonObject,
    private readonly served: JsonObject,
    opts: CompareOptions,
  ) {
    this.maxRefDepth = opts.maxRefDepth ?? 16;
  }

  private report(path: string, message: string): void {
    this.diffs.push({ path, message });
  }

  private missing(path: string, seedValue: Json): void {
    this.report(path, `missing in served (seed: ${show(seedValue)})`);
  }

  private resolve(doc: JsonObject, ref: string): Json {
    if (!ref.startsWith('#/')) return undefined;
    let cur: Json = doc;
    for (const raw of ref.slice(2).split('/')) {
      const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
      if (!isObject(cur)) return undefined;
      cur = cur[key];
    }
    return cur;
  }

  document(): void {
    const { seed, served } = this;
    for (const [key, s] of Object.entries(seed)) {
      const path = key;
      if (key === 'info') continue; // version differs by design; tests check info.title themselves
      if (!(key in served)) {
        this.missing(path, s);
        continue;
      }
      const v = served[key];
      if (key === 'paths') this.map(s, v, path, (a, b, p) => this.pathItem(a, b, p));
      else if (key === 'components') this.components(s, v, path);
      else this.generic(s, v, path);
    }
    // Extra top-level keys (security, x-…) are additions.
  }

  /** A map whose seed entries must all exist; served extras are additions. */
  private map(s: Json, v: Json, path: string, each: (a: Json, b: Json, p: string) => void): void {
    if (!isObject(s) || !isObject(v)) return this.generic(s, v, path);
    for (const [key, sv] of Object.entries(s)) {
      if (!(key in v)) this.missing(join(path, key), sv);
      else each(sv, v[key], join(path, key));
    }
  }

  private components(s: Json, v: Json, path: string): void {
    if (!isObject(s) || !isObject(v)) return this.generic(s, v, path);
    for (const [key, sv] of Object.entries(s)) {
      const p = join(path, key);
      if (!(key in v)) this.missing(p, sv);
      else if (key === 'schemas') this.map(sv, v[key], p, (a, b, q) => this.schema(a, b, q, 0));
      else this.map(sv, v[key], p, (a, b, q) => this.generic(a, b, q));
    }
  }

  private pathItem(s: Json, v: Json, path: string): void {
    // Extra methods are additions; each seed method is an operation.
    this.map(s, v, path, (a, b, p) => this.operation(a, b, p));
  }

  private operation(s: Json, v: Json, path: string): void {
    if (!isObject(s) || !isObject(v)) return this.generic(s, v, path);
    for (const [key, sv] of Object.entries(s)) {
      const p = join(path, key);
      if (ANNOTATIONS.has(key)) continue;
      if (key === 'parameters') {
        this.parameters(sv, v[key], p);
        continue;
      }
      if (!(key in v)) {
        this.missing(p, sv);
        continue;
      }
      if (key === 'requestBody') this.requestBody(sv, v[key], p);
      else if (key === 'responses') this.map(sv, v[key], p, (a, b, q) => this.response(a, b, q));
      else this.generic(sv, v[key], p);
    }
    // A served operation may add parameters only when they are optional.
    if (!('parameters' in s) && Array.isArray(v.parameters)) this.parameters([], v.parameters, join(path, 'parameters'));
  }

  private parameters(s: Json, v: Json, path: string): void {
    const seedList = Array.isArray(s) ? s.filter(isObject) : [];
    const servedList = Array.isArray(v) ? v.filter(isObject) : [];
    const key = (p: JsonObject) => `${show(p.in)}:${show(p.name)}`;
    const servedByKey = new Map(servedList.map((p) => [key(p), p]));
    for (const sp of seedList) {
      const p = `${path}[${key(sp)}]`;
      const vp = servedByKey.get(key(sp));
      if (!vp) this.missing(p, sp.name);
      else this.parameter(sp, vp, p);
    }
    const seedKeys = new Set(seedList.map(key));
    for (const vp of servedList) {
      if (!seedKeys.has(key(vp)) && vp.required === true) {
        this.report(`${path}[${key(vp)}]`, 'served adds a required parameter (seed clients do not send it)');
      }
    }
  }

  private parameter(s: JsonObject, v: JsonObject, path: string): void {
    for (const [key, sv] of Object.entries(s)) {
      const p = join(path, key);
      if (ANNOTATIONS.has(key)) continue;
      if (!(key in v)) this.missing(p, sv);
      else if (key === 'schema') this.schema(sv, v[key], p, 0);
      else if (key === 'content') this.map(sv, v[key], p, (a, b, q) => this.mediaType(a, b, q));
      else this.generic(sv, v[key], p);
    }
    for (const key of Object.keys(v)) {
      if (!(key in s) && !ANNOTATIONS.has(key) && !(key === 'required' && v[key] === false)) {
        this.report(join(path, key), `served adds ${show(v[key])} (not in the seed)`);
      }
    }
  }

  private requestBody(s: Json, v: Json, path: string): void {
    if (!isObject(s) || !isObject(v)) return this.generic(s, v, path);
    for (const [key, sv] of Object.entries(s)) {
      const p = join(path, key);
      if (ANNOTATIONS.has(key)) continue;
      if (!(key in v)) this.missing(p, sv);
      // Extra request media types: the server accepts more; seed clients are unaffected.
      else if (key === 'content') this.map(sv, v[key], p, (a, b, q) => this.mediaType(a, b, q));
      else this.generic(sv, v[key], p);
    }
    if (!('required' in s) && v.required === true) this.report(join(path, 'required'), 'served makes the request body required');
  }

  private response(s: Json, v: Json, path: string): void {
    if (!isObject(s) || !isObject(v)) return this.generic(s, v, path);
    for (const [key, sv] of Object.entries(s)) {
      const p = join(path, key);
      if (ANNOTATIONS.has(key)) continue;
      if (!(key in v)) this.missing(p, sv);
      else if (key === 'content') this.map(sv, v[key], p, (a, b, q) => this.mediaType(a, b, q));
      else if (key === 'headers') this.map(sv, v[key], p, (a, b, q) => this.header(a, b, q));
      else this.generic(sv, v[key], p);
    }
    // Extra `content` / `headers` / `links` on a response: additions.
  }

  private header(s: Json, v: Json, path: string): void {
    if (!isObject(s) || !isObject(v)) return this.generic(s, v, path);
    for (const [key, sv] of Object.entries(s)) {
      const p = join(path, key);
      if (ANNOTATIONS.has(key)) continue;
      if (!(key in v)) this.missing(p, sv);
      else if (key === 'schema') this.schema(sv, v[key], p, 0);
      else this.generic(sv, v[key], p);
    }
  }

  private mediaType(s: Json, v: Json, path: string): void {
    if (!isObject(s) || !isObject(v)) return this.generic(s, v, path);
    for (const [key, sv] of Object.entries(s)) {
      const p = join(path, key);
      if (ANNOTATIONS.has(key)) continue;
      if (!(key in v)) this.missing(p, sv);
      else if (key === 'schema') this.schema(sv, v[key], p, 0);
      else this.generic(sv, v[key], p);
    }
  }

  // ------------------------------------------------------------------------------------------------
  // Schemas

  private readonly seen = new Set<string>();

  private schema(s: Json, v: Json, path: string, depth: number): void {
    if (typeof s === 'boolean' || typeof v === 'boolean') {
      if (s !== v) this.report(path, `seed ${show(s)}, served ${show(v)}`);
      return;
    }
    if (!isObject(s) || !isObject(v)) return this.generic(s, v, path);

    const sRef = typeof s.$ref === 'string' ? s.$ref : undefined;
    const vRef = typeof v.$ref === 'string' ? v.$ref : undefined;
    if (sRef !== vRef) {
      this.report(join(path, '$ref'), `seed ${sRef ?? 'inline schema'}, served ${vRef ?? 'inline schema'}`);
      // Compare what the two sides mean (target plus `$ref` siblings), so the report also says
      // whether the shapes agree; the guard stops recursive schemas.
      const pair = `${sRef ?? path}|${vRef ?? path}`;
      if (depth >= this.maxRefDepth) {
        this.report(path, `comparison stopped: $ref depth guard (${this.maxRefDepth}) reached`);
        return;
      }
      if (this.seen.has(pair)) return;
      this.seen.add(pair);
      const sEff = this.effective(this.seed, s, sRef, path, 'seed');
      const vEff = this.effective(this.served, v, vRef, path, 'served');
      if (sEff && vEff) this.schema(sEff, vEff, path, depth + 1);
      return;
    }
    if (sRef !== undefined && this.resolve(this.served, sRef) === undefined) {
      this.report(join(path, '$ref'), `served target ${sRef} does not resolve`);
    }
    // Same target: the component itself is compared under components.schemas. Siblings of `$ref`
    // (OpenAPI 3.1 allows them) are compared below like any keyword.

    for (const [key, sv] of Object.entries(s)) {
      if (key === '$ref' || ANNOTATIONS.has(key)) continue;
      const p = join(path, key);
      if (!(key in v)) {
        this.missing(p, sv);
        continue;
      }
      const vv = v[key];
      switch (key) {
        case 'type':
          this.asSet(typeSet(sv), typeSet(vv), p, 'type');
          break;
        case 'required':
        case 'enum':
          this.asSet(sv, vv, p, key);
          break;
        case 'properties':
          if (isObject(sv) && isObject(vv)) {
            // Extra served properties are additions; `required` (a set) catches required ones.
            for (const [name, ps] of Object.entries(sv)) {
              if (!(name in vv)) this.missing(join(p, name), ps);
              else this.schema(ps, vv[name], join(p, name), depth);
            }
          } else this.generic(sv, vv, p);
          break;
        case 'items':
        case 'additionalProperties':
        case 'not':
        case 'contains':
        case 'propertyNames':
          if (Array.isArray(sv) && Array.isArray(vv)) this.schemaList(sv, vv, p, depth);
          else this.schema(sv, vv, p, depth);
          break;
        case 'anyOf':
        case 'oneOf':
        case 'allOf':
        case 'prefixItems':
          this.schemaList(sv, vv, p, depth);
          break;
        default:
          this.generic(sv, vv, p);
      }
    }

    for (const [key, vv] of Object.entries(v)) {
      if (key in s || key === '$ref' || ANNOTATIONS.has(key)) continue;
      if (key === 'properties' && isObject(vv)) continue; // optional additions; see `required`
      if (key === 'additionalProperties' && vv === true) continue; // the JSON Schema default
      this.report(join(path, key), `served adds ${show(vv)} (not in the seed)`);
    }
  }

  /** A schema with its `$ref` replaced by the target's keywords (siblings win), or null if unresolvable. */
  private effective(doc: JsonObject, schema: JsonObject, ref: string | undefined, path: string, side: string): JsonObject | null {
    if (ref === undefined) return schema;
    const target = this.resolve(doc, ref);
    if (!isObject(target)) {
      this.report(join(path, '$ref'), `${side} target ${ref} does not resolve`);
      return null;
    }
    const siblings = { ...schema };
    delete siblings.$ref;
    return { ...target, ...siblings };
  }

  private schemaList(s: Json, v: Json, path: string, depth: number): void {
    if (!Array.isArray(s) || !Array.isArray(v)) return this.generic(s, v, path);
    if (s.length !== v.length) {
      this.report(path, `seed has ${s.length} entries, served ${v.length}`);
    }
    for (let i = 0; i < Math.min(s.length, v.length); i++) this.schema(s[i], v[i], join(path, i), depth);
  }

  /** Set semantics (order does not matter): reports seed values the served side lacks and extras. */
  private asSet(s: Json, v: Json, path: string, what: string): void {
    if (!Array.isArray(s) || !Array.isArray(v)) {
      if (!deepEqual(s, v)) this.report(path, `seed ${show(s)}, served ${show(v)}`);
      return;
    }
    const lacking = s.filter((x) => !v.some((y) => deepEqual(x, y)));
    const extra = v.filter((x) => !s.some((y) => deepEqual(x, y)));
    if (lacking.length === 0 && extra.length === 0) return;
    if (what === 'type' && s.length === 1 && v.length === 1) {
      this.report(path, `seed ${show(s[0])}, served ${show(v[0])}`);
      return;
    }
    const parts: string[] = [];
    if (lacking.length) parts.push(`served lacks ${lacking.map(show).join(', ')}`);
    if (extra.length) parts.push(`served adds ${extra.map(show).join(', ')}`);
    this.report(path, `${what}: ${parts.join('; ')} (seed ${show(s)}, served ${show(v)})`);
  }

  /** Anything else: same keys (annotations aside) and equal values, recursively. */
  private generic(s: Json, v: Json, path: string): void {
    if (isObject(s) && isObject(v)) {
      for (const [key, sv] of Object.entries(s)) {
        if (ANNOTATIONS.has(key)) continue;
        if (!(key in v)) this.missing(join(path, key), sv);
        else this.generic(sv, v[key], join(path, key));
      }
      for (const [key, vv] of Object.entries(v)) {
        if (!(key in s) && !ANNOTATIONS.has(key)) this.report(join(path, key), `served adds ${show(vv)} (not in the seed)`);
      }
      return;
    }
    if (Array.isArray(s) && Array.isArray(v)) {
      if (s.length !== v.length) {
        this.report(path, `seed ${show(s)}, served ${show(v)}`);
        return;
      }
      s.forEach((x, i) => this.generic(x, v[i], join(path, i)));
      return;
    }
    if (!deepEqual(s, v)) this.report(path, `seed ${show(s)}, served ${show(v)}`);
  }
}

function typeSet(t: Json): Json {
  return Array.isArray(t) ? t : [t];
}

/** Every difference between `seed` and `served` that a seed client could notice (see the module doc). */
export function compareOpenApi(seed: Json, served: Json, opts: CompareOptions = {}): Difference[] {
  if (!isObject(seed) || !isObject(served)) return [{ path: '', message: 'both documents must be JSON objects' }];
  const c = new Comparator(seed, served, opts);
  c.document();
  return c.diffs;
}

/** An intended deviation: the exact difference path and why the deviation is wanted. */
export type AllowList = Record<string, string>;

/** Differences not covered by `allow`, and allow-list entries that matched nothing (stale). */
export function checkAgainstAllowList(diffs: Difference[], allow: AllowList): { unexpected: Difference[]; stale: string[] } {
  const unexpected = diffs.filter((d) => !(d.path in allow));
  const used = new Set(diffs.map((d) => d.path));
  const stale = Object.keys(allow).filter((p) => !used.has(p));
  return { unexpected, stale };
}

export function formatDifferences(diffs: Difference[]): string {
  return diffs.map((d) => `${d.path}: ${d.message}`).join('\n');
}
