/**
 * Step previews through the mflux worker engine, on the fake mflux: its latents have mflux's
 * packed shapes and its VAE decode is linear, so the worker's fitted projection and JPEGs are real.
 * The worker runs in the tools venv's python (numpy and Pillow, as mflux brings them).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import sharp from 'sharp';
import { modelBuild, type EnginePreview, type EngineProgress, type ImageTask, type RunOptions } from '../../src/engines/engine.js';
import { WorkerEngine } from '../../src/engines/worker/worker-engine.js';
import { baseTask } from '../support/engine-conformance.js';
import { FAKE_MFLUX_PATH, toolsPython, WORKER_DIR } from '../support/fake-mflux.js';
import { isJpeg, ManualDemand } from '../support/preview-demand.js';
import { tempDir } from '../support/server.js';

function engine(stepS: number): WorkerEngine {
  return new WorkerEngine({
    python: toolsPython(),
    workerDir: WORKER_DIR,
    env: { ...process.env, PYTHONPATH: FAKE_MFLUX_PATH, FAKE_MFLUX_WEIGHT_GB: '0.01', FAKE_MFLUX_STEP_S: String(stepS) },
    log: pino({ level: 'silent' }),
    engineTimeoutS: 60,
  });
}

interface Watched {
  previews: EnginePreview[];
  progress: EngineProgress[];
  options: RunOptions;
}

function watch(dir: string, name: string, extra: Partial<RunOptions> = {}, task: ImageTask = baseTask()): Watched {
  const previews: EnginePreview[] = [];
  const progress: EngineProgress[] = [];
  const options: RunOptions = {
    buildKey: modelBuild(task.model, task.loras).key,
    outputPath: path.join(dir, `${name}.png`),
    signal: new AbortController().signal,
    onProgress: (p) => progress.push(p),
    onPreview: (p) => previews.push(p),
    ...extra,
  };
  return { previews, progress, options };
}

void describe('worker engine: step previews (fake mflux)', () => {
  let dir: string;
  let fast: WorkerEngine;
  let slow: WorkerEngine;
  const task = baseTask({ width: 128, height: 96, steps: 6 });
  const build = modelBuild(task.model, task.loras);

  before(async () => {
    dir = tempDir('kiapi-previews-');
    fast = engine(0);
    slow = engine(0.1);
    await fast.load(build);
    await slow.load(build);
  });
  after(async () => {
    await fast.close();
    await slow.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  void it('every 2 steps: JPEGs of the asked size at steps 2, 4 and 6', async () => {
    const demand = new ManualDemand({ every: 2, maxSize: 64 });
    const w = watch(dir, 'every2', { previews: demand }, task);
    const out = await fast.run(task, w.options);
    assert.equal(out.width, 128);
    assert.deepEqual(
      w.previews.map((p) => [p.step, p.total]),
      [
        [2, 6],
        [4, 6],
        [6, 6],
      ],
    );
    for (const p of w.previews) {
      assert.ok(isJpeg(p.jpeg), 'JPEG bytes');
      // Long side 64 (asked), the image's 4:3 aspect.
      assert.deepEqual([p.width, p.height], [64, 48]);
      const meta = await sharp(p.jpeg).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['jpeg', 64, 48]);
      assert.ok(p.costMs >= 0 && p.costMs < 10_000, `cost ${p.costMs} ms`);
    }
    // The fake denoises in a straight line from noise to its target, so the pictures change.
    const [first, , last] = await Promise.all(w.previews.map((p) => sharp(p.jpeg).raw().toBuffer()));
    assert.ok(!first!.equals(last!), 'step 2 and step 6 differ');
    assert.equal(demand.subscribers, 0, 'the engine unsubscribed when the run ended');
  });

  void it('never larger than the image, whatever size is asked', async () => {
    const small = baseTask({ width: 64, height: 32, steps: 2 });
    const w = watch(dir, 'small', { previews: new ManualDemand({ every: 1, maxSize: 4096 }) }, small);
    await fast.run(small, w.options);
    assert.deepEqual(
      w.previews.map((p) => [p.width, p.height]),
      [
        [64, 32],
        [64, 32],
      ],
    );
  });

  void it('no demand, no previews: none asked, or a demand that is null', async () => {
    const none = watch(dir, 'none', {}, task);
    await fast.run(task, none.options);
    const idle = watch(dir, 'idle', { previews: new ManualDemand(null) }, task);
    await fast.run(task, idle.options);
    assert.equal(none.progress.length, 6, 'the runs did run');
    assert.equal(idle.progress.length, 6);
    assert.deepEqual([none.previews.length, idle.previews.length], [0, 0]);
  });

  void it('every family: Qwen edit and Ideogram 4 previews have their image size', async () => {
    const input = path.join(dir, 'in.png');
    await sharp({ create: { width: 32, height: 32, channels: 3, background: '#808080' } }).png().toFile(input);
    const edit = baseTask({
      operation: 'qwen.edit',
      model: { family: 'qwen', name: 'edit-2509', repo: 'Qwen/Qwen-Image-Edit-2509', quantize: 8 },
      width: 96,
      height: 64,
      steps: 2,
      images: [{ fileId: 'file_in', path: input }],
    });
    const ideogram = baseTask({
      operation: 'ideogram4.generate',
      model: { family: 'ideogram4', name: 'fp8', repo: 'ideogram-ai/ideogram-4-fp8', quantize: null },
      width: 256,
      height: 512,
      preset: 'V4_TURBO_12',
    });
    for (const [t, size] of [
      [edit, [96, 64]],
      [ideogram, [64, 128]],
    ] as const) {
      await fast.load(modelBuild(t.model, t.loras));
      const w = watch(dir, t.operation, { previews: new ManualDemand({ every: 2, maxSize: 128 }) }, t);
      await fast.run(t, w.options);
      assert.ok(w.previews.length >= 1, `${t.operation}: previews arrived`);
      for (const p of w.previews) {
        assert.deepEqual([p.width, p.height], size, t.operation);
        assert.equal((await sharp(p.jpeg).metadata()).format, 'jpeg');
      }
      await fast.unload(modelBuild(t.model, t.loras).key);
    }
  });

  void it('a demand changed mid-run takes effect: started, thinned, stopped', async () => {
    const long = baseTask({ width: 64, height: 64, steps: 24 });
    const demand = new ManualDemand(null);
    let startedAt = 0;
    let thinnedAt = 0;
    let stoppedAt = 0;
    const w = watch(dir, 'changes', { previews: demand }, long);
    w.options.onProgress = (p) => {
      w.progress.push(p);
      if (p.step === 4) {
        startedAt = p.step;
        demand.set({ every: 1, maxSize: 32 });
      }
    };
    w.options.onPreview = (p) => {
      w.previews.push(p);
      if (!thinnedAt && w.previews.length === 3) {
        thinnedAt = p.step;
        demand.set({ every: 5, maxSize: 16 });
      } else if (thinnedAt && !stoppedAt && p.width === 16 && p.step >= thinnedAt + 5) {
        stoppedAt = p.step;
        demand.set(null);
      }
    };
    await slow.run(long, w.options);
    assert.ok(startedAt && thinnedAt && stoppedAt, `every phase happened (${startedAt}, ${thinnedAt}, ${stoppedAt})`);
    const steps = w.previews.map((p) => p.step);
    // The demand may still reach the step whose progress event set it (its callback goes on to
    // the preview check after sending that event), never an earlier one.
    assert.ok(
      steps.every((s) => s >= startedAt),
      `nothing before the demand: ${steps.join(',')}`,
    );
    // A demand reaches the worker within a step or two (steps take 0.1 s); after that it rules.
    const settledThin = w.previews.filter((p) => p.step > thinnedAt + 2);
    assert.ok(settledThin.length >= 1);
    for (const p of settledThin) {
      assert.equal(p.step % 5, 0, `every 5 after the change: ${steps.join(',')}`);
      assert.deepEqual([p.width, p.height], [16, 16]);
    }
    assert.ok(
      steps.every((s) => s <= stoppedAt),
      `nothing delivered after the stop at ${stoppedAt}: ${steps.join(',')}`,
    );
    assert.equal(w.progress.length, 24, 'the run went on to the end');
  });

  void it('a listener that throws loses its preview, not the run', async () => {
    const w = watch(dir, 'throws', {
      previews: new ManualDemand({ every: 1, maxSize: 32 }),
      onPreview: () => {
        throw new Error('listener bug');
      },
    });
    const out = await fast.run(baseTask(), w.options);
    assert.equal(out.width, 64);
    assert.equal(w.progress.length, 3);
  });
});

/**
 * A stand-in worker (stdlib Python, started as `python -m kiapi_worker` from its own directory)
 * that answers a run with broken previews around a good one, to show what the engine does with them.
 */
