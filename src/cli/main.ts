#!/usr/bin/env node
/** The `kiapi` command. Subcommands live one per file; this file only dispatches. */
import { ConfigError } from '../core/config.js';
import { isKiapiError } from '../core/errors.js';
import { VERSION } from '../core/package-info.js';
import { activateCommand } from './activate.js';
import { checkCommand } from './check.js';
import { configCommand } from './config.js';
import { deactivateCommand } from './deactivate.js';
import { commandHelp, OVERVIEW, wantsHelp } from './help.js';
import { PromptCanceled } from './prompt.js';
import { runCommand } from './run.js';
import { serviceCommand } from './service.js';
import { statusCommand } from './status.js';
import { UsageError } from './usage-error.js';

export { UsageError };



async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const page = commandHelp(command, rest);
  if (page !== undefined && wantsHelp(rest)) {
    console.log(page);
    return 0;
  }
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
    case 'service':
      return serviceCommand(rest);
    case '--version':
    case '-V':
      console.log(VERSION);
      return 0;
    case 'help': {
      const topic = rest[0];
      if (topic === undefined) {
        console.log(OVERVIEW);
        return 0;
      }
      const text = commandHelp(topic, rest.slice(1));
      if (text === undefined) throw new UsageError(`no help for '${topic}': not a command`, { showUsage: true });
      console.log(text);
      return 0;
    }
    case undefined:
    case '--help':
    case '-h':
      // Without a command nothing was asked for: the overview, and exit code 2 for scripts.
      console.log(OVERVIEW);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command '${command}'`, { showUsage: true });
  }
}

const argv = process.argv.slice(2);
// A syntax error shows the usage of the command it was made in, or the overview.
const usageOnError = commandHelp(argv[0], argv.slice(1)) ?? OVERVIEW;

main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const code = (err as { code?: string }).code;
    if (err instanceof ConfigError || err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_'))) {
      console.error(`kiapi: ${(err as Error).message}`);
      if ((err instanceof UsageError && err.showUsage) || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_'))) console.error(usageOnError);
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
