import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { CanceledError } from '../../src/core/errors.js';
import { modelBuild, type EngineProgress, type ImageTask } from '../../src/engines/engine.js';
import { PreviewEngine } from '../../src/engines/preview/preview-engine.js';

let dir: string;
let counter = 0;

function task(overrides: Partial<ImageTask> = {}): ImageTask {
  return {
    operation: 'qwen.generate',
    model: { family: 'qwen', name: 'qwen-image', repo: 'Qwen/Qwen-Image', quantize: null },
    prompt: 'a red fox in a snowy forest',
    width: 128,
    height: 96,
    seed: 7,
    steps: 3,
    loras: [],
    ...overrides,
  };
}

interface Run {
  /** The PNG written out, for tests that read it by path. */
  file: string;
  bytes: Buffer;
  progress: EngineProgress[];
}

async function run(t: ImageTask, engine = new PreviewEngine({ stepMs: 0 })): Promise<Run> {
  const file = path.join(dir, `out-${counter++}.png`);
  const progress: EngineProgress[] = [];
  const out = await engine.run(t, { buildKey: '', outputPath: file, onProgress: (p) => progress.push(p), signal: new AbortController().signal });
  // The preview engine hands its PNG back in memory and writes nothing at outputPath.
  assert.ok(out.png, 'the preview engine returns its PNG');
  assert.equal(fs.existsSync(file), false);
  fs.writeFileSync(file, out.png);
  return { file, bytes: out.png, progress };
}

async function rgb(file: string): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/** Mean absolute difference per channel value (0..255) over a region, or the whole image. */
async function meanDiff(a: string, b: string, region?: { left: number; top: number; width: number; height: number }): Promise<number> {
  const [x, y] = await Promise.all([rgb(a), rgb(b)]);
  assert.equal(x.width, y.width);
  const r = region ?? { left: 0, top: 0, width: x.width, height: x.height };
  let sum = 0;
  for (let row = r.top; row < r.top + r.height; row++) {
    for (let col = r.left; col < r.left + r.width; col++) {
      for (let c = 0; c < 3; c++) {
        const i = (row * x.width + col) * 3 + c;
        sum += Math.abs((x.data[i] ?? 0) - (y.data[i] ?? 0));
      }
    }
  }
  return sum / (r.width * r.height * 3);
}

