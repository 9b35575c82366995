/**
 * The real engine: mflux run by `python -m kiapi_worker` (see worker/). One worker process at a
 * time; a crash fails the running job with the exit code and the worker's last stderr lines, and
 * the next job starts a fresh worker. A run that goes silent for KIAPI_ENGINE_TIMEOUT_S is killed.
 * Cancel sends `cancel`; the worker's per-step callback stops mflux at the next step.
 * Step previews: the run command carries the demand at the start, each change of it during the
 * run is sent as a `previews` command, and the worker's `preview` events go to `onPreview`.
 */
import type { Logger } from 'pino';
import { CanceledError, EngineError, InputError, UnavailableError } from '../../core/errors.js';
import type { Static } from 'typebox';
import type { Engine, EngineIdentity, EngineInfo, EngineOutput, EnginePreview, ImageTask, LoadResult, ModelBuild, PreviewRequest, RunOptions } from '../engine.js';
import type { PreviewMsg, PreviewsArg, TaskArg } from './protocol.js';
import { WorkerProcess, WorkerReplyError, type ReadyInfo } from './worker-process.js';

export interface WorkerEngineOptions {
  python: string;
  workerDir: string;
  env: NodeJS.ProcessEnv;
  log: Logger;
  /** Silence allowed during a run or load before the worker is killed (KIAPI_ENGINE_TIMEOUT_S). */
  engineTimeoutS: number;
  startTimeoutS?: number;
}

export class WorkerEngine implements Engine {
  readonly holdsWeights = true;
  private proc: WorkerProcess | null = null;
  private starting: Promise<WorkerProcess> | null = null;
  private info: ReadyInfo | null = null;
  private readonly resetListeners: (() => void)[] = [];
  /** Set by close(): the exit that follows is the one we asked for, not a crash. */
  private closing = false;

  constructor(private readonly opts: WorkerEngineOptions) {}

  describe(): EngineInfo {
    const i = this.info;
    return {
      name: 'mflux',
      detail: i
        ? `mflux ${i.mflux} (mlx ${i.mlx}, device ${i.device}, python ${i.python}) via ${this.opts.python}`
        : `mflux worker via ${this.opts.python} (starts with the first job)`,
    };
  }

  async identify(): Promise<EngineIdentity> {
    const i = (await this.process()).info;
    return { name: 'mflux', version: i.mflux, python: i.python, mflux: i.mflux, mlx: i.mlx, device: i.device };
  }

  onReset(listener: () => void): void {
    this.resetListeners.push(listener);
  }

  /** Starts the worker now (used at start-up to fail early and to report versions). */
  async start(): Promise<ReadyInfo> {
    return (await this.process()).info;
  }

  /** Builds a model in the worker; the worker measures the memory it took once materialised. */
  async load(build: ModelBuild): Promise<LoadResult> {
    const proc = await this.process();
    const { model, loras } = build;
    const reply = await this.call(
      proc.request(
        {
          cmd: 'load',
          key: build.key,
          model: { family: model.family, name: model.name, repo: model.repo, quantize: model.quantize },
          loras: loras.map((l) => ({ path: l.path, scale: l.scale })),
        },
        { silenceMs: this.opts.engineTimeoutS * 1000 },
      ),
      undefined,
      loras.map((l, i) => [l.path, `loras[${i}] (${l.fileId})`]),
    );
    if (reply.type !== 'loaded') throw new EngineError(`the engine worker answered a load with '${reply.type}'`);
    return { weightGb: reply.weight_gb, seconds: reply.load_s };
  }

  async unload(key: string): Promise<void> {
    const proc = this.proc;
    // A worker that is gone took every build with it (and reported that through onReset).
    if (!proc?.alive) return;
    await this.call(proc.request({ cmd: 'unload', key }, { silenceMs: this.opts.engineTimeoutS * 1000 }));
  }

