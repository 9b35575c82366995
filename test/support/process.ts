/** Runs a program to its end and keeps what it printed; the tests' one way to call a CLI or a script. */
import { spawn } from 'node:child_process';

export interface Captured {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CaptureOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * Waits for the program's exit, not for its output streams to close: a service manager's
   * child started in the background may hold them open long after.
   *
   * A program that unexpectedly keeps running (a command that starts serving instead of
   * answering, a snippet that polls forever) is killed after this long, never left behind; the
   * test then fails on its exit code with what it printed.
   */
  timeoutMs?: number;
}

export async function runCaptured(command: string, args: string[], opts: CaptureOptions = {}): Promise<Captured> {
  const child = spawn(command, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const guard = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
  try {
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    return { code, stdout, stderr };
  } finally {
    clearTimeout(guard);
  }
}
