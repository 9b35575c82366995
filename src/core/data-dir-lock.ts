/**
 * One server per data directory. A second `kiapi run` on the same data dir used to run start-up
 * recovery (failing the first server's jobs, deleting its upload temp files) before it found the
 * port taken; now the data dir is locked before anything in it is touched.
 *
 * The lock is an OS-level POSIX record lock (fcntl) on `<data dir>/kiapi.lock`, taken through
 * SQLite: a `BEGIN EXCLUSIVE` transaction on that file that is never committed holds the lock for
 * the life of the process, and the kernel drops it when the process ends in any way (crash, kill
 * -9, power of the process gone), so no stale lock ever blocks a restart. Why not a package:
 * proper-lockfile is a lock *directory* whose staleness is judged by mtime (a crashed server
 * blocks restarts until it goes stale, and a stopped-but-alive one can be judged stale); fs-ext
 * (flock) is a native addon built with node-gyp at install time. better-sqlite3 is already a
 * dependency with prebuilt binaries, and its locking is the well-tested fcntl code of SQLite.
 *
 * The holder's pid is written to `<data dir>/kiapi.pid` after the lock is taken, so a refused
 * process can name it; the pid file is informational only, the lock is what counts.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { KiapiError } from './errors.js';

/** Another process holds the data dir. Exits `kiapi run` with the message; 503 if it ever reached HTTP. */
export class DataDirLockedError extends KiapiError {
  readonly status = 503;
  constructor(
    readonly dataDir: string,
    readonly holderPid: number | null,
  ) {
    super(
      `the data dir ${dataDir} is in use by another kiapi server (${holderPid !== null ? `pid ${holderPid}` : 'pid unknown'}); ` +
        'stop that server, or start this one with another --data-dir / KIAPI_DATA_DIR',
    );
  }
}

export interface DataDirLock {
  readonly dataDir: string;
  release(): void;
}

export const LOCK_FILE = 'kiapi.lock';
export const PID_FILE = 'kiapi.pid';

export function lockDataDir(dataDir: string): DataDirLock {
  fs.mkdirSync(dataDir, { recursive: true });
  const lockPath = path.join(dataDir, LOCK_FILE);
  const pidPath = path.join(dataDir, PID_FILE);
  // timeout 0: a held lock is reported at once, never waited for.
  const db = new Database(lockPath, { timeout: 0 });
  try {
    // Rollback journal: there BEGIN EXCLUSIVE takes the file's exclusive lock immediately
    // (in WAL mode it would not exclude readers). Nothing is ever written, so no journal appears.
    db.pragma('journal_mode = DELETE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code?.startsWith('SQLITE_BUSY')) throw new DataDirLockedError(dataDir, readPid(pidPath));
    throw err;
  }
  fs.writeFileSync(pidPath, `${process.pid}\n`);
  let released = false;
  return {
    dataDir,
    release() {
      if (released) return;
      released = true;
      try {
        if (readPid(pidPath) === process.pid) fs.rmSync(pidPath, { force: true });
      } finally {
        db.close();
      }
    },
  };
}

function readPid(pidPath: string): number | null {
  try {
    const pid = Number(fs.readFileSync(pidPath, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
