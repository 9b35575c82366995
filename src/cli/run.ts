/**
 * `kiapi run`: start the server. SIGINT/SIGTERM stop accepting, give the running job
 * KIAPI_SHUTDOWN_GRACE_S to finish, persist state and exit; a second signal exits at once.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import pino from 'pino';
import type { Config } from '../core/config.js';
import { buildApp } from '../server/app.js';
import { createContext } from '../server/context.js';
import { loadSettings } from './environment.js';

export async function runCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      'data-dir': { type: 'string' },
      engine: { type: 'string' },
    },
    strict: true,
  });
  // Flags beat the environment, which beats the settings file (merged in loadSettings).
  const flags: Record<string, string> = {};
  if (values.host !== undefined) flags.KIAPI_HOST = values.host;
  if (values.port !== undefined) flags.KIAPI_PORT = values.port;
  if (values.engine !== undefined) flags.KIAPI_ENGINE = values.engine;
  if (values['data-dir'] !== undefined) flags.KIAPI_DATA_DIR = values['data-dir'];
  const { cli, config } = loadSettings(process.env, flags);
  return serve(config, cli.env);
}

async function serve(config: Config, env: Record<string, string | undefined>): Promise<number> {
  const log = pino({ level: config.logLevel, base: undefined });
  const ctx = await createContext(config, log, { env });
  const app = await buildApp(ctx);
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EADDRINUSE' && code !== 'EACCES') throw err;
    const line = code === 'EACCES' ? portDenied(config) : await portInUse(config);
    await Promise.all([ctx.queue.close(0), app.close()]);
    await ctx.close();
    console.error(`kiapi: ${line}`);
    return 1;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  log.info({ data_dir: config.dataDir }, `kiapi listening on http://${host}:${port} (docs: http://${host}:${port}/docs)`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        log.warn(`${signal} again: exiting now`);
        process.exit(130);
      }
      stopping = true;
      log.info(`${signal}: no new requests; letting the running job finish (up to ${config.shutdownGraceS}s)`);
      void (async () => {
        try {
          // Stop listening and let in-flight requests (sync waits) end while the queue drains.
          await Promise.all([ctx.queue.close(config.shutdownGraceS * 1000), app.close()]);
          await ctx.close();
          log.info('kiapi stopped; state persisted');
          resolve(0);
        } catch (err) {
          log.error({ err }, 'error during shutdown');
          resolve(1);
        }
      })();
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}

/** One line for a port that is taken: which, whether it is a kiapi, and how to choose another. */
async function portInUse(config: Config): Promise<string> {
  const who = (await isKiapiAt(config.host, config.port))
    ? 'another kiapi server is already listening there (with another data dir)'
    : 'another program is listening there';
  return `port ${config.port} on ${config.host} is already in use: ${who}; choose another port with --port or KIAPI_PORT`;
}

function portDenied(config: Config): string {
  return `not allowed to listen on port ${config.port} on ${config.host}; choose a port above 1023 with --port or KIAPI_PORT`;
}

/** Asks GET /health on the port: a kiapi answers with its engine and queue. */
function isKiapiAt(host: string, port: number): Promise<boolean> {
  const probeHost = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return new Promise((resolve) => {
    // A ref'd timer (AbortSignal.timeout's is not): the process must not exit mid-probe.
    const timer = setTimeout(() => {
      req.destroy();
      resolve(false);
    }, 2000);
    const req = http.get({ host: probeHost, port, path: '/health', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d.length < 65536 ? d : ''));
      res.on('end', () => {
        clearTimeout(timer);
        try {
          const body = JSON.parse(text) as Record<string, unknown>;
          resolve(res.statusCode === 200 && body.status === 'ok' && typeof body.engine === 'object' && 'queue_len' in body);
        } catch {
          resolve(false);
        }
      });
      res.on('error', () => resolve(false));
    });
    req.on('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}
