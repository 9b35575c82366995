/**
 * `kiapi check`: one small real generation per activated model through the real engine, in this
 * process (the WorkerEngine the server uses, no HTTP, no server needed), with the load and
 * generation times. Images go to `--out DIR` (default `./kiapi-check-<timestamp>`). Exit 1 when
 * any check failed. Prompts and sizes follow the original's checks (docs/compatibility.md §6.3).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import sharp from 'sharp';
import { PRESET_STEPS } from '../capabilities/ideogram4/settings.js';
import { SetupError } from '../core/errors.js';
import type { ModelSpec } from '../core/models/model-spec.js';
import { weightsStatus } from '../core/models/weights.js';
import { modelBuild, type ImageTask, type TaskModel } from '../engines/engine.js';
import { WorkerEngine } from '../engines/worker/worker-engine.js';
import { enginePython, WORKER_DIR } from './engine-location.js';
import { loadSettings } from './environment.js';
import { modelLabel, selectModels, SELECTION_OPTIONS } from './selection.js';

const SIZE = 256;
const SEED = 1;

/** The smoke task of a model, or null when the family has none. `input` is a PNG for edits. */
function checkTask(spec: ModelSpec, input: string): ImageTask | null {
  const model: TaskModel = { family: spec.family, name: spec.name, repo: spec.repo, quantize: spec.defaultQuantize };
  const base = { model, width: SIZE, height: SIZE, seed: SEED, loras: [] };
  switch (`${spec.family}/${spec.name}`) {
    case 'qwen/image':
      return { ...base, operation: 'qwen.generate', prompt: 'a tiny blue cube on a white table', steps: 1 };
    case 'qwen/edit-2509':
      return {
        ...base,
        operation: 'qwen.edit',
        prompt: 'make the object blue, keep everything else the same',
        steps: 1,
        images: [{ fileId: 'kiapi_check_input', path: input }],
      };
    case 'ideogram4/fp8':
      return {
        ...base,
        operation: 'ideogram4.generate',
        prompt: 'simple word OK on a plain white card',
        preset: 'V4_TURBO_12',
        steps: PRESET_STEPS.V4_TURBO_12,
      };
    default:
      return null;
  }
}

function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

export async function checkCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { ...SELECTION_OPTIONS, out: { type: 'string' } }, strict: true });
  const { cli, config, models } = loadSettings();
  const asked = selectModels(models, values);
  const specs = asked ?? models.all().filter((s) => weightsStatus(s.repo, cli.env).ready);
  if (specs.length === 0) {
    throw new SetupError('no activated model to check: run `kiapi activate` first (`kiapi status` shows what is there)');
  }
  const { python } = enginePython(config);
  if (!python) throw new SetupError('no engine installed: run `kiapi activate` (or set KIAPI_PYTHON to a Python where mflux imports)');

  const out = path.resolve(values.out ?? `kiapi-check-${timestamp()}`);
  fs.mkdirSync(out, { recursive: true });
  const input = path.join(out, 'kiapi_check_input.png');
  const engine = new WorkerEngine({
    python,
    workerDir: WORKER_DIR,
    // Offline like the server: a check never downloads weights.
    env: { ...cli.env, HF_HUB_OFFLINE: cli.env.HF_HUB_OFFLINE ?? '1' },
    log: pino({ level: cli.env.KIAPI_LOG_LEVEL ?? 'warn', base: undefined }, pino.destination(2)),
    engineTimeoutS: config.engineTimeoutS,
  });
  console.log(`checking ${specs.length} model${specs.length > 1 ? 's' : ''} with ${python}; images in ${out}`);
  let failed = 0;
  try {
    for (const spec of specs) {
      const label = modelLabel(spec);
      console.log(`checking ${label} ...`);
      const status = weightsStatus(spec.repo, cli.env);
      if (!status.ready) {
        console.log(`  [failed] ${label}: not activated (${status.detail}); run: kiapi activate --model ${label}`);
        failed++;
        continue;
      }
      // The engine loads exactly the snapshot readiness judged (the pinned revision), not whatever
      // the Hub cache holds under the repo's name.
      const task = checkTask({ ...spec, repo: status.path ?? spec.repo }, input);
      if (!task) {
        console.log(`  [failed] ${label}: check is not implemented`);
        failed++;
        continue;
      }
      if (task.images && !fs.existsSync(input)) {
        await sharp({ create: { width: SIZE, height: SIZE, channels: 3, background: '#d04030' } }).png().toFile(input);
      }
      const output = path.join(out, `${spec.family}-${spec.name}.png`);
      try {
        const build = modelBuild(task.model, []);
        const t0 = performance.now();
        const loaded = await engine.load(build);
        const t1 = performance.now();
        const made = await engine.run(task, { buildKey: build.key, outputPath: output, onProgress: () => {}, signal: new AbortController().signal });
        const t2 = performance.now();
        if (made.png) fs.writeFileSync(output, made.png);
        const size = loaded.weightGb === null ? '' : `, ${loaded.weightGb.toFixed(3)} GiB`;
        console.log(`  [ok] ${label}  load ${((t1 - t0) / 1000).toFixed(1)} s${size}, generation ${((t2 - t1) / 1000).toFixed(1)} s → ${output}`);
        await engine.unload(build.key); // one model in memory at a time
      } catch (err) {
        console.log(`  [failed] ${label}: ${(err as Error).message}`);
        failed++;
      }
    }
  } finally {
    await engine.close();
  }
  if (failed > 0) {
    console.error(`${failed} check(s) failed.`);
    return 1;
  }
  console.log(`All checks passed; images in ${out}`);
  return 0;
}