async function writeInput(name: string, width: number, height: number, svgBody: string): Promise<string> {
  const file = path.join(dir, name);
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${svgBody}</svg>`;
  await sharp(Buffer.from(svg)).png().toFile(file);
  return file;
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-preview-'));
});

after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

void describe('PreviewEngine', () => {
  void it('describes itself and has no-op residency', async () => {
    const engine = new PreviewEngine({ stepMs: 0 });
    assert.deepEqual(engine.describe(), { name: 'preview', detail: 'built-in preview engine (no model weights; draws the request)' });
    const t = task();
    const build = modelBuild(t.model, []);
    assert.deepEqual(await engine.load(build), { weightGb: null, seconds: 0 });
    await engine.unload(build.key);
    await engine.close();
  });

  void it('is deterministic: the same task gives the same bytes', async () => {
    const a = await run(task());
    const b = await run(task());
    assert.ok(a.bytes.equals(b.bytes));
  });

  void it('changes the image with the seed and with the prompt', async () => {
    const base = await run(task());
    const otherSeed = await run(task({ seed: 8 }));
    const otherPrompt = await run(task({ prompt: 'a red fox in a snowy field' }));
    assert.ok(!base.bytes.equals(otherSeed.bytes));
    assert.ok(!base.bytes.equals(otherPrompt.bytes));
  });

  void it('makes a lossless PNG of exactly width x height and reports the output', async () => {
    for (const [width, height] of [[16, 16], [64, 64], [320, 176], [48, 1024]] as const) {
      const out = await new PreviewEngine({ stepMs: 0 }).run(task({ width, height, seed: 99 }), {
        buildKey: '',
        outputPath: path.join(dir, `size-${width}x${height}.png`),
        onProgress: () => {},
        signal: new AbortController().signal,
      });
      assert.ok(out.png);
      const meta = await sharp(out.png).metadata();
      assert.equal(meta.format, 'png');
      assert.equal(meta.width, width);
      assert.equal(meta.height, height);
      assert.equal(out.width, width);
      assert.equal(out.height, height);
      assert.equal(out.seed, 99);
      assert.deepEqual(out.warnings, []);
      assert.ok(out.engineSeconds >= 0);
    }
  });

  void it('reports one denoising event per step, in order', async () => {
    const { progress } = await run(task({ steps: 5 }));
    assert.deepEqual(
      progress,
      [1, 2, 3, 4, 5].map((step) => ({ step, total: 5, label: 'denoising' })),
    );
  });

  void it('completes with a per-step sleep', async () => {
    const { progress } = await run(task({ steps: 3 }), new PreviewEngine({ stepMs: 5 }));
    assert.equal(progress.length, 3);
  });

  void it('rejects with CanceledError when aborted before the run, without progress or output', async () => {
    const controller = new AbortController();
    controller.abort();
    const progress: EngineProgress[] = [];
    const file = path.join(dir, 'aborted-before.png');
    await assert.rejects(
      new PreviewEngine({ stepMs: 0 }).run(task(), { buildKey: '', outputPath: file, onProgress: (p) => progress.push(p), signal: controller.signal }),
      (err) => err instanceof CanceledError && /0\/3/.test(err.message),
    );
    assert.equal(progress.length, 0);
    assert.equal(fs.existsSync(file), false);
  });

  void it('stops at the next step boundary when aborted between steps', async () => {
    const controller = new AbortController();
    const progress: EngineProgress[] = [];
    const file = path.join(dir, 'aborted-between.png');
    const onProgress = (p: EngineProgress) => {
      progress.push(p);
      if (p.step === 2) controller.abort();
    };
    await assert.rejects(
      new PreviewEngine({ stepMs: 0 }).run(task({ steps: 6 }), { buildKey: '', outputPath: file, onProgress, signal: controller.signal }),
      (err) => err instanceof CanceledError && /2\/6/.test(err.message),
    );
    assert.deepEqual(
      progress.map((p) => p.step),
      [1, 2],
    );
    assert.equal(fs.existsSync(file), false);
  });

  void it('stops promptly when aborted during a step sleep', { timeout: 10_000 }, async () => {
    const controller = new AbortController();
    const progress: EngineProgress[] = [];
    // Each step sleeps an hour: the test only finishes if the abort interrupts the sleep.
    const engine = new PreviewEngine({ stepMs: 3_600_000 });
    const outputPath = path.join(dir, 'aborted-sleep.png');
    const running = engine.run(task({ steps: 2 }), { buildKey: '', outputPath, onProgress: (p) => progress.push(p), signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(running, (err) => err instanceof CanceledError && /0\/2/.test(err.message));
    assert.equal(progress.length, 0);
  });

  void it('keeps more of the init image at higher strength', async () => {
    const drawing = '<rect width="200" height="100" fill="#0a3d8f"/><circle cx="100" cy="50" r="40" fill="#ffd000"/>';
    const input = await writeInput('init.png', 200, 100, drawing);
    const initImage = { fileId: 'init', path: input };
    const reference = path.join(dir, 'init-resized.png');
    await sharp(input).resize(128, 96, { fit: 'cover' }).png().toFile(reference);
    const keep = await run(task({ initImage, imageStrength: 1 }));
    const half = await run(task({ initImage, imageStrength: 0.5 }));
    const none = await run(task({ initImage, imageStrength: 0 }));
    const unset = await run(task({ initImage, imageStrength: null }));
    const diffToInput = (out: Run) => meanDiff(out.file, reference);
    const [dKeep, dHalf, dNone] = await Promise.all([diffToInput(keep), diffToInput(half), diffToInput(none)]);
    assert.ok(dKeep * 4 < dNone, `strength 1 (${dKeep}) should be much closer to the input than strength 0 (${dNone})`);
    assert.ok(dKeep < dHalf && dHalf < dNone, `expected ${dKeep} < ${dHalf} < ${dNone}`);
    assert.ok(unset.bytes.equals(none.bytes), 'a null strength behaves like 0');
  });

  void it('composes one or three edit images', async () => {
    const files = await Promise.all([
      writeInput('ref1.png', 64, 64, '<rect width="64" height="64" fill="#e01010"/>'),
      writeInput('ref2.png', 40, 90, '<rect width="40" height="90" fill="#10a010"/>'),
      writeInput('ref3.png', 120, 50, '<rect width="120" height="50" fill="#1010e0"/>'),
    ]);
    const images = files.map((p, i) => ({ fileId: `ref${i}`, path: p }));
    const plain = await run(task({ operation: 'qwen.edit', width: 256, height: 256 }));
    const one = await run(task({ operation: 'qwen.edit', width: 256, height: 256, images: images.slice(0, 1) }));
    const three = await run(task({ operation: 'qwen.edit', width: 256, height: 256, images }));
    assert.ok(!one.bytes.equals(plain.bytes));
    assert.ok(!three.bytes.equals(one.bytes));
    for (const out of [one, three]) {
      const meta = await sharp(out.file).metadata();
      assert.equal(meta.width, 256);
      assert.equal(meta.height, 256);
    }
    // Each reference's colour shows up somewhere in the three-image composite.
    const { data } = await rgb(three.file);
    const has = (r: number, g: number, b: number) => {
      for (let i = 0; i + 2 < data.length; i += 3) {
        if (Math.abs((data[i] ?? 0) - r) < 6 && Math.abs((data[i + 1] ?? 0) - g) < 6 && Math.abs((data[i + 2] ?? 0) - b) < 6) return true;
      }
      return false;
    };
    assert.ok(has(0xe0, 0x10, 0x10) && has(0x10, 0xa0, 0x10) && has(0x10, 0x10, 0xe0));
  });

  void it('draws caption elements in their [y_min, x_min, y_max, x_max] boxes', async () => {
    const caption = (elements: unknown[]) => ({
      high_level_description: 'a poster',
      style_description: {
        aesthetics: 'clean',
        lighting: 'soft',
        medium: 'poster',
        art_style: 'flat',
        color_palette: ['#DDEEFF', '#AABBCC'],
      },
      compositional_deconstruction: { background: 'plain', elements },
    });
    // Top-right under the model's order; the other reading ([x1, y1, x2, y2]) would be bottom-left.
    const elements = [
      { type: 'obj', bbox: [250, 600, 450, 950], desc: 'a red box', color_palette: ['#CC0000'] },
      { type: 'text', bbox: [500, 600, 700, 950], text: 'HELLO', desc: 'greeting', color_palette: ['#003300'] },
    ];
    const size = { width: 256, height: 256 };
    const empty = await run(task({ operation: 'ideogram4.generate', prompt: caption([]), ...size }));
    const full = await run(task({ operation: 'ideogram4.generate', prompt: caption(elements), ...size }));
    // Pixels: the obj is at x 154..243, y 64..115 and the text at x 154..243, y 128..179. Read the
    // other way round, the obj would land at x 64..115, y 154..243, where nothing else is drawn.
    const objRegion = { left: 160, top: 70, width: 76, height: 40 };
    const textRegion = { left: 160, top: 132, width: 76, height: 42 };
    const swappedObjRegion = { left: 66, top: 160, width: 46, height: 76 };
    assert.ok((await meanDiff(empty.file, full.file, objRegion)) > 10);
    assert.ok((await meanDiff(empty.file, full.file, textRegion)) > 3);
    assert.equal(await meanDiff(empty.file, full.file, swappedObjRegion), 0);
  });

  void it('never throws on malformed captions', async () => {
    const captions: Record<string, unknown>[] = [
      {},
      { compositional_deconstruction: 5, style_description: 'photo', high_level_description: 42 },
      { compositional_deconstruction: { elements: 'not a list' } },
      { style_description: { color_palette: 'red' }, compositional_deconstruction: { elements: [null, 5, 'x', [], {}] } },
      {
        style_description: { color_palette: ['#GGGGGG', 12, '#abcdef'] },
        compositional_deconstruction: {
          background: ['x'],
          elements: [
            { type: 'text' },
            { type: 'obj', bbox: [1, 2] },
            { type: 'text', text: 7, desc: 'seven', bbox: ['a', 1, 2, 3] },
            { type: 'obj', bbox: [900, 900, 100, 100], desc: { nested: true } },
            { type: 'text', text: 'ok', color_palette: 'red' },
            { type: 'obj', bbox: [0, 0, 1000, 1000], desc: 'everything', color_palette: [1, '#ff0000'] },
            { type: 'obj', bbox: [-50, 2000, 1e9, Number.NaN], desc: 'out of range' },
            { type: 'mystery', bbox: [10, 10, 10, 10], desc: 'zero area' },
            { type: 'text', text: '日本語 ✓ émoji 🙂', bbox: [0, 0, 3, 3] },
          ],
        },
      },
    ];
    for (const prompt of captions) {
      const out = await run(task({ operation: 'ideogram4.generate', prompt, width: 64, height: 48 }));
      assert.equal((await sharp(out.file).metadata()).width, 64);
    }
  });

  void it('draws non-ASCII and very long prompts', async () => {
    const out = await run(task({ prompt: `Ünïcödé 漢字 🙂 ${'long words '.repeat(800)}`, width: 64, height: 64 }));
    assert.equal((await sharp(out.file).metadata()).height, 64);
  });
});
