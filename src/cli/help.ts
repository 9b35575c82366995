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
  kiapi service install|start|stop|restart|status|logs|show|uninstall
                                  run kiapi in the background (launchd on macOS, systemd on Linux)
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

  service: `Usage: kiapi service install|start|stop|restart|status|logs|show|uninstall

Runs \`kiapi run\` in the background as your user: a launchd user agent on macOS, a systemd user
unit on Linux. It reads the settings file (\`kiapi config edit\`; a change applies at the next
restart), starts at login and is restarted after a crash. Its output goes to a log file:
~/Library/Logs/kiapi/<name>.log on macOS, ~/.local/state/kiapi/<name>.log on Linux.

Commands (\`kiapi service <command> --help\` for each):
  install [--force]        write the plist / unit file (--force: write it anew)
  start [--wait S]         start it and wait until it answers /health
  stop                     stop it (the running job gets KIAPI_SHUTDOWN_GRACE_S)
  restart [--wait S]       stop, then start (applies changed settings)
  status [--json]          installed? running? answering /health? the last log lines
  logs [-n N] [-f]         the log file's last lines, or follow it
  show                     the file install writes
  uninstall                stop it and remove the file (the log stays)

The name is io.github.kiarina.kiapi on macOS and kiapi on Linux (KIAPI_SERVICE_LABEL changes it).
  -h, --help               this text`,
};

/** One page per \`kiapi service\` command. */
const SERVICE_HELP: Record<string, string> = {
  install: `Usage: kiapi service install [--force]

Writes the service file: ~/Library/LaunchAgents/<name>.plist (launchd) or
~/.config/systemd/user/<name>.service (systemd, then enabled). It runs this node and this kiapi by
absolute path with \`run\`, gets KIAPI_CONFIG_FILE (the settings file) and the location variables
set now (KIAPI_DATA_DIR, XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_CACHE_HOME, HF_HOME, HF_HUB_CACHE);
every other setting comes from the settings file. The settings must be valid. Does not start it.

Options:
  --force          write it anew when it exists (after moving or updating kiapi or node)
  -h, --help       this text`,
  start: `Usage: kiapi service start [--wait S]

Starts the installed service and waits until the server answers /health. Exit code 1 when it
stops at once or does not answer in time (the log's last lines say why).

Options:
  --wait S         seconds to wait for /health (default 30; 0: do not wait)
  -h, --help       this text`,
  stop: `Usage: kiapi service stop

Stops the service (SIGTERM: the running job gets KIAPI_SHUTDOWN_GRACE_S to finish). It stays
installed and starts again at the next login or \`kiapi service start\`.

  -h, --help       this text`,
  restart: `Usage: kiapi service restart [--wait S]

Stops the service when it runs, then starts it: how a changed settings file takes effect.

Options:
  --wait S         seconds to wait for /health (default 30; 0: do not wait)
  -h, --help       this text`,
  status: `Usage: kiapi service status [--json]

Whether the service is installed and running, whether a server answers /health on the host and
port of the settings file, and the last lines of its log.

Exit codes: 0 running and answering, 1 running but not answering /health (starting, or the port
is taken), 3 installed but not running, 4 not installed.

Options:
  --json           the same as JSON, for scripts
  -h, --help       this text`,
  logs: `Usage: kiapi service logs [-n N] [-f]

Prints the end of the service's log file (the server's output): ~/Library/Logs/kiapi/<name>.log on
macOS, $XDG_STATE_HOME/kiapi/<name>.log (~/.local/state/kiapi/<name>.log) on Linux.

Options:
  -n, --lines N    how many lines (default 50)
  -f, --follow     keep printing new lines (Ctrl-C ends)
  -h, --help       this text`,
  show: `Usage: kiapi service show

Prints the plist or unit file \`kiapi service install\` would write now, and says so on stderr
when the installed one differs.

  -h, --help       this text`,
  uninstall: `Usage: kiapi service uninstall

Stops the service and removes its file (and, with systemd, disables it). The log file stays.

  -h, --help       this text`,
};

/**
 * The help page of `command`, or undefined when it is not a command. A command with commands of
 * its own (service) has a page for each: `args[0]` picks it.
 */
export function commandHelp(command: string | undefined, args: string[] = []): string | undefined {
  if (command === undefined || !Object.hasOwn(COMMAND_HELP, command)) return undefined;
  const sub = args[0];
  if (command === 'service' && sub !== undefined && Object.hasOwn(SERVICE_HELP, sub)) return SERVICE_HELP[sub];
  return COMMAND_HELP[command];
}

/** `args` asks for help: `-h`/`--help` anywhere before a `--` end-of-options marker. */
export function wantsHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}
