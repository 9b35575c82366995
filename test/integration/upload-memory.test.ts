/**
 * A 200 MB upload is streamed to disk: the server process (a separate child, so its RSS is its
 * own) grows by less than 50 MB while it receives it. The test streams the body from a generator
 * and hashes the download as a stream, so it never holds 200 MB either.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { spawnServer, tempDir, type SpawnedServer } from '../support/server.js';
import { BOUNDARY, getJson, stopWithin, uploadFile, type FileRecordJson } from '../support/api.js';

const MIB = 1024 * 1024;
const TOTAL_MIB = 200;
const MAX_GROWTH = 50 * MIB;

let dataDir: string;
let server: SpawnedServer | undefined;

before(async () => {
  dataDir = tempDir('kiapi-upload-');
  server = await spawnServer({ KIAPI_DATA_DIR: dataDir, KIAPI_LOG_LEVEL: 'warn' });
});

after(async () => {
  try {
    if (server) await stopWithin(server, 'SIGTERM');
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

/** Resident set size of a process in bytes, from /proc (Linux). */
function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kb) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb[1]) * 1024;
}

/** A 1 MiB chunk whose content depends on its index, so misordered or dropped chunks change the hash. */
function chunk(i: number, scratch: Buffer): Buffer {
  scratch.fill(i % 251);
  scratch.writeUInt32BE(i, 0);
  return scratch;
}

function multipartStream(hash: ReturnType<typeof createHash>): ReadableStream<Uint8Array> {
  const head = Buffer.from(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${BOUNDARY}--\r\n`);
  let i = -1;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i === -1) {
        controller.enqueue(head);
      } else if (i < TOTAL_MIB) {
        // A fresh copy per chunk: the HTTP client may still hold the previous one.
        const data = Buffer.from(chunk(i, Buffer.allocUnsafe(MIB)));
        hash.update(data);
        controller.enqueue(data);
      } else if (i === TOTAL_MIB) {
        controller.enqueue(tail);
      } else {
        controller.close();
      }
      i++;
    },
  });
}

void describe('streaming upload', () => {
  void it(`stores ${TOTAL_MIB} MB while the server's RSS grows by less than 50 MB`, async (t) => {
    const s = server!;
    const pid = s.child.pid!;
    // Warm the upload path first, so lazily loaded code is not counted as upload memory.
    assert.equal((await uploadFile(s.url, { filename: 'warm.txt', data: 'warm' })).status, 200);
    const baseline = rssOf(pid);

    let peak = baseline;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, rssOf(pid));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    const sent = createHash('sha256');
    let record: FileRecordJson;
    try {
      const res = await fetch(`${s.url}/v1/files`, {
        method: 'POST',
        headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` },
        body: multipartStream(sent),
        // Required by fetch for a streamed request body.
        duplex: 'half',
      });
      assert.equal(res.status, 200, await res.clone().text());
      record = (await res.json()) as FileRecordJson;
    } finally {
      sampling = false;
      await sampler;
    }
    peak = Math.max(peak, rssOf(pid));

    assert.equal(record.size, TOTAL_MIB * MIB);
    assert.equal(record.filename, 'big.bin');
    const growth = peak - baseline;
    t.diagnostic(`server RSS: baseline ${(baseline / MIB).toFixed(1)} MB, peak ${(peak / MIB).toFixed(1)} MB, growth ${(growth / MIB).toFixed(1)} MB`);
    assert.ok(growth < MAX_GROWTH, `RSS grew by ${(growth / MIB).toFixed(1)} MB (baseline ${(baseline / MIB).toFixed(1)} MB, peak ${(peak / MIB).toFixed(1)} MB)`);

    // The record and the bytes on disk agree with what was sent.
    assert.equal((await getJson<FileRecordJson>(`${s.url}/v1/files/${record.file_id}`)).json.size, TOTAL_MIB * MIB);
    const dl = await fetch(`${s.url}/v1/files/${record.file_id}/download`);
    assert.equal(dl.headers.get('content-length'), String(TOTAL_MIB * MIB));
    const got = createHash('sha256');
    let received = 0;
    for await (const part of dl.body as unknown as AsyncIterable<Uint8Array>) {
      got.update(part);
      received += part.length;
    }
    assert.equal(received, TOTAL_MIB * MIB);
    assert.equal(got.digest('hex'), sent.digest('hex'));
  });
});
