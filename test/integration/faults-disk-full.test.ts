/**
 * A full disk while kiapi stores bytes, on real quota-limited storage:
 * - the whole data dir on a small tmpfs that the test fills (ENOSPC): a generation fails with
 *   `disk full while saving the image: …; free space in <dir>` (507 in sync mode, the same error
 *   on the failed job in async mode), an upload fails likewise, nothing partial is listed or left
 *   in the temp dir, the server keeps serving, and once space is freed everything works again with
 *   an intact SQLite database;
 * - only KIAPI_FILES_ROOT on its own full tmpfs (another filesystem than the temp dir): the copy
 *   into the store fails, no staging file is left, and it works once there is room;
 * - a file size limit (RLIMIT_FSIZE via `ulimit -f` on the spawned server, EFBIG): the same clear
 *   failure; this one needs no mount permission.
 * Mounting needs root (CAP_SYS_ADMIN), as on this project's machines and CI; where `mount` is not
 * permitted the tmpfs tests are skipped with the reason, and the EFBIG test still runs.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import {
  generateBody,
  getJob,
  ids,
  listFiles,
  listJobs,
  request,
  sendJson,
  submitAsync,
  uploadFile,
  waitFinished,
  type JobJson,
} from '../support/api.js';
import { spawnServer, startServer, tempDir, type TestServer } from '../support/server.js';

const MIB = 1024 * 1024;
const dirs: string[] = [];
const mounts: string[] = [];

after(() => {
  for (const m of mounts.reverse()) unmount(m);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function newDir(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}

/** Mounts a tmpfs of `bytes` at `dir`; returns why not when this machine does not allow it. */
function mountTmpfs(dir: string, bytes: number): string | null {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'tmpfs', dir], { stdio: 'pipe' });
    mounts.push(dir);
    return null;
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    return `cannot mount a tmpfs here (${stderr || (err as Error).message}); needs root with CAP_SYS_ADMIN`;
  }
}

function unmount(dir: string): void {
  for (let i = 0; i < 10; i++) {
    try {
      execFileSync('umount', [dir], { stdio: 'pipe' });
      return;
    } catch {
      execFileSync('sleep', ['0.2']);
    }
  }
  execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
}

function skipLoudly(t: TestContext, reason: string): void {
  console.error(`faults-disk-full: SKIPPED — ${reason}`);
  t.skip(reason);
}

function freeBytes(dir: string): number {
  const st = fs.statfsSync(dir);
  return st.bavail * st.bsize;
}

/** Fills `dir`'s filesystem until `leave` bytes are free; returns the filler's path. */
function fill(dir: string, leave: number): string {
  const filler = path.join(dir, 'filler.bin');
  const fd = fs.openSync(filler, 'w');
  try {
    const chunk = Buffer.alloc(64 * 1024, 0x5a);
    while (freeBytes(dir) > leave + chunk.length) fs.writeSync(fd, chunk);
  } finally {
    fs.closeSync(fd);
  }
  assert.ok(freeBytes(dir) <= leave + 64 * 1024, `filled to ${freeBytes(dir)} free bytes`);
  return filler;
}

interface Stored {
  jobs: string[];
  files: string[];
  blobs: string[];
  tmp: string[];
}

async function stored(s: TestServer): Promise<Stored> {
  return {
    jobs: ids(await listJobs(s.url)),
    files: ids(await listFiles(s.url)),
    blobs: fs.readdirSync(s.config.filesRoot).sort(),
    tmp: fs.readdirSync(s.config.tmpDir).sort(),
  };
}

function integrity(dataDir: string): string {
  const db = new Database(path.join(dataDir, 'kiapi.db'), { readonly: true });
  try {
    return db.pragma('integrity_check', { simple: true }) as string;
  } finally {
    db.close();
  }
}

