// Expected texts are mflux 0.18.0's (caption.py); the implementation was also checked against the Python original
// by differential fuzzing, so these tests pin the contract rather than explore it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  CAPTION_WARNING_PREFIX,
  EMPTY_PROMPT_MESSAGE,
  PLAIN_PROMPT_WARNING,
  isEmptyPrompt,
  prepareCaption,
  strictFailureMessage,
  verifyCaption,
} from '../../src/capabilities/ideogram4/caption-verifier.js';

type Json = Record<string, unknown>;

function photoCaption(): Json {
  return {
    high_level_description: 'A red fox sitting in fresh snow at dawn',
    style_description: {
      aesthetics: 'calm, minimal, high detail',
      lighting: 'soft golden backlight',
      photo: '85mm lens, shallow depth of field',
      medium: 'photograph',
      color_palette: ['#FF6A00', '#FFFFFF', '#1A2B3C'],
    },
    compositional_deconstruction: {
      background: 'snowy birch forest, blurred',
      elements: [
        { type: 'obj', bbox: [200, 300, 900, 700], desc: 'a red fox, sitting', color_palette: ['#FF6A00'] },
        {
          type: 'text',
          bbox: [40, 100, 140, 900],
          text: 'WINTER',
          desc: 'bold serif title',
          color_palette: ['#FFFFFF'],
        },
        { type: 'obj', desc: 'falling snowflakes' },
      ],
    },
  };
}

function artCaption(): Json {
  return {
    high_level_description: 'A lighthouse on a cliff during a storm',
    style_description: {
      aesthetics: 'dramatic, moody',
      lighting: 'lightning flashes',
      medium: 'oil on canvas',
      art_style: 'romanticism',
      color_palette: ['#0B1D2A', '#F2E8CF'],
    },
    compositional_deconstruction: {
      background: 'dark sea and clouds',
      elements: [{ type: 'obj', bbox: [100, 600, 800, 900], desc: 'white lighthouse', color_palette: ['#F2E8CF'] }],
    },
  };
}

function withStyle(style: unknown): Json {
  return { ...photoCaption(), style_description: style };
}

function withComposition(composition: unknown): Json {
  return { ...photoCaption(), compositional_deconstruction: composition };
}

function withElements(...elements: unknown[]): Json {
  return withComposition({ background: 'plain wall', elements });
}

function invalidJsonWarning(error: string): string {
  return `invalid JSON caption: ${error}; prompt will be used verbatim`;
}

