/**
 * Usage texts: the overview (`kiapi --help`) and one page per subcommand (`kiapi <command> --help`,
 * `kiapi help <command>`). Help is answered before a subcommand parses its options or reads any
 * setting, so `--help` works even with a broken settings file or without an engine.
 */
import { VERSION } from '../core/package-info.js';

const SELECTION = `  --model M        a model by name, alias, repo or family/name (qwen/image, edit-2509, fp8); repeatable
  --family F       every model of a family (qwen, ideogram4); repeatable
  --all            every model`;

export const OVERVIEW = `kiapi ${VERSION} — local image-generation API server

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
  kiapi help [COMMAND] | --help   this text, or one command's
  kiapi --version                 the version

Models (--model): a name, alias, repo or family/name, e.g. qwen/image, edit-2509, fp8.
Settings come from KIAPI_* environment variables and the settings file (see README.md).
\`kiapi <command> --help\` describes each command.`;

export const COMMAND_HELP: Record<string, string> = {
  run: `Usage: kiapi run [--host H] [--port P] [--data-dir DIR] [--engine auto|preview|mflux]

Starts the HTTP server (default http://127.0.0.1:8000; docs at /docs). Ctrl-C stops it: the
running job gets KIAPI_SHUTDOWN_GRACE_S to finish; a second Ctrl-C exits at once.

Options (each beats its KIAPI_* variable and the settings file):
  --host H         address to listen on (KIAPI_HOST, default 127.0.0.1)
  --port P         port (KIAPI_PORT, default 8000)
  --data-dir DIR   database, files, activations and engine venv (KIAPI_DATA_DIR)
  --engine E       auto (mflux when installed, else preview), preview or mflux (KIAPI_ENGINE)
  -h, --help       this text`,

  activate: `Usage: kiapi activate [--model M]... [--family F]... [--all] [--engine] [--yes]

Installs the mflux engine in a venv in the data dir, checks access, sizes and free disk for every
selected model, then downloads and verifies the weights into the Hugging Face cache. Without a
selection flag it offers a checkbox list (on a terminal). Safe to interrupt and re-run.

Options:
${SELECTION}
  --engine         the engine only, when no model is selected
  -y, --yes        do not ask for confirmation
  -h, --help       this text`,

  deactivate: `Usage: kiapi deactivate [--model M]... [--family F]... [--all] [--engine] [--yes]

Removes the weights revision that \`kiapi activate\` downloaded (other cached revisions and local
model directories stay), and with --engine the engine's venv. Asks first.

Options:
${SELECTION}
  --engine         remove the engine's venv
  -y, --yes        do not ask (required without a terminal)
  -h, --help       this text`,

  status: `Usage: kiapi status [--json]

Shows whether the engine is ready (mflux/mlx/Python versions), the weights of every model, the disk
they use and whether a server answers on the configured host and port.

Options:
  --json           the same as JSON, for scripts
  -h, --help       this text`,

  check: `Usage: kiapi check [--model M]... [--family F]... [--all] [--out DIR]

Makes one small real image (256×256, 1 step) with each activated model, or the selected ones, and
reports load and generation times. Exit code 1 when any check fails.

Options:
${SELECTION}
  --out DIR        where the images go (default ./kiapi-check-<timestamp>)
  -h, --help       this text`,

  config: `Usage: kiapi config init|show|edit|template

The settings file (YAML; keys are the KIAPI_* environment variable names; the environment beats
the file, the file beats the defaults). KIAPI_CONFIG_FILE sets its path.

Commands:
  init             create the settings file with commented examples (an existing file is kept)
  show [--json]    every setting's effective value and where it came from (env, file, default)
  edit             open the settings file in $VISUAL / $EDITOR, then validate it
  template         every setting kiapi reads, with its default and meaning, as YAML

  -h, --help       this text`,
};

/** The help page of `command`, or undefined when it is not a command. */
export function commandHelp(command: string | undefined): string | undefined {
  return command !== undefined && Object.hasOwn(COMMAND_HELP, command) ? COMMAND_HELP[command] : undefined;
}

/** `args` asks for help: `-h`/`--help` anywhere before a `--` end-of-options marker. */
export function wantsHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}
