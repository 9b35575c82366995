/**
 * Ideogram 4 prompt preparation and caption verifier, re-implemented from mflux 0.18.0
 * (`models/ideogram4/model/ideogram4_text_encoder/caption.py` and `prompt_encoder.py`, commit 97ac5e62).
 *
 * Clients compare warning texts with what the Python engine says, so every message, the order of the checks and
 * Python's spelling of values inside messages (type names, `repr` of strings, lists and tuples) are reproduced.
 *
 * JS/Python differences that matter here:
 * - Python dicts keep every key in insertion order; JS objects move integer-like keys ("0", "12") to the front.
 *   String prompts are parsed by the Python-compatible decoder below, which records the written key order, so both
 *   the key-order checks and the compact JSON keep it. Object prompts arrive already parsed by JSON.parse, so an
 *   integer-like key in them is seen (and serialized) first, where mflux would see it where the client wrote it.
 * - Python keeps `1.0` a float and `1` an int; JSON.parse makes both the number 1. For string prompts the decoder
 *   remembers integral floats (and integers beyond 2^53, kept exact); for object prompts an integral number counts
 *   as a Python int. That decides the bbox "integers" rule and the spelling in the compact JSON (`1.0` vs `1`).
 * - Python's `bool` is a subclass of `int`; mflux rejects booleans in a bbox only because it checks
 *   `type(value) is int`. In JS booleans are never numbers, so the integer test below excludes them by itself.
 * - Python's json module accepts `NaN`, `Infinity` and `-Infinity` and writes them back the same way; JSON.parse
 *   rejects them, which is one more reason string prompts are not parsed with JSON.parse.
 * - Positions in JSON error messages count code points, as Python does, not UTF-16 units.
 * Not reproduced: Python failures outside these rules, such as integer literals over 4,300 digits.
 */

// ---------------------------------------------------------------------------------------------------------------
// Public API

export interface PreparedCaption {
  /** The text mflux would feed the encoder: compact JSON for captions (separators ',' ':' and non-ASCII kept, like Python json.dumps(..., separators=(',', ':'), ensure_ascii=False)), else the prompt verbatim. */
  text: string;
  /** The caption object when the prompt is (or parses to) a JSON object, else null. */
  caption: Record<string, unknown> | null;
  /** Every warning mflux would raise, in mflux's order, exact texts (without the "Ideogram 4 caption: " prefix). */
  warnings: string[];
}

/** mflux prefixes each emitted `Ideogram4CaptionWarning` with this. */
export const CAPTION_WARNING_PREFIX = 'Ideogram 4 caption: ';

export const PLAIN_PROMPT_WARNING =
  'plain prompt: Ideogram 4 was trained on structured JSON captions; plain text may reduce quality ' +
  'and increase safety-filter false positives';

/** mflux's ValueError text when the prepared prompt is empty. */
export const EMPTY_PROMPT_MESSAGE = 'prompt must not be empty';

/**
 * mflux `Ideogram4Caption.prepare`. Throws only where mflux itself raises before any strictness applies:
 * TypeError for a prompt that is neither a string nor an object, or for an element `type` that Python cannot hash
 * (a list or an object); RangeError for nesting deeper than Python's recursion limit.
 */
export function prepareCaption(prompt: string | Record<string, unknown>): PreparedCaption {
  if (typeof prompt === 'string') {
    return prepareText(prompt);
  }
  if (!isDict(prompt)) {
    throw new TypeError(`prompt must be a string or JSON-caption dict, got ${pyTypeName(prompt)}`);
  }
  const view = new PyJsonView();
  return { text: dumpCompact(prompt, view), caption: prompt, warnings: verifyWith(prompt, view) };
}

/** The verifier alone (rules 1-5 of docs/compatibility.md §9.6) on any JSON value; returns warning messages. */
export function verifyCaption(value: unknown): string[] {
  return verifyWith(value, new PyJsonView());
}

/** The message mflux raises in strict mode. mflux raises only when there is at least one warning. */
export function strictFailureMessage(warnings: string[]): string {
  const lines = warnings.map((warning) => `- ${warning}`).join('\n');
  return `Ideogram 4 caption validation failed:\n${lines}`;
}

