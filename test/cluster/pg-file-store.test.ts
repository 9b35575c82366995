/**
 * The cluster's Files API store against a real PostgreSQL and a real S3Proxy
 * (test/cluster/services.ts; run test/cluster/install.sh first): records and blobs written and
 * read as the single-node store does, two nodes (two stores with their own caches) sharing them,
 * holds taken on one node and deletes made on another, and both services killed mid-use.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import type pg from 'pg';
import { pino } from 'pino';
import sharp from 'sharp';
import { InputCache } from '../../src/cluster/input-cache.js';
import { PgFileStore } from '../../src/cluster/pg-file-store.js';
import { migrate, openPool } from '../../src/cluster/pg.js';
import { S3BlobStore } from '../../src/cluster/s3-blob-store.js';
import { CLUSTER_MIGRATIONS } from '../../src/cluster/schema.js';
import { sanitizeFilename } from '../../src/core/files/content-type.js';
import { InputError, NotFoundError, TooLargeError, UnavailableError } from '../../src/core/errors.js';
import { startPostgres, startS3, waitFor, type Postgres, type S3Server } from './services.js';

const log = pino({ level: 'silent' });
const MIB = 1024 * 1024;
let db: Postgres;
let s3: S3Server;
let pool: pg.Pool;
let blobs: S3BlobStore;
/** Two nodes: one database and one object store, each its own cache and temp dir. */
let nodeA: PgFileStore;
let nodeB: PgFileStore;
let png: Buffer;
const dirs: string[] = [];