void describe('prepareCaption: preparation branches', () => {
  void it('serializes an object prompt to compact JSON and verifies it', () => {
    const caption = { high_level_description: 'x', compositional_deconstruction: { elements: [] } };
    const prepared = prepareCaption(caption);
    assert.equal(prepared.text, '{"high_level_description":"x","compositional_deconstruction":{"elements":[]}}');
    assert.equal(prepared.caption, caption);
    assert.deepEqual(prepared.warnings, [
      "compositional_deconstruction: key order is ('elements',), expected ('background', 'elements')",
      "compositional_deconstruction: 'background' should exist",
    ]);
  });

  void it('passes plain text through verbatim, unstripped, with the plain-prompt warning', () => {
    const prepared = prepareCaption('  a fox in the snow ');
    assert.equal(prepared.text, '  a fox in the snow ');
    assert.equal(prepared.caption, null);
    assert.deepEqual(prepared.warnings, [
      'plain prompt: Ideogram 4 was trained on structured JSON captions; plain text may reduce quality ' +
        'and increase safety-filter false positives',
    ]);
    assert.equal(PLAIN_PROMPT_WARNING, prepared.warnings[0]);
  });

  void it("strips with Python's whitespace set before looking for '{'", () => {
    const ideographicSpace = prepareCaption(`\u3000\u001c${JSON.stringify(photoCaption())}\n`);
    assert.deepEqual(ideographicSpace.warnings, []);
    assert.deepEqual(prepareCaption(`\ufeff${JSON.stringify(photoCaption())}`).warnings, [PLAIN_PROMPT_WARNING]);
  });

  void it("reports invalid JSON with Python's JSONDecodeError text and keeps the prompt verbatim", () => {
    const cases: [string, string][] = [
      ['{"a": 1 "b": 2}', "Expecting ',' delimiter: line 1 column 9 (char 8)"],
      ['{"a": 1,}', 'Expecting property name enclosed in double quotes: line 1 column 9 (char 8)'],
      ['{"a" 1}', "Expecting ':' delimiter: line 1 column 6 (char 5)"],
      ['{"a": [1,]}', 'Expecting value: line 1 column 10 (char 9)'],
      ['{"a": "x', 'Unterminated string starting at: line 1 column 7 (char 6)'],
      ['{"a": "\\q"}', 'Invalid \\escape: line 1 column 8 (char 7)'],
      ['{"a": "\\u12G4"}', 'Invalid \\uXXXX escape: line 1 column 9 (char 8)'],
      ['{"a": "x\ty"}', 'Invalid control character at: line 1 column 9 (char 8)'],
      ['{"a": 1} tail', 'Extra data: line 1 column 10 (char 9)'],
      ['{\n  "a": 1,\n  "b": tru\n}', 'Expecting value: line 3 column 8 (char 19)'],
      // Python counts code points: each emoji is one position, not two UTF-16 units.
      ['{"😀😀": x}', 'Expecting value: line 1 column 8 (char 7)'],
    ];
    for (const [prompt, error] of cases) {
      const prepared = prepareCaption(` ${prompt}`);
      assert.deepEqual(prepared.warnings, [invalidJsonWarning(error)], prompt);
      assert.equal(prepared.text, ` ${prompt}`);
      assert.equal(prepared.caption, null);
    }
  });

  void it("never reaches 'JSON caption should be an object': only text starting with '{' is parsed", () => {
    assert.deepEqual(prepareCaption('[1, 2]').warnings, [PLAIN_PROMPT_WARNING]);
    assert.deepEqual(prepareCaption('{} []').warnings, [invalidJsonWarning('Extra data: line 1 column 4 (char 3)')]);
  });

  void it('re-serializes a JSON string prompt compactly and verifies the parsed object', () => {
    const prepared = prepareCaption('{ "high_level_description" : 7 ,\n "compositional_deconstruction": [] }');
    assert.equal(prepared.text, '{"high_level_description":7,"compositional_deconstruction":[]}');
    assert.deepEqual(prepared.caption, { high_level_description: 7, compositional_deconstruction: [] });
    assert.deepEqual(prepared.warnings, [
      'high_level_description: expected a string, got int',
      'compositional_deconstruction: expected an object, got list',
    ]);
  });

  void it('flags non-ASCII \\u escapes in string prompts, before the verifier warnings', () => {
    const escaped = '{"high_level_description":"caf\\u00e9 \\u00E9 \\u00e9 \\u2603 \\u0041","x":1}';
    assert.deepEqual(prepareCaption(escaped).warnings, [
      'raw text: found non-ASCII unicode escapes (\\u00E9, \\u00e9, \\u2603); ' +
        'use json.dumps(..., ensure_ascii=False) for JSON captions',
      "root: unknown keys ['x']",
      "root: 'compositional_deconstruction' should exist",
    ]);
    assert.equal(prepareCaption(escaped).text, '{"high_level_description":"café é é ☃ A","x":1}');
    const tail = ',"compositional_deconstruction":{"background":"b","elements":[]}}';
    assert.deepEqual(prepareCaption(`{"high_level_description":"\\u00e9 é"${tail}`).warnings, []);
    assert.deepEqual(prepareCaption(`{"high_level_description":"\\u0041"${tail}`).warnings, []);
    const objectPrompt = { ...photoCaption(), high_level_description: '\\u00e9 written by hand' };
    assert.deepEqual(prepareCaption(objectPrompt).warnings, []);
  });

  void it("keeps Python's number semantics for string prompts: NaN/Infinity, 1.0 as float, exact big ints", () => {
    const prepared = prepareCaption('{"a":NaN,"b":-Infinity,"c":1.0,"d":-0,"e":1E2,"f":12345678901234567890,"g":1e-7}');
    assert.equal(prepared.text, '{"a":NaN,"b":-Infinity,"c":1.0,"d":0,"e":100.0,"f":12345678901234567890,"g":1e-07}');
    const floatBbox = { type: 'obj', bbox: [1.0, 2, 3, 4], desc: 'd' };
    const viaString = prepareCaption(JSON.stringify(withElements(floatBbox)).replace('[1,', '[1.0,'));
    assert.deepEqual(viaString.warnings, ['elements[0].bbox: all values should be integers']);
    // JSON.parse has already turned 1.0 into 1, which Python would have kept as a float (documented difference).
    assert.deepEqual(prepareCaption(withElements(floatBbox)).warnings, []);
  });

  void it('treats only the empty string as an empty prompt, and it still gets the plain-prompt warning', () => {
    const empty = prepareCaption('');
    assert.equal(isEmptyPrompt(empty), true);
    assert.deepEqual(empty.warnings, [PLAIN_PROMPT_WARNING]);
    assert.equal(isEmptyPrompt(prepareCaption('   ')), false);
    assert.equal(isEmptyPrompt(prepareCaption({})), false);
    assert.equal(EMPTY_PROMPT_MESSAGE, 'prompt must not be empty');
  });

  void it('formats the strict-mode failure with one "- " line per warning', () => {
    assert.equal(
      strictFailureMessage(['plain prompt: x', "root: unknown keys ['a']"]),
      "Ideogram 4 caption validation failed:\n- plain prompt: x\n- root: unknown keys ['a']",
    );
    assert.equal(CAPTION_WARNING_PREFIX, 'Ideogram 4 caption: ');
  });

  void it('raises where Python raises: non-object prompts, unhashable element types, too deep nesting', () => {
    assert.throws(() => prepareCaption([1] as unknown as Json), {
      name: 'TypeError',
      message: 'prompt must be a string or JSON-caption dict, got list',
    });
    assert.throws(() => prepareCaption(withElements({ type: ['obj'], desc: 'd' })), {
      name: 'TypeError',
      message: "unhashable type: 'list'",
    });
    assert.throws(() => prepareCaption(`{"a":${'['.repeat(1497)}${']'.repeat(1497)}}`), {
      name: 'RangeError',
      message: 'maximum recursion depth exceeded while decoding a JSON array from a unicode string',
    });
  });
});

