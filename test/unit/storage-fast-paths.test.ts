/**
 * The per-job bookkeeping's fast paths keep their promises: WAL checkpoints run on their own
 * thread (the server's connection never checkpoints in a commit) and fall back to SQLite's own
 * when that thread is lost; a small file is read whole on the event loop and a large one is not;
 * a build's measured size is read from memory once known, and is what was last recorded.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { WalCheckpointer } from '../../src/core/db-checkpointer.js';
import type { CheckpointReport } from '../../src/core/db-checkpoint-worker.js';
import { openDb } from '../../src/core/db.js';
import { readIfSmall } from '../../src/core/files/file-store.js';
import { RECENT_MAX_BYTES } from '../../src/core/files/recent-bytes.js';
import { DbBuildSizes } from '../../src/core/models/build-sizes.js';
import { pollUntil } from '../support/api.js';

const silent = pino({ level: 'silent' });
const dirs: string[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-fast-paths-'));
  dirs.push(dir);
  return dir;
}

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

void describe('WAL checkpoints on their own thread', () => {
  void it('the server connection never checkpoints; the thread copies every committed frame into the database', async () => {
    const dir = tempDir();
    const db = openDb(dir);
    const checkpointer = new WalCheckpointer(db, silent, 50);
    try {
      assert.equal(db.pragma('wal_autocheckpoint', { simple: true }), 0);
      const reports: CheckpointReport[] = [];
      checkpointer.onCheckpoint((r) => reports.push(r));
      const insert = db.prepare('INSERT INTO build_sizes (key, weight_gb, measured_at) VALUES (?, ?, ?)');
      // Well past SQLite's own 1000-page threshold, which this connection no longer acts on.
      for (let i = 0; i < 1500; i++) insert.run(`build-${i}`, i, i);
      const walBytes = fs.statSync(path.join(dir, 'kiapi.db-wal')).size;
      assert.ok(walBytes > 1000 * 4096, `the WAL holds the ${walBytes} bytes of 1500 commits`);
      const done = await pollUntil(
        async () => reports.at(-1),
        (r) => r !== undefined && r.walFrames > 0 && r.checkpointed === r.walFrames,
        'a checkpoint that copied every frame',
      );
      assert.ok(done!.walFrames >= 1000, JSON.stringify(done));
      // The rows are in the database file itself: a copy of it without the WAL holds them all.
      const copy = path.join(dir, 'copy.db');
      fs.copyFileSync(path.join(dir, 'kiapi.db'), copy);
      const alone = new Database(copy);
      try {
        assert.equal((alone.prepare('SELECT COUNT(*) AS n FROM build_sizes').get() as { n: number }).n, 1500);
      } finally {
        alone.close();
      }
    } finally {
      await checkpointer.close();
      db.close();
    }
    // Closed cleanly: the last connection checkpointed and removed the WAL.
    assert.equal(fs.existsSync(path.join(dir, 'kiapi.db-wal')), false);
  });

  void it('without its thread the connection checkpoints as SQLite does by default', async () => {
    const dir = tempDir();
    const db = openDb(dir);
    // The thread opens the database by its file name; a name that is gone stops it at once.
    fs.renameSync(path.join(dir, 'kiapi.db'), path.join(dir, 'moved.db'));
    const checkpointer = new WalCheckpointer(db, silent, 50);
    try {
      await pollUntil(
        async () => db.pragma('wal_autocheckpoint', { simple: true }),
        (pages) => pages === 1000,
        'the default checkpointing to be back',
      );
    } finally {
      await checkpointer.close();
      db.close();
    }
  });
});

void describe('small files are read whole, large ones are not', () => {
  void it('a file up to RECENT_MAX_BYTES comes back with its bytes and modification time; a larger one with its size only', () => {
    const dir = tempDir();
    const small = path.join(dir, 'small.png');
    const bytes = Buffer.from('\x89PNG\r\n\x1a\nsome pixels');
    fs.writeFileSync(small, bytes);
    const got = readIfSmall(small);
    assert.ok('bytes' in got);
    assert.deepEqual(got.bytes, bytes);
    assert.equal(got.modified.getTime(), fs.statSync(small).mtime.getTime());

    const edge = path.join(dir, 'edge.bin');
    fs.writeFileSync(edge, Buffer.alloc(RECENT_MAX_BYTES, 1));
    const atEdge = readIfSmall(edge);
    assert.ok('bytes' in atEdge && atEdge.bytes.length === RECENT_MAX_BYTES);

    const large = path.join(dir, 'large.bin');
    fs.writeFileSync(large, Buffer.alloc(RECENT_MAX_BYTES + 1, 2));
    assert.deepEqual(readIfSmall(large), { size: RECENT_MAX_BYTES + 1 });

    assert.throws(() => readIfSmall(path.join(dir, 'missing.png')), { code: 'ENOENT' });
  });
});

void describe('measured build sizes', () => {
  void it('a size is what was last recorded, from memory or from the table after a restart', () => {
    const dir = tempDir();
    const db = openDb(dir);
    try {
      const sizes = new DbBuildSizes(db);
      assert.equal(sizes.get('qwen/image@8'), undefined);
      // Not measured yet was remembered; recording it must replace that.
      sizes.record('qwen/image@8', 21.5);
      assert.equal(sizes.get('qwen/image@8'), 21.5);
      sizes.record('qwen/image@8', 22.25);
      assert.equal(sizes.get('qwen/image@8'), 22.25);
      assert.equal(new DbBuildSizes(db).get('qwen/image@8'), 22.25, 'read back from the table');
    } finally {
      db.close();
    }
  });
});
