/**
 * The worker protocol: JSON lines between the server and `python -m kiapi_worker`, typed with the
 * same schema tool as the HTTP API. Worker → server messages are validated on arrival, so a
 * worker that prints garbage is detected instead of being half-understood.
 */
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';

const Id = Type.String();

export const ReadyMsg = Type.Object({
  type: Type.Literal('ready'),
  python: Type.String(),
  /** The mflux found in the worker's Python. */
  mflux: Type.String(),
  /**
   * The mflux release kiapi supports (worker/kiapi_worker/pins.py). When it differs from `mflux`
   * the worker still runs (an untested combination) and logs a warning.
   */
  mflux_supported: Type.String(),
  mlx: Type.String(),
  device: Type.String(),
});

export const InitFailedMsg = Type.Object({ type: Type.Literal('init-failed'), reason: Type.String() });

export const LoadedMsg = Type.Object({
  id: Id,
  type: Type.Literal('loaded'),
  key: Type.String(),
  /** Seconds to build the model and materialise its weights. */
  load_s: Type.Number(),
  active_gb: Type.Number(),
  /** Active memory the build added, measured by the worker after materialising its weights. */
  weight_gb: Type.Number(),
});

export const UnloadedMsg = Type.Object({ id: Id, type: Type.Literal('unloaded'), key: Type.String(), freed_gb: Type.Number() });

export const ProgressMsg = Type.Object({
  id: Id,
  type: Type.Literal('progress'),
  step: Type.Integer(),
  total: Type.Integer(),
  label: Type.String(),
});

/** A step preview: the worker's linear latent projection, JPEG in base64 (see worker/kiapi_worker/previews.py). */
export const PreviewMsg = Type.Object({
  id: Id,
  type: Type.Literal('preview'),
  step: Type.Integer({ minimum: 1 }),
  total: Type.Integer({ minimum: 1 }),
  width: Type.Integer({ minimum: 1 }),
  height: Type.Integer({ minimum: 1 }),
  jpeg_b64: Type.String({ minLength: 4 }),
  /** Time the worker spent making this preview (the first of a build includes the one-off fit). */
  cost_ms: Type.Number({ minimum: 0 }),
});

export const ResultMsg = Type.Object({
  id: Id,
  type: Type.Literal('result'),
  path: Type.String(),
  width: Type.Integer(),
  height: Type.Integer(),
  seed: Type.Integer(),
  timings: Type.Object({ total_s: Type.Number() }),
  warnings: Type.Array(Type.String()),
});

export const ErrorCode = Type.Union([
  Type.Literal('canceled'),
  Type.Literal('not_loaded'),
  Type.Literal('bad_request'),
  Type.Literal('out_of_memory'),
  Type.Literal('engine_error'),
  Type.Literal('busy'),
  Type.Literal('protocol'),
]);

export const ErrorMsg = Type.Object({
  id: Type.Union([Id, Type.Null()]),
  type: Type.Literal('error'),
  code: ErrorCode,
  message: Type.String(),
});

export const AckMsg = Type.Object({ id: Id, type: Type.Literal('ack') });

export const StatsMsg = Type.Object({
  id: Id,
  type: Type.Literal('stats'),
  active_gb: Type.Number(),
  peak_gb: Type.Number(),
  cache_gb: Type.Union([Type.Number(), Type.Null()]),
  loaded: Type.Array(Type.String()),
});

export const WorkerMessage = Type.Union([ReadyMsg, InitFailedMsg, LoadedMsg, UnloadedMsg, ProgressMsg, PreviewMsg, ResultMsg, ErrorMsg, AckMsg, StatsMsg]);
export type WorkerMessage = Static<typeof WorkerMessage>;
export type ReplyMessage = Exclude<WorkerMessage, Static<typeof ReadyMsg> | Static<typeof InitFailedMsg>>;

const checker = Compile(WorkerMessage);

/** Parses one stdout line; null when it is not a protocol message. */
export function parseWorkerLine(line: string): WorkerMessage | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  return checker.Check(value) ? value : null;
}

export const ModelArg = Type.Object({
  family: Type.String(),
  name: Type.String(),
  repo: Type.String(),
  quantize: Type.Union([Type.Integer(), Type.Null()]),
});

export const LoraArg = Type.Object({ path: Type.String(), scale: Type.Number() });

export const TaskArg = Type.Object({
  operation: Type.String(),
  prompt: Type.Union([Type.String(), Type.Record(Type.String(), Type.Unknown())]),
  negative_prompt: Type.Union([Type.String(), Type.Null()]),
  width: Type.Integer(),
  height: Type.Integer(),
  seed: Type.Integer(),
  steps: Type.Integer(),
  guidance: Type.Union([Type.Number(), Type.Null()]),
  scheduler: Type.Union([Type.String(), Type.Null()]),
  preset: Type.Union([Type.String(), Type.Null()]),
  strict_caption_validation: Type.Boolean(),
  warn_on_caption_issues: Type.Boolean(),
  init_image_path: Type.Union([Type.String(), Type.Null()]),
  image_strength: Type.Union([Type.Number(), Type.Null()]),
  image_paths: Type.Array(Type.String()),
});

/** The step previews a run should make: one every `every` steps, long side at most `max_size` px. */
export const PreviewsArg = Type.Object({ every: Type.Integer({ minimum: 1 }), max_size: Type.Integer({ minimum: 16 }) });

/** Server → worker commands; every one carries an `id` the replies echo. */
export const Command = Type.Union([
  Type.Object({ id: Id, cmd: Type.Literal('load'), key: Type.String(), model: ModelArg, loras: Type.Array(LoraArg) }),
  Type.Object({ id: Id, cmd: Type.Literal('unload'), key: Type.String() }),
  Type.Object({
    id: Id,
    cmd: Type.Literal('run'),
    key: Type.String(),
    output_path: Type.String(),
    task: TaskArg,
    previews: Type.Optional(Type.Union([PreviewsArg, Type.Null()])),
  }),
  Type.Object({ id: Id, cmd: Type.Literal('cancel'), target: Id }),
  /** A new preview demand for the run `target` (`every` null: stop); answered `ack`, unknown targets ignored. */
  Type.Object({
    id: Id,
    cmd: Type.Literal('previews'),
    target: Id,
    every: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]),
    max_size: Type.Integer({ minimum: 16 }),
  }),
  Type.Object({ id: Id, cmd: Type.Literal('stats') }),
  Type.Object({ id: Id, cmd: Type.Literal('shutdown') }),
]);
export type Command = Static<typeof Command>;
export type TaskArg = Static<typeof TaskArg>;
export type PreviewsArg = Static<typeof PreviewsArg>;