void describe('verifyCaption: complete captions', () => {
  void it('accepts a photo caption with palettes and bboxes', () => {
    assert.deepEqual(verifyCaption(photoCaption()), []);
    assert.deepEqual(prepareCaption(JSON.stringify(photoCaption(), null, 2)).warnings, []);
  });

  void it('accepts an art_style caption with palettes and bboxes', () => {
    assert.deepEqual(verifyCaption(artCaption()), []);
    assert.deepEqual(prepareCaption(artCaption()).warnings, []);
  });

  void it('accepts a caption without the optional high_level_description and style_description', () => {
    assert.deepEqual(verifyCaption({ compositional_deconstruction: { background: 'b', elements: [] } }), []);
  });
});

void describe('compact JSON', () => {
  void it('keeps key order and non-ASCII characters', () => {
    const caption = {
      compositional_deconstruction: { background: 'ciel étoilé 🌌', elements: [] },
      high_level_description: '東京の夜景 "quoted" \\ \n',
    };
    assert.equal(
      prepareCaption(caption).text,
      '{"compositional_deconstruction":{"background":"ciel étoilé 🌌","elements":[]},' +
        '"high_level_description":"東京の夜景 \\"quoted\\" \\\\ \\n"}',
    );
    assert.equal(prepareCaption(JSON.stringify(caption)).text, prepareCaption(caption).text);
  });

  void it('keeps the written order of integer-like keys in string prompts', () => {
    const prepared = prepareCaption('{"b":1,"10":2,"a":3,"2":4,"b":5}');
    assert.equal(prepared.text, '{"b":5,"10":2,"a":3,"2":4}');
    assert.deepEqual(prepared.warnings.slice(0, 1), ["root: unknown keys ['b', '10', 'a', '2']"]);
  });
});