function tmpDir(what: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kiapi-pg-files-${what}-`));
  dirs.push(dir);
  return dir;
}

function node(name: string, p: pg.Pool = pool): PgFileStore {
  return new PgFileStore({
    pool: p,
    blobs,
    cache: new InputCache({ dir: tmpDir(`${name}-cache`), maxBytes: 64 * MIB }),
    tmpDir: tmpDir(`${name}-tmp`),
    nodeId: name,
    log,
  });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** `n` bytes whose value depends on their position, so a dropped or moved byte changes them. */
function bytes(n: number, salt = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + salt) % 251;
  return b;
}

async function readBlob(id: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of await blobs.get(id)) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function blobExists(id: string): Promise<boolean> {
  try {
    await readBlob(id);
    return true;
  } catch (err) {
    if (err instanceof NotFoundError) return false;
    throw err;
  }
}

async function allBlobs(): Promise<string[]> {
  const ids: string[] = [];
  for await (const id of blobs.listBefore(new Date(Date.now() + 3600_000))) ids.push(id);
  return ids.sort();
}

async function fileCount(): Promise<number> {
  return (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM files')).rows[0]!.n;
}

/** The error a promise rejects with (the test fails if it resolves). */
async function failure(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => assert.fail('expected a failure'),
    (err: unknown) => err as Error,
  );
}

before(async () => {
  [db, s3] = await Promise.all([startPostgres(), startS3()]);
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  pool = openPool(db.url, log);
  await migrate(pool, CLUSTER_MIGRATIONS);
  blobs = await S3BlobStore.open({ bucket: 'kiapi-files', endpoint: s3.endpoint, region: s3.region });
  nodeA = node('node-a');
  nodeB = node('node-b');
  png = await sharp({ create: { width: 8, height: 6, channels: 3, background: '#3366cc' } }).png().toBuffer();
});

after(async () => {
  blobs?.close();
  await pool?.end().catch(() => undefined);
  await Promise.all([db?.stop(), s3?.stop()]);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

beforeEach(async () => {
  // Each test starts from an empty store (blobs of earlier tests are deleted with their records).
  for (const f of (await nodeA.list()).data) await nodeA.delete(f.file_id);
  await pool.query('DELETE FROM file_holds');
  await nodeA.sweepDeleted();
});

void describe('PgFileStore: records and blobs', () => {
  void it('saves (stream, bytes, file), reads and deletes as the single-node store does', async () => {
    const streamed = await nodeA.saveStream(Readable.from([png.subarray(0, 5), png.subarray(5)]), { filename: '../secret dir/pic.png', meta: { a: 1 } }, 10 * MIB);
    assert.equal(streamed.filename, sanitizeFilename('../secret dir/pic.png'));
    assert.equal(streamed.content_type, 'image/png', 'sniffed from the bytes');
    assert.equal(streamed.size, png.length);
    assert.deepEqual(streamed.meta, { a: 1 });
    assert.deepEqual(await nodeB.get(streamed.file_id), streamed);
    assert.equal(await nodeB.sha256(streamed.file_id), sha256(png), 'digest recorded while writing');
    assert.deepEqual(await readBlob(streamed.file_id), png);

    // A stated type wins, with parameters dropped and lower-cased; octet-stream counts as unstated.
    const stated = await nodeA.saveBytes(Buffer.from('hello'), { filename: 'a.txt', contentType: 'Text/Plain; charset=utf-8', jobId: 'job_0123' });
    assert.equal(stated.content_type, 'text/plain');
    const byName = await nodeA.saveBytes(Buffer.from('{}'), { filename: 'x.json', contentType: 'application/octet-stream' });
    assert.equal(byName.content_type, 'application/json', 'from the extension');
    assert.deepEqual(await nodeB.artifactOf('job_0123'), stated);
    assert.equal(await nodeB.artifactOf('job_ffff'), undefined);

    const local = path.join(nodeA.tmpDir, 'engine-output.png');
    fs.writeFileSync(local, png);
    const saved = await nodeA.saveFile(local, { filename: 'out.png', contentType: null, jobId: 'job_0456' });
    assert.equal(saved.content_type, 'image/png');
    assert.equal(fs.existsSync(local), false, 'the local file is uploaded, then removed');
    assert.deepEqual(await readBlob(saved.file_id), png);

    await assert.rejects(nodeB.get('file_00'), (e: Error) => e instanceof NotFoundError && e.message === "unknown file 'file_00'");
    await assert.rejects(nodeB.get('../etc'), NotFoundError);
    await assert.rejects(
      nodeB.getForInput('nope', 'init_image'),
      (e: Error) => e instanceof InputError && e.message === "init_image file_id 'nope' is not a file id (expected file_ followed by hex digits)",
    );
    await assert.rejects(nodeB.getForInput('file_00', 'init_image'), (e: Error) => e instanceof InputError && e.message === "unknown init_image file_id 'file_00'");
    assert.deepEqual(await nodeB.getForInput(saved.file_id, 'init_image'), saved);

    await nodeA.delete(saved.file_id);
    await assert.rejects(nodeB.get(saved.file_id), NotFoundError);
    assert.equal(await blobExists(saved.file_id), false, 'no hold: the blob goes at once');
    await assert.rejects(nodeB.delete(saved.file_id), (e: Error) => e instanceof NotFoundError && e.message === `unknown file '${saved.file_id}'`);
    // Deleting through the node that stored it forgets its recent bytes.
    assert.equal(nodeA.takeRecent(saved.file_id), undefined);

    await nodeA.discard([stated.file_id, 'not-an-id', 'file_00']);
    await assert.rejects(nodeA.get(stated.file_id), NotFoundError);
    assert.equal(await blobExists(stated.file_id), false);
  });

  void it('lists newest first with the type, family and job filters and keyset cursors', async () => {
    const saved = [];
    for (let i = 0; i < 5; i++) {
      const image = i % 2 === 0;
      saved.push(
        await nodeA.saveBytes(image ? png : Buffer.from(`text ${i}`), { filename: image ? `p${i}.png` : `t${i}.txt`, jobId: i < 3 ? 'job_aa' : 'job_bb' }),
      );
    }
    const ids = (page: { data: { file_id: string }[] }) => page.data.map((f) => f.file_id);
    const newestFirst = saved.map((f) => f.file_id).reverse();
    assert.deepEqual(ids(await nodeB.list()), newestFirst);
    assert.deepEqual(ids(await nodeB.list({}, { contentType: 'IMAGE/PNG' })), [saved[4]!, saved[2]!, saved[0]!].map((f) => f.file_id));
    assert.deepEqual(ids(await nodeB.list({}, { contentType: 'text/*' })), [saved[3]!, saved[1]!].map((f) => f.file_id));
    assert.deepEqual(ids(await nodeB.list({}, { contentType: 'image/*', jobId: 'job_aa' })), [saved[2]!, saved[0]!].map((f) => f.file_id));
    assert.deepEqual(ids(await nodeB.list({}, { contentType: 'video/*' })), []);

    const first = await nodeB.list({ limit: 2 });
    assert.deepEqual(ids(first), newestFirst.slice(0, 2));
    assert.equal(first.hasMore, true);
    const second = await nodeB.list({ limit: 2, after: newestFirst[1] });
    assert.deepEqual(ids(second), newestFirst.slice(2, 4));
    assert.equal(second.hasMore, true);
    const last = await nodeB.list({ limit: 2, after: newestFirst[3] });
    assert.deepEqual(ids(last), newestFirst.slice(4));
    assert.equal(last.hasMore, false);
    const back = await nodeB.list({ limit: 2, before: newestFirst[4] });
    assert.deepEqual(ids(back), newestFirst.slice(2, 4));
    assert.equal(back.hasMore, true);
    await assert.rejects(
      nodeB.list({ limit: 2, after: 'file_00' }),
      (e: Error) => e instanceof InputError && e.message.startsWith("after: no file 'file_00'"),
    );
  });

  void it('over the size limit: TooLargeError as the single-node store words it, no record and no blob', async () => {
    const before = await allBlobs();
    const err = await failure(nodeA.saveStream(Readable.from([bytes(600), bytes(600)]), { filename: 'big.bin' }, 1000));
    assert.ok(err instanceof TooLargeError, `${err.name}: ${err.message}`);
    assert.equal(err.message, 'upload is larger than the 1000 byte limit (KIAPI_MAX_UPLOAD_BYTES)');
    assert.equal(await fileCount(), 0);
    assert.deepEqual(await allBlobs(), before);
  });

  void it('a client gone mid-upload: its error, no record and no blob', async () => {
    const before = await allBlobs();
    const gone = Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
    const source = new Readable({ read() {} });
    source.push(bytes(64 * 1024));
    setImmediate(() => source.destroy(gone));
    const err = await failure(nodeA.saveStream(source, { filename: 'cut.bin' }, 10 * MIB));
    assert.equal(err, gone);
    assert.equal(await fileCount(), 0);
    assert.deepEqual(await allBlobs(), before);
  });
});

void describe('PgFileStore: two nodes', () => {
  void it('a file saved on one node is listed and read (verified local copy) on the other', async () => {
    // Past one 5 MiB part: a multipart upload.
    const big = bytes(6 * MIB + 123, 7);
    const saved = await nodeA.saveStream(Readable.from([big.subarray(0, MIB), big.subarray(MIB)]), { filename: 'weights.safetensors' }, 100 * MIB);
    assert.deepEqual(
      (await nodeB.list()).data.map((f) => f.file_id),
      [saved.file_id],
    );
    const onB = await nodeB.localPath(saved.file_id);
    assert.ok(onB.startsWith(nodeB.root + path.sep), `${onB} is in node B's cache`);
    const read = fs.readFileSync(onB);
    assert.equal(read.length, big.length);
    assert.equal(sha256(read), sha256(big));
    assert.equal(path.basename(onB), sha256(big), 'the copy is named by its verified digest');
    // Last-Modified comes from the file's creation, the same on every node.
    assert.ok(Math.abs(fs.statSync(onB).mtimeMs - saved.created_at * 1000) < 1, `mtime ${fs.statSync(onB).mtimeMs} vs created_at ${saved.created_at}`);
    const onA = await nodeA.localPath(saved.file_id);
    assert.equal(fs.statSync(onA).mtimeMs, fs.statSync(onB).mtimeMs);

    // The sync answer: the node that stored an output keeps its bytes, once; another node has none.
    const out = await nodeA.saveBytes(png, { filename: 'out.png' });
    assert.equal(nodeB.takeRecent(out.file_id), undefined);
    const kept = nodeA.takeRecent(out.file_id);
    assert.deepEqual(kept?.bytes, png);
    assert.equal(kept?.modified.getTime(), new Date(out.created_at * 1000).getTime());
    assert.equal(nodeA.takeRecent(out.file_id), undefined, 'handed over once');

    await assert.rejects(nodeB.localPath('file_00'), (e: Error) => e instanceof NotFoundError && e.message === "unknown file 'file_00'");
  });

  void it('a record without a digest gets one computed from the blob and kept', async () => {
    const saved = await nodeA.saveBytes(png, { filename: 'old.png' });
    await pool.query('UPDATE files SET sha256 = NULL WHERE id = $1', [saved.file_id]);
    const local = await nodeB.localPath(saved.file_id);
    assert.deepEqual(fs.readFileSync(local), png);
    const row = await pool.query<{ sha256: string }>('SELECT sha256 FROM files WHERE id = $1', [saved.file_id]);
    assert.equal(row.rows[0]!.sha256, sha256(png));
  });

  void it('a hold on node A keeps the blob of a file node B deletes, until A releases it', async () => {
    const saved = await nodeA.saveBytes(png, { filename: 'input.png' });
    const release = await nodeA.hold([saved.file_id]);
    await nodeA.delete(saved.file_id);
    await assert.rejects(nodeB.get(saved.file_id), NotFoundError);
    assert.deepEqual((await nodeA.list()).data, [], 'no node lists it');
    assert.equal(await blobExists(saved.file_id), true, 'held: the bytes stay');
    // A prune on either node leaves it too.
    await nodeB.prune(0, Date.now() / 1000 + 60);
    assert.equal(await blobExists(saved.file_id), true);
    // The job's node still reads its input, by the digest recorded when it was accepted.
    const input = await nodeB.acquireInput(saved.file_id, sha256(png));
    assert.deepEqual(fs.readFileSync(input.path), png);
    input.release();
    await release();
    assert.equal(await blobExists(saved.file_id), false, 'released: the bytes go');
    await release();
  });

  void it('holds racing deletes on another node: a hold taken keeps its blob, a delete that won leaves no hold', async () => {
    const files = [];
    for (let i = 0; i < 12; i++) files.push(await nodeA.saveBytes(bytes(100, i), { filename: `race${i}.bin` }));
    const releases = await Promise.all(
      files.map(async (f) => {
        const [release] = await Promise.all([nodeA.hold([f.file_id]), nodeB.delete(f.file_id)]);
        return release;
      }),
    );
    for (const f of files) {
      const held = (await pool.query('SELECT 1 FROM file_holds WHERE file_id = $1', [f.file_id])).rowCount === 1;
      // Held: the delete saw the hold and kept the bytes. Not held: the delete came first and
      // the bytes are gone with nothing left to sweep.
      assert.equal(await blobExists(f.file_id), held, `${f.file_id} held=${held}`);
      const pending = (await pool.query('SELECT 1 FROM deleted_blobs WHERE file_id = $1', [f.file_id])).rowCount === 1;
      assert.equal(pending, held);
    }
    for (const release of releases) await release();
    for (const f of files) assert.equal(await blobExists(f.file_id), false);
    assert.equal((await pool.query('SELECT 1 FROM deleted_blobs')).rowCount, 0);
  });

  void it('holds by two holders: the blob goes with the last release; a dead node’s holds are released by id', async () => {
    const saved = await nodeA.saveBytes(png, { filename: 'shared.png' });
    const releaseA = await nodeA.hold([saved.file_id, saved.file_id]);
    await nodeB.hold([saved.file_id]);
    await nodeA.delete(saved.file_id);
    await releaseA();
    assert.equal(await blobExists(saved.file_id), true, 'node B still holds it');
    // Node B died without releasing: its holds are released by its node id.
    await nodeA.releaseNode('node-b');
    assert.equal(await blobExists(saved.file_id), false);
    assert.equal((await pool.query('SELECT 1 FROM file_holds')).rowCount, 0);
    assert.equal((await pool.query('SELECT 1 FROM deleted_blobs')).rowCount, 0);
  });

  void it('prune deletes expired files on any node, skipping held ones until they are released', async () => {
    const held = await nodeA.saveBytes(png, { filename: 'held.png' });
    const free = await nodeA.saveBytes(Buffer.from('free'), { filename: 'free.txt' });
    const fresh = await nodeA.saveBytes(Buffer.from('fresh'), { filename: 'fresh.txt' });
    await pool.query('UPDATE files SET created_at = created_at - 1000 WHERE id = ANY($1)', [[held.file_id, free.file_id]]);
    const release = await nodeA.hold([held.file_id]);
    // Both nodes prune at once: each file is deleted once.
    const counts = await Promise.all([nodeA.prune(500), nodeB.prune(500)]);
    assert.equal(counts[0] + counts[1], 1);
    await assert.rejects(nodeA.get(free.file_id), NotFoundError);
    assert.equal(await blobExists(free.file_id), false);
    assert.equal((await nodeB.get(held.file_id)).file_id, held.file_id, 'held: kept whole, record included');
    assert.equal(await blobExists(held.file_id), true);
    assert.deepEqual(await nodeB.get(fresh.file_id), fresh);
    await release();
    assert.equal(await nodeB.prune(500), 1);
    await assert.rejects(nodeA.get(held.file_id), NotFoundError);
    assert.equal(await blobExists(held.file_id), false);
  });

  void it('the orphan sweep removes old blobs no record names, and only those', async () => {
    const kept = await nodeA.saveBytes(png, { filename: 'kept.png' });
    const deferred = await nodeA.saveBytes(png, { filename: 'deferred.png' });
    await nodeA.hold([deferred.file_id]);
    await nodeA.delete(deferred.file_id);
    // A node died between the upload and the record.
    const orphan = 'file_0000000000000000000000000000dead';
    await blobs.put(orphan, Readable.from([Buffer.from('never recorded')]));
    assert.equal(await nodeB.sweepOrphans(), 0, 'younger than a day: maybe an upload about to be recorded');
    await waitFor('the orphan to be older than the sweep bound', async () => {
      for await (const id of blobs.listBefore(new Date(Date.now() - 1000))) if (id === orphan) return true;
      return false;
    });
    assert.equal(await nodeB.sweepOrphans(1), 1);
    assert.equal(await blobExists(orphan), false);
    assert.equal(await blobExists(kept.file_id), true);
    assert.equal(await blobExists(deferred.file_id), true, 'a held blob of a deleted file is not an orphan');
  });
});