const QG = '/v1/image/qwen/generate';
/** A 2048² preview PNG is ~300 KB: far more than the room left on the filled disk. */
const BIG = generateBody({ width: 2048, height: 2048, steps: 1, prompt: 'too big for the disk' });
const DISK_FULL_IMAGE = /^disk full while saving the image: .+; free space in \//;

void describe('disk full: the whole data dir on a small tmpfs (ENOSPC)', () => {
  void it('a generation and an upload fail with a clear 507, nothing partial stays, the server keeps serving and recovers', async (t) => {
    const mnt = newDir('kiapi-diskfull-');
    const why = mountTmpfs(mnt, 8 * MIB);
    if (why) return skipLoudly(t, why);
    const s = await startServer({}, { dataDir: mnt });
    try {
      // Work from before the disk filled up must stay intact.
      const early = await sendJson<JobJson>('POST', `${s.url}${QG}`, generateBody({ steps: 1, prompt: 'before the disk filled' }), { accept: 'application/json' });
      assert.equal(early.status, 200, early.bytes.toString());
      const earlyBytes = (await request(`${s.url}/v1/files/${early.json.artifacts[0]!}/download`)).bytes;

      // 192 KiB left: room for SQLite's small writes, not for a 2048² image.
      const filler = fill(mnt, 192 * 1024);
      const before = await stored(s);

      const sync = await sendJson<{ detail: string }>('POST', `${s.url}${QG}`, BIG, { accept: 'application/json' });
      assert.equal(sync.status, 507, sync.bytes.toString());
      assert.match(sync.json.detail, DISK_FULL_IMAGE);
      assert.match(sync.json.detail, /no space left on device|ENOSPC/i);
      assert.ok(sync.json.detail.endsWith(`free space in ${s.config.tmpDir}`) || sync.json.detail.endsWith(`free space in ${s.config.filesRoot}`), sync.json.detail);
      const failed = (await listJobs(s.url))[0]!;
      assert.equal(failed.status, 'failed');
      assert.equal(failed.error, sync.json.detail, 'the job records the same message');
      assert.deepEqual(failed.artifacts, []);

      const asyncId = await submitAsync(s.url, { ...BIG, seed: 2 });
      const asyncJob = await waitFinished(s.url, asyncId);
      assert.equal(asyncJob.status, 'failed');
      assert.match(asyncJob.error ?? '', DISK_FULL_IMAGE);

      const upload = await uploadFile(s.url, { filename: 'big.bin', contentType: 'application/octet-stream', data: Buffer.alloc(512 * 1024, 3) });
      assert.equal(upload.status, 507, upload.bytes.toString());
      assert.match((upload.json as unknown as { detail: string }).detail, /^disk full while saving the upload: .+; free space in \//);

      // Nothing partial: the only new records are the two failed jobs; no blob, no temp file.
      const now = await stored(s);
      assert.deepEqual(now.files, before.files);
      assert.deepEqual(now.blobs, before.blobs);
      assert.deepEqual(now.tmp, [], 'temp files of the failed writes are removed');
      assert.deepEqual(now.jobs, [...before.jobs, failed.id, asyncId].sort());

      // Still serving while the disk is full.
      assert.equal((await request(`${s.url}/health`)).status, 200);
      assert.equal((await getJob(s.url, early.json.id)).status, 'succeeded');
      assert.ok((await request(`${s.url}/v1/files/${early.json.artifacts[0]!}/download`)).bytes.equals(earlyBytes));

      // Space freed: the same work succeeds, and the database is intact.
      fs.rmSync(filler);
      const again = await sendJson<JobJson>('POST', `${s.url}${QG}`, { ...BIG, seed: 3 }, { accept: 'application/json' });
      assert.equal(again.status, 200, again.bytes.toString());
      assert.equal(again.json.status, 'succeeded');
      assert.equal((await uploadFile(s.url, { filename: 'ok.bin', data: Buffer.alloc(512 * 1024, 4) })).status, 200);
      assert.equal(integrity(mnt), 'ok');
    } finally {
      await s.close();
    }
  });
});

void describe('disk full: KIAPI_FILES_ROOT on its own full filesystem', () => {
  void it('the copy into the store fails with a clear error naming the files root; no staging file; works once there is room', async (t) => {
    const dataDir = newDir('kiapi-diskfull-data-');
    const filesRoot = newDir('kiapi-diskfull-files-');
    const why = mountTmpfs(filesRoot, 2 * MIB);
    if (why) return skipLoudly(t, why);
    const s = await startServer({ KIAPI_FILES_ROOT: filesRoot }, { dataDir });
    try {
      // Another filesystem than the temp dir: saving works by copying (a rename cannot cross).
      const ok = await sendJson<JobJson>('POST', `${s.url}${QG}`, generateBody({ steps: 1 }), { accept: 'application/json' });
      assert.equal(ok.status, 200, ok.bytes.toString());
      assert.deepEqual(fs.readdirSync(filesRoot).filter((n) => n.startsWith('file_')), ok.json.artifacts);

      const filler = fill(filesRoot, 64 * 1024);
      const before = await stored(s);
      const res = await sendJson<{ detail: string }>('POST', `${s.url}${QG}`, BIG, { accept: 'application/json' });
      assert.equal(res.status, 507, res.bytes.toString());
      assert.match(res.json.detail, DISK_FULL_IMAGE);
      assert.ok(res.json.detail.endsWith(`; free space in ${filesRoot}`), res.json.detail);
      const now = await stored(s);
      assert.deepEqual(now.files, before.files);
      assert.deepEqual(now.blobs, before.blobs, 'no staging file or partial blob in the files root');
      assert.deepEqual(now.tmp, []);

      fs.rmSync(filler);
      const again = await sendJson<JobJson>('POST', `${s.url}${QG}`, { ...BIG, seed: 5 }, { accept: 'application/json' });
      assert.equal(again.status, 200, again.bytes.toString());
      const dl = await request(`${s.url}/v1/files/${again.json.artifacts[0]!}/download`);
      assert.equal(dl.bytes.length, (again.json.result as { image_bytes: number }).image_bytes);
    } finally {
      await s.close();
    }
  });
});

void describe('file size limit: RLIMIT_FSIZE on the server process (EFBIG)', () => {
  void it('a generation over the limit fails with the same clear error; small work still succeeds', async () => {
    const dataDir = newDir('kiapi-fsize-');
    // 256 KiB per file: the database stays far below it; a 2048² image does not.
    const s = await spawnServer({ KIAPI_DATA_DIR: dataDir, KIAPI_LOG_LEVEL: 'warn' }, 30_000, { prefix: ['bash', '-c', 'ulimit -f 256 && exec "$@"', 'kiapi'] });
    try {
      const res = await sendJson<{ detail: string }>('POST', `${s.url}${QG}`, BIG, { accept: 'application/json' });
      assert.equal(res.status, 507, res.bytes.toString());
      assert.match(res.json.detail, DISK_FULL_IMAGE);
      assert.match(res.json.detail, /EFBIG|file too large/i);
      assert.deepEqual(await listFiles(s.url), []);
      assert.deepEqual(fs.readdirSync(path.join(dataDir, 'tmp')), []);
      assert.deepEqual(fs.readdirSync(path.join(dataDir, 'files')), []);
      const small = await sendJson<JobJson>('POST', `${s.url}${QG}`, generateBody({ steps: 1 }), { accept: 'application/json' });
      assert.equal(small.status, 200, small.bytes.toString());
      assert.equal((await listFiles(s.url)).length, 1);
      assert.doesNotMatch(s.output(), /"level":(50|60).*unhandled/, 'no unhandled error in the server log');
    } finally {
      await s.stop('SIGTERM');
    }
    assert.equal(integrity(dataDir), 'ok');
  });
});