void describe('verifyCaption: rule 1, root', () => {
  void it('wants a JSON object and stops otherwise', () => {
    assert.deepEqual(verifyCaption([]), ['root: expected a JSON object, got list']);
    assert.deepEqual(verifyCaption('x'), ['root: expected a JSON object, got str']);
    assert.deepEqual(verifyCaption(null), ['root: expected a JSON object, got NoneType']);
    assert.deepEqual(verifyCaption(3), ['root: expected a JSON object, got int']);
    assert.deepEqual(verifyCaption(2.5), ['root: expected a JSON object, got float']);
    assert.deepEqual(verifyCaption(true), ['root: expected a JSON object, got bool']);
  });
});

void describe('verifyCaption: rule 2, root keys', () => {
  void it('lists unknown root keys as a Python list', () => {
    const caption = { title: 't', ...photoCaption(), "it's": 1, 'say "hi"': 2 };
    assert.deepEqual(verifyCaption(caption), [`root: unknown keys ['title', "it's", 'say "hi"']`]);
  });
});

void describe('verifyCaption: rule 3, high_level_description', () => {
  void it('must be a string when present', () => {
    assert.deepEqual(verifyCaption({ ...photoCaption(), high_level_description: ['a'] }), [
      'high_level_description: expected a string, got list',
    ]);
    assert.deepEqual(verifyCaption({ ...photoCaption(), high_level_description: null }), [
      'high_level_description: expected a string, got NoneType',
    ]);
  });
});

void describe('verifyCaption: rule 4, style_description', () => {
  void it('must be an object, and nothing else about it is checked otherwise', () => {
    assert.deepEqual(verifyCaption(withStyle('cinematic, moody lighting')), [
      'style_description: expected an object, got str',
    ]);
  });

  void it('reports unknown keys, which are also not allowed by the key order', () => {
    const style = { aesthetics: 'a', lighting: 'l', photo: 'p', medium: 'm', mood: 'calm' };
    assert.deepEqual(verifyCaption(withStyle(style)), [
      "style_description: unknown keys ['mood']",
      "style_description: keys ['mood'] are not allowed in this context",
    ]);
  });

  void it("needs exactly one of 'photo' and 'art_style', and stops otherwise", () => {
    const message = "style_description: expected exactly one of 'photo' or 'art_style'";
    const both = { aesthetics: 'a', lighting: 'l', photo: 'p', medium: 'm', art_style: 's', extra: 1 };
    assert.deepEqual(verifyCaption(withStyle(both)), ["style_description: unknown keys ['extra']", message]);
    assert.deepEqual(verifyCaption(withStyle({ aesthetics: 'a', lighting: 'l', medium: 'm' })), [message]);
  });

  void it('checks the photo order aesthetics, lighting, photo, medium[, color_palette]', () => {
    const style = { lighting: 'l', aesthetics: 'a', photo: 'p', color_palette: ['#000000'], medium: 'm' };
    assert.deepEqual(verifyCaption(withStyle(style)), [
      "style_description: key order is ('lighting', 'aesthetics', 'photo', 'color_palette', 'medium'), " +
        "expected ('aesthetics', 'lighting', 'photo', 'medium', 'color_palette')",
    ]);
  });

  void it('checks the art order aesthetics, lighting, medium, art_style[, color_palette]', () => {
    const style = { aesthetics: 'a', lighting: 'l', art_style: 's', medium: 'm' };
    assert.deepEqual(verifyCaption(withStyle(style)), [
      "style_description: key order is ('aesthetics', 'lighting', 'art_style', 'medium'), " +
        "expected ('aesthetics', 'lighting', 'medium', 'art_style')",
    ]);
  });

  void it('requires every listed key but color_palette, as a string', () => {
    const style = { aesthetics: 'a', lighting: 3, photo: 'p' };
    assert.deepEqual(verifyCaption(withStyle(style)), [
      "style_description: key order is ('aesthetics', 'lighting', 'photo'), " +
        "expected ('aesthetics', 'lighting', 'photo', 'medium')",
      'style_description.lighting: expected a string',
      "style_description: 'medium' should exist",
    ]);
  });

  void it('limits color_palette to a list of at most 16 uppercase #RRGGBB colors', () => {
    const base = { aesthetics: 'a', lighting: 'l', photo: 'p', medium: 'm' };
    assert.deepEqual(verifyCaption(withStyle({ ...base, color_palette: '#FFFFFF' })), [
      'style_description.color_palette: expected a list',
    ]);
    const palette = [...Array<string>(15).fill('#ABCDEF'), '#abcdef', 'ABCDEF0'];
    assert.deepEqual(verifyCaption(withStyle({ ...base, color_palette: palette })), [
      'style_description.color_palette: expected at most 16 colors, got 17',
      'style_description.color_palette[15]: expected uppercase #RRGGBB hex color',
      'style_description.color_palette[16]: expected uppercase #RRGGBB hex color',
    ]);
  });
});

