import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ImageTask } from '../../src/engines/engine.js';
import { bboxToBox, placeElements, readCaption, shortLabel } from '../../src/engines/preview/caption-layout.js';
import { gridCells } from '../../src/engines/preview/edit-layout.js';
import { linePathData, measureText, toGlyphText } from '../../src/engines/preview/hershey-text.js';
import { previewMarkSvg } from '../../src/engines/preview/preview-mark.js';
import { buildScene } from '../../src/engines/preview/scene.js';
import { fitText, wrapText } from '../../src/engines/preview/text-fit.js';

function task(overrides: Partial<ImageTask> = {}): ImageTask {
  return {
    operation: 'qwen.generate',
    model: { family: 'qwen', name: 'qwen-image', repo: 'Qwen/Qwen-Image', quantize: null },
    prompt: 'a lighthouse',
    width: 256,
    height: 128,
    seed: 1,
    steps: 1,
    loras: [],
    ...overrides,
  };
}

void describe('hershey text', () => {
  void it('keeps ASCII, drops accents and replaces glyphless characters', () => {
    assert.equal(toGlyphText('Café – “ok”…'), 'Cafe - "ok"...');
    assert.equal(toGlyphText('日本 🙂\tx\ny'), '?? ? x\ny');
  });

  void it('turns text into path data without SVG text', () => {
    const d = linePathData('Hi!');
    assert.match(d, /^M\d/);
    assert.equal(linePathData('   '), '');
    assert.ok(measureText('WW') > measureText('ii'));
  });
});

void describe('text fitting', () => {
  void it('wraps within the width and splits over-long words', () => {
    const maxUnits = measureText('abcdefghij');
    const lines = wrapText(`short words here ${'x'.repeat(40)}`, maxUnits);
    assert.ok(lines.length > 3);
    for (const line of lines) assert.ok(measureText(line) <= maxUnits);
  });

  void it('fits text into a box, shrinking and then truncating with an ellipsis', () => {
    const box = { width: 200, height: 60 };
    const short = fitText('hello', box, { minCapPx: 4, maxCapPx: 30 });
    const long = fitText('word '.repeat(2000), box, { minCapPx: 4, maxCapPx: 30 });
    assert.ok(short && long);
    assert.ok(short.scale > long.scale);
    assert.ok(long.lines.at(-1)?.endsWith('...'));
    assert.equal(fitText('   ', box, { minCapPx: 4, maxCapPx: 30 }), null);
  });
});

void describe('caption layout', () => {
  void it('reads bbox as [y_min, x_min, y_max, x_max] on a 0..1000 scale', () => {
    assert.deepEqual(bboxToBox([100, 200, 500, 1000], 1000, 500), { x: 200, y: 50, width: 800, height: 200 });
    assert.equal(bboxToBox([1, 2, 3], 100, 100), null);
    assert.equal(bboxToBox([10, 10, 10, 500], 100, 100), null);
    assert.equal(bboxToBox(['0', 0, 10, 10], 100, 100), null);
  });

  void it('stacks elements without a bbox and skips unusable ones', () => {
    const caption = readCaption(
      {
        high_level_description: 'title',
        compositional_deconstruction: {
          elements: [
            { type: 'text', text: 'A' },
            null,
            { type: 'obj', desc: 'a big red barn, at dusk' },
            { type: 'obj', bbox: [0, 0, 500, 500], desc: 'box' },
          ],
        },
      },
      400,
      400,
    );
    assert.equal(caption.title, 'title');
    assert.deepEqual(
      caption.elements.map((e) => e.content),
      ['A', 'a big red barn', 'box'],
    );
    const placed = placeElements(caption.elements, 400, 400);
    assert.equal(placed.length, 3);
    assert.ok((placed[0]?.box.y ?? 0) < (placed[1]?.box.y ?? 0));
    assert.deepEqual(placed[2]?.box, { x: 0, y: 0, width: 200, height: 200 });
  });

  void it('shortens long descriptions into labels', () => {
    assert.equal(shortLabel('a small wooden boat'), 'a small wooden boat');
    assert.equal(shortLabel('one two three four five six seven eight'), 'one two three four five six...');
  });
});

void describe('edit grid', () => {
  void it('gives each image a whole-pixel cell inside the area', () => {
    const area = { x: 10, y: 20, width: 300, height: 200 };
    for (const count of [1, 2, 3, 5]) {
      const cells = gridCells(count, area, 4);
      assert.equal(cells.length, count);
      for (const cell of cells) {
        assert.ok(Number.isInteger(cell.x) && Number.isInteger(cell.y) && Number.isInteger(cell.width) && Number.isInteger(cell.height));
        assert.ok(cell.x >= area.x && cell.x + cell.width <= area.x + area.width + 1);
        assert.ok(cell.y >= area.y && cell.y + cell.height <= area.y + area.height + 1);
      }
    }
  });
});

void describe('svg builders', () => {
  void it('draws the PREVIEW mark as paths, never as SVG text', () => {
    for (const [w, h] of [[16, 16], [1024, 1024], [2048, 64]] as const) {
      const svg = previewMarkSvg(w, h);
      assert.match(svg, /^<svg [^>]*width="\d+" height="\d+"/);
      assert.match(svg, /<path /);
      assert.doesNotMatch(svg, /<text/);
    }
  });

  void it('builds every kind of scene without SVG text', () => {
    const scenes = [
      buildScene(task()),
      buildScene(task({ prompt: { compositional_deconstruction: { elements: [{ type: 'text', text: 'T' }] } } })),
      buildScene(task({ images: [{ fileId: 'a', path: '/nonexistent.png' }] })),
      buildScene(task({ initImage: { fileId: 'a', path: '/nonexistent.png' }, imageStrength: 0.3 })),
    ];
    for (const scene of scenes) {
      assert.doesNotMatch(scene.base + scene.overlay, /<text/);
      assert.match(scene.overlay, /<path /);
    }
    assert.equal(scenes[2]?.imageCells.length, 1);
    assert.equal(scenes[3]?.initStrength, 0.3);
  });
});