void describe('PgFileStore: faults', () => {
  void it('the object store killed: saves and fetches are UnavailableError, nothing is half-stored', async () => {
    const saved = await nodeA.saveBytes(bytes(2000, 3), { filename: 'before.bin' });
    const doomed = await nodeA.saveBytes(bytes(2000, 4), { filename: 'doomed.bin' });
    const records = await fileCount();
    const blobsBefore = await allBlobs();
    await s3.kill();
    try {
      const upload = await failure(nodeA.saveStream(Readable.from([bytes(3000)]), { filename: 'up.bin' }, 10 * MIB));
      assert.ok(upload instanceof UnavailableError, `${upload.name}: ${upload.message}`);
      assert.match(upload.message, /object store at http:\/\/127\.0\.0\.1:\d+\/kiapi-files is unreachable/);
      const output = await failure(nodeA.saveBytes(png, { filename: 'out.png' }));
      assert.ok(output instanceof UnavailableError, `${output.name}: ${output.message}`);
      // Node B has no copy yet: it must fetch one.
      const fetch = await failure(nodeB.localPath(saved.file_id));
      assert.ok(fetch instanceof UnavailableError, `${fetch.name}: ${fetch.message}`);
      assert.equal(fs.readdirSync(nodeB.root).filter((n) => !n.startsWith('.')).includes(sha256(bytes(2000, 3))), false);
      assert.equal(await fileCount(), records, 'no record for a blob that was not stored');
      // A delete meanwhile succeeds (the record goes); its blob is removed by a later sweep.
      await nodeA.delete(doomed.file_id);
      await assert.rejects(nodeB.get(doomed.file_id), NotFoundError);
    } finally {
      await s3.restart();
    }
    assert.equal(await blobExists(doomed.file_id), true);
    assert.equal(await nodeB.prune(3600), 0);
    assert.equal(await blobExists(doomed.file_id), false, 'swept by the next prune, on any node');
    assert.deepEqual(await allBlobs(), blobsBefore.filter((id) => id !== doomed.file_id), 'no blob appeared');
    assert.deepEqual(fs.readFileSync(await nodeB.localPath(saved.file_id)), bytes(2000, 3));
  });

  void it('the database killed: reads and saves are 503s, and a blob whose record failed is deleted', async () => {
    const saved = await nodeA.saveBytes(png, { filename: 'before.png' });
    const blobsBefore = await allBlobs();
    await db.kill();
    try {
      for (const attempt of [
        () => nodeB.get(saved.file_id),
        () => nodeB.list({ limit: 5 }),
        () => nodeB.localPath(saved.file_id),
        () => nodeB.delete(saved.file_id),
        () => nodeB.hold([saved.file_id]),
        () => nodeB.saveBytes(png, { filename: 'during.png' }),
        () => nodeB.saveStream(Readable.from([png]), { filename: 'during.png' }, MIB),
      ]) {
        const err = await failure(attempt());
        assert.ok(err instanceof UnavailableError, `${err.name}: ${err.message}`);
        assert.equal(err.status, 503);
        assert.match(err.message, /^the shared database is unreachable/);
      }
      assert.deepEqual(await allBlobs(), blobsBefore, 'the uploads whose records failed were deleted');
    } finally {
      await db.restart();
    }
    await waitFor('the pool to work again', async () => (await pool.query('SELECT 1')).rowCount === 1);
    assert.deepEqual(await nodeB.get(saved.file_id), saved);
  });
});