void describe('verifyCaption: rule 5, compositional_deconstruction', () => {
  void it('is required', () => {
    const { compositional_deconstruction: _dropped, ...caption } = photoCaption();
    assert.deepEqual(verifyCaption(caption), ["root: 'compositional_deconstruction' should exist"]);
  });

  void it('must be an object, and stops otherwise', () => {
    assert.deepEqual(verifyCaption(withComposition([])), [
      'compositional_deconstruction: expected an object, got list',
    ]);
  });

  void it('checks the order background, elements and rejects other keys', () => {
    assert.deepEqual(verifyCaption(withComposition({ elements: [], notes: 'n', background: 'b' })), [
      "compositional_deconstruction: key order is ('elements', 'background'), expected ('background', 'elements')",
      "compositional_deconstruction: keys ['notes'] are not allowed in this context",
    ]);
  });

  void it('requires background as a string', () => {
    assert.deepEqual(verifyCaption(withComposition({ elements: [] })), [
      "compositional_deconstruction: key order is ('elements',), expected ('background', 'elements')",
      "compositional_deconstruction: 'background' should exist",
    ]);
    assert.deepEqual(verifyCaption(withComposition({ background: {}, elements: [] })), [
      'compositional_deconstruction.background: expected a string',
    ]);
  });

  void it('requires elements as a list, and stops otherwise', () => {
    assert.deepEqual(verifyCaption(withComposition({ background: 'b' })), [
      "compositional_deconstruction: key order is ('background',), expected ('background', 'elements')",
      "compositional_deconstruction: 'elements' should exist",
    ]);
    assert.deepEqual(verifyCaption(withComposition({ background: 'b', elements: { type: 'obj' } })), [
      'compositional_deconstruction.elements: expected a list',
    ]);
  });
});

