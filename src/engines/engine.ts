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
  /** Content digest of the adapter, so the same LoRA from another upload reuses a resident build. */
  digest?: string;
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

export interface RunOptions {
  /** Where to write the lossless PNG. The directory exists. */
  outputPath: string;
  onProgress: (p: EngineProgress) => void;
  /** Fires on cancel; the engine stops at its next step boundary and rejects with CanceledError. */
  signal: AbortSignal;
}

export interface EngineOutput {
  width: number;
  height: number;
  seed: number;
  /** Seconds spent inside the engine's generation call. */
  engineSeconds: number;
  /** Non-fatal notes from the engine (e.g. caption warnings). */
  warnings: string[];
}

export interface EngineInfo {
  /** `preview` or `mflux`. */
  name: string;
  /** Human-readable version/device line for logs and /health. */
  detail: string;
}

/** What a load did: whether weights were really loaded now, and the memory it measured. */
export interface LoadResult {
  loaded: boolean;
  /** GiB the load added, when the engine can measure it. */
  weightGb: number | null;
}

/**
 * The identity of a model build: variant, quantization and LoRA set. Builds with different keys
 * are different model instances (LoRAs and quantization are fixed at construction in mflux).
 */
export function buildKey(model: TaskModel, loras: LoraInput[]): string {
  const q = model.quantize === null ? 'full' : `q${model.quantize}`;
  const l = loras.map((x) => `${x.digest ?? x.fileId}*${x.scale}`).join(',');
  return `${model.family}/${model.name}@${q}${l ? `+lora[${l}]` : ''}`;
}

export interface Engine {
  describe(): EngineInfo;
  /** True when models occupy memory the budget must account for (the preview engine has none). */
  readonly holdsWeights: boolean;
  /** Make the build (`task.model` + `task.loras`) resident; a no-op when it already is. */
  load(model: TaskModel, loras: LoraInput[]): Promise<LoadResult>;
  /** Drop a resident build and free its memory. */
  unload(model: TaskModel, loras: LoraInput[]): Promise<void>;
  /** Runs on the resident build of `task.model` + `task.loras` (loading it first if needed). */
  run(task: ImageTask, opts: RunOptions): Promise<EngineOutput>;
  /** Called when the engine lost every resident build (e.g. its process died). */
  onReset(listener: () => void): void;
  /** Stop child processes; called once at shutdown. */
  close(): Promise<void>;
}