const STUB_WORKER = String.raw`
import base64, json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
send({"type": "ready", "python": "3", "mflux": "0.24.0", "mflux_supported": "0.24.0", "mlx": "0", "device": "cpu"})
jpeg = base64.b64encode(bytes([0xFF, 0xD8, 0xFF, 0xE0]) + b"stub").decode()
for line in sys.stdin:
    c = json.loads(line)
    if c["cmd"] == "load":
        send({"id": c["id"], "type": "loaded", "key": c["key"], "load_s": 0, "active_gb": 0, "weight_gb": 0})
    elif c["cmd"] == "run":
        i = c["id"]
        good = {"id": i, "type": "preview", "step": 1, "total": 3, "width": 8, "height": 8, "jpeg_b64": jpeg, "cost_ms": 1.5}
        send({**good, "jpeg_b64": base64.b64encode(b"not a jpeg at all").decode()})
        send({**good, "step": 0})
        send({**good, "cost_ms": "slow"})
        send({k: v for k, v in good.items() if k != "jpeg_b64"})
        send({**good, "step": 2})
        send({"id": i, "type": "result", "path": c["output_path"], "width": 8, "height": 8, "seed": 1, "timings": {"total_s": 0.1}, "warnings": []})
    elif c["cmd"] == "shutdown":
        send({"id": c["id"], "type": "ack"}); break
`;

