/**
 * What a model family registers: its models, its operations (request schema + prepare), and the
 * text of its OpenAPI document. The server turns each registration into routes, a model list, an
 * OpenAPI document and docs pages; core never imports a family. Registrations are checked when
 * they are made, so a broken family stops start-up instead of failing at its first request.
 */
import type { Static, TSchema } from 'typebox';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import type { FileStoreApi } from './files/file-store.js';
import type { InputResolver } from './files/input-resolver.js';
import type { Workload } from './jobs/eta.js';
import type { JobHandler, Runnable } from './jobs/job-queue.js';
import type { ModelRegistry, ModelSpec } from './models/model-spec.js';
import type { ModelRuntime } from './models/model-runtime.js';

/** What a family's job is as data (the queue's own definition): what a runner gets, on any node. */
export type { Runnable };

/** The services a family's `prepare` may use. */
export interface CapabilityServices {
  config: Config;
  files: FileStoreApi;
  inputs: InputResolver;
  models: ModelRegistry;
  runtime: ModelRuntime;
  log: Logger;
}

/**
 * Rebuilds a job's handler from its Runnable spec on the node that runs it, with that node's
 * services (its model registry, file paths and engine).
 */
export type JobRunner = (spec: Record<string, unknown>, services: CapabilityServices) => Promise<JobHandler> | JobHandler;

/**
 * The handler of a runnable, made the way a node that received it would: from a JSON copy of its
 * spec (taken now, as sending it would), rebuilt by `runner` when the job starts.
 */
export function runnableHandler(runner: JobRunner, runnable: Runnable, services: CapabilityServices): JobHandler {
  const sent = JSON.stringify(runnable.spec);
  return async (ctx) => {
    const handler = await runner(JSON.parse(sent) as Record<string, unknown>, services);
    return handler(ctx);
  };
}

/** A validated request turned into a job: its params snapshot and the work to run. */
export interface PreparedJob {
  params: Record<string, unknown>;
  /** The job as a description another node can run (see Runnable). */
  runnable: Runnable;
  /** Runs `runnable` here (through the same runner, from a JSON copy of its spec). */
  run: JobHandler;
  /** Undo what preparation stored (resolved inputs) when the job is not queued after all. */
  discard(): Promise<void>;
  /** Let go of the job's inputs (file holds) once it reached a final state. */
  release?(): Promise<void>;
  /** What the job is, for its ETA (model, size, steps). */
  workload?: Workload;
  /** The model (`family/name`) the job runs: which cluster nodes can take it. */
  model: string;
}

export interface OperationDef<S extends TSchema = TSchema> {
  /** Path under the family prefix, e.g. `/generate`. */
  path: string;
  operationId: string;
  summary: string;
  description: string;
  /** Job type recorded on the job (`qwen`, `qwen-edit`, `ideogram4`). */
  jobType: string;
  /** Request body schema: validation, types and OpenAPI in one. */
  body: S;
  /** The family's ImageResponse: the `result` of a succeeded job. */
  result: TSchema;
  /**
   * A request body that succeeds as it stands, offline and on the preview engine: the served
   * document's example, which Swagger UI pre-fills for "Try it out".
   */
  example?: Static<S>;
  /**
   * What the quality tiers of clients that only know `low` / `medium` / `high` (the OpenAI Images
   * API) mean for this operation: the body fields each tier sets. A tier not listed, and `auto`,
   * leave the family's defaults alone.
   */
  qualityTiers?: Partial<Record<'low' | 'medium' | 'high', Record<string, unknown>>>;
  /**
   * Checks rules the schema cannot express (422/400), resolves inputs and returns the job.
   * Everything that can fail because of the request fails here, before anything is queued.
   */
  prepare(body: Static<S>, services: CapabilityServices, signal: AbortSignal): Promise<PreparedJob>;
}

/**
 * A request a family answers at once, without a job or a model: a check a client runs before it
 * generates (the Ideogram caption verifier). Documented in the family's document beside its
 * operations, from the same schemas.
 */
export interface ToolDef<S extends TSchema = TSchema> {
  /** Path under the family prefix, e.g. `/captions/validate`. */
  path: string;
  operationId: string;
  summary: string;
  description: string;
  body: S;
  /** The 200 answer's schema. */
  response: TSchema;
  example?: Static<S>;
  /** Answers the request; throws a KiapiError for a body it cannot use. */
  handle(body: Static<S>, services: CapabilityServices): unknown;
}