/**
 * mflux tests emptiness after preparation, and after the strict check, so an empty string under strict mode fails
 * with the caption message (the plain-prompt warning) first. Only the empty string counts: a blank prompt is
 * used verbatim as a plain prompt.
 */
export function isEmptyPrompt(prepared: PreparedCaption): boolean {
  return prepared.text.length === 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Prompt preparation (string prompts)

function prepareText(prompt: string): PreparedCaption {
  const stripped = pyStrip(prompt);
  if (!stripped.startsWith('{')) {
    return verbatim(prompt, PLAIN_PROMPT_WARNING);
  }
  let parsed: ParsedJson;
  try {
    parsed = decodePyJson(stripped);
  } catch (error) {
    if (error instanceof PyJsonDecodeError) {
      return verbatim(prompt, `invalid JSON caption: ${error.message}; prompt will be used verbatim`);
    }
    throw error;
  }
  const { value, view } = parsed;
  // Unreachable while only text starting with '{' is parsed (anything else after the object is "Extra data");
  // mflux has the branch, so it stays should that test ever be relaxed.
  if (!isDict(value)) {
    const typeName = pyTypeName(value);
    return verbatim(prompt, `JSON caption should be an object, got ${typeName}; prompt will be used verbatim`);
  }
  // mflux serializes before verifying, which decides which error surfaces when both would raise.
  const text = dumpCompact(value, view);
  return { text, caption: value, warnings: [...checkEnsureAsciiFalse(stripped), ...verifyWith(value, view)] };
}

function verbatim(prompt: string, warning: string): PreparedCaption {
  return { text: prompt, caption: null, warnings: [warning] };
}

// mflux matches escapes of code points >= U+0080 only, whether or not the backslash is itself escaped.
const NON_ASCII_ESCAPE = /\\u(?:00[89a-fA-F][0-9a-fA-F]|0[1-9a-fA-F][0-9a-fA-F]{2}|[1-9a-fA-F][0-9a-fA-F]{3})/g;

/** Only string prompts get this check: it is about how the client wrote its JSON, which an object prompt lacks. */
function checkEnsureAsciiFalse(rawText: string): string[] {
  const matches = rawText.match(NON_ASCII_ESCAPE);
  if (matches === null || /[\u0080-\uffff]/.test(rawText)) {
    return [];
  }
  const examples = [...new Set(matches)].sort().slice(0, 3).join(', ');
  return [
    `raw text: found non-ASCII unicode escapes (${examples}); ` +
      'use json.dumps(..., ensure_ascii=False) for JSON captions',
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Verifier (mflux `Ideogram4CaptionVerifier.verify`)

const ROOT_KEYS = ['high_level_description', 'style_description', 'compositional_deconstruction'];
const STYLE_KEYS = ['aesthetics', 'lighting', 'photo', 'art_style', 'medium', 'color_palette'];
const PHOTO_ORDER = ['aesthetics', 'lighting', 'photo', 'medium', 'color_palette'];
const ART_ORDER = ['aesthetics', 'lighting', 'medium', 'art_style', 'color_palette'];
const COMPOSITION_ORDER = ['background', 'elements'];
const ELEMENT_KEYS = ['type', 'bbox', 'text', 'desc', 'color_palette'];
const TEXT_ELEMENT_ORDER = ['type', 'bbox', 'text', 'desc', 'color_palette'];
const OBJ_ELEMENT_ORDER = ['type', 'bbox', 'desc', 'color_palette'];
const ELEMENT_TYPES = ['obj', 'text'];
const STYLE_PALETTE_MAX = 16;
const ELEMENT_PALETTE_MAX = 5;
const BBOX_MAX = 1000n;

function verifyWith(caption: unknown, view: PyJsonView): string[] {
  return new CaptionVerifier(view).verify(caption);
}

class CaptionVerifier {
  private readonly messages: string[] = [];

  constructor(private readonly view: PyJsonView) {}

  verify(caption: unknown): string[] {
    if (!isDict(caption)) {
      this.messages.push(`root: expected a JSON object, got ${pyTypeName(caption)}`);
      return this.messages;
    }
    this.checkUnknownKeys(caption, ROOT_KEYS, 'root');
    if (has(caption, 'high_level_description') && typeof caption.high_level_description !== 'string') {
      const typeName = this.view.slotTypeName(caption, 'high_level_description');
      this.messages.push(`high_level_description: expected a string, got ${typeName}`);
    }
    if (has(caption, 'style_description')) {
      this.verifyStyleDescription(caption, caption.style_description);
    }
    if (has(caption, 'compositional_deconstruction')) {
      this.verifyComposition(caption, caption.compositional_deconstruction);
    } else {
      this.messages.push("root: 'compositional_deconstruction' should exist");
    }
    return this.messages;
  }

  private verifyStyleDescription(parent: Record<string, unknown>, style: unknown): void {
    if (!isDict(style)) {
      const typeName = this.view.slotTypeName(parent, 'style_description');
      this.messages.push(`style_description: expected an object, got ${typeName}`);
      return;
    }
    this.checkUnknownKeys(style, STYLE_KEYS, 'style_description');
    if (has(style, 'photo') === has(style, 'art_style')) {
      this.messages.push("style_description: expected exactly one of 'photo' or 'art_style'");
      return;
    }
    const order = (has(style, 'photo') ? PHOTO_ORDER : ART_ORDER).filter(
      (key) => key !== 'color_palette' || has(style, key),
    );
    this.checkKeyOrder(style, order, 'style_description');
    for (const key of order) {
      if (key === 'color_palette') {
        continue;
      }
      if (!has(style, key)) {
        this.messages.push(`style_description: '${key}' should exist`);
      } else if (typeof style[key] !== 'string') {
        this.messages.push(`style_description.${key}: expected a string`);
      }
    }
    if (has(style, 'color_palette')) {
      this.verifyColorPalette(style.color_palette, 'style_description.color_palette', STYLE_PALETTE_MAX);
    }
  }

  private verifyComposition(parent: Record<string, unknown>, composition: unknown): void {
    if (!isDict(composition)) {
      const typeName = this.view.slotTypeName(parent, 'compositional_deconstruction');
      this.messages.push(`compositional_deconstruction: expected an object, got ${typeName}`);
      return;
    }
    this.checkKeyOrder(composition, COMPOSITION_ORDER, 'compositional_deconstruction');
    if (!has(composition, 'background')) {
      this.messages.push("compositional_deconstruction: 'background' should exist");
    } else if (typeof composition.background !== 'string') {
      this.messages.push('compositional_deconstruction.background: expected a string');
    }
    if (!has(composition, 'elements')) {
      this.messages.push("compositional_deconstruction: 'elements' should exist");
      return;
    }
    const elements = composition.elements;
    if (!isList(elements)) {
      this.messages.push('compositional_deconstruction.elements: expected a list');
      return;
    }
    elements.forEach((element, index) => this.verifyElement(elements, index, element));
  }

  private verifyElement(elements: unknown[], index: number, element: unknown): void {
    const path = `elements[${index}]`;
    if (!isDict(element)) {
      this.messages.push(`${path}: expected an object, got ${this.view.slotTypeName(elements, index)}`);
      return;
    }
    this.checkUnknownKeys(element, ELEMENT_KEYS, path);
    const type = has(element, 'type') ? element.type : null;
    if (!isKnownElementType(type)) {
      this.messages.push(`${path}: 'type' should be one of ${pyListRepr(ELEMENT_TYPES)}`);
      return;
    }
    const order = (type === 'text' ? TEXT_ELEMENT_ORDER : OBJ_ELEMENT_ORDER).filter(
      (key) => (key !== 'bbox' && key !== 'color_palette') || has(element, key),
    );
    this.checkKeyOrder(element, order, path);
    if (!has(element, 'desc')) {
      this.messages.push(`${path}: 'desc' should exist`);
    } else if (typeof element.desc !== 'string') {
      this.messages.push(`${path}.desc: expected a string`);
    }
    if (type === 'text') {
      if (!has(element, 'text')) {
        this.messages.push(`${path}: text elements should include 'text'`);
      } else if (typeof element.text !== 'string') {
        this.messages.push(`${path}.text: expected a string`);
      }
    }
    if (has(element, 'bbox')) {
      this.verifyBbox(`${path}.bbox`, element.bbox);
    }
    if (has(element, 'color_palette')) {
      this.verifyColorPalette(element.color_palette, `${path}.color_palette`, ELEMENT_PALETTE_MAX);
    }
  }

  private verifyBbox(path: string, bbox: unknown): void {
    if (!isList(bbox) || bbox.length !== 4) {
      this.messages.push(`${path}: expected [y_min, x_min, y_max, x_max]`);
      return;
    }
    const values = bbox.map((_, index) => this.view.pyInt(bbox, index));
    if (!isFourInts(values)) {
      this.messages.push(`${path}: all values should be integers`);
      return;
    }
    const [yMin, xMin, yMax, xMax] = values;
    if (!values.every((value) => value >= 0n && value <= BBOX_MAX)) {
      this.messages.push(`${path}: values should be in [0, 1000], got [${values.join(', ')}]`);
    }
    if (yMin > yMax) {
      this.messages.push(`${path}: y_min (${yMin}) should be <= y_max (${yMax})`);
    }
    if (xMin > xMax) {
      this.messages.push(`${path}: x_min (${xMin}) should be <= x_max (${xMax})`);
    }
  }

  private verifyColorPalette(palette: unknown, path: string, maxColors: number): void {
    if (!isList(palette)) {
      this.messages.push(`${path}: expected a list`);
      return;
    }
    if (palette.length > maxColors) {
      this.messages.push(`${path}: expected at most ${maxColors} colors, got ${palette.length}`);
    }
    palette.forEach((color, index) => {
      if (typeof color !== 'string' || !/^#[0-9A-F]{6}$/.test(color)) {
        this.messages.push(`${path}[${index}]: expected uppercase #RRGGBB hex color`);
      }
    });
  }

  /** Keys outside the expected list never satisfy the order; mflux reports them separately. */
  private checkKeyOrder(obj: Record<string, unknown>, expected: string[], path: string): void {
    const keys = this.view.keys(obj);
    const present = keys.filter((key) => expected.includes(key));
    if (present.length !== expected.length || present.some((key, index) => key !== expected[index])) {
      this.messages.push(`${path}: key order is ${pyTupleRepr(present)}, expected ${pyTupleRepr(expected)}`);
    }
    const extra = keys.filter((key) => !expected.includes(key));
    if (extra.length > 0) {
      this.messages.push(`${path}: keys ${pyListRepr(extra)} are not allowed in this context`);
    }
  }

  private checkUnknownKeys(obj: Record<string, unknown>, known: string[], path: string): void {
    const unknown = this.view.keys(obj).filter((key) => !known.includes(key));
    if (unknown.length > 0) {
      this.messages.push(`${path}: unknown keys ${pyListRepr(unknown)}`);
    }
  }
}

/** mflux tests membership in a frozenset, which raises for values Python cannot hash. */
function isKnownElementType(type: unknown): type is string {
  if (isList(type) || isDict(type)) {
    throw new TypeError(`unhashable type: '${pyTypeName(type)}'`);
  }
  return typeof type === 'string' && ELEMENT_TYPES.includes(type);
}

function isFourInts(values: (bigint | null)[]): values is [bigint, bigint, bigint, bigint] {
  return values.length === 4 && values.every((value) => value !== null);
}

function isDict(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isList(value: unknown): value is unknown[] {
  return Array.isArray(value);
}

function has(obj: Record<string, unknown>, key: string): boolean {
  return Object.hasOwn(obj, key);
}

// ---------------------------------------------------------------------------------------------------------------
// Python value semantics on top of JS values

/** How Python saw a number that JS cannot tell apart: an integral float, or an integer too large for a double. */
type NumberFact = 'float' | bigint;

/** What the Python-compatible decoder learned that JS values cannot carry; empty for values from JSON.parse. */
interface PyJsonFacts {
  keyOrder: WeakMap<object, string[]>;
  numbers: WeakMap<object, Map<string | number, NumberFact>>;
}

class PyJsonView {
  constructor(private readonly facts?: PyJsonFacts) {}

  keys(obj: Record<string, unknown>): string[] {
    return this.facts?.keyOrder.get(obj) ?? Object.keys(obj);
  }

  /** The value in `container[slot]` as Python's `int`, or null when Python would not see an int there. */
  pyInt(container: object, slot: string | number): bigint | null {
    const value: unknown = (container as Record<string | number, unknown>)[slot];
    if (typeof value === 'bigint') {
      return value;
    }
    if (typeof value !== 'number') {
      return null;
    }
    const fact = this.facts?.numbers.get(container)?.get(slot);
    if (fact === 'float' || (fact === undefined && !Number.isInteger(value))) {
      return null;
    }
    return fact ?? BigInt(value);
  }

  slotTypeName(container: object, slot: string | number): string {
    const value: unknown = (container as Record<string | number, unknown>)[slot];
    if (typeof value === 'number') {
      return this.pyInt(container, slot) === null ? 'float' : 'int';
    }
    return pyTypeName(value);
  }
}

/** Python's `type(value).__name__` for a JSON value; integral numbers count as int (see the file comment). */
function pyTypeName(value: unknown): string {
  if (value === null || value === undefined) {
    return 'NoneType';
  }
  if (Array.isArray(value)) {
    return 'list';
  }
  switch (typeof value) {
    case 'string':
      return 'str';
    case 'boolean':
      return 'bool';
    case 'bigint':
      return 'int';
    case 'number':
      return Number.isInteger(value) ? 'int' : 'float';
    case 'object':
      return 'dict';
    default:
      return typeof value;
  }
}

// Python's str.isspace() set, which differs from String.prototype.trim (e.g. U+001C..U+001F, U+0085 vs U+FEFF).
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g');

function pyStrip(text: string): string {
  return text.replace(PY_STRIP, '');
}

// Python's repr escapes what str.isprintable() rejects: categories Other and Separator, except the ASCII space.
const PY_NON_PRINTABLE = /^[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$/u;
const REPR_ESCAPES: Record<string, string> = { '\t': '\\t', '\n': '\\n', '\r': '\\r', '\\': '\\\\' };

function pyStrRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const char of text) {
    out += char === quote ? `\\${char}` : (REPR_ESCAPES[char] ?? reprCodePoint(char));
  }
  return out + quote;
}

function reprCodePoint(char: string): string {
  const code = char.codePointAt(0) ?? 0;
  if (code === 0x20 || (code > 0x20 && code < 0x7f) || (code > 0x7f && !PY_NON_PRINTABLE.test(char))) {
    return char;
  }
  if (code <= 0xff) {
    return `\\x${hex(code, 2)}`;
  }
  return code <= 0xffff ? `\\u${hex(code, 4)}` : `\\U${hex(code, 8)}`;
}

function hex(code: number, width: number): string {
  return code.toString(16).padStart(width, '0');
}

function pyListRepr(items: readonly string[]): string {
  return `[${items.map(pyStrRepr).join(', ')}]`;
}

function pyTupleRepr(items: readonly string[]): string {
  return items.length === 1 ? `(${pyStrRepr(items[0] ?? '')},)` : `(${items.map(pyStrRepr).join(', ')})`;
}

// ---------------------------------------------------------------------------------------------------------------
// Compact JSON (Python json.dumps(value, ensure_ascii=False, separators=(',', ':')))

// CPython 3.12 bounds json's recursion by its C stack budget (1500 frames, a few already used by the caller).
// Measured with 3.12.1 through mflux's prepare(): 1497 nested containers decode and encode, 1498 raise.
const MAX_DEPTH = 1497;

function dumpCompact(value: unknown, view: PyJsonView): string {
  return new CompactEncoder(view).encode(value, 0);
}

class CompactEncoder {
  constructor(private readonly view: PyJsonView) {}

  encode(value: unknown, depth: number): string {
    if (isList(value)) {
      this.enter(depth);
      return `[${value.map((_, index) => this.encodeSlot(value, index, depth + 1)).join(',')}]`;
    }
    if (isDict(value)) {
      this.enter(depth);
      const members = this.view
        .keys(value)
        .map((key) => `${pyJsonString(key)}:${this.encodeSlot(value, key, depth + 1)}`);
      return `{${members.join(',')}}`;
    }
    return encodeScalar(value);
  }

  private encodeSlot(container: object, slot: string | number, depth: number): string {
    const value: unknown = (container as Record<string | number, unknown>)[slot];
    if (typeof value !== 'number') {
      return this.encode(value, depth);
    }
    const asInt = this.view.pyInt(container, slot);
    return asInt === null ? pyJsonFloat(value) : asInt.toString();
  }

  private enter(depth: number): void {
    if (depth >= MAX_DEPTH) {
      throw new RangeError('maximum recursion depth exceeded while encoding a JSON object');
    }
  }
}

function encodeScalar(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return pyJsonString(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      return Number.isInteger(value) ? BigInt(value).toString() : pyJsonFloat(value);
    case 'bigint':
      return value.toString();
    default:
      if (value === null) {
        return 'null';
      }
      throw new TypeError(`Object of type ${typeof value} is not JSON serializable`);
  }
}

const JSON_ESCAPES: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

/** Unlike JSON.stringify, Python leaves lone surrogates unescaped when ensure_ascii=False. */
function pyJsonString(text: string): string {
  let body = '';
  for (const char of text) {
    body += JSON_ESCAPES[char] ?? (char < ' ' ? `\\u${hex(char.charCodeAt(0), 4)}` : char);
  }
  return `"${body}"`;
}

/** float.__repr__, with json's spellings of the non-finite values. */
function pyJsonFloat(value: number): string {
  if (Number.isNaN(value)) {
    return 'NaN';
  }
  if (!Number.isFinite(value)) {
    return value > 0 ? 'Infinity' : '-Infinity';
  }
  if (value === 0) {
    return Object.is(value, -0) ? '-0.0' : '0.0';
  }
  // toExponential() without an argument yields the shortest round-tripping digits, like Python's repr.
  const [mantissa = '', exponentText = '0'] = value.toExponential().split('e');
  const sign = mantissa.startsWith('-') ? '-' : '';
  const digits = mantissa.replace('-', '').replace('.', '');
  return sign + placeDecimalPoint(digits, Number(exponentText));
}

/** Python switches to scientific notation below 1e-4 and from 1e16 on, with at least two exponent digits. */
function placeDecimalPoint(digits: string, exponent: number): string {
  if (exponent < -4 || exponent >= 16) {
    const fraction = digits.length > 1 ? `.${digits.slice(1)}` : '';
    const exponentSign = exponent < 0 ? '-' : '+';
    return `${digits.slice(0, 1)}${fraction}e${exponentSign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (exponent < 0) {
    return `0.${'0'.repeat(-exponent - 1)}${digits}`;
  }
  if (digits.length <= exponent + 1) {
    return `${digits}${'0'.repeat(exponent + 1 - digits.length)}.0`;
  }
  return `${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// JSON decoding with Python's json.loads grammar and error texts (CPython 3.12 C scanner, strict mode)

class PyJsonDecodeError extends Error {
  constructor(reason: string, chars: readonly string[], pos: number) {
    const before = chars.slice(0, pos);
    const line = before.filter((char) => char === '\n').length + 1;
    const column = pos - before.lastIndexOf('\n');
    super(`${reason}: line ${line} column ${column} (char ${pos})`);
    this.name = 'JSONDecodeError';
  }
}

interface ParsedJson {
  value: unknown;
  view: PyJsonView;
}

interface Scanned {
  value: unknown;
  end: number;
  fact?: NumberFact;
}

interface ScannedText extends Scanned {
  value: string;
}

function decodePyJson(text: string): ParsedJson {
  const decoder = new PyJsonDecoder(text);
  return { value: decoder.decode(), view: new PyJsonView(decoder.facts) };
}

const JSON_WHITESPACE = new Set([' ', '\t', '\n', '\r']);
const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};
const CONSTANTS: [string, unknown][] = [
  ['null', null],
  ['true', true],
  ['false', false],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
];

class PyJsonDecoder {
  readonly facts: PyJsonFacts = { keyOrder: new WeakMap(), numbers: new WeakMap() };
  // Python indexes strings by code point, and error positions must match.
  private readonly chars: string[];

  constructor(text: string) {
    this.chars = Array.from(text);
  }

  decode(): unknown {
    const { value, end } = this.scan(this.skipSpace(0), 0);
    const after = this.skipSpace(end);
    if (after !== this.chars.length) {
      this.fail('Extra data', after);
    }
    return value;
  }

  private scan(idx: number, depth: number): Scanned {
    const char = this.chars[idx];
    if (char === '"') {
      return this.scanString(idx + 1);
    }
    if (char === '{' || char === '[') {
      if (depth >= MAX_DEPTH) {
        const kind = char === '{' ? 'object' : 'array';
        throw new RangeError(`maximum recursion depth exceeded while decoding a JSON ${kind} from a unicode string`);
      }
      return char === '{' ? this.scanObject(idx + 1, depth + 1) : this.scanArray(idx + 1, depth + 1);
    }
    return this.scanConstant(idx) ?? this.scanNumber(idx);
  }

  private scanObject(start: number, depth: number): Scanned {
    const entries = new Map<string, Scanned>();
    let idx = this.skipSpace(start);
    if (this.chars[idx] !== '}') {
      for (;;) {
        if (this.chars[idx] !== '"') {
          this.fail('Expecting property name enclosed in double quotes', idx);
        }
        const key = this.scanString(idx + 1);
        idx = this.skipSpace(key.end);
        if (this.chars[idx] !== ':') {
          this.fail("Expecting ':' delimiter", idx);
        }
        const member = this.scan(this.skipSpace(idx + 1), depth);
        entries.set(key.value, member);
        idx = this.skipSpace(member.end);
        if (this.chars[idx] === '}') {
          break;
        }
        idx = this.expectComma(idx);
      }
    }
    return { value: this.buildObject(entries), end: idx + 1 };
  }

  private scanArray(start: number, depth: number): Scanned {
    const items: Scanned[] = [];
    let idx = this.skipSpace(start);
    if (this.chars[idx] !== ']') {
      for (;;) {
        const item = this.scan(idx, depth);
        items.push(item);
        idx = this.skipSpace(item.end);
        if (this.chars[idx] === ']') {
          break;
        }
        idx = this.expectComma(idx);
      }
    }
    const array = items.map((item) => item.value);
    items.forEach((item, index) => this.noteNumber(array, index, item.fact));
    return { value: array, end: idx + 1 };
  }

  /** A repeated key keeps its first position and its last value, as in a Python dict. */
  private buildObject(entries: Map<string, Scanned>): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    for (const [key, member] of entries) {
      // defineProperty keeps "__proto__" an ordinary key, as JSON.parse does.
      Object.defineProperty(obj, key, { value: member.value, enumerable: true, writable: true, configurable: true });
      this.noteNumber(obj, key, member.fact);
    }
    this.facts.keyOrder.set(obj, [...entries.keys()]);
    return obj;
  }

  private noteNumber(container: object, slot: string | number, fact: NumberFact | undefined): void {
    if (fact === undefined) {
      return;
    }
    let slots = this.facts.numbers.get(container);
    if (slots === undefined) {
      slots = new Map();
      this.facts.numbers.set(container, slots);
    }
    slots.set(slot, fact);
  }

  private expectComma(idx: number): number {
    if (this.chars[idx] !== ',') {
      this.fail("Expecting ',' delimiter", idx);
    }
    return this.skipSpace(idx + 1);
  }

  private scanString(start: number): ScannedText {
    let out = '';
    let idx = start;
    for (;;) {
      const char = this.chars[idx];
      if (char === undefined) {
        this.fail('Unterminated string starting at', start - 1);
      }
      if (char === '"') {
        return { value: out, end: idx + 1 };
      }
      if (char !== '\\') {
        if ((char.codePointAt(0) ?? 0) <= 0x1f) {
          this.fail('Invalid control character at', idx);
        }
        out += char;
        idx += 1;
        continue;
      }
      const escape = this.scanEscape(idx, start);
      out += escape.value;
      idx = escape.end;
    }
  }

  /** `backslash` indexes the backslash; returns the decoded text and the index after the escape. */
  private scanEscape(backslash: number, stringStart: number): ScannedText {
    const kind = this.chars[backslash + 1];
    if (kind === undefined) {
      this.fail('Unterminated string starting at', stringStart - 1);
    }
    if (kind !== 'u') {
      const decoded = SIMPLE_ESCAPES[kind];
      if (decoded === undefined) {
        this.fail('Invalid \\escape', backslash);
      }
      return { value: decoded, end: backslash + 2 };
    }
    return this.scanUnicodeEscape(backslash + 1);
  }

  /** A high surrogate followed by an escaped low surrogate joins into one code point; anything else stays as is. */
  private scanUnicodeEscape(uIndex: number): ScannedText {
    // The C scanner also wants a character after the four digits (the closing quote at least).
    if (uIndex + 5 >= this.chars.length) {
      this.fail('Invalid \\uXXXX escape', uIndex);
    }
    const high = this.hexUnit(uIndex);
    const end = uIndex + 5;
    const pairFits = end + 6 < this.chars.length;
    if (high >= 0xd800 && high <= 0xdbff && pairFits && this.chars[end] === '\\' && this.chars[end + 1] === 'u') {
      const low = this.hexUnit(end + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        return { value: String.fromCharCode(high, low), end: end + 6 };
      }
    }
    return { value: String.fromCharCode(high), end };
  }

  private hexUnit(uIndex: number): number {
    const digits = this.chars.slice(uIndex + 1, uIndex + 5).join('');
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) {
      this.fail('Invalid \\uXXXX escape', uIndex);
    }
    return parseInt(digits, 16);
  }

  private scanConstant(idx: number): Scanned | null {
    for (const [name, value] of CONSTANTS) {
      if (this.matches(idx, name)) {
        return { value, end: idx + name.length };
      }
    }
    return null;
  }

  private matches(idx: number, word: string): boolean {
    return this.chars.slice(idx, idx + word.length).join('') === word;
  }

  private scanNumber(start: number): Scanned {
    let idx = start;
    if (this.chars[idx] === '-') {
      idx += 1;
    }
    if (this.chars[idx] === '0') {
      idx += 1;
    } else if (isDigit(this.chars[idx]) && this.chars[idx] !== '0') {
      idx = this.skipDigits(idx);
    } else {
      this.fail('Expecting value', start);
    }
    let isFloat = false;
    if (this.chars[idx] === '.' && isDigit(this.chars[idx + 1])) {
      isFloat = true;
      idx = this.skipDigits(idx + 1);
    }
    const exponentEnd = this.scanExponent(idx);
    if (exponentEnd !== idx) {
      isFloat = true;
      idx = exponentEnd;
    }
    const literal = this.chars.slice(start, idx).join('');
    return { ...numberFromLiteral(literal, isFloat), end: idx };
  }

  /** Python backtracks over an `e` with no digits, leaving it to fail as the next token. */
  private scanExponent(idx: number): number {
    const marker = this.chars[idx];
    if (marker !== 'e' && marker !== 'E') {
      return idx;
    }
    let next = idx + 1;
    const sign = this.chars[next];
    if (sign === '+' || sign === '-') {
      next += 1;
    }
    const end = this.skipDigits(next);
    return end > next ? end : idx;
  }

  private skipDigits(idx: number): number {
    let next = idx;
    while (isDigit(this.chars[next])) {
      next += 1;
    }
    return next;
  }

  private skipSpace(idx: number): number {
    let next = idx;
    while (JSON_WHITESPACE.has(this.chars[next] ?? '')) {
      next += 1;
    }
    return next;
  }

  private fail(reason: string, pos: number): never {
    throw new PyJsonDecodeError(reason, this.chars, pos);
  }
}

function isDigit(char: string | undefined): boolean {
  return char !== undefined && char >= '0' && char <= '9';
}

/** Python ints are exact and never negative zero; floats are marked when JS would take them for ints. */
function numberFromLiteral(literal: string, isFloat: boolean): { value: number; fact?: NumberFact } {
  const value = Number(literal);
  if (isFloat) {
    return Number.isInteger(value) ? { value, fact: 'float' } : { value };
  }
  if (Number.isSafeInteger(value)) {
    return { value: value === 0 ? 0 : value };
  }
  return { value, fact: BigInt(literal) };
}
