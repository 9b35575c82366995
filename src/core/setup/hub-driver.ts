/**
 * Drives `python -m kiapi_worker.hub` (worker/kiapi_worker/hub.py), which downloads with
 * huggingface_hub in the engine's venv and reports JSON lines: `plan` checks access and lists
 * files before any byte is downloaded; `download` fetches one snapshot with progress per file.
 * The child inherits HF_ENDPOINT, HF_HOME / HF_HUB_CACHE and HF_TOKEN from the environment.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { SetupError } from '../errors.js';
import { tail, workerPythonPath } from './process.js';

export interface HubFile {
  path: string;
  size: number;
  sha256: string | null;
  blob_id: string | null;
  cached: boolean;
}

export interface RepoPlan {
  repo: string;
  revision: string;
  commit: string;
  gated: boolean;
  cache_dir: string;
  files: HubFile[];
}

export type IssueReason = 'not_authenticated' | 'access_denied' | 'not_found' | 'unreachable' | 'offline' | 'error';

export interface RepoIssue {
  repo: string;
  reason: IssueReason;
  message: string;
}

export interface PlanResult {
  plans: RepoPlan[];
  issues: RepoIssue[];
  hasToken: boolean;
}

export interface DoneEvent {
  event: 'done';
  repo: string;
  revision: string;
  commit: string;
  snapshot: string;
  cache_dir: string;
  files: { path: string; size: number; blob: string | null }[];
  bytes: number;
  huggingface_hub: string;
}

export type DownloadEvent =
  | { event: 'start'; repo: string; commit: string; files: number; total: number; cached: number }
  | { event: 'progress'; file: string; file_bytes: number; file_total: number | null; bytes: number; total: number }
  | { event: 'file'; file: string; size: number; cached: boolean }
  | { event: 'verify'; files: number; bytes: number }
  | DoneEvent
  | { event: 'error'; reason: string; message: string }
  | { event: 'canceled' };

export type DownloadOutcome =
  | { status: 'done'; done: DoneEvent }
  | { status: 'error'; reason: string; message: string }
  | { status: 'canceled' };

export interface HubContext {
  /** The venv's Python (huggingface_hub comes with mflux). */
  python: string;
  workerDir: string;
  env: NodeJS.ProcessEnv;
}

interface HubRun {
  code: number | null;
  stderr: string;
}

function runHub(ctx: HubContext, args: string[], onEvent: (e: Record<string, unknown>) => void, signal?: AbortSignal): Promise<HubRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(ctx.python, ['-m', 'kiapi_worker.hub', ...args], {
      env: { ...ctx.env, PYTHONPATH: workerPythonPath(ctx.workerDir, ctx.env), PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    const onAbort = () => child.kill('SIGINT'); // hub.py stops the files in flight and exits 130
    signal?.addEventListener('abort', onAbort, { once: true });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      try {
        onEvent(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not an event line; hub.py keeps stdout for events, so this is noise from a library
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-20_000);
    });
    child.once('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      reject(
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? new SetupError(`the engine's Python ${ctx.python} is missing: run \`kiapi activate\` to rebuild it`)
          : err,
      );
    });
    child.once('close', (code) => {
      signal?.removeEventListener('abort', onAbort);
      resolve({ code, stderr });
    });
  });
}

/**
 * Access, commit and file list of each repo; downloads nothing. Without `revision` each repo is
 * planned at the revision the engine loads (hub.py: mflux's pinned commit, else `main`).
 */
export async function planRepos(ctx: HubContext, repos: { repo: string; gated: boolean }[], revision?: string): Promise<PlanResult> {
  const result: PlanResult = { plans: [], issues: [], hasToken: false };
  // Set from the event callback; an object so the compiler does not narrow it to its initial value.
  const state: { ended: boolean; fatal: string | null } = { ended: false, fatal: null };
  const args = ['plan', ...(revision ? ['--revision', revision] : [])];
  for (const r of repos) {
    args.push('--repo', r.repo);
    if (r.gated) args.push('--gated', r.repo);
  }
  const run = await runHub(ctx, args, (e) => {
    if (e.event === 'plan') result.plans.push(e as unknown as RepoPlan);
    else if (e.event === 'issue') result.issues.push(e as unknown as RepoIssue);
    else if (e.event === 'end') {
      state.ended = true;
      result.hasToken = e.has_token === true;
    } else if (e.event === 'error') {
      state.fatal = String(e.message);
    }
  });
  if (state.fatal !== null) throw new SetupError(`checking the Hugging Face repos failed: ${state.fatal}`);
  if (!state.ended) {
    throw new SetupError(`checking the Hugging Face repos failed (exit ${run.code}):\n${tail(run.stderr)}`);
  }
  return result;
}

/** Downloads one snapshot; events arrive as they happen. Aborting `signal` cancels cleanly. */
export async function downloadRepo(
  ctx: HubContext,
  target: { repo: string; revision: string; commit: string },
  onEvent: (e: DownloadEvent) => void,
  signal?: AbortSignal,
): Promise<DownloadOutcome> {
  let outcome: DownloadOutcome | null = null;
  const run = await runHub(
    ctx,
    ['download', '--repo', target.repo, '--revision', target.revision, '--commit', target.commit],
    (raw) => {
      const e = raw as unknown as DownloadEvent;
      if (e.event === 'done') outcome = { status: 'done', done: e };
      else if (e.event === 'error') outcome = { status: 'error', reason: e.reason, message: e.message };
      else if (e.event === 'canceled') outcome = { status: 'canceled' };
      onEvent(e);
    },
    signal,
  );
  if (outcome) return outcome;
  if (run.code === 130 || signal?.aborted) return { status: 'canceled' };
  return { status: 'error', reason: 'crash', message: `the download helper exited with ${run.code}:\n${tail(run.stderr)}` };
}