void describe('verifyCaption: rule 5, elements', () => {
  void it('must be objects', () => {
    assert.deepEqual(verifyCaption(withElements('a fox', 1.5)), [
      'elements[0]: expected an object, got str',
      'elements[1]: expected an object, got float',
    ]);
  });

  void it('reports unknown element keys', () => {
    assert.deepEqual(verifyCaption(withElements({ type: 'obj', desc: 'd', label: 'x' })), [
      "elements[0]: unknown keys ['label']",
      "elements[0]: keys ['label'] are not allowed in this context",
    ]);
  });

  void it("needs type 'obj' or 'text', and stops checking the element otherwise", () => {
    const message = "elements[0]: 'type' should be one of ['obj', 'text']";
    assert.deepEqual(verifyCaption(withElements({ type: 'image', bbox: 'bad', desc: 3 })), [message]);
    assert.deepEqual(verifyCaption(withElements({ desc: 'no type', size: 1 })), [
      "elements[0]: unknown keys ['size']",
      message,
    ]);
  });

  void it('checks the key order of text and obj elements; text is not allowed on obj', () => {
    const text = { type: 'text', desc: 'd', text: 'HELLO', bbox: [0, 0, 10, 10] };
    const obj = { type: 'obj', text: 'HELLO', desc: 'd' };
    assert.deepEqual(verifyCaption(withElements(text, obj)), [
      "elements[0]: key order is ('type', 'desc', 'text', 'bbox'), expected ('type', 'bbox', 'text', 'desc')",
      "elements[1]: keys ['text'] are not allowed in this context",
    ]);
  });

  void it('requires desc as a string', () => {
    assert.deepEqual(verifyCaption(withElements({ type: 'obj' }, { type: 'obj', desc: 1 })), [
      "elements[0]: key order is ('type',), expected ('type', 'desc')",
      "elements[0]: 'desc' should exist",
      'elements[1].desc: expected a string',
    ]);
  });

  void it('requires text elements to carry a string text', () => {
    assert.deepEqual(verifyCaption(withElements({ type: 'text', desc: 'd' }, { type: 'text', text: 5, desc: 'd' })), [
      "elements[0]: key order is ('type', 'desc'), expected ('type', 'text', 'desc')",
      "elements[0]: text elements should include 'text'",
      'elements[1].text: expected a string',
    ]);
  });

  void it('wants bbox as a list of four values [y_min, x_min, y_max, x_max]', () => {
    const bboxes = [[1, 2, 3], [1, 2, 3, 4, 5], '0,0,10,10', null];
    assert.deepEqual(
      verifyCaption(withElements(...bboxes.map((bbox) => ({ type: 'obj', bbox, desc: 'd' })))),
      [0, 1, 2, 3].map((index) => `elements[${index}].bbox: expected [y_min, x_min, y_max, x_max]`),
    );
  });

  void it('wants true integers in bbox: floats, booleans and strings are rejected, and checking stops there', () => {
    const bboxes = [[10.5, 0, 5, 2000], [true, 0, 10, 10], ['1', 0, 10, 10]];
    assert.deepEqual(
      verifyCaption(withElements(...bboxes.map((bbox) => ({ type: 'obj', bbox, desc: 'd' })))),
      [0, 1, 2].map((index) => `elements[${index}].bbox: all values should be integers`),
    );
  });

  void it('keeps bbox values within [0, 1000]', () => {
    assert.deepEqual(verifyCaption(withElements({ type: 'obj', bbox: [-1, 0, 1001, 5], desc: 'd' })), [
      'elements[0].bbox: values should be in [0, 1000], got [-1, 0, 1001, 5]',
    ]);
  });

  void it('wants y_min <= y_max and x_min <= x_max in [y_min, x_min, y_max, x_max] order', () => {
    // An [x1, y1, x2, y2] box (as kiapi's docs describe) of a wide, short region reads as x_min > x_max here.
    assert.deepEqual(verifyCaption(withElements({ type: 'obj', bbox: [100, 500, 900, 300], desc: 'd' })), [
      'elements[0].bbox: x_min (500) should be <= x_max (300)',
    ]);
    assert.deepEqual(verifyCaption(withElements({ type: 'obj', bbox: [800, 900, 200, 100], desc: 'd' })), [
      'elements[0].bbox: y_min (800) should be <= y_max (200)',
      'elements[0].bbox: x_min (900) should be <= x_max (100)',
    ]);
  });

  void it('limits an element color_palette to at most 5 uppercase #RRGGBB colors', () => {
    const palette = ['#000000', '#111111', '#222222', '#333333', '#444444', '#55555G'];
    assert.deepEqual(verifyCaption(withElements({ type: 'obj', desc: 'd', color_palette: palette })), [
      'elements[0].color_palette: expected at most 5 colors, got 6',
      'elements[0].color_palette[5]: expected uppercase #RRGGBB hex color',
    ]);
    assert.deepEqual(verifyCaption(withElements({ type: 'obj', desc: 'd', color_palette: 'red' })), [
      'elements[0].color_palette: expected a list',
    ]);
  });

  void it('reports in mflux order across sections', () => {
    const caption = {
      extra: 1,
      high_level_description: 1,
      style_description: { photo: 'p' },
      compositional_deconstruction: { background: 'b', elements: [{ type: 'obj', bbox: [0, 0, 0], desc: 'd' }] },
    };
    assert.deepEqual(verifyCaption(caption), [
      "root: unknown keys ['extra']",
      'high_level_description: expected a string, got int',
      "style_description: key order is ('photo',), expected ('aesthetics', 'lighting', 'photo', 'medium')",
      "style_description: 'aesthetics' should exist",
      "style_description: 'lighting' should exist",
      "style_description: 'medium' should exist",
      'elements[0].bbox: expected [y_min, x_min, y_max, x_max]',
    ]);
  });
});