/** Keeps `handle` typed by its schema while the registry stores tools uniformly. */
export function defineTool<S extends TSchema>(tool: ToolDef<S>): ToolDef {
  return tool;
}

export interface CapabilityDef {
  family: string;
  domain: string;
  /** `info.title` of the family's OpenAPI document. */
  title: string;
  /** One line for the root document's capability list. */
  summary: string;
  /** Markdown `info.description` of the family's OpenAPI document. */
  description: string;
  models: ModelSpec[];
  operations: OperationDef[];
  /** Job-less requests of the family (see ToolDef). */
  tools?: ToolDef[];
}

/** Keeps `prepare` typed by its schema while the registry stores operations uniformly. */
export function defineOperation<S extends TSchema>(op: OperationDef<S>): OperationDef {
  return op;
}

export function capabilityPrefix(def: Pick<CapabilityDef, 'domain' | 'family'>): string {
  return `/v1/${def.domain}/${def.family}`;
}

export class CapabilityRegistry {
  private readonly defs: CapabilityDef[] = [];
  private readonly runners = new Map<string, JobRunner>();

  constructor(private readonly models: ModelRegistry) {}

  register(def: CapabilityDef): void {
    const problems = checkDefinition(def);
    if (this.defs.some((d) => d.family === def.family)) problems.push('family registered twice');
    if (problems.length) throw new Error(`capability '${def.family}' is not servable: ${problems.join('; ')}`);
    for (const m of def.models) this.models.register(m);
    this.defs.push(def);
  }

  list(): CapabilityDef[] {
    return [...this.defs];
  }

  /** Registers the runner a Runnable names (e.g. `image`); a name is registered once. */
  registerRunner(name: string, runner: JobRunner): void {
    if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`runner name '${name}' must be lower-case letters, digits, dashes`);
    if (this.runners.has(name)) throw new Error(`runner '${name}' registered twice`);
    this.runners.set(name, runner);
  }

  /** The runner registered as `name`; a runnable naming another comes from a node with other families. */
  runner(name: string): JobRunner {
    const runner = this.runners.get(name);
    if (!runner) throw new Error(`no job runner '${name}' is registered on this node (registered: ${[...this.runners.keys()].join(', ') || 'none'})`);
    return runner;
  }

  /** A runnable's handler on this node, through its registered runner. */
  handler(runnable: Runnable, services: CapabilityServices): JobHandler {
    return runnableHandler(this.runner(runnable.runner), runnable, services);
  }
}

function checkDefinition(def: CapabilityDef): string[] {
  const problems: string[] = [];
  if (!/^[a-z0-9-]+$/.test(def.family)) problems.push(`family '${def.family}' must be lower-case letters, digits, dashes`);
  if (!/^[a-z]+$/.test(def.domain)) problems.push(`domain '${def.domain}' must be lower-case letters`);
  if (!def.title || !def.summary || !def.description) problems.push('title, summary and description are required');
  if (def.models.length === 0) problems.push('no models');
  if (def.models.filter((m) => m.default).length !== 1) problems.push('exactly one model must be the default');
  if (def.models.some((m) => m.family !== def.family || m.domain !== def.domain)) {
    problems.push('every model must carry the capability family and domain');
  }
  if (def.operations.length === 0) problems.push('no operations');
  for (const op of def.operations) {
    if (!op.path.startsWith('/')) problems.push(`operation path '${op.path}' must start with /`);
    if (typeof op.prepare !== 'function') problems.push(`operation ${op.path} has no prepare handler`);
    if (!op.body || typeof op.body !== 'object') problems.push(`operation ${op.path} has no request schema`);
    if (!op.result || typeof op.result !== 'object') problems.push(`operation ${op.path} has no result schema`);
    if (!op.jobType) problems.push(`operation ${op.path} has no job type`);
  }
  for (const tool of def.tools ?? []) {
    if (!tool.path.startsWith('/')) problems.push(`tool path '${tool.path}' must start with /`);
    if (def.operations.some((op) => op.path === tool.path)) problems.push(`tool path '${tool.path}' is also an operation path`);
    if (typeof tool.handle !== 'function') problems.push(`tool ${tool.path} has no handler`);
  }
  return problems;
}
