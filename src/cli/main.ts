#!/usr/bin/env node
/** The `kiapi` command. Subcommands live one per file; this file only dispatches. */
import { ConfigError } from '../core/config.js';
import { isKiapiError } from '../core/errors.js';
import { VERSION } from '../core/package-info.js';
import { activateCommand } from './activate.js';
import { checkCommand } from './check.js';
import { configCommand } from './config.js';
import { deactivateCommand } from './deactivate.js';
import { PromptCanceled } from './prompt.js';
import { runCommand } from './run.js';
import { statusCommand } from './status.js';
import { UsageError } from './usage-error.js';

export { UsageError };

const USAGE = `kiapi ${VERSION} — local image-generation API server

Usage:
  kiapi run [--host H] [--port P] [--data-dir DIR] [--engine auto|preview|mflux]
  kiapi activate [--model M]... [--family F]... [--all] [--engine] [--yes]
                                  install the mflux engine and download model weights
  kiapi deactivate [--model M]... [--family F]... [--all] [--engine] [--yes]
                                  remove what activate downloaded (and/or the engine)
  kiapi status [--json]           engine, weights, disk use, running server
  kiapi check [--model M]... [--out DIR]
                                  one small real image per activated model, with timings
  kiapi config init|show|edit|template
                                  the settings file (keys are the KIAPI_* variable names)
  kiapi --version | --help

Models (--model): a name, alias, repo or family/name, e.g. qwen/image, edit-2509, fp8.
Settings come from KIAPI_* environment variables and the settings file (see README.md).`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return runCommand(rest);
    case 'activate':
      return activateCommand(rest);
    case 'deactivate':
      return deactivateCommand(rest);
    case 'status':
      return statusCommand(rest);
    case 'check':
      return checkCommand(rest);
    case 'config':
      return configCommand(rest);
    case '--version':
    case '-V':
      console.log(VERSION);
      return 0;
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command '${command}'`, { showUsage: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const code = (err as { code?: string }).code;
    if (err instanceof ConfigError || err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_'))) {
      console.error(`kiapi: ${(err as Error).message}`);
      if ((err instanceof UsageError && err.showUsage) || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_'))) console.error(USAGE);
      process.exitCode = 2;
    } else if (err instanceof PromptCanceled) {
      console.error('kiapi: canceled');
      process.exitCode = 130;
    } else if (isKiapiError(err)) {
      // Setup problems and the like: the message says what to do; no stack trace.
      console.error(`kiapi: ${err.message}`);
      process.exitCode = 1;
    } else {
      console.error('kiapi: fatal:', err);
      process.exitCode = 1;
    }
  },
);
