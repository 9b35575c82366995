/**
 * The real engine: mflux run by `python -m kiapi_worker` (see worker/). One worker process at a
 * time; a crash fails the running job with the exit code and the worker's last stderr lines, and
 * the next job starts a fresh worker. A run that goes silent for KIAPI_ENGINE_TIMEOUT_S is killed.
 * Cancel sends `cancel`; the worker's per-step callback stops mflux at the next step.
 */
import type { Logger } from 'pino';
import { CanceledError, EngineError, InputError, UnavailableError } from '../../core/errors.js';
import {
  buildKey,
  type Engine,
  type EngineInfo,
  type EngineOutput,
  type ImageTask,
  type LoadResult,
  type LoraInput,
  type RunOptions,
  type TaskModel,
} from '../engine.js';
import type { TaskArg } from './protocol.js';
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

/** Below this a measured load delta is noise; the spec's estimate is used instead (as the original). */
const MIN_MEASURED_GB = 0.5;

export class WorkerEngine implements Engine {
  readonly holdsWeights = true;
  private proc: WorkerProcess | null = null;
  private starting: Promise<WorkerProcess> | null = null;
  private info: ReadyInfo | null = null;
  private readonly loaded = new Set<string>();
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

  onReset(listener: () => void): void {
    this.resetListeners.push(listener);
  }

  /** Starts the worker now (used at start-up to fail early and to report versions). */
  async start(): Promise<ReadyInfo> {
    return (await this.process()).info;
  }

  async load(model: TaskModel, loras: LoraInput[]): Promise<LoadResult> {
    const key = buildKey(model, loras);
    if (this.loaded.has(key) && this.proc?.alive) return { loaded: false, weightGb: null };
    const proc = await this.process();
    const before = await proc.request({ cmd: 'stats' });
    const reply = await this.call(
      proc.request(
        {
          cmd: 'load',
          key,
          model: { family: model.family, name: model.name, repo: model.repo, quantize: model.quantize },
          loras: loras.map((l) => ({ path: l.path, scale: l.scale })),
        },
        { silenceMs: this.opts.engineTimeoutS * 1000 },
      ),
    );
    this.loaded.add(key);
    const delta = reply.type === 'loaded' && before.type === 'stats' ? reply.active_gb - before.active_gb : 0;
    return { loaded: true, weightGb: delta > MIN_MEASURED_GB ? delta : null };
  }

  async unload(model: TaskModel, loras: LoraInput[]): Promise<void> {
    const key = buildKey(model, loras);
    if (!this.loaded.delete(key) || !this.proc?.alive) return;
    await this.call(this.proc.request({ cmd: 'unload', key }, { silenceMs: this.opts.engineTimeoutS * 1000 }));
  }

  async run(task: ImageTask, opts: RunOptions): Promise<EngineOutput> {
    if (opts.signal.aborted) throw reasonOf(opts.signal);
    await this.load(task.model, task.loras);
    const proc = await this.process();
    const request = proc.request(
      { cmd: 'run', key: buildKey(task.model, task.loras), output_path: opts.outputPath, task: toTaskArg(task) },
      {
        silenceMs: this.opts.engineTimeoutS * 1000,
        onEvent: (msg) => {
          if (msg.type === 'progress') opts.onProgress({ step: msg.step, total: msg.total, label: msg.label });
        },
      },
    );
    const onAbort = () => proc.notify({ cmd: 'cancel', target: request.id });
    opts.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const reply = await this.call(request, opts.signal);
      if (reply.type !== 'result') throw new EngineError(`the engine worker answered a run with '${reply.type}'`);
      return {
        width: reply.width,
        height: reply.height,
        seed: reply.seed,
        engineSeconds: reply.timings.total_s,
        warnings: reply.warnings,
      };
    } finally {
      opts.signal.removeEventListener('abort', onAbort);
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    const proc = this.proc;
    this.proc = null;
    await proc?.shutdown(5000);
  }

  /** Maps worker error replies onto the server's named errors. */
  private async call<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      return await promise;
    } catch (err) {
      if (!(err instanceof WorkerReplyError)) throw err;
      switch (err.code) {
        case 'canceled':
          throw signal?.aborted ? reasonOf(signal) : new CanceledError(err.message);
        case 'bad_request':
          throw new InputError(err.message);
        case 'out_of_memory':
          throw new UnavailableError(`the engine ran out of memory: ${err.message}. Lower KIAPI_MEMORY_LIMIT_GB or the image size`);
        default:
          throw new EngineError(`engine error (${err.code}): ${err.message}`);
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
        proc.onExitOnce((err) => {
          if (this.proc === proc) this.proc = null;
          this.loaded.clear();
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
