/**
 * Real shared services for the cluster tests, each started on 127.0.0.1 on a free port in a temp
 * dir, ready when the function resolves (readiness is polled, never slept on), and stopped by the
 * test (or, as a safety net, when the test process exits):
 *
 * - PostgreSQL from Debian's package (`/usr/lib/postgresql/<v>/bin`): a fresh cluster made with
 *   initdb, trust auth, its unix socket in the temp dir. postgres refuses to run as root, so as
 *   root the server runs as the `postgres` system user the package created.
 * - S3Proxy (an S3-compatible server on the JDK, from Maven Central; test/cluster/install.sh
 *   fetches it) on its filesystem backend, so blobs land in the temp dir.
 *
 * Each service can be killed (SIGKILL to its whole process group, as when its machine dies) and
 * started again on the same data and port, for fault tests. Run test/cluster/install.sh first.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');
export const S3PROXY_VERSION = process.env.S3PROXY_VERSION ?? '4.1.0';
/** How long a service may take to become ready (a loaded 2-core machine, a JVM start). */
const READY_TIMEOUT_MS = 60_000;
const POLL_MS = 50;

/** A server process the tests control. */
export interface Service {
  readonly name: string;
  readonly port: number;
  readonly dir: string;
  /** Its process id while it runs (the process group leader), else null. */
  readonly pid: number | null;
  /** SIGKILL to the whole process group, waiting until it is gone: the machine died. */
  kill(): Promise<void>;
  /** Starts it again on the same data dir and port; resolves once it answers. */
  restart(): Promise<void>;
  /** Stops it (gracefully, then by force) and removes its temp dir. */
  stop(): Promise<void>;
}

export interface Postgres extends Service {
  /** postgres://… for the `kiapi` database (trust auth, user `postgres`). */
  readonly url: string;
}

export interface S3Server extends Service {
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** A port nothing listens on right now (the OS picks it; a service binding it later may race, rarely). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it resolves true; throws with `what` and the last error after the timeout. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what} not ready within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Processes still running at exit are killed with their group: servers stop by themselves. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) killGroup(child, 'SIGKILL');
});
// A test process ended by a signal (Ctrl-C, a runner giving up on it) emits no 'exit': the
// groups, detached from it, would outlive it. They are killed first, then the signal is raised
// again with its default action (the handler runs once).
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    for (const child of running) killGroup(child, 'SIGKILL');
    process.kill(process.pid, signal);
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Whether every process of the group is gone (kill -0 on the group fails with ESRCH). */
function groupGone(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return false;
  } catch {
    return true;
  }
}

/** As root, who a server runs as (postgres refuses root); null when we are not root. */
function postgresUser(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const out = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gout = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (out.status !== 0 || gout.status !== 0) {
    throw new Error('running as root and there is no `postgres` user to run the server as: run test/cluster/install.sh');
  }
  return { uid: Number(out.stdout.trim()), gid: Number(gout.stdout.trim()) };
}

/** The newest PostgreSQL server Debian's packages installed. */
export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'postgres'))) : [];
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0];
  if (!newest) throw new Error('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): run test/cluster/install.sh');
  return path.join(root, newest, 'bin');
}

/** Output of a service kept for the error message when it fails to start or dies. */
function captureLog(child: ChildProcess, logFile: string): void {
  const out = fs.createWriteStream(logFile, { flags: 'a' });
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
}

export function tail(file: string, lines = 20): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * A controlled server process: `spawnIt` starts it (in its own process group), `ready` tells
 * when it answers. Start failures (a port taken in the meantime) surface with the log's tail.
 */
