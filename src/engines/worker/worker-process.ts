/**
 * One `python -m kiapi_worker` child: spawn, ready/init-failed handshake, request ids, replies and
 * events, a silence watchdog, and the tail of stderr for error messages. A child that fails to
 * start is killed; an exit rejects everything pending with the exit code and its last words.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { EngineError, UnavailableError } from '../../core/errors.js';
import { parseWorkerLine, type Command, type ReplyMessage, type WorkerMessage } from './protocol.js';

export interface WorkerProcessOptions {
  python: string;
  /** Directory holding the `kiapi_worker` package (put first on PYTHONPATH). */
  workerDir: string;
  env: NodeJS.ProcessEnv;
  startTimeoutMs: number;
  log: Logger;
}

export interface ReadyInfo {
  python: string;
  /** The mflux version found in the engine's Python. */
  mflux: string;
  /** The mflux version this kiapi is written and tested against. */
  mflux_supported: string;
  mlx: string;
  device: string;
}

/** A reply of type `error` from the worker. */
export class WorkerReplyError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'WorkerReplyError';
  }
}

interface Pending {
  resolve(msg: ReplyMessage): void;
  reject(err: Error): void;
  onEvent?: (msg: ReplyMessage) => void;
  silenceMs?: number;
  timer?: NodeJS.Timeout;
}

const STDERR_TAIL_LINES = 12;

