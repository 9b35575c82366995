/**
 * The engine interface: what the server needs from anything that turns a resolved request into one
 * image. The preview engine (pure TypeScript) and the mflux worker engine (Python subprocess) both
 * implement it and both run the same conformance suite (test/support/engine-conformance.ts).
 *
 * Engines never encode the final format: they write a lossless PNG to `outputPath`, chosen by the
 * server, and the capability encodes png/jpeg/webp with sharp.
 */

/** An input image or adapter already resolved to a local file by core/files (never a URL here). */
export interface LocalInput {
  fileId: string;
  path: string;
}

export interface LoraInput extends LocalInput {
  scale: number;
  /**
   * SHA-256 of the adapter file, taken when the file was stored: the same LoRA uploaded twice (or
   * fetched from a URL each time) is one build.
   */
  digest: string;
}

/** The model a task runs on, as core/models resolved it. */
export interface TaskModel {
  family: string;
  name: string;
  /** Hugging Face repo id or a local directory (passed to mflux as model_path). */
  repo: string;
  /** Effective quantization bits for this run (null = checkpoint precision). */
  quantize: number | null;
}

/** One image to make. Fields a family does not use are left undefined. */
export interface ImageTask {
  /** `<family>.<operation>`, e.g. `qwen.generate`, `qwen.edit`, `ideogram4.generate`. */
  operation: string;
  model: TaskModel;
  /** Plain text, or an Ideogram 4 JSON caption object (key order preserved). */
  prompt: string | Record<string, unknown>;
  negativePrompt?: string | null;
  width: number;
  height: number;
  seed: number;
  /** Denoising steps the engine will run (for img2img: the total schedule, before strength). */
  steps: number;
  guidance?: number | null;
  scheduler?: string;
  /** Ideogram 4 preset name. */
  preset?: string;
  strictCaptionValidation?: boolean;
  warnOnCaptionIssues?: boolean;
  loras: LoraInput[];
  initImage?: LocalInput;
  imageStrength?: number | null;
  images?: LocalInput[];
}

export interface EngineProgress {
  step: number;
  total: number;
  label: string;
}

/** What watchers ask of step previews: one every `every` steps, at most `maxSize` px on the long side. */
export interface PreviewRequest {
  every: number;
  maxSize: number;
}

/**
 * The step previews wanted for a run right now. Watchers come and go while a job runs, so an
 * engine reads `current()` at each step (or subscribes to changes when it must pass them on, as
 * the worker engine does); null means nobody watches, and then no preview is made at all.
 */
export interface PreviewDemand {
  current(): PreviewRequest | null;
  /** Calls `listener` whenever `current()` changes; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void;
}

/** A small picture of the image as it stands after `step`: never stored, only streamed. */
export interface EnginePreview {
  step: number;
  total: number;
  width: number;
  height: number;
  jpeg: Buffer;
  /** What making it cost the engine, in ms (measured where it was made). */
  costMs: number;
}

export interface RunOptions {
  /** The resident build to run on (`ModelBuild.key`); engines that hold no weights ignore it. */
  buildKey: string;
  /** Where to write the lossless PNG (unless the output carries it as `png`). The directory exists. */
  outputPath: string;
  onProgress: (p: EngineProgress) => void;
  /** Fires on cancel; the engine stops at its next step boundary and rejects with CanceledError. */
  signal: AbortSignal;
  /** Step previews wanted (absent: never). */
  previews?: PreviewDemand;
  /** Receives each preview the engine made; called only while `previews` asks for them. */
  onPreview?: (p: EnginePreview) => void;
}

export interface EngineOutput {
  width: number;
  height: number;
  seed: number;
  /** Seconds spent inside the engine's generation call. */
  engineSeconds: number;
  /** Non-fatal notes from the engine (e.g. caption warnings). */
  warnings: string[];
  /**
   * The lossless PNG, when the engine made it in memory: then nothing was written at
   * `outputPath`, and the caller stores these bytes without a write and read-back in between.
   */
  png?: Buffer;
}

export interface EngineInfo {
  /** `preview` or `mflux`. */
  name: string;
  /** Human-readable version/device line for logs and /health. */
  detail: string;
}

/**
 * What makes an engine's output what it is, for a job's reproducibility record: the same identity,
 * model revision and parameters give the same bytes on the same machine. Fields an engine does
 * not have (the preview engine has no Python) are null.
 */
export interface EngineIdentity {
  /** `preview` or `mflux`. */
  name: string;
  /** The engine's own version: mflux's for the worker, kiapi's for the preview engine (it is kiapi code). */
  version: string;
  python: string | null;
  mflux: string | null;
  mlx: string | null;
  /** The device it computes on (MLX's default device), null when it has none to choose. */
  device: string | null;
}

/** What a load did and what it measured. */
export interface LoadResult {
  /** GiB the build occupies, measured by the engine once its weights were materialised; null when it cannot tell. */
  weightGb: number | null;
  /** Seconds the load took inside the engine. */
  seconds: number;
}

/**
 * One model instance: variant, quantization and LoRA set (LoRAs and quantization are fixed at
 * construction in mflux, so each combination is its own build).
 */
export interface ModelBuild {
  /** The build's identity, from `buildKey`; computed once per job. */
  key: string;
  model: TaskModel;
  loras: LoraInput[];
}

/** The one definition of a build's identity. LoRAs count by content digest and scale. */
export function buildKey(model: TaskModel, loras: LoraInput[]): string {
  const q = model.quantize === null ? 'full' : `q${model.quantize}`;
  const l = loras.map((x) => `${x.digest.slice(0, 16)}*${x.scale}`).join(',');
  return `${model.family}/${model.name}@${q}${l ? `+lora[${l}]` : ''}`;
}

export function modelBuild(model: TaskModel, loras: LoraInput[]): ModelBuild {
  return { key: buildKey(model, loras), model, loras };
}

/**
 * What runs images. Which builds are resident is decided and recorded by core/models/residency
 * alone: it asks the engine to `load` and `unload`, and the engine reports a lost process through
 * `onReset`. The engine keeps no list of its own and never loads behind the residency's back.
 */
export interface Engine {
  describe(): EngineInfo;
  /**
   * The engine's identity as installed now. The worker engine starts its process for it when none
   * runs (it learns the versions from the worker's ready message), but loads nothing.
   */
  identify(): Promise<EngineIdentity>;
  /** True when models occupy memory the budget must account for (the preview engine has none). */
  readonly holdsWeights: boolean;
  /** Make `build` resident (the residency calls this only for a build it does not hold). */
  load(build: ModelBuild): Promise<LoadResult>;
  /** Drop a resident build and free its memory. */
  unload(key: string): Promise<void>;
  /** Runs on the resident build `opts.buildKey`; a build that is not loaded is an EngineError. */
  run(task: ImageTask, opts: RunOptions): Promise<EngineOutput>;
  /** Called when the engine lost every resident build (e.g. its process died). */
  onReset(listener: () => void): void;
  /** Stop child processes; called once at shutdown. */
  close(): Promise<void>;
}
