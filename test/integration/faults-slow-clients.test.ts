/**
 * Slow and stalled clients, with short timeouts (KIAPI_IDLE_TIMEOUT_S=2, KIAPI_REQUEST_TIMEOUT_S=5):
 * - an upload that stalls is cut after the idle timeout; its temp file is removed, nothing listed;
 * - an upload that trickles (never idle, never done) is answered 408 after the request timeout;
 * - a client that stops reading a large download is cut after the idle timeout and the server's
 *   file handle is released;
 * - meanwhile other clients are served normally (/health, a generation, a download);
 * - a sync generation longer than the idle timeout is not cut: the wait is not a stall.
 * The server runs in-process, so the test can look at its open file descriptors (/proc/self/fd).
 * Robust on a loaded machine: every wait is for a condition, and the test's own pacing (a byte
 * every 200 ms) keeps a 10× margin to the idle timeout. Nothing large goes over HTTP within the
 * short request timeout (the large download is stored directly), which once made this file flaky.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { BOUNDARY, generateBody, ids, listFiles, pollUntil, request, sendJson, type FileRecordJson, type JobJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';

const MIB = 1024 * 1024;
let s: TestServer;
const sockets: net.Socket[] = [];

before(async () => {
  s = await startServer({ KIAPI_IDLE_TIMEOUT_S: '2', KIAPI_REQUEST_TIMEOUT_S: '5', KIAPI_PREVIEW_STEP_MS: '50' });
});

after(async () => {
  for (const sock of sockets) sock.destroy();
  await s.close();
});

/** A raw TCP connection to the server, destroyed in `after` whatever happens. */
async function connect(): Promise<net.Socket> {
  const sock = net.connect(s.port, '127.0.0.1');
  sockets.push(sock);
  sock.on('error', () => undefined); // resets by the server are what some tests wait for
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return sock;
}

function closed(sock: net.Socket): Promise<void> {
  return new Promise((resolve) => (sock.destroyed || sock.closed ? resolve() : sock.once('close', () => resolve())));
}

