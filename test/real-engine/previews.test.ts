/**
 * Step previews on the real engine (mflux + MLX, tiny random checkpoints), one family at a time,
 * through the worker engine as the server drives it: the worker fits each build's projection
 * from its own VAE and sends a JPEG after the steps asked for.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { modelBuild, type ImageTask } from '../../src/engines/engine.js';
import type { WorkerEngine } from '../../src/engines/worker/worker-engine.js';
import { sendJson } from '../support/api.js';
import { watch as watchEvents } from '../support/sse.js';
import { correlation, meanAbsDiff, previewTask, realWorkerEngine, runWatched, solidPng, tempDir, withRealServer, type WatchedRun } from './support.js';

void describe('step previews on the real engine', () => {
  let dir: string;
  let engine: WorkerEngine;
  before(() => {
    dir = tempDir('kiapi-real-previews-');
    engine = realWorkerEngine();
  });
  after(async () => {
    await engine.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  interface Watched {
    first: WatchedRun;
    again: WatchedRun;
    other: WatchedRun;
  }

  /** A fresh build watched three times: a seed, the same seed again, and another seed. */
  async function watch(task: ImageTask, every: number, maxSize: number): Promise<Watched> {
    await engine.load(modelBuild(task.model, task.loras));
    try {
      const first = await runWatched(engine, task, dir, { every, maxSize });
      const again = await runWatched(engine, task, dir, { every, maxSize });
      const other = await runWatched(engine, { ...task, seed: task.seed + 1 }, dir, { every, maxSize });
      return { first, again, other };
    } finally {
      await engine.unload(modelBuild(task.model, task.loras).key);
    }
  }

  /**
   * What every family must show: previews at the asked steps, JPEGs of the asked size that change
   * as the latents do, the same pictures for the same seed and others for another, and the fit
   * paid once per build, by its first preview.
   *
   * Not asserted: that the last preview resembles the final image more than the first does. With
   * random tiny weights that is not true. The "denoiser" hardly moves the latents (their spread
   * grows from 1.0 to about 1.4; they keep the starting noise's pattern), so every preview shows
   * nearly the same thing as the last one; and the random VAE is far from linear: a map fitted on
   * image-like (smooth) latents explains R² ≈ 0.3 to 0.4 of what it decodes from them, but only
   * about 0.1 from the white-noise latents these runs keep (per-channel correlation of the last
   * preview with its own image: about 0.1, no better than with another seed's image on Qwen).
   * The figures are printed for the record. Whether the map is applied to the right latent
   * layout is checked exactly against mflux's own unpack (worker/tests/test_previews.py, with
   * the engine venv), and the fit itself on a VAE whose answer is known (the fake mflux's).
   */
  async function check(runs: Watched, task: ImageTask, steps: number[], size: [number, number]): Promise<void> {
    const [w, h] = size;
    for (const run of [runs.first, runs.again, runs.other]) {
      assert.deepEqual(
        run.previews.map((p) => p.step),
        steps,
      );
      for (const p of run.previews) {
        const meta = await sharp(p.jpeg).metadata();
        assert.deepEqual([meta.format, meta.width, meta.height], ['jpeg', ...size], `step ${p.step}`);
        assert.deepEqual([p.width, p.height], size);
        assert.equal(p.total, steps.at(-1));
        assert.ok(p.costMs > 0);
      }
      const changed = await meanAbsDiff(run.previews[0]!.jpeg, run.previews.at(-1)!.jpeg, w, h);
      assert.ok(changed > 0.5, `${task.operation}: the previews change from step to step (${changed.toFixed(2)})`);
    }
    const same = runs.first.previews.every((p, i) => p.jpeg.equals(runs.again.previews[i]!.jpeg));
    assert.ok(same, `${task.operation}: the same seed shows the same previews`);
    const otherSeed = await meanAbsDiff(runs.first.previews.at(-1)!.jpeg, runs.other.previews.at(-1)!.jpeg, w, h);
    assert.ok(otherSeed > 0.5, `${task.operation}: another seed shows other previews (${otherSeed.toFixed(2)})`);

    // The first preview of the build paid for the fit (VAE decodes), every later one did not.
    const fitMs = runs.first.previews[0]!.costMs;
    const later = [...runs.first.previews.slice(1), ...runs.again.previews].map((p) => p.costMs).sort((x, y) => x - y);
    const median = later[Math.floor(later.length / 2)]!;
    assert.ok(fitMs > 10 * median, `${task.operation}: first preview ${fitMs.toFixed(1)} ms (with the fit), later ${median.toFixed(2)} ms`);

    const last = runs.first.previews.at(-1)!.jpeg;
    const mad = [await meanAbsDiff(runs.first.previews[0]!.jpeg, runs.first.png, w, h), await meanAbsDiff(last, runs.first.png, w, h)];
    const r = [await correlation(last, runs.first.png, task.width / 8, task.height / 8), await correlation(last, runs.other.png, task.width / 8, task.height / 8)];
    console.log(
      `${task.operation}: fit + first preview ${fitMs.toFixed(0)} ms, later previews ${median.toFixed(2)} ms (median); ` +
        `mean abs diff to the image: first preview ${mad[0]!.toFixed(1)}, last ${mad[1]!.toFixed(1)}; ` +
        `last preview's correlation with its image ${r[0]!.toFixed(2)}, with another seed's ${r[1]!.toFixed(2)}`,
    );
  }

  void it('qwen generate: a preview every 2 steps', async () => {
    const task = previewTask('qwen.generate', 128, 96, 6);
    await check(await watch(task, 2, 64), task, [2, 4, 6], [64, 48]);
  });

  void it('qwen edit: a preview every step', async () => {
    const input = path.join(dir, 'in.png');
    fs.writeFileSync(input, await solidPng('#3060c0', 64));
    const task = previewTask('qwen.edit', 96, 96, 4, [{ fileId: 'file_in', path: input }]);
    await check(await watch(task, 1, 256), task, [1, 2, 3, 4], [96, 96]);
  });

  void it('ideogram 4: every 3 steps of the 12-step preset', async () => {
    const task = previewTask('ideogram4.generate', 256, 256, 12);
    await check(await watch(task, 3, 128), task, [3, 6, 9, 12], [128, 128]);
  });
});