export class WorkerProcess {
  private readonly pending = new Map<string, Pending>();
  private readonly stderrLines: string[] = [];
  private nextId = 1;
  private exitError: Error | null = null;
  private exitStatus: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private killReason: string | null = null;
  private readonly exitListeners: ((err: Error) => void)[] = [];
  readonly exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly log: Logger,
    readonly info: ReadyInfo,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  static async start(opts: WorkerProcessOptions): Promise<WorkerProcess> {
    const pythonPath = [opts.workerDir, opts.env.PYTHONPATH].filter(Boolean).join(':');
    const child = spawn(opts.python, ['-m', 'kiapi_worker'], {
      env: { ...opts.env, PYTHONPATH: pythonPath, PYTHONUNBUFFERED: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const tail: string[] = [];
    const lines = createInterface({ input: child.stdout });
    const errLines = createInterface({ input: child.stderr });
    errLines.on('line', (l) => {
      tail.push(l);
      if (tail.length > STDERR_TAIL_LINES) tail.shift();
      opts.log.debug({ worker: 'stderr' }, l);
    });

    const info = await new Promise<ReadyInfo>((resolve, reject) => {
      const fail = (err: Error) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new UnavailableError(`the mflux worker did not start within ${opts.startTimeoutMs / 1000}s: ${tail.join(' | ')}`)),
        opts.startTimeoutMs,
      );
      child.once('error', (err) =>
        fail(new UnavailableError(`cannot run the engine's Python (${opts.python}): ${err.message}. Set KIAPI_PYTHON or run: kiapi activate`)),
      );
      child.once('exit', (code) =>
        fail(new UnavailableError(`the mflux worker exited before it was ready (code ${code}): ${tail.join(' | ') || 'no output'}`)),
      );
      lines.once('line', (line) => {
        const msg = parseWorkerLine(line);
        if (msg?.type === 'ready') {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          child.removeAllListeners('error');
          resolve(msg);
        } else if (msg?.type === 'init-failed') {
          fail(new UnavailableError(`the mflux engine cannot start: ${msg.reason}`));
        } else {
          fail(new UnavailableError(`the mflux worker did not answer its handshake (got: ${line.slice(0, 200)})`));
        }
      });
    });

    const proc = new WorkerProcess(child, opts.log, info);
    proc.stderrLines.push(...tail);
    errLines.removeAllListeners('line');
    errLines.on('line', (l) => proc.onStderr(l));
    lines.on('line', (l) => proc.onLine(l));
    child.once('exit', (code, signal) => proc.onExit(code, signal));
    child.on('error', (err) => proc.log.error({ err }, 'worker process error'));
    child.stdin.on('error', () => {
      // EPIPE after the child died; the exit handler reports it.
    });
    return proc;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.exitError === null;
  }

  onExitOnce(listener: (err: Error) => void): void {
    this.exitListeners.push(listener);
  }

  /**
   * Sends a command; resolves with its final reply, passes `progress` and `preview` events to `onEvent`.
   * With `silenceMs`, a command that hears nothing for that long kills the worker.
   */
  request(cmd: DistributiveOmit<Command, 'id'>, opts: { onEvent?: (msg: ReplyMessage) => void; silenceMs?: number } = {}): Promise<ReplyMessage> & { id: string } {
    const id = String(this.nextId++);
    let pending!: Pending;
    const promise = new Promise<ReplyMessage>((resolve, reject) => {
      pending = { resolve, reject, onEvent: opts.onEvent, silenceMs: opts.silenceMs };
    }) as Promise<ReplyMessage> & { id: string };
    promise.id = id;
    if (this.exitError) {
      pending.reject(this.exitError);
      return promise;
    }
    this.pending.set(id, pending);
    this.arm(id, pending);
    this.write({ ...cmd, id });
    return promise;
  }

  /** Sends a command whose reply nobody waits for (cancel, previews). */
  notify(cmd: DistributiveOmit<Command, 'id'>): void {
    if (!this.alive) return;
    const id = String(this.nextId++);
    this.pending.set(id, { resolve: () => {}, reject: () => {} });
    this.write({ ...cmd, id });
  }

  kill(reason: string): void {
    this.killReason ??= reason;
    this.child.kill('SIGKILL');
  }

  /**
   * Asks the worker to exit, then kills it if it does not within `graceMs`. Resolves with how it
   * ended: a clean stop is code 0 (anything else, e.g. an abort in MLX's teardown, is worth a warning).
   */
  async shutdown(graceMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.alive) {
      this.notify({ cmd: 'shutdown' });
      const timer = setTimeout(() => this.kill('shutdown timed out'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exitStatus ?? { code: null, signal: null };
  }

  stderrTail(): string {
    return this.stderrLines.join('\n');
  }

  private write(cmd: Command): void {
    this.child.stdin.write(`${JSON.stringify(cmd)}\n`);
  }

  private arm(id: string, p: Pending): void {
    if (!p.silenceMs) return;
    clearTimeout(p.timer);
    p.timer = setTimeout(() => {
      this.kill(`the engine worker was silent for ${p.silenceMs! / 1000}s during a run and was stopped (KIAPI_ENGINE_TIMEOUT_S)`);
    }, p.silenceMs);
    p.timer.unref();
  }

  private onLine(line: string): void {
    const msg = parseWorkerLine(line);
    if (!msg || msg.type === 'ready' || msg.type === 'init-failed') {
      this.log.warn({ line: line.slice(0, 300) }, 'ignored a line from the engine worker that is not a protocol message');
      return;
    }
    const id = msg.id;
    if (id === null) {
      this.log.warn({ msg }, 'engine worker reported a protocol error');
      return;
    }
    const p = this.pending.get(id);
    if (!p) return;
    if (msg.type === 'progress' || msg.type === 'preview') {
      this.arm(id, p);
      p.onEvent?.(msg);
      return;
    }
    clearTimeout(p.timer);
    this.pending.delete(id);
    if (msg.type === 'error') p.reject(new WorkerReplyError(msg.code, msg.message));
    else p.resolve(msg);
  }

  private onStderr(line: string): void {
    this.stderrLines.push(line);
    if (this.stderrLines.length > STDERR_TAIL_LINES) this.stderrLines.shift();
    this.log.debug({ worker: 'stderr' }, line);
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exitStatus = { code, signal };
    const how = code !== null ? `code ${code}` : `signal ${signal}`;
    this.exitError = new EngineError(
      this.killReason ?? `engine process exited (${how}): ${this.stderrTail() || 'no output on stderr'}`,
    );
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.exitError);
    }
    this.pending.clear();
    for (const l of this.exitListeners) l(this.exitError);
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export type { WorkerMessage };
