/**
 * One conformance suite for every engine (preview, mflux worker on the fake mflux): what the
 * server relies on, checked the same way for each, as BullMQ runs one suite over each backend.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { CanceledError } from '../../src/core/errors.js';
import { modelBuild, type Engine, type EngineProgress, type ImageTask, type RunOptions } from '../../src/engines/engine.js';
import { tempDir } from './server.js';

export interface ConformanceOptions {
  /** Creates the engine; `slow` asks for steps slow enough to cancel in between. */
  make(opts: { slow: boolean }): Engine | Promise<Engine>;
  /** Name the engine reports in describe(). */
  name: string;
}

export async function tinyPng(dir: string, name: string, color: string, size = 32): Promise<string> {
  const p = path.join(dir, name);
  await sharp({ create: { width: size, height: size, channels: 3, background: color } }).png().toFile(p);
  return p;
}

export function baseTask(over: Partial<ImageTask> = {}): ImageTask {
  return {
    operation: 'qwen.generate',
    model: { family: 'qwen', name: 'image', repo: 'Qwen/Qwen-Image', quantize: 8 },
    prompt: 'a conformance test',
    negativePrompt: null,
    width: 64,
    height: 48,
    seed: 7,
    steps: 3,
    guidance: 4,
    scheduler: 'linear',
    loras: [],
    ...over,
  };
}

export function engineConformance(opts: ConformanceOptions): void {
  void describe(`engine conformance: ${opts.name}`, () => {
    let dir: string;
    let engine: Engine;
    let slowEngine: Engine;
    before(async () => {
      dir = tempDir('kiapi-conf-');
      engine = await opts.make({ slow: false });
      slowEngine = await opts.make({ slow: true });
    });
    after(async () => {
      await engine.close();
      await slowEngine.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    /** What the residency does before a run: make the task's build resident (engines holding weights). */
    const prepared = async (e: Engine, task: ImageTask, opts: Omit<RunOptions, 'buildKey'>) => {
      const build = modelBuild(task.model, task.loras);
      if (e.holdsWeights) await e.load(build);
      return e.run(task, { ...opts, buildKey: build.key });
    };

    const run = async (e: Engine, task: ImageTask, out: string, signal = new AbortController().signal) => {
      const events: EngineProgress[] = [];
      const result = await prepared(e, task, { outputPath: path.join(dir, out), onProgress: (p) => events.push(p), signal });
      // An engine hands its PNG back in memory or writes it at outputPath; either is the output.
      return { result, events, bytes: result.png ?? fs.readFileSync(path.join(dir, out)) };
    };

    void it('reports its name', () => {
      assert.equal(engine.describe().name, opts.name);
    });

    void it('writes a lossless PNG of the requested size and reports the seed', async () => {
      const { result, bytes } = await run(engine, baseTask(), 'size.png');
      const meta = await sharp(bytes).metadata();
      assert.equal(meta.format, 'png');
      assert.equal(meta.width, 64);
      assert.equal(meta.height, 48);
      assert.deepEqual([result.width, result.height, result.seed], [64, 48, 7]);
      assert.ok(result.engineSeconds >= 0);
      assert.ok(Array.isArray(result.warnings));
    });

    void it('emits one progress event per step, in order, ending at total', async () => {
      const { events } = await run(engine, baseTask({ steps: 4 }), 'progress.png');
      assert.deepEqual(
        events.map((e) => [e.step, e.total]),
        [
          [1, 4],
          [2, 4],
          [3, 4],
          [4, 4],
        ],
      );
      assert.ok(events.every((e) => e.label === 'denoising'));
    });

    void it('is deterministic for the same task and differs for another seed', async () => {
      const a = await run(engine, baseTask(), 'a.png');
      const b = await run(engine, baseTask(), 'b.png');
      const c = await run(engine, baseTask({ seed: 8 }), 'c.png');
      assert.ok(a.bytes.equals(b.bytes));
      assert.ok(!a.bytes.equals(c.bytes));
    });

    void it('runs img2img, edit with several images, and an Ideogram caption', async () => {
      const red = await tinyPng(dir, 'red.png', '#ff0000');
      const blue = await tinyPng(dir, 'blue.png', '#0000ff');
      await run(engine, baseTask({ initImage: { fileId: 'file_1', path: red }, imageStrength: 0.5 }), 'i2i.png');
      await run(
        engine,
        baseTask({ operation: 'qwen.edit', model: { family: 'qwen', name: 'edit-2509', repo: 'Qwen/Qwen-Image-Edit-2509', quantize: 8 }, images: [{ fileId: 'file_1', path: red }, { fileId: 'file_2', path: blue }] }),
        'edit.png',
      );
      const caption = { high_level_description: 'x', compositional_deconstruction: { background: 'y', elements: [{ type: 'text', bbox: [100, 100, 400, 900], text: 'HI', desc: 'z' }] } };
      const { result } = await run(
        engine,
        baseTask({ operation: 'ideogram4.generate', model: { family: 'ideogram4', name: 'fp8', repo: 'ideogram-ai/ideogram-4-fp8', quantize: null }, prompt: caption, preset: 'V4_TURBO_12', steps: 12, width: 256, height: 256 }),
        'ideo.png',
      );
      assert.equal(result.width, 256);
    });

    void it('stops at a step boundary when the signal fires, with CanceledError', async () => {
      const controller = new AbortController();
      const events: EngineProgress[] = [];
      const promise = prepared(slowEngine, baseTask({ steps: 50 }), {
        outputPath: path.join(dir, 'cancel.png'),
        signal: controller.signal,
        onProgress: (p) => {
          events.push(p);
          if (p.step === 2) controller.abort(new CanceledError('canceled by test'));
        },
      });
      await assert.rejects(promise, (err: unknown) => err instanceof CanceledError);
      assert.ok(events.length >= 2 && events.length < 50, `stopped after ${events.length} steps`);
    });

    void it('keeps working after a cancel', async () => {
      const { result } = await run(slowEngine, baseTask({ steps: 1 }), 'after-cancel.png');
      assert.equal(result.width, 64);
    });

    void it('loads and unloads builds; a run on a build that is not loaded fails and loads nothing', async () => {
      const task = baseTask();
      const build = modelBuild(task.model, []);
      const loaded = await engine.load(build);
      assert.ok(loaded.seconds >= 0);
      await engine.unload(build.key);
      await engine.unload(build.key);
      if (engine.holdsWeights) {
        await assert.rejects(
          engine.run(task, { buildKey: build.key, outputPath: path.join(dir, 'unloaded.png'), onProgress: () => {}, signal: new AbortController().signal }),
          /not loaded/,
        );
      }
    });
  });
}