void describe('worker engine: broken previews', () => {
  let dir: string;
  let stub: WorkerEngine;
  const warnings: string[] = [];
  before(async () => {
    dir = tempDir('kiapi-previews-stub-');
    fs.mkdirSync(path.join(dir, 'kiapi_worker'));
    fs.writeFileSync(path.join(dir, 'kiapi_worker', '__init__.py'), '');
    fs.writeFileSync(path.join(dir, 'kiapi_worker', '__main__.py'), STUB_WORKER);
    const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
    stub = new WorkerEngine({ python: process.env.KIAPI_TEST_PYTHON ?? 'python3', workerDir: dir, env: { ...process.env }, log, engineTimeoutS: 30 });
    await stub.load(modelBuild(baseTask().model, []));
  });
  after(async () => {
    await stub.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  void it('are logged and dropped; the good one arrives and the run succeeds', async () => {
    const w = watch(dir, 'stub', { previews: new ManualDemand({ every: 1, maxSize: 64 }) });
    const out = await stub.run(baseTask(), w.options);
    assert.equal(out.width, 8);
    assert.deepEqual(
      w.previews.map((p) => [p.step, p.costMs, p.jpeg.subarray(0, 2).toString('hex')]),
      [[2, 1.5, 'ffd8']],
    );
    assert.ok(warnings.some((l) => l.includes('not a JPEG')));
    assert.equal(warnings.filter((l) => l.includes('not a protocol message')).length, 3);
  });
});