  async run(task: ImageTask, opts: RunOptions): Promise<EngineOutput> {
    if (opts.signal.aborted) throw reasonOf(opts.signal);
    // Never start a worker here: a fresh one holds no build, and loading is the residency's call.
    const proc = this.proc;
    if (!proc?.alive) throw new EngineError('the engine worker is not running (it exited since the model was loaded); retry the job');
    const demand = opts.previews;
    // Previews reach the caller only while the run is in flight and someone asks for them.
    let settled = false;
    const request = proc.request(
      { cmd: 'run', key: opts.buildKey, output_path: opts.outputPath, task: toTaskArg(task), previews: toPreviewsArg(demand?.current() ?? null) },
      {
        silenceMs: this.opts.engineTimeoutS * 1000,
        onEvent: (msg) => {
          if (msg.type === 'progress') opts.onProgress({ step: msg.step, total: msg.total, label: msg.label });
          else if (msg.type === 'preview' && !settled && demand?.current() && opts.onPreview) this.deliverPreview(msg, opts.onPreview);
        },
      },
    );
    const onAbort = () => proc.notify({ cmd: 'cancel', target: request.id });
    opts.signal.addEventListener('abort', onAbort, { once: true });
    // The worker's `max_size` is required even for a stop; the last size asked for is as good as any.
    let lastMaxSize = demand?.current()?.maxSize ?? MIN_PREVIEW_SIZE;
    const unsubscribe = demand?.subscribe(() => {
      if (settled) return;
      const now = demand.current();
      if (now) lastMaxSize = now.maxSize;
      proc.notify({ cmd: 'previews', target: request.id, ...(toPreviewsArg(now) ?? { every: null, max_size: lastMaxSize }) });
    });
    try {
      const inputs = [...(task.initImage ? [['init_image', task.initImage] as const] : []), ...(task.images ?? []).map((im, i) => [`images[${i}]`, im] as const)];
      const reply = await this.call(request, opts.signal, [
        ...inputs.map(([kind, im]): [string, string] => [im.path, `${kind} (${im.fileId})`]),
        [opts.outputPath, 'the output file'],
      ]);
      if (reply.type !== 'result') throw new EngineError(`the engine worker answered a run with '${reply.type}'`);
      return {
        width: reply.width,
        height: reply.height,
        seed: reply.seed,
        engineSeconds: reply.timings.total_s,
        warnings: reply.warnings,
      };
    } finally {
      settled = true;
      unsubscribe?.();
      opts.signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Hands one preview to the caller. A preview is a nicety: one that does not decode to a JPEG, or
   * whose listener throws, is logged and dropped, and the run goes on.
   */
  private deliverPreview(msg: Static<typeof PreviewMsg>, onPreview: (p: EnginePreview) => void): void {
    const jpeg = Buffer.from(msg.jpeg_b64, 'base64');
    if (jpeg.length < 4 || jpeg[0] !== 0xff || jpeg[1] !== 0xd8) {
      this.opts.log.warn({ step: msg.step, bytes: jpeg.length }, 'dropped a step preview from the engine worker that is not a JPEG');
      return;
    }
    try {
      onPreview({ step: msg.step, total: msg.total, width: msg.width, height: msg.height, jpeg, costMs: msg.cost_ms });
    } catch (err) {
      this.opts.log.warn({ err, step: msg.step }, 'a step preview listener failed; the preview was dropped');
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    const proc = this.proc;
    this.proc = null;
    if (!proc) return;
    const { code, signal } = await proc.shutdown(5000);
    if (code === 0) this.opts.log.info({ code }, 'mflux worker stopped');
    else this.opts.log.warn({ code, signal, stderr: proc.stderrTail().slice(-2000) }, 'mflux worker did not exit cleanly');
  }

  /**
   * Maps worker error replies onto the server's named errors. `names` replaces local paths in the
   * worker's message with what the client knows them by (input name and file id): job errors are
   * returned to clients and must not disclose the data dir.
   */
  private async call<T>(promise: Promise<T>, signal?: AbortSignal, names: [string, string][] = []): Promise<T> {
    try {
      return await promise;
    } catch (err) {
      if (!(err instanceof WorkerReplyError)) throw err;
      const message = names.reduce((m, [p, label]) => m.replaceAll(p, label), err.message);
      switch (err.code) {
        case 'canceled':
          throw signal?.aborted ? reasonOf(signal) : new CanceledError(message);
        case 'bad_request':
          throw new InputError(message);
        case 'out_of_memory':
          throw new UnavailableError(`the engine ran out of memory: ${message}. Lower KIAPI_MEMORY_LIMIT_GB or the image size`);
        default:
          throw new EngineError(`engine error (${err.code}): ${message}`);
      }
    }
  }

  private async process(): Promise<WorkerProcess> {
    if (this.proc?.alive) return this.proc;
    this.starting ??= WorkerProcess.start({
      python: this.opts.python,
      workerDir: this.opts.workerDir,
      env: this.opts.env,
      startTimeoutMs: (this.opts.startTimeoutS ?? 120) * 1000,
      log: this.opts.log,
    }).then(
      (proc) => {
        this.proc = proc;
        this.info = proc.info;
        this.starting = null;
        this.opts.log.info({ pid: proc.pid, ...proc.info }, 'mflux worker ready');
        if (proc.info.mflux !== proc.info.mflux_supported) {
          this.opts.log.warn(
            { found: proc.info.mflux, supported: proc.info.mflux_supported, python: this.opts.python },
            `mflux ${proc.info.mflux} found, kiapi supports ${proc.info.mflux_supported}: the engine runs, but this combination is untested (run \`kiapi activate\` for the supported engine)`,
          );
        }
        proc.onExitOnce((err) => {
          if (this.proc === proc) this.proc = null;
          if (this.closing) this.opts.log.debug('mflux worker stopped');
          else this.opts.log.warn({ err: err.message }, 'mflux worker exited; the next job starts a fresh one');
          for (const l of this.resetListeners) l();
        });
        return proc;
      },
      (err: unknown) => {
        this.starting = null;
        throw err;
      },
    );
    return this.starting;
  }
}

function reasonOf(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new CanceledError();
}

/** The smallest preview the worker makes (its `max_size` floor). */
const MIN_PREVIEW_SIZE = 16;

function toPreviewsArg(req: PreviewRequest | null): PreviewsArg | null {
  if (!req) return null;
  return { every: Math.max(1, Math.floor(req.every)), max_size: Math.max(MIN_PREVIEW_SIZE, Math.floor(req.maxSize)) };
}

function toTaskArg(task: ImageTask): TaskArg {
  return {
    operation: task.operation,
    prompt: task.prompt,
    negative_prompt: task.negativePrompt ?? null,
    width: task.width,
    height: task.height,
    seed: task.seed,
    steps: task.steps,
    guidance: task.guidance ?? null,
    scheduler: task.scheduler ?? null,
    preset: task.preset ?? null,
    strict_caption_validation: task.strictCaptionValidation ?? false,
    warn_on_caption_issues: task.warnOnCaptionIssues ?? true,
    init_image_path: task.initImage?.path ?? null,
    image_strength: task.imageStrength ?? null,
    image_paths: (task.images ?? []).map((i) => i.path),
  };
}