export function controlled(
  name: string,
  dir: string,
  spawnIt: () => ChildProcess,
  ready: () => Promise<boolean>,
  graceful: NodeJS.Signals,
  readyTimeoutMs = READY_TIMEOUT_MS,
): Omit<Service, 'name' | 'port' | 'dir'> & {
  start(): Promise<void>;
  /** The graceful signal to the group, SIGKILL after 10 s; resolves with the exit code once every process is gone. Keeps the dir. */
  halt(): Promise<number | null>;
  readonly logFile: string;
} {
  let child: ChildProcess | null = null;
  const logFile = path.join(dir, `${name}.log`);
  const start = async () => {
    const c = spawnIt();
    child = c;
    running.add(c);
    captureLog(c, logFile);
    c.once('exit', () => running.delete(c));
    await waitFor(name, async () => {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new Error(`${name} exited (${c.exitCode ?? c.signalCode}) while starting:\n${tail(logFile)}`);
      }
      return ready();
    }, readyTimeoutMs).catch((err: unknown) => {
      killGroup(c, 'SIGKILL');
      throw err;
    });
  };
  const killNow = async () => {
    const c = child;
    if (!c?.pid) return;
    killGroup(c, 'SIGKILL');
    await exited(c);
    // Children of the leader (postgres backends) die with the group; wait until none is left,
    // so a restart does not meet a shared memory segment still attached.
    const pgid = c.pid;
    await waitFor(`${name} processes to exit`, async () => groupGone(pgid));
    child = null;
  };
  const halt = async (): Promise<number | null> => {
    const c = child;
    if (!c?.pid) return null;
    killGroup(c, graceful);
    const timer = setTimeout(() => killGroup(c, 'SIGKILL'), 10_000);
    await exited(c);
    clearTimeout(timer);
    const pgid = c.pid;
    await waitFor(`${name} processes to exit`, async () => groupGone(pgid)).catch(() => undefined);
    child = null;
    return c.exitCode;
  };
  return {
    get pid() {
      return child?.pid ?? null;
    },
    start,
    kill: killNow,
    async restart() {
      if (child) await killNow();
      await start();
    },
    halt,
    logFile,
    async stop() {
      await halt();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A fresh PostgreSQL cluster with a `kiapi` database. fsync is off: the tests kill processes,
 * never the OS, and a process crash loses nothing committed without it (the WAL is written to
 * the page cache before COMMIT returns either way).
 */
export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBinDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-pg-'));
  const data = path.join(dir, 'data');
  const user = postgresUser();
  if (user) fs.chownSync(dir, user.uid, user.gid);
  const asUser = user ? { uid: user.uid, gid: user.gid } : {};
  const init = spawnSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'], {
    ...asUser,
    encoding: 'utf8',
    cwd: dir,
  });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  const port = await freePort();
  const url = `postgres://postgres@127.0.0.1:${port}/kiapi`;
  const svc = controlled(
    'postgres',
    dir,
    () =>
      spawn(
        path.join(bin, 'postgres'),
        ['-D', data, '-k', dir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200'],
        { ...asUser, cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
      ),
    async () => {
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
      try {
        await client.connect();
        await client.query('SELECT 1');
        return true;
      } finally {
        await client.end().catch(() => undefined);
      }
    },
    // SIGINT is postgres's "fast" shutdown: roll back open transactions, checkpoint, exit.
    'SIGINT',
  );
  await svc.start();
  const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  try {
    await admin.query('CREATE DATABASE kiapi');
  } finally {
    await admin.end();
  }
  return {
    name: 'postgres',
    port,
    dir,
    url,
    get pid() {
      return svc.pid;
    },
    kill: svc.kill,
    restart: svc.restart,
    stop: svc.stop,
  };
}

/** The S3Proxy jar install.sh fetched into .cache/s3proxy/. */
export function s3proxyJar(): string {
  const jar = path.join(REPO_ROOT, '.cache', 's3proxy', `s3proxy-${S3PROXY_VERSION}-jar-with-dependencies.jar`);
  if (!fs.existsSync(jar)) throw new Error(`${jar} is missing: run test/cluster/install.sh`);
  return jar;
}

/**
 * S3Proxy on the filesystem backend: buckets are directories under the temp dir, objects files.
 * Signature v2 and v4 are both accepted with the one key pair made here.
 */
export async function startS3(): Promise<S3Server> {
  const jar = s3proxyJar();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-s3-'));
  const blobs = path.join(dir, 'blobs');
  fs.mkdirSync(blobs);
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const accessKeyId = 'kiapi-test';
  const secretAccessKey = 'kiapi-test-secret';
  const props = path.join(dir, 's3proxy.conf');
  fs.writeFileSync(
    props,
    [
      `s3proxy.endpoint=${endpoint}`,
      's3proxy.authorization=aws-v2-or-v4',
      `s3proxy.identity=${accessKeyId}`,
      `s3proxy.credential=${secretAccessKey}`,
      'jclouds.provider=filesystem',
      `jclouds.filesystem.basedir=${blobs}`,
      '',
    ].join('\n'),
  );
  const svc = controlled(
    's3proxy',
    dir,
    // A small heap: the JVM's default is a quarter of the machine's memory.
    () => spawn('java', ['-Xmx256m', '-jar', jar, '--properties', props], { cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] }),
    // Any HTTP answer (403 to an unsigned request) means it is serving.
    async () => (await fetch(`${endpoint}/`)).status > 0,
    'SIGTERM',
  );
  await svc.start();
  return {
    name: 's3proxy',
    port,
    dir,
    endpoint,
    region: 'us-east-1',
    accessKeyId,
    secretAccessKey,
    get pid() {
      return svc.pid;
    },
    kill: svc.kill,
    restart: svc.restart,
    stop: svc.stop,
  };
}
