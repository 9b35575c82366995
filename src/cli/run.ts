/**
 * `kiapi run`: start the server. SIGINT/SIGTERM stop accepting, give the running job
 * KIAPI_SHUTDOWN_GRACE_S to finish, persist state and exit; a second signal exits at once.
 */
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
  await app.listen({ host: config.host, port: config.port });
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
