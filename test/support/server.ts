/**
 * Test servers on 127.0.0.1: `startServer` builds the real app in-process on an ephemeral port
 * (real HTTP, real SQLite in a temp data dir); `spawnServer` runs the real CLI as a child process
 * (for restart, signal and crash tests). Both clean up after themselves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from '../../src/core/config.js';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { buildApp } from '../../src/server/app.js';
import { createContext, type AppContext, type ContextOptions } from '../../src/server/context.js';

export function tempDir(prefix = 'kiapi-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface TestServer {
  url: string;
  port: number;
  dataDir: string;
  app: FastifyInstance;
  ctx: AppContext;
  config: Config;
  /** Stops the server; removes the data dir unless `keepData`. */
  close(opts?: { keepData?: boolean }): Promise<void>;
}

export async function startServer(
  env: Record<string, string> = {},
  opts: ContextOptions & { dataDir?: string; logStream?: NodeJS.WritableStream } = {},
): Promise<TestServer> {
  const dataDir = opts.dataDir ?? tempDir();
  // PATH as any service manager gives a server: the engine worker's children need it (MLX's CPU
  // backend compiles kernels with g++, which finds its own cc1plus through PATH).
  const fullEnv = {
    ...(process.env.PATH ? { PATH: process.env.PATH } : {}),
    KIAPI_ENGINE: 'preview',
    ...env,
    KIAPI_DATA_DIR: dataDir,
    KIAPI_HOST: '127.0.0.1',
    KIAPI_PORT: '0',
  };
  const config = loadConfig(fullEnv);
  // `logStream` receives the server's log as JSON lines (tests that assert nothing was logged as an error).
  const log = opts.logStream ? pino({ level: 'info' }, opts.logStream) : pino({ level: process.env.KIAPI_TEST_LOG ?? 'silent' });
  const ctx = await createContext(config, log, { ...opts, env: fullEnv });
  const app = await buildApp(ctx);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dataDir,
    app,
    ctx,
    config,
    async close({ keepData = false } = {}) {
      await Promise.all([ctx.queue.close(1000), app.close()]);
      await ctx.close();
      if (!keepData && !opts.dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface SpawnedServer {
  url: string;
  port: number;
  child: ChildProcess;
  output(): string;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Runs `node dist/src/cli/main.js run` (the built CLI) and waits for /health. `prefix` runs it
 * through another command that must end by exec'ing its arguments (e.g. a shell that sets a
 * ulimit first), so the child's pid stays the server's.
 */
export async function spawnServer(
  env: Record<string, string>,
  timeoutMs = 20_000,
  opts: { prefix?: string[]; /** /health poll interval (a start-up time benchmark wants a fine one). */ pollMs?: number } = {},
): Promise<SpawnedServer> {
  const port = await freePort();
  const argv = [process.execPath, path.join(PACKAGE_ROOT, 'dist/src/cli/main.js'), 'run', '--host', '127.0.0.1', '--port', String(port)];
  const [command, ...args] = [...(opts.prefix ?? []), ...argv] as [string, ...string[]];
  const child = spawn(command, args, {
    // A developer's own settings file must not leak into tests: point at one that does not exist.
    env: { ...process.env, KIAPI_CONFIG_FILE: path.join(os.tmpdir(), 'kiapi-tests-no-settings.yaml'), KIAPI_ENGINE: 'preview', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited early (${child.exitCode}):\n${out}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`server did not become healthy:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 100));
  }
  return {
    url,
    port,
    child,
    output: () => out,
    stop(signal = 'SIGTERM') {
      return new Promise((resolve) => {
        // A child killed by a signal has exitCode null and signalCode set; its 'exit' already fired,
        // so waiting for it again would hang.
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill(signal);
      });
    },
  };
}

export async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

/** Polls a job until it is finished. */
export async function waitForJob(url: string, jobId: string, timeoutMs = 20_000, headers: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = (await (await fetch(`${url}/v1/jobs/${jobId}`, { headers })).json()) as Record<string, unknown>;
    if (['succeeded', 'failed', 'canceled'].includes(job.status as string)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} did not finish: ${JSON.stringify(job)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** POSTs JSON and returns status, headers and parsed (or raw) body. */
export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; json: unknown; bytes: Buffer }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const bytes = Buffer.from(await res.arrayBuffer());
  let json: unknown = null;
  if ((res.headers.get('content-type') ?? '').includes('json')) json = JSON.parse(bytes.toString('utf8'));
  return { status: res.status, headers: res.headers, json, bytes };
}
