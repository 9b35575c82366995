#!/usr/bin/env node
/** The `kiapi` command. Subcommands live one per file; this file only dispatches. */
import { ConfigError } from '../core/config.js';
import { VERSION } from '../core/package-info.js';
import { runCommand } from './run.js';

const USAGE = `kiapi ${VERSION} — local image-generation API server

Usage:
  kiapi run [--host H] [--port P] [--data-dir DIR] [--engine auto|preview|mflux]
  kiapi --version | --help

Settings come from KIAPI_* environment variables (see README.md).`;

export class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return runCommand(rest);
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
      throw new UsageError(`unknown command '${command}'`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError || err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      console.error(`kiapi: ${(err as Error).message}`);
      if (err instanceof UsageError) console.error(USAGE);
      process.exitCode = 2;
    } else {
      console.error('kiapi: fatal:', err);
      process.exitCode = 1;
    }
  },
);
