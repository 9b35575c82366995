/** Running a helper program (python, pip) and collecting its output, for the setup steps. */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** Kill the child after this long (ms). */
  timeoutMs?: number;
  /** Each output line as it arrives (stdout and stderr), e.g. to show pip's progress. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  signal?: AbortSignal;
}

/** Runs `command args`; rejects only when it cannot start (ENOENT, EACCES), never on a non-zero exit. */
export function runProcess(command: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], signal: opts.signal });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : null;
    createInterface({ input: child.stdout }).on('line', (line) => {
      stdout += `${line}\n`;
      opts.onLine?.(line, 'stdout');
    });
    createInterface({ input: child.stderr }).on('line', (line) => {
      stderr += `${line}\n`;
      opts.onLine?.(line, 'stderr');
    });
    child.once('error', (err) => {
      if (timer) clearTimeout(timer);
      if (!settled) {
        settled = true;
        reject(err);
      }
    });
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (!settled) {
        settled = true;
        resolve({ code, signal, stdout, stderr });
      }
    });
  });
}

/** The last `n` non-empty lines of some output, for error messages. */
export function tail(text: string, n = 12): string {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-n)
    .join('\n');
}

/** PYTHONPATH with the worker package directory first, as the engine runs it. */
export function workerPythonPath(workerDir: string, env: NodeJS.ProcessEnv): string {
  return [workerDir, env.PYTHONPATH].filter(Boolean).join(':');
}
