/**
 * The thread of WalCheckpointer (db-checkpointer.ts): its own connection to the database runs a
 * PASSIVE checkpoint every `intervalMs` and reports each to the main thread. A PASSIVE checkpoint
 * copies what it can of the WAL into the database without waiting for, or blocking, the main
 * connection's readers and writer.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';

export interface CheckpointerData {
  file: string;
  intervalMs: number;
}

/** What one checkpoint did: the WAL's frames, and how many of them are now in the database. */
export interface CheckpointReport {
  type: 'checkpoint';
  walFrames: number;
  checkpointed: number;
}

const { file, intervalMs } = workerData as CheckpointerData;
const port = parentPort!;
const db = new Database(file, { fileMustExist: true });
// Another connection's commit holds the locks a checkpoint needs for a moment at most.
db.pragma('busy_timeout = 5000');

/** A checkpoint that failed (the disk, most likely); the next one tries again. */
export interface CheckpointFailure {
  type: 'failed';
  message: string;
}

function checkpoint(): void {
  let report: CheckpointReport | CheckpointFailure;
  try {
    const [row] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
    report = { type: 'checkpoint', walFrames: row?.log ?? 0, checkpointed: row?.checkpointed ?? 0 };
  } catch (err) {
    report = { type: 'failed', message: err instanceof Error ? err.message : String(err) };
  }
  port.postMessage(report);
}

const timer = setInterval(checkpoint, intervalMs);
port.on('message', (msg: unknown) => {
  if (msg !== 'close') return;
  clearInterval(timer);
  db.close();
  port.close();
});
