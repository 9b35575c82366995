/**
 * Keeps SQLite's WAL checkpoints off the event loop. Left to itself, SQLite checkpoints inside the
 * commit that takes the WAL past 1000 pages: that commit copies the pages into the database file
 * and syncs it, on the thread that serves requests, in the middle of whichever request made it
 * (with a dozen pages per generation, one job in ~80 paid for it: the sync generation's p99 was
 * ~2.5 ms higher than without, `npm run bench -- overhead`). Here the server's connection never
 * checkpoints; a second connection on a worker thread runs a PASSIVE checkpoint every second,
 * which neither waits for nor blocks the server's reads and writes. Durability is unchanged: a
 * committed transaction is in the WAL either way, and the WAL is replayed on the next open.
 */
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { CheckpointFailure, CheckpointReport, CheckpointerData } from './db-checkpoint-worker.js';
import type { Db } from './db.js';

/** SQLite's default: what the server's connection goes back to if the thread is lost. */
const SQLITE_AUTOCHECKPOINT_PAGES = 1000;

export class WalCheckpointer {
  private readonly worker: Worker;
  private closed = false;
  private failing = false;
  private readonly listeners = new Set<(report: CheckpointReport) => void>();

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    intervalMs = 1000,
  ) {
    const data: CheckpointerData = { file: db.name, intervalMs };
    this.worker = new Worker(new URL('./db-checkpoint-worker.js', import.meta.url), { workerData: data });
    // A server that is stopping does not wait for the next checkpoint: closing the database does one.
    this.worker.unref();
    db.pragma('wal_autocheckpoint = 0');
    this.worker.on('message', (msg: CheckpointReport | CheckpointFailure) => this.onReport(msg));
    this.worker.on('error', (err) => {
      this.log.warn({ err }, 'the WAL checkpoint thread failed; SQLite checkpoints on its own again');
      this.fallBack();
    });
    this.worker.on('exit', () => {
      if (!this.closed) this.fallBack();
    });
  }

  /** Calls `listener` after each checkpoint with what it did (tests wait on it). */
  onCheckpoint(listener: (report: CheckpointReport) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops the thread. The server's connection does the last checkpoint when it closes. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const exited = once(this.worker, 'exit');
    this.worker.postMessage('close');
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    try {
      await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  private onReport(msg: CheckpointReport | CheckpointFailure): void {
    if (msg.type === 'failed') {
      // Said once per run of failures, not every second.
      if (!this.failing) this.log.warn({ err: msg.message }, 'a WAL checkpoint failed; retrying every second');
      this.failing = true;
      return;
    }
    if (this.failing) this.log.info('WAL checkpoints work again');
    this.failing = false;
    for (const listener of this.listeners) listener(msg);
  }

  /** Without the thread, the server's connection checkpoints as SQLite does by default. */
  private fallBack(): void {
    this.closed = true;
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`);
  }
}