/**
 * The whole way on the real engine: an HTTP client watches a Qwen job's event stream with
 * previews, as a browser would, and gets every step, previews of the asked size and the end.
 */
void describe('job events with previews from the real engine over HTTP', () => {
  void it('queued or started, every denoising step, JPEG previews every 2nd step, then succeeded', async () => {
    await withRealServer({}, async (s) => {
      const res = await sendJson<{ job_id: string }>('POST', `${s.url}/v1/image/qwen/generate`, {
        prompt: 'a red square',
        width: 128,
        height: 128,
        steps: 6,
        seed: 3,
        mode: 'async',
      });
      assert.equal(res.status, 202, res.bytes.toString());
      const w = watchEvents(`${s.url}/v1/jobs/${res.json.job_id}/events?previews=2&preview_size=64`);
      const events = await w.ended;
      w.close();
      assert.equal(events.at(-1)!.event, 'succeeded', events.map((e) => e.event).join());
      const steps = events.filter((e) => e.event === 'progress' && e.data.label === 'denoising').map((e) => e.data.step);
      // A watcher that connects after the first steps starts from the latest one (the stream's snapshot).
      assert.ok(steps.length >= 1 && steps.at(-1) === 6, `steps: ${steps.join()}`);
      const previews = events.filter((e) => e.event === 'preview');
      assert.ok(previews.length >= 1, 'at least one preview');
      for (const p of previews) {
        assert.equal((p.data.step as number) % 2, 0);
        const jpeg = Buffer.from(String(p.data.image).replace(/^data:image\/jpeg;base64,/, ''), 'base64');
        const meta = await sharp(jpeg).metadata();
        assert.equal(meta.format, 'jpeg');
        assert.equal(Math.max(meta.width, meta.height), 64);
      }
    });
  });
});