/** Resolves once `sock` closes, or rejects after a generous deadline (a hang guard, not a timing check). */
async function closedWithin(sock: net.Socket, what: string, ms = 30_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([closed(sock), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still open after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Paths under `dir` this process (the in-process server) has open. */
function openFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir + path.sep)) out.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

function multipartHead(filename: string): Buffer {
  return Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`);
}

function uploadRequestHead(contentLength: number): string {
  return `POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${contentLength}\r\n\r\n`;
}

/** Other clients get normal answers while a slow one is connected. */
async function othersAreServed(): Promise<void> {
  assert.equal((await request(`${s.url}/health`)).status, 200);
  const gen = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ steps: 1 }), { accept: 'application/json' });
  assert.equal(gen.status, 200, gen.bytes.toString());
  const dl = await request(`${s.url}/v1/files/${gen.json.artifacts[0]!}/download`);
  assert.equal(dl.status, 200);
}

void describe('slow uploads', () => {
  void it('a stalled upload is cut after KIAPI_IDLE_TIMEOUT_S; its temp file is removed and nothing is listed', async () => {
    const before = ids(await listFiles(s.url));
    const sock = await connect();
    const head = multipartHead('stalled.bin');
    sock.write(uploadRequestHead(head.length + 8 * MIB));
    sock.write(head);
    sock.write(Buffer.alloc(256 * 1024, 1)); // part of the body, then nothing more
    await pollUntil(async () => openFilesUnder(s.config.tmpDir), (open) => open.length > 0, 'the upload to reach a temp file');
    await othersAreServed();
    await closedWithin(sock, 'a stalled upload');
    await pollUntil(async () => openFilesUnder(s.config.tmpDir), (open) => open.length === 0, 'the temp file handle to be closed');
    await pollUntil(async () => fs.readdirSync(s.config.tmpDir), (names) => names.length === 0, 'the temp file to be removed');
    const after = ids(await listFiles(s.url));
    // othersAreServed stored one artifact; the upload stored nothing.
    assert.equal(after.filter((id) => !before.includes(id)).length, 1);
    assert.ok((await listFiles(s.url)).every((f) => f.filename !== 'stalled.bin'));
  });

  void it('an upload that trickles (never idle, never complete) → 408 after KIAPI_REQUEST_TIMEOUT_S; nothing stored', async () => {
    const before = ids(await listFiles(s.url));
    const sock = await connect();
    let answer = '';
    sock.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    const head = multipartHead('trickle.bin');
    sock.write(uploadRequestHead(head.length + MIB));
    sock.write(head);
    // A byte every 200 ms keeps the connection busy (idle timeout 2 s) but never finishes the body.
    const deadline = Date.now() + 30_000;
    while (!sock.destroyed && !sock.closed && answer === '' && Date.now() < deadline) {
      sock.write(Buffer.from('x'));
      await sleep(200);
    }
    await closedWithin(sock, 'a trickling upload');
    assert.match(answer, /^HTTP\/1\.1 408 /, answer);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { detail: string };
    assert.match(body.detail, /KIAPI_REQUEST_TIMEOUT_S/);
    await pollUntil(async () => fs.readdirSync(s.config.tmpDir), (names) => names.length === 0, 'the temp file to be removed');
    assert.deepEqual(ids(await listFiles(s.url)), before);
  });
});

void describe('slow readers', () => {
  void it('a client that stops reading a large download is cut after KIAPI_IDLE_TIMEOUT_S; the file handle is released', async () => {
    // Large enough to fill every socket buffer between the server and a client that reads nothing.
    // Stored directly, not uploaded: a 64 MiB upload on a loaded machine could outlast the 5 s
    // request timeout this server runs with, and uploads are not what this test is about.
    const source = path.join(s.config.tmpDir, 'large-source.part');
    fs.writeFileSync(source, Buffer.alloc(64 * MIB, 9));
    const record: FileRecordJson = await s.ctx.files.saveFile(source, { filename: 'large.bin', contentType: 'application/octet-stream' });
    assert.equal(record.size, 64 * MIB);
    const blob = path.join(s.config.filesRoot, record.file_id);

    const sock = await connect();
    let received = 0;
    sock.on('data', (d: Buffer) => {
      received += d.length;
      sock.pause(); // read the first chunk, then stop reading
    });
    sock.write(`GET /v1/files/${record.file_id}/download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    await pollUntil(async () => received, (n) => n > 0, 'the first bytes of the download');
    assert.ok(openFilesUnder(s.config.filesRoot).includes(blob), 'the server is reading the blob');
    await othersAreServed();
    // The server gives up on the stalled reader: its read stream of the blob is closed.
    await pollUntil(async () => openFilesUnder(s.config.filesRoot).includes(blob), (open) => !open, 'the blob to be closed by the server');
    assert.ok(received < 64 * MIB, `the client read ${received} bytes, not the whole file`);
    sock.destroy();
    await othersAreServed();
  });
});

void describe('long sync waits are not stalls', () => {
  void it('a sync generation that takes longer than KIAPI_IDLE_TIMEOUT_S still gets its image', async () => {
    // 80 steps × 50 ms = 4 s with no byte on the connection, twice the idle timeout.
    const res = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, generateBody({ steps: 80, seed: 11 }), { accept: 'application/json' });
    assert.equal(res.status, 200, res.bytes.toString());
    assert.equal(res.json.status, 'succeeded');
    assert.ok((res.json.finished_at ?? 0) - (res.json.started_at ?? 0) > 2, 'the job ran longer than the idle timeout');
  });

  void it('the raw-bytes answer of a long sync generation arrives whole', async () => {
    const res = await fetch(`${s.url}/v1/image/qwen/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(generateBody({ steps: 80, seed: 12 })) });
    assert.equal(res.status, 200);
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.equal(bytes.subarray(1, 4).toString('latin1'), 'PNG');
    assert.equal(String(bytes.length), res.headers.get('content-length'));
  });
});
